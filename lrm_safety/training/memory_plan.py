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
from pathlib import Path
from typing import Optional

from lrm_safety.models.shapes import GB, Shape, model_shape, parse_quantity_gb, product_memory_gb


def _deepspeed_estimate(stage: int, shape: Shape, gpus: int, nodes: int, offload: bool) -> tuple[int, str]:
    try:
        # DeepSpeed logs its accelerator choice to stdout on import: keep it out of render's YAML.
        with contextlib.redirect_stdout(io.StringIO()):
            import deepspeed  # noqa: F401
        if stage == 2:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs as est2

            return est2(shape.params, gpus, nodes, cpu_offload=offload)[1], "DeepSpeed's ZeRO-2 estimator"
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs as est3

        return est3(
            shape.params,
            shape.largest_layer,
            gpus,
            nodes,
            cpu_offload=offload,
            cpu_offload_params=offload,
            zero_init=True,
        )[1], "DeepSpeed's ZeRO-3 estimator"
    except ImportError:  # the same multipliers DeepSpeed's estimators use (2 for bf16 weights, 18 partitioned)
        n = gpus * nodes
        if stage == 2:
            return (
                2 * shape.params if offload else 2 * shape.params + 18 * shape.params // n
            ), "ZeRO-2 multipliers (DeepSpeed not installed)"
        return (
            4 * shape.largest_layer + (0 if offload else 18 * shape.params // n)
        ), "ZeRO-3 multipliers (DeepSpeed not installed)"


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


def train_plan(spec, base_dir: str | Path = ".", shape: Optional[Shape] = None) -> dict:
    """The train stage's memory per GPU as the stage would run it (train.runtime_profile and numerics on CUDA)."""
    from lrm_safety.training.recipe import numerics, runtime_profile

    t = spec.train
    if spec.resources.cpu_only:
        return _cpu_plan(spec, base_dir, shape)
    gpus, nodes = t.gpus_per_node or 1, t.nodes
    lora = t.lora if t.method == "lora" else None
    if shape is None:
        shape = model_shape(spec.student.model, spec.student.revision, base_dir, lora=lora)
    plan = {
        "model": spec.student.model,
        "gpus": gpus,
        "nodes": nodes,
        "method": t.method,
        "microBatch": t.per_device_batch_size,
        "maxLength": t.max_length,
        "offload": t.offload,
    }
    if shape is None:
        return {
            **plan,
            "error": "the student's config is not readable here (not local, not in the hub cache, not a "
            "known student): no estimate",
        }
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
    plan.update(
        params=shape.params,
        shapeFrom=shape.source,
        deepspeed=zero,
        precision=num["precision"],
        masterWeights=num["master"],
        modelStatesGB=round(states / GB, 1),
        modelStatesFrom=how,
        activationsGB=round(acts / GB, 1),
        perGpuGB=round(total, 1),
        gpuMemoryGB=cap,
        gpuMemoryFrom=cap_from,
    )
    if cap is not None and total > cap:
        plan["warning"] = (
            f"train needs about {total:.0f} GB per GPU but the GPU has {cap:.0f} GB: use more GPUs "
            "(train.gpusPerNode, ZeRO partitions the optimizer states), deepspeed: zero3, offload: true, "
            "or method: lora"
        )
    return plan


def _cpu_plan(spec, base_dir, shape: Optional[Shape]) -> dict:
    """resources.cpuOnly: no GPU, so host memory against the train pod's memory limit (fp32 on CPU)."""
    from lrm_safety.spec import quantity_value
    from lrm_safety.training.recipe import numerics, runtime_profile

    t = spec.train
    lora = t.lora if t.method == "lora" else None
    if shape is None:
        shape = model_shape(spec.student.model, spec.student.revision, base_dir, lora=lora)
    limit = spec.resources.train.memory or spec.resources.memory
    plan = {
        "model": spec.student.model,
        "cpu": True,
        "gpus": 0,
        "nodes": t.nodes,
        "method": t.method,
        "microBatch": t.per_device_batch_size,
        "maxLength": t.max_length,
        "offload": t.offload,
        "podMemory": limit,
        "podMemoryFrom": "resources.train.memory" if spec.resources.train.memory else "resources.memory",
    }
    if shape is None:
        return {
            **plan,
            "error": "the student's config is not readable here (not local, not in the hub cache, not a "
            "known student): no estimate",
        }
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
    plan.update(
        params=shape.params,
        shapeFrom=shape.source,
        precision=num["precision"],
        modelStatesGB=round(states / GB, 1),
        modelStatesFrom=how,
        activationsGB=round(acts / GB, 1),
        totalGB=round(total, 1),
        podMemoryGB=round(cap, 1),
    )
    if total > cap:
        plan["warning"] = (
            f"train needs about {total:.0f} GB of host memory but the pod's limit is {limit} "
            f"({plan['podMemoryFrom']}): raise it, or lower train.perDeviceBatchSize or maxLength"
        )
    return plan


def render_plan(plan: dict) -> list[str]:
    """Comment lines for `render` and `validate`."""
    if plan.get("cpu"):
        head = (
            f"# train memory plan: {plan['model']}, {plan['method']}, CPU only (resources.cpuOnly), "
            f"micro-batch {plan['microBatch']} x {plan['maxLength']} tokens"
        )
        if "error" in plan:
            return [head, f"#   {plan['error']}"]
        lines = [
            head,
            f"#   {plan['params'] / 1e9:.2f}B parameters (config from {plan['shapeFrom']}); {plan['precision']}",
            f"#   host memory: model states {plan['modelStatesGB']} GB ({plan['modelStatesFrom']}) + activations "
            f"{plan['activationsGB']} GB (estimate) = {plan['totalGB']} GB; the pod's limit {plan['podMemory']} "
            f"({plan['podMemoryGB']} GB, {plan['podMemoryFrom']})",
        ]
        return lines + ([f"#   WARNING: {plan['warning']}"] if plan.get("warning") else [])
    head = (
        f"# train memory plan: {plan['model']}, {plan['method']}, {plan['gpus']} GPU(s) x {plan['nodes']} node(s), "
        f"micro-batch {plan['microBatch']} x {plan['maxLength']} tokens"
    )
    if "error" in plan:
        return [head, f"#   {plan['error']}"]
    lines = [
        head,
        f"#   {plan['params'] / 1e9:.2f}B parameters (config from {plan['shapeFrom']}); DeepSpeed {plan['deepspeed']}, "
        f"{plan['precision']}, {plan['masterWeights']} master weights, offload {plan['offload']}",
        f"#   per GPU: model states {plan['modelStatesGB']} GB ({plan['modelStatesFrom']}) + activations "
        f"{plan['activationsGB']} GB (estimate) = {plan['perGpuGB']} GB; GPU memory "
        + (f"{plan['gpuMemoryGB']:.0f} GB ({plan['gpuMemoryFrom']})" if plan["gpuMemoryGB"] else plan["gpuMemoryFrom"]),
    ]
    if plan.get("warning"):
        lines.append(f"#   WARNING: {plan['warning']}")
    return lines
