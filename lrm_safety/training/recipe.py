"""The training recipe as pure functions of the spec: numerics, the DeepSpeed config, the Trainer's arguments, and how
to execute them on this hardware. `render`/`validate` (the memory plan) and the train stage read the same answers."""

from __future__ import annotations

from typing import Optional

from lrm_safety.errors import BadInput


def deepspeed_config(train_spec, on_cpu: bool) -> Optional[dict]:
    """ZeRO config from the spec; 'auto' values are filled in by the HF integration."""
    if train_spec.deepspeed == "none":
        return None
    stage = 3 if train_spec.deepspeed == "zero3" else 2
    zero: dict = {
        "stage": stage,
        "overlap_comm": not on_cpu,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero["allgather_bucket_size"] = 5e8
    else:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if train_spec.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": not on_cpu}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": not on_cpu}
    # Explicit, not "auto": DeepSpeed's own default changed from 0 (off, the release's) to 1.0 in 0.19.3.
    cfg = {
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": train_spec.max_grad_norm,
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
    }
    if on_cpu:
        cfg["zero_allow_untested_optimizer"] = True
    else:
        cfg["bf16"] = {"enabled": "auto"}
    return cfg


def precision(train_spec, cuda: bool) -> str:
    if train_spec.precision != "auto":
        return getattr(train_spec.precision, "value", train_spec.precision)
    return "bf16" if cuda else "fp32"


def numerics(train_spec, cuda: bool, use_deepspeed: bool) -> dict:
    """The dtype the student loads in, the Trainer's autocast flags, and where master weights live.

    bf16 keeps fp32 master weights and AdamW states on every path, as the release's ZeRO-2 bf16 does: DeepSpeed's
    bf16 optimizer holds them itself (the model loads in bf16), and without DeepSpeed the model loads in fp32 and
    computes under bf16 autocast. LoRA trains fp32 adapters (peft upcasts them) over a bf16 base. Only bf16-pure
    loads bf16 weights that AdamW then updates in place: half the memory, and updates below half a bf16 step of a
    weight are lost.
    """
    prec = precision(train_spec, cuda)
    if prec == "bf16-pure":
        load, master = "bfloat16", "bf16 (no master copy)"
    elif prec == "bf16" and (use_deepspeed or train_spec.method == "lora"):
        load, master = "bfloat16", "fp32 (DeepSpeed bf16 optimizer)" if use_deepspeed else "fp32 adapters"
    elif prec == "fp16" and use_deepspeed:
        load, master = "float16", "fp32 (DeepSpeed fp16 optimizer)"
    else:  # fp32, or bf16/fp16 autocast over fp32 weights
        load, master = "float32", "fp32"
    return {
        "precision": prec,
        "load_dtype": load,
        "bf16": prec in ("bf16", "bf16-pure"),
        "fp16": prec == "fp16",
        "master": master,
    }


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def runtime_profile(train_spec, cuda: bool, world_size: int, installed=_installed) -> dict:
    """How to execute the spec here: attention kernel, packing, padding-free batches, Liger, DeepSpeed.

    `optimize` changes speed only: samples per optimizer step, their tokens and the loss stay the recipe's.
    Padding-free micro-batches (one row per sample, no padding) need varlen attention kernels (flash-attn): with
    SDPA the samples of a batch attend to each other (measured: the loss differs from the padded batch's).
    Packing (several samples in one row) changes samples per step, so only `train.packing` turns it on.
    """
    flash = cuda and installed("flash_attn")
    opt = train_spec.optimize
    if train_spec.packing and not flash:
        raise BadInput(
            "spec.train.packing needs flash-attn on a GPU (variable-length attention); without it "
            "packed samples attend to each other. Install flash-attn or set train.packing: false"
        )
    deepspeed = train_spec.deepspeed
    if opt and world_size == 1 and deepspeed == "zero2" and not train_spec.offload:
        deepspeed = "none"  # ZeRO-2 on one process partitions nothing; fp32 masters stay (numerics())
    return {
        "attn": "flash_attention_2" if flash else "sdpa",
        "packing": train_spec.packing,
        "padding_free": train_spec.packing or (opt and flash),
        "liger": cuda and (train_spec.liger or opt) and installed("liger_kernel"),
        "deepspeed": deepspeed,
        "sampling": "group_by_length" if train_spec.group_by_length and not train_spec.packing else "random",
    }


def sft_kwargs(train_spec, out_dir: str, cuda: bool, use_deepspeed: bool, profile: dict) -> dict:
    """SFTConfig keyword arguments from the spec and its `runtime_profile` (pure, so tests assert the mapping)."""
    num = numerics(train_spec, cuda, use_deepspeed)
    kw = dict(
        output_dir=out_dir,
        per_device_train_batch_size=train_spec.per_device_batch_size,
        gradient_accumulation_steps=train_spec.accumulation,
        learning_rate=train_spec.learning_rate,
        lr_scheduler_type=train_spec.lr_scheduler,
        warmup_steps=train_spec.warmup_ratio,  # float < 1 = ratio
        num_train_epochs=train_spec.epochs,
        max_steps=train_spec.max_steps or -1,
        max_length=train_spec.max_length,
        packing=profile["packing"],
        padding_free=profile["padding_free"],
        completion_only_loss=train_spec.loss == "completion",
        max_grad_norm=train_spec.max_grad_norm,
        gradient_checkpointing=train_spec.gradient_checkpointing,
        bf16=num["bf16"],
        fp16=num["fp16"],
        logging_steps=train_spec.logging_steps,
        save_strategy="steps" if train_spec.save_steps else "epoch",
        save_total_limit=2,
        report_to=list(train_spec.report_to),
        seed=train_spec.seed,
        use_liger_kernel=profile["liger"],
        dataloader_num_workers=0,
        use_cpu=not cuda,
        train_sampling_strategy=profile["sampling"],
    )
    if train_spec.save_steps:
        kw["save_steps"] = train_spec.save_steps
    if train_spec.gradient_checkpointing:
        kw["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if use_deepspeed:
        kw["deepspeed"] = deepspeed_config(train_spec, on_cpu=not cuda)
    return kw
