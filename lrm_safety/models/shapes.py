"""Models as shapes: parameter counts and sizes from a model's config, without its weights; the memory of a GPU from
its product label. What `render`, `validate`, the train memory plan and the served models' sizing all read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lrm_safety.models.refs import local_path, resolve_model

GB = 1e9
# Configs of the study's students (their config.json on the hub), for planning on a machine without their files.
KNOWN_MODELS: dict[str, dict] = {
    "deepseek-ai/deepseek-r1-distill-qwen-1.5b": dict(
        model_type="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=False,
    ),
    "deepseek-ai/deepseek-r1-distill-qwen-7b": dict(
        model_type="qwen2",
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    "deepseek-ai/deepseek-r1-distill-llama-8b": dict(
        model_type="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "deepseek-ai/deepseek-r1-distill-qwen-14b": dict(
        model_type="qwen2",
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=48,
        num_attention_heads=40,
        num_key_value_heads=8,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    # The builtin demo model (SmolLM2-135M-Instruct, the config in its GGUF header): planned without converting it.
    "builtin:smollm2-135m-instruct": dict(
        model_type="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    ),
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
KNOWN_GPUS = {
    "H200": 141,
    "GH200": 96,
    "B200": 180,
    "L40S": 48,
    "L40": 48,
    "L4": 24,
    "A10G": 24,
    "A10": 24,
    "V100": 16,
    "T4": 16,
    "RTX-A6000": 48,
    "A6000": 48,
}
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


def config_of(ref: str, revision: Optional[str], base_dir: Path):
    """The student's config without weights or network: a local folder, the hub cache, or the known table (the
    builtin model from the table too: its GGUF is never converted to plan)."""
    from transformers import AutoConfig

    known = KNOWN_MODELS.get(known_key(ref))
    if ref.startswith("builtin:") and known:
        cfg = dict(known)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg), KNOWN_SOURCE

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
    return local_path(ref, base_dir)


def model_shape(ref: str, revision: Optional[str] = None, base_dir: str | Path = ".", lora=None) -> Optional[Shape]:
    """Parameter counts from the config on the meta device: exact, instant, no weights. A known model (no revision,
    no LoRA, no local copy of its own) is read from the table, with no import of transformers."""
    key = known_key(ref)
    if (
        lora is None
        and revision is None
        and key in KNOWN_SHAPES
        and not (local_dir(ref, base_dir) / "config.json").is_file()
    ):
        cfg, (params, largest) = KNOWN_MODELS[key], KNOWN_SHAPES[key]
        return Shape(
            params=params,
            largest_layer=largest,
            lora_params=0,
            hidden=cfg["hidden_size"],
            layers=cfg["num_hidden_layers"],
            vocab=cfg["vocab_size"],
            source=KNOWN_SOURCE,
        )
    import torch
    from transformers import AutoModelForCausalLM

    cfg, source = config_of(ref, revision, Path(base_dir))
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
            if (
                isinstance(m, torch.nn.Linear)
                and name.split(".")[-1] != "lm_head"
                and (targets == ["all-linear"] or name.split(".")[-1] in targets)
            ):
                adapters += lora.r * (m.in_features + m.out_features)
    return Shape(
        params=params,
        largest_layer=largest,
        lora_params=adapters,
        hidden=cfg.hidden_size,
        layers=cfg.num_hidden_layers,
        vocab=cfg.vocab_size,
        source=source,
    )


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
