"""Will the train stage fit? GPU memory per device for the student's shape, read from its config without weights,
before a GPU Job starts (`lrm-safety render` and `validate`).

Model states (weights, gradients, optimizer) come from DeepSpeed's own estimators for ZeRO-2/3
(`estimate_zero2/3_model_states_mem_needs`); without DeepSpeed they are the bytes a parameter the stage's numerics
keep (train.numerics): 16 with fp32 master weights (fp32 weight, gradient and two AdamW moments), 8 for bf16-pure.
Activations are this module's own estimate (DeepSpeed has none): the hidden state saved at every layer boundary
under gradient checkpointing (or about 16 per layer without), plus the fp32 logits and their gradient.
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

GB = 1e9
# Configs of the study's students (their config.json on the hub), for planning on a machine without their files.
KNOWN_MODELS: dict[str, dict] = {
    "deepseek-ai/deepseek-r1-distill-qwen-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960,
                                                      num_hidden_layers=28, num_attention_heads=12,
                                                      num_key_value_heads=2, vocab_size=151936,
                                                      tie_word_embeddings=False),
    "deepseek-ai/deepseek-r1-distill-qwen-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                                                    num_hidden_layers=28, num_attention_heads=28,
                                                    num_key_value_heads=4, vocab_size=152064,
                                                    tie_word_embeddings=False),
    "deepseek-ai/deepseek-r1-distill-llama-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                                     num_hidden_layers=32, num_attention_heads=32,
                                                     num_key_value_heads=8, vocab_size=128256,
                                                     tie_word_embeddings=False),
    "deepseek-ai/deepseek-r1-distill-qwen-14b": dict(model_type="qwen2", hidden_size=5120, intermediate_size=13824,
                                                     num_hidden_layers=48, num_attention_heads=40,
                                                     num_key_value_heads=8, vocab_size=152064,
                                                     tie_word_embeddings=False),
    # The builtin demo model (SmolLM2-135M-Instruct, the config in its GGUF header): planned without converting it.
    "builtin:smollm2-135m-instruct": dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                                          num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                          head_dim=64, vocab_size=49152, tie_word_embeddings=True,
                                          max_position_embeddings=8192),
}
# (parameters, the largest module's) of each known model, counted on the meta device from its config above
# (tests/test_memory_plan.py recounts them): `validate` and `render` plan these without importing transformers.
KNOWN_SHAPES: dict[str, tuple[int, int]] = {
    "deepseek-ai/deepseek-r1-distill-qwen-1.5b": (1_777_088_000, 233_373_696),
    "deepseek-ai/deepseek-r1-distill-qwen-7b": (7_615_616_512, 544_997_376),
    "deepseek-ai/deepseek-r1-distill-llama-8b": (8_030_261_248, 525_336_576),
    "deepseek-ai/deepseek-r1-distill-qwen-14b": (14_770_033_664, 778_567_680),
    "builtin:smollm2-135m-instruct": (134_515_008, 28_311_552),
}
KNOWN_SOURCE = "the project's table of the study's students"
# GPU memory (GB) by the NVIDIA GPU feature discovery label nvidia.com/gpu.product, where the name has no size.
KNOWN_GPUS = {"H200": 141, "GH200": 96, "B200": 180, "L40S": 48, "L40": 48, "L4": 24, "A10G": 24, "A10": 24,
              "V100": 16, "T4": 16, "RTX-A6000": 48, "A6000": 48}
PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class Shape:
    params: int
    largest_layer: int  # parameters of the largest module (ZeRO-3 gathers one at a time)
    lora_params: int  # adapter parameters for the spec's LoRA (0 for full fine-tuning)
    hidden: int
    layers: int
    vocab: int
    source: str


def known_key(ref: str) -> str:
    ref = ref.strip()
    return ref.lower() if ref.startswith("builtin:") else "/".join(ref.lower().rstrip("/").split("/")[-2:])


def _config(ref: str, revision: Optional[str], base_dir: Path):
    """The student's config without weights or network: a local folder, the hub cache, or the known table (the
    builtin model from the table too: its GGUF is never converted to plan)."""
    from transformers import AutoConfig

    known = KNOWN_MODELS.get(known_key(ref))
    if ref.startswith("builtin:") and known:
        cfg = dict(known)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg), KNOWN_SOURCE

    from .models import local_path, resolve_model

    if ref.startswith("builtin:"):
        return AutoConfig.from_pretrained(resolve_model(ref)), "builtin"
    path = local_path(ref, base_dir)
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path), str(path)
    if not ref.startswith(("s3://", "/", ".")):
        try:
            return AutoConfig.from_pretrained(ref, revision=revision, local_files_only=True), "hub cache"
        except (OSError, ValueError):
            pass
    if known:
        cfg = dict(known)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg), KNOWN_SOURCE
    return None, f"no config for {ref} on this machine (not in the hub cache, not a known student)"


def local_dir(ref: str, base_dir) -> Path:
    from .models import local_path

    return local_path(ref, base_dir)


def model_shape(ref: str, revision: Optional[str] = None, base_dir: str | Path = ".", lora=None) -> Optional[Shape]:
    """Parameter counts from the config on the meta device: exact, instant, no weights. A known model (no revision,
    no LoRA, no local copy of its own) is read from the table, with no import of transformers."""
    key = known_key(ref)
    if lora is None and revision is None and key in KNOWN_SHAPES and not (local_dir(ref, base_dir) / "config.json").is_file():
        cfg, (params, largest) = KNOWN_MODELS[key], KNOWN_SHAPES[key]
        return Shape(params=params, largest_layer=largest, lora_params=0, hidden=cfg["hidden_size"],
                     layers=cfg["num_hidden_layers"], vocab=cfg["vocab_size"], source=KNOWN_SOURCE)
    import torch
    from transformers import AutoModelForCausalLM

    cfg, source = _config(ref, revision, Path(base_dir))
    if cfg is None:
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())  # tied weights are one Parameter, counted once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    adapters = 0
    if lora is not None:
        targets = lora.target_modules
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and name.split(".")[-1] != "lm_head" and (
                    targets == ["all-linear"] or name.split(".")[-1] in targets):
                adapters += lora.r * (m.in_features + m.out_features)
    return Shape(params=params, largest_layer=largest, lora_params=adapters, hidden=cfg.hidden_size,
                 layers=cfg.num_hidden_layers, vocab=cfg.vocab_size, source=source)


def _deepspeed_estimate(stage: int, shape: Shape, gpus: int, nodes: int, offload: bool) -> tuple[int, str]:
    try:
        # DeepSpeed logs its accelerator choice to stdout on import: keep it out of render's YAML.
        with contextlib.redirect_stdout(io.StringIO()):
            import deepspeed  # noqa: F401
        if stage == 2:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs as est2

            return est2(shape.params, gpus, nodes, cpu_offload=offload)[1], "DeepSpeed's ZeRO-2 estimator"
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs as est3

        return est3(shape.params, shape.largest_layer, gpus, nodes, cpu_offload=offload, cpu_offload_params=offload,
                    zero_init=True)[1], "DeepSpeed's ZeRO-3 estimator"
    except ImportError:  # the same multipliers DeepSpeed's estimators use (2 for bf16 weights, 18 partitioned)
        n = gpus * nodes
        if stage == 2:
            return (2 * shape.params if offload else 2 * shape.params + 18 * shape.params // n), \
                "ZeRO-2 multipliers (DeepSpeed not installed)"
        return (4 * shape.largest_layer + (0 if offload else 18 * shape.params // n)), \
            "ZeRO-3 multipliers (DeepSpeed not installed)"


def activation_bytes(shape: Shape, micro_batch: int, seq: int, checkpointing: bool, width: int = 2) -> int:
    tokens = micro_batch * seq
    per_layer = tokens * shape.hidden * width * (1 if checkpointing else 16)  # hidden states kept for backward
    logits = tokens * shape.vocab * 4 * 2  # fp32 logits and their gradient
    return per_layer * shape.layers + logits


def gpu_memory_gb(spec) -> tuple[Optional[float], str]:
    """The requested GPU's memory: resources.train.gpuMemory, else the nodeSelector's GPU product label."""
    hint = spec.resources.train.gpu_memory
    if hint:
        return parse_quantity_gb(hint), "resources.train.gpuMemory"
    found = product_memory_gb(spec.resources.node_selector)
    if found[0] is not None:
        return found
    return None, "unknown (set resources.train.gpuMemory, or a nodeSelector on nvidia.com/gpu.product)"


def product_memory_gb(node_selector: dict) -> tuple[Optional[float], str]:
    """A GPU's memory from the node selector's GPU product label (its size in the name, else the known table)."""
    product = node_selector.get(PRODUCT_LABEL)
    if product:
        m = re.search(r"(\d+)\s*GB", product, re.I)
        if m:
            return float(m.group(1)), f"{PRODUCT_LABEL}={product}"
        for name, gb in sorted(KNOWN_GPUS.items(), key=lambda kv: -len(kv[0])):
            if re.search(rf"(^|[-_ ]){re.escape(name)}($|[-_ ])", product, re.I):
                return float(gb), f"{PRODUCT_LABEL}={product}"
    return None, ""


def parse_quantity_gb(q: str) -> float:
    m = re.fullmatch(r"\s*([\d.]+)\s*(Gi|G|GB|GiB|Ti|T)?\s*", q)
    if not m:
        raise ValueError(f"{q!r} is not a memory size such as 80Gi or 80G")
    value, unit = float(m.group(1)), (m.group(2) or "G")
    return value * {"Gi": 2**30 / GB, "GiB": 2**30 / GB, "G": 1, "GB": 1, "Ti": 2**40 / GB, "T": 1000}[unit]


def train_plan(spec, base_dir: str | Path = ".", shape: Optional[Shape] = None) -> dict:
    """The train stage's memory per GPU as the stage would run it (train.runtime_profile and numerics on CUDA)."""
    from .stages.train import numerics, runtime_profile

    t = spec.train
    if spec.resources.cpu_only:
        return _cpu_plan(spec, base_dir, shape)
    gpus, nodes = t.gpus_per_node or 1, t.nodes
    lora = t.lora if t.method == "lora" else None
    if shape is None:
        shape = model_shape(spec.student.model, spec.student.revision, base_dir, lora=lora)
    plan = {"model": spec.student.model, "gpus": gpus, "nodes": nodes, "method": t.method,
            "microBatch": t.per_device_batch_size, "maxLength": t.max_length, "offload": t.offload}
    if shape is None:
        return {**plan, "error": "the student's config is not readable here (not local, not in the hub cache, not a "
                                 "known student): no estimate"}
    profile = runtime_profile(t, cuda=True, world_size=gpus * nodes, installed=lambda m: False)
    zero = profile["deepspeed"]
    num = numerics(t, cuda=True, use_deepspeed=zero != "none")
    if lora is not None:  # frozen bf16 base (ZeRO-3 partitions it), adapters with fp32 states
        base = 2 * shape.params // (gpus * nodes if zero == "zero3" else 1)
        states, how = base + 16 * shape.lora_params, "bf16 base + 16 bytes per adapter parameter"
    elif zero == "none":
        per = 8 if num["precision"] == "bf16-pure" else 16
        states, how = per * shape.params, f"{per} bytes a parameter ({num['master']} master weights, no DeepSpeed)"
    else:
        states, how = _deepspeed_estimate(2 if zero == "zero2" else 3, shape, gpus, nodes, t.offload)
    acts = activation_bytes(shape, t.per_device_batch_size, t.max_length, t.gradient_checkpointing)
    cap, cap_from = gpu_memory_gb(spec)
    total = (states + acts) / GB
    plan.update(params=shape.params, shapeFrom=shape.source, deepspeed=zero, precision=num["precision"],
                masterWeights=num["master"], modelStatesGB=round(states / GB, 1), modelStatesFrom=how,
                activationsGB=round(acts / GB, 1), perGpuGB=round(total, 1), gpuMemoryGB=cap, gpuMemoryFrom=cap_from)
    if cap is not None and total > cap:
        plan["warning"] = (f"train needs about {total:.0f} GB per GPU but the GPU has {cap:.0f} GB: use more GPUs "
                           "(train.gpusPerNode, ZeRO partitions the optimizer states), deepspeed: zero3, offload: true, "
                           "or method: lora")
    return plan


def _cpu_plan(spec, base_dir, shape: Optional[Shape]) -> dict:
    """resources.cpuOnly: no GPU, so host memory against the train pod's memory limit (fp32 on CPU)."""
    from .spec import quantity_value
    from .stages.train import numerics, runtime_profile

    t = spec.train
    lora = t.lora if t.method == "lora" else None
    if shape is None:
        shape = model_shape(spec.student.model, spec.student.revision, base_dir, lora=lora)
    limit = spec.resources.train.memory or spec.resources.memory
    plan = {"model": spec.student.model, "cpu": True, "gpus": 0, "nodes": t.nodes, "method": t.method,
            "microBatch": t.per_device_batch_size, "maxLength": t.max_length, "offload": t.offload,
            "podMemory": limit, "podMemoryFrom": "resources.train.memory" if spec.resources.train.memory else
            "resources.memory"}
    if shape is None:
        return {**plan, "error": "the student's config is not readable here (not local, not in the hub cache, not a "
                                 "known student): no estimate"}
    profile = runtime_profile(t, cuda=False, world_size=t.nodes, installed=lambda m: False)
    num = numerics(t, cuda=False, use_deepspeed=profile["deepspeed"] != "none")
    width = 2 if num["load_dtype"] in ("bfloat16", "float16") else 4
    if lora is not None:
        states, how = width * shape.params + 16 * shape.lora_params, "the frozen base + 16 bytes per adapter parameter"
    else:
        per = 8 if num["precision"] == "bf16-pure" else 16
        states, how = per * shape.params, f"{per} bytes a parameter ({num['master']} weights and AdamW states)"
    acts = activation_bytes(shape, t.per_device_batch_size, t.max_length, t.gradient_checkpointing, width)
    total = (states + acts) / GB
    cap = quantity_value(limit) / GB
    plan.update(params=shape.params, shapeFrom=shape.source, precision=num["precision"], modelStatesGB=round(states / GB, 1),
                modelStatesFrom=how, activationsGB=round(acts / GB, 1), totalGB=round(total, 1), podMemoryGB=round(cap, 1))
    if total > cap:
        plan["warning"] = (f"train needs about {total:.0f} GB of host memory but the pod's limit is {limit} "
                           f"({plan['podMemoryFrom']}): raise it, or lower train.perDeviceBatchSize or maxLength")
    return plan


def render_plan(plan: dict) -> list[str]:
    """Comment lines for `render` and `validate`."""
    if plan.get("cpu"):
        head = (f"# train memory plan: {plan['model']}, {plan['method']}, CPU only (resources.cpuOnly), "
                f"micro-batch {plan['microBatch']} x {plan['maxLength']} tokens")
        if "error" in plan:
            return [head, f"#   {plan['error']}"]
        lines = [head,
                 f"#   {plan['params'] / 1e9:.2f}B parameters (config from {plan['shapeFrom']}); {plan['precision']}",
                 f"#   host memory: model states {plan['modelStatesGB']} GB ({plan['modelStatesFrom']}) + activations "
                 f"{plan['activationsGB']} GB (estimate) = {plan['totalGB']} GB; the pod's limit {plan['podMemory']} "
                 f"({plan['podMemoryGB']} GB, {plan['podMemoryFrom']})"]
        return lines + ([f"#   WARNING: {plan['warning']}"] if plan.get("warning") else [])
    head = (f"# train memory plan: {plan['model']}, {plan['method']}, {plan['gpus']} GPU(s) x {plan['nodes']} node(s), "
            f"micro-batch {plan['microBatch']} x {plan['maxLength']} tokens")
    if "error" in plan:
        return [head, f"#   {plan['error']}"]
    lines = [head,
             f"#   {plan['params'] / 1e9:.2f}B parameters (config from {plan['shapeFrom']}); DeepSpeed {plan['deepspeed']}, "
             f"{plan['precision']}, {plan['masterWeights']} master weights, offload {plan['offload']}",
             f"#   per GPU: model states {plan['modelStatesGB']} GB ({plan['modelStatesFrom']}) + activations "
             f"{plan['activationsGB']} GB (estimate) = {plan['perGpuGB']} GB; GPU memory "
             + (f"{plan['gpuMemoryGB']:.0f} GB ({plan['gpuMemoryFrom']})" if plan["gpuMemoryGB"] else plan["gpuMemoryFrom"])]
    if plan.get("warning"):
        lines.append(f"#   WARNING: {plan['warning']}")
    return lines
