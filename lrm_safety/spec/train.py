"""Stage 3 section: supervised fine-tuning (full or LoRA, DeepSpeed, the release's recipe as defaults)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from lrm_safety.spec.base import COUNT_MAX, SEED_MAX, DeepSpeedStage, Loss, Precision, Rendering, TrainMethod, _Model


class EnvFromSecret(_Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable in the train pod."""
    secret_name: str = Field(min_length=1)
    """Secret in the experiment's namespace."""
    key: str = Field(min_length=1)
    """Key in that Secret."""


class LoraSpec(_Model):
    r: int = Field(16, ge=1, le=1024)
    """LoRA rank."""
    alpha: int = Field(32, ge=1, le=65536)
    """LoRA scaling alpha."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """LoRA dropout."""
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])
    """Modules to adapt (peft names; all-linear adapts every linear layer)."""
    merge: bool = True
    """Merge adapters into the final model so it loads without peft."""


class TrainSpec(_Model):
    method: TrainMethod = TrainMethod.full
    """full fine-tune or lora."""
    lora: Optional[LoraSpec] = None
    """LoRA options (method lora only)."""
    deepspeed: DeepSpeedStage = DeepSpeedStage.zero2
    """DeepSpeed ZeRO stage (the study used ZeRO-2); none trains without DeepSpeed."""
    offload: bool = False
    """Offload optimizer state (and ZeRO-3 parameters) to CPU."""
    epochs: float = Field(1.0, gt=0.0, le=1000.0)
    """Training epochs."""
    max_steps: Optional[int] = Field(None, ge=1, le=COUNT_MAX)
    """Stop after this many optimizer steps (overrides epochs)."""
    learning_rate: float = Field(5e-6, gt=0.0, lt=1.0)
    """Peak learning rate."""
    lr_scheduler: str = Field("cosine", pattern="^(cosine|linear|constant|constant_with_warmup)$")
    """Learning-rate schedule."""
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """Warmup fraction of the steps."""
    max_length: int = Field(4096, ge=32, le=262144)
    """Maximum tokens per training sample."""
    per_device_batch_size: int = Field(2, ge=1, le=1024)
    """Sequences per device per micro-step."""
    global_batch_size: Optional[int] = Field(64, ge=1, le=1_000_000)
    """Samples per optimizer step over all processes (the release: 4 GPUs x 2 x 8 = 64); gradient accumulation is derived from it: globalBatchSize / (perDeviceBatchSize x gpusPerNode x nodes), which must divide. Ignored when only gradientAccumulation is given."""
    gradient_accumulation: Optional[int] = Field(None, ge=1, le=4096)
    """Micro-steps per optimizer step; default: derived from globalBatchSize."""
    gradient_checkpointing: bool = True
    """Recompute activations to save memory."""
    packing: bool = False
    """Pack several samples into one row (changes samples per optimizer step; the release does not pack). Needs flash-attn on a GPU."""
    optimize: bool = True
    """Speed only, never the samples, their order, samples per step or the numerics: no DeepSpeed partitioning on a single process (fp32 master weights stay, through bf16 autocast), and on GPUs with flash-attn/Liger installed padding-free micro-batches (one row per sample, no padding) and fused linear cross-entropy."""
    group_by_length: bool = False
    """Batch samples of similar length together (less padding, faster). A deviation: the release's Trainer samples at random, and grouping changes which samples share a step."""
    max_grad_norm: float = Field(0.0, ge=0.0)
    """Clip the gradient norm to this (0: no clipping). The release passes --max_grad_norm 1.0, but under DeepSpeed the Trainer leaves clipping to DeepSpeed, and its deepspeed_zero2.json sets no gradient_clipping, whose default was 0 (off) until DeepSpeed 0.19.3: the release trained unclipped."""
    liger: bool = False
    """Liger fused kernels (fused linear cross-entropy), GPU only."""
    loss: Loss = Loss.all
    """Tokens the loss is computed on: all (the whole sequence, as the release's TRL 0.16 collator did) or completion (the response only)."""
    rendering: Rendering = Rendering.prompt_completion
    """How a conversation becomes training text: prompt-completion (the student's generation prompt, then the response with its reasoning as plain text) or conversation (the whole chat through the chat template, as the release's TRL 0.16 code path did: the DeepSeek-R1-Distill template then drops the reasoning from every example; see docs/spec.md)."""
    precision: Precision = Precision.auto
    """auto: bf16 on GPU, fp32 on CPU. bf16 computes in bf16 and keeps fp32 master weights and optimizer states, as the release's DeepSpeed bf16 does (DeepSpeed's bf16 optimizer, or fp32 weights under bf16 autocast without DeepSpeed). bf16-pure keeps weights and AdamW states in bf16 (half the memory of weights+states, 8 instead of 16 bytes a parameter; needs deepspeed: none): at lr 5e-6 most updates are below half a bf16 step of their weight and round to nothing."""
    nodes: int = Field(1, ge=1, le=512)
    """Nodes for the train job; > 1 runs an Indexed Job with a headless Service for rendezvous."""
    gpus_per_node: Optional[int] = Field(None, ge=1, le=16)
    """GPUs per node (torchrun nproc); needed when nodes > 1; default 1."""
    save_steps: Optional[int] = Field(None, ge=1, le=COUNT_MAX)
    """Checkpoint every N steps (uploaded to the store for resume); default: once per epoch."""
    keep_checkpoints: bool = False
    """Keep the newest resumable checkpoint in the store after the model is written (with optimizer state it is about 3x the model's size)."""
    seed: int = Field(42, ge=0, le=SEED_MAX)
    """Training seed (0 to 2^32-1, as transformers' set_seed takes it)."""
    logging_steps: int = Field(1, ge=1, le=COUNT_MAX)
    """Log (and record in the loss curve) every N steps."""
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    """Where training curves go: tensorboard (the release's report_to; event files uploaded under <experiment>/train/runs/ as training proceeds, so `tensorboard --logdir s3://...` works during the run), wandb, mlflow; [] for none."""
    report_env: list[EnvFromSecret] = Field(default_factory=list)
    """Credentials and settings for the trackers, from Secrets only, e.g. {name: WANDB_API_KEY, secretName: wandb, key: api-key} or MLFLOW_TRACKING_URI / MLFLOW_TRACKING_TOKEN."""

    @model_validator(mode="after")
    def _trackers(self):
        unknown = sorted(set(self.report_to) - {"tensorboard", "wandb", "mlflow"})
        if unknown:
            raise ValueError(f"reportTo: unknown {', '.join(unknown)}; use tensorboard, wandb or mlflow")
        return self

    @property
    def world_size(self) -> int:
        return self.nodes * (self.gpus_per_node or 1)

    @property
    def accumulation(self) -> int:
        """Gradient accumulation steps: given, or derived from globalBatchSize."""
        if self.gradient_accumulation is not None:
            return self.gradient_accumulation
        return self.global_batch_size // (self.per_device_batch_size * self.world_size)

    @model_validator(mode="after")
    def _cross(self):
        if self.nodes > 1 and self.gpus_per_node is None:
            raise ValueError("nodes > 1 needs gpusPerNode")
        if self.precision == Precision.bf16_pure and self.deepspeed != DeepSpeedStage.none:
            raise ValueError(
                "precision bf16-pure keeps no fp32 master weights, which DeepSpeed always keeps: set "
                "deepspeed: none (one GPU), or precision: bf16"
            )
        if self.gradient_accumulation is not None and "global_batch_size" not in self.model_fields_set:
            self.global_batch_size = None  # an explicit gradientAccumulation decides; the default global batch yields
        if self.global_batch_size is None and self.gradient_accumulation is None:
            raise ValueError("set globalBatchSize (samples per optimizer step) or gradientAccumulation")
        if self.global_batch_size is not None:
            per_step = self.per_device_batch_size * self.world_size
            if self.global_batch_size % per_step:
                raise ValueError(
                    f"globalBatchSize {self.global_batch_size} is not a multiple of perDeviceBatchSize x "
                    f"gpusPerNode x nodes = {per_step}: change one of them (the release: 64 = 2 x 4 x 8)"
                )
            if (
                self.gradient_accumulation is not None
                and self.gradient_accumulation * per_step != self.global_batch_size
            ):
                raise ValueError(
                    f"gradientAccumulation {self.gradient_accumulation} x {per_step} samples per micro-step "
                    f"is not globalBatchSize {self.global_batch_size}: set one of them, or set "
                    f"globalBatchSize: null"
                )
        if self.lora is not None and self.method != TrainMethod.lora.value:
            raise ValueError("lora options are only valid with method: lora")
        if self.method == TrainMethod.lora.value and self.lora is None:
            self.lora = LoraSpec()
        return self
