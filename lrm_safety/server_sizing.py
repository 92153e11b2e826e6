"""Will a served model fit, and on how many GPUs? Weights at the served dtype plus the KV cache of one sequence at
maxModelLen, per GPU, from the model's config without weights (`lrm-safety render`, `--plan`, `validate`).

vLLM shards attention heads over tensor-parallel ranks, so tensorParallel must divide the heads; that is checked
here before any pod asks for GPUs. MLA models (DeepSeek-V3/R1) cache one compressed latent per token and layer,
which every rank holds whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .memory_plan import GB, _config, model_shape, parse_quantity_gb, product_memory_gb
from .serving import _refs, roles_of, served, server_gpus

# From each model's config.json on the hub, for planning on a machine without its files: parameters, layers,
# attention and KV heads, head size, the checkpoint's bytes a weight, the model's own context.
KNOWN_SERVED: dict[str, dict] = {
    # 671B (the hub's 685B includes the multi-token-prediction layer vLLM does not load); FP8 weights (its
    # quantization_config), MLA: kv_lora_rank 512 + qk_rope_head_dim 64 cached per token and layer.
    "deepseek-ai/deepseek-r1": dict(params=671e9, layers=61, heads=128, kv_heads=128, head_dim=128, bytes=1,
                                    mla=512 + 64, context=163840),
    "meta-llama/llama-guard-3-8b": dict(params=8.03e9, layers=32, heads=32, kv_heads=8, head_dim=128, bytes=2,
                                        context=131072),
    "mistralai/mixtral-8x7b-instruct-v0.1": dict(params=46.7e9, layers=32, heads=32, kv_heads=8, head_dim=128,
                                                 bytes=2, context=32768),
}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}
QUANT_BYTES = {"fp8": 1, "fp8_e4m3": 1, "int8": 1, "awq": 0.5, "gptq": 0.5, "bitsandbytes": 0.5}


@dataclass(frozen=True)
class Arch:
    params: float
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    bytes: float  # a weight, as the checkpoint stores it
    context: int
    mla: Optional[int]  # latent width cached per token and layer (MLA), else None
    source: str


def arch(ref: str, revision: Optional[str] = None, base_dir: str | Path = ".") -> Optional[Arch]:
    key = "/".join(ref.lower().rstrip("/").split("/")[-2:])
    if key in KNOWN_SERVED:
        k = KNOWN_SERVED[key]
        return Arch(k["params"], k["layers"], k["heads"], k["kv_heads"], k["head_dim"], k["bytes"], k["context"],
                    k.get("mla"), "the project's table of the study's served models")

    try:
        cfg, source = _config(ref, revision, Path(base_dir))
    except Exception:  # advice only: an unreadable config gives no estimate
        return None
    if cfg is None:
        return None
    shape = model_shape(ref, revision, base_dir)
    heads = cfg.num_attention_heads
    dtype = str(getattr(cfg, "torch_dtype", None) or getattr(cfg, "dtype", None) or "bfloat16").replace("torch.", "")
    quant = (getattr(cfg, "quantization_config", None) or {})
    width = DTYPE_BYTES.get(dtype, 2)
    if isinstance(quant, dict) and quant.get("quant_method") in QUANT_BYTES:
        width = QUANT_BYTES[quant["quant_method"]]
    mla = getattr(cfg, "kv_lora_rank", None)
    return Arch(float(shape.params if shape else 0), cfg.num_hidden_layers, heads,
                getattr(cfg, "num_key_value_heads", None) or heads,
                getattr(cfg, "head_dim", None) or cfg.hidden_size // heads, width,
                getattr(cfg, "max_position_embeddings", 0) or 0,
                (mla + getattr(cfg, "qk_rope_head_dim", 0)) if mla else None, source)


def gpu_memory(spec, serve) -> tuple[Optional[float], str]:
    """One GPU's memory: serve.resources.gpuMemory, else the GPU product label of the server's node selector."""
    if serve.resources.gpu_memory:
        return parse_quantity_gb(serve.resources.gpu_memory), "serve.resources.gpuMemory"
    found = product_memory_gb(serve.node_selector or spec.resources.node_selector)
    if found[0] is not None:
        return found
    return None, "unknown GPU (set serve.resources.gpuMemory or serve.nodeSelector on nvidia.com/gpu.product)"


def size(spec, served, base_dir: str | Path = ".") -> dict:
    """{name, model, gpus, replicas, tensorParallel, weightsGB, kvGB, perGpuGB, gpuMemoryGB, error?, warning?}."""
    v = served.serve
    gpus = server_gpus(spec, served)
    out = {"name": served.name, "model": served.model, "roles": served.role, "gpus": gpus, "replicas": v.replicas,
           "tensorParallel": v.tensor_parallel}
    a = arch(served.model, served.revision, base_dir)
    if a is None:
        return {**out, "note": f"no config for {served.model} on this machine: memory not estimated, tensorParallel "
                               f"not checked"}
    if a.heads % v.tensor_parallel:
        return {**out, "error": f"tensorParallel {v.tensor_parallel} does not divide {served.model}'s {a.heads} "
                                f"attention heads: vLLM shards heads over its ranks (use a divisor of {a.heads})"}
    width = QUANT_BYTES.get(v.quantization or "", None) or (DTYPE_BYTES[v.dtype] if v.dtype != "auto" else a.bytes)
    length = v.max_model_len or a.context
    per_token = a.layers * (a.mla if a.mla else 2 * a.kv_heads * a.head_dim) * 2  # a bf16 KV cache
    kv = per_token * length
    weights = a.params * width
    per_gpu = weights / v.tensor_parallel + (kv if a.mla else kv / v.tensor_parallel)
    cap, cap_from = gpu_memory(spec, v)
    out.update(params=a.params, shapeFrom=a.source, bytesPerWeight=width, maxModelLen=length,
               weightsGB=round(weights / GB, 1), kvGB=round(kv / GB, 2), perGpuGB=round(per_gpu / GB, 1),
               gpuMemoryGB=cap, gpuMemoryFrom=cap_from)
    if cap is not None and per_gpu / GB > cap * v.gpu_memory_utilization:
        out["warning"] = (f"needs about {per_gpu / GB:.0f} GB a GPU before vLLM's activations and CUDA graphs, over "
                          f"{v.gpu_memory_utilization:g} x {cap:.0f} GB: raise tensorParallel (and gpus), lower "
                          f"maxModelLen, quantize (serve.quantization), or use larger GPUs")
    return out


def render_lines(sizes: list[dict]) -> list[str]:
    lines = []
    for z in sizes:
        head = (f"# server {z['name']}: {z['model']} ({z['roles']}), {z['replicas']} x {z['gpus']} GPU(s), "
                f"tensorParallel {z['tensorParallel']}")
        lines.append(head)
        if "error" in z:
            lines.append(f"#   ERROR: {z['error']}")
        elif "note" in z:
            lines.append(f"#   {z['note']}")
        else:
            cap = f"{z['gpuMemoryGB']:.0f} GB ({z['gpuMemoryFrom']})" if z["gpuMemoryGB"] else z["gpuMemoryFrom"]
            lines.append(f"#   weights {z['weightsGB']} GB ({z['params'] / 1e9:.1f}B x {z['bytesPerWeight']:g} bytes; "
                         f"config from {z['shapeFrom']}) + KV cache {z['kvGB']} GB (one {z['maxModelLen']}-token "
                         f"sequence) = {z['perGpuGB']} GB a GPU; GPU memory {cap}")
        if z.get("warning"):
            lines.append(f"#   WARNING: {z['warning']}")
    return lines


def plan_lines(spec, base_dir: str | Path = ".") -> tuple[list[str], list[str]]:
    """(comment lines, errors) for every served model of the spec."""
    sizes = []
    for s in served(spec):
        z = size(spec, s, base_dir)
        z["roles"] = ", ".join(sorted({r for st in spec.stages for r in roles_of(spec, st, s)}))
        sizes.append(z)
    errors = [f"spec.{_where(spec, z['model'])}.serve.tensorParallel: {z['error']}" for z in sizes if "error" in z]
    return render_lines(sizes), errors


def _where(spec, model: str) -> str:
    paths = {"teacher": "teacher", "judge": "evaluate.judge", "overRefusalJudge": "evaluate.overRefusalJudge",
             "pairAttacker": "evaluate.pair.attacker", "pairJudge": "evaluate.pair.judge"}
    return next((paths[r] for r, ref in _refs(spec).items() if ref is not None and ref.model == model), "teacher")
