"""SafetyExperiment spec and status: the one source of truth.

The CRD schema (`lrm_safety.crd`), the docs table and the operator's Job manifests are all derived
from these models, so a field added here appears everywhere. Field docstrings become the CRD's
descriptions. Defaults follow the study's released recipe (DESIGN.md section 6).
"""
from __future__ import annotations

import hashlib
import json
import re
from enum import Enum
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"  # a Kubernetes object name (RFC 1123 subdomain)
# A Kubernetes resource quantity (8, 500m, 64Gi, 1.5e9), as the API server parses one (k8s.io/apimachinery's
# resource.Quantity; the pattern kubebuilder writes into CRDs), without a sign: requests are never negative.
QUANTITY = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": 1e-9, "u": 1e-6,
           "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def quantity_value(q: str) -> float:
    """A QUANTITY's value (64Gi -> 68719476736.0, 500m -> 0.5, 1e3 -> 1000.0), as the API server reads it."""
    m = re.fullmatch(r"([0-9.]+)([eE][-+]?[0-9.]+|[A-Za-z]*)", str(q).strip())
    if not m or not re.fullmatch(QUANTITY, str(q).strip()):
        raise ValueError(f"{q!r} is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)")
    number, suffix = m.groups()
    if re.fullmatch(r"[eE][-+]?[0-9.]+", suffix):  # 1e3; a bare E is exa
        return float(number) * 10 ** float(suffix[1:])
    return float(number) * _SUFFIX[suffix]


SEED_MAX = 2**32 - 1  # numpy's and transformers' set_seed bound; vLLM and torch take it too
COUNT_MAX = 100_000_000  # items, samples or steps: far above any study, far below what overflows a consumer

API_GROUP = "lrmsafety.io"
API_VERSION = "v1alpha1"
KIND = "SafetyExperiment"
PLURAL = "safetyexperiments"
STAGES = ("distill", "mix", "train", "evaluate")


class _Model(BaseModel):
    """camelCase on the wire (Kubernetes style), snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        use_enum_values=True,
        validate_default=True,
    )


# ---------------------------------------------------------------- enums
class Style(str, Enum):
    default = "default"
    realsafe = "realsafe"
    improved = "improved"
    short = "short"
    template = "template"
    nocot = "nocot"


class Backend(str, Enum):
    vllm = "vllm"
    transformers = "transformers"
    openai = "openai"


class Attack(str, Enum):
    none = "none"
    pap = "pap"
    pair = "pair"


class JudgeKind(str, Enum):
    refusal = "refusal"
    guard = "guard"
    llm = "llm"


class TrainMethod(str, Enum):
    full = "full"
    lora = "lora"


class DeepSpeedStage(str, Enum):
    none = "none"
    zero2 = "zero2"
    zero3 = "zero3"


class Loss(str, Enum):
    all = "all"
    completion = "completion"


class Rendering(str, Enum):
    prompt_completion = "prompt-completion"
    conversation = "conversation"


class Precision(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    bf16_pure = "bf16-pure"
    fp16 = "fp16"
    fp32 = "fp32"


class BenchmarkName(str, Enum):
    advbench = "advbench"
    advbench_pap = "advbench-pap"
    advbench_pair = "advbench-pair"
    xstest = "xstest"
    math500 = "math500"
    aime = "aime"
    livecodebench = "livecodebench"
    custom = "custom"


class BenchmarkKind(str, Enum):
    harmful = "harmful"
    benign = "benign"
    math = "math"
    code = "code"


class Labeller(str, Enum):
    oneshot = "oneshot"
    teacher = "teacher"
    guard = "guard"
    labels = "labels"


class OverlongPolicy(str, Enum):
    regenerate = "regenerate"
    truncate = "truncate"
    drop = "drop"


class Phase(str, Enum):
    pending = "Pending"
    running = "Running"
    suspended = "Suspended"
    succeeded = "Succeeded"
    failed = "Failed"


class StageState(str, Enum):
    pending = "Pending"
    running = "Running"
    skipped = "Skipped"
    succeeded = "Succeeded"
    failed = "Failed"


# ---------------------------------------------------------------- spec sections
class SecretRef(_Model):
    name: str = Field(min_length=1)
    """Secret in the experiment's namespace."""
    access_key_key: str = "AWS_ACCESS_KEY_ID"
    """Key in the Secret holding the access key id."""
    secret_key_key: str = "AWS_SECRET_ACCESS_KEY"
    """Key in the Secret holding the secret access key."""


class StorageSpec(_Model):
    uri: str = "file://./artifacts"
    """Artifact root: file:///abs/dir, file://./relative/dir or s3://bucket/prefix. Each stage writes under <uri>/<experiment>/<stage>/."""
    endpoint: Optional[str] = None
    """S3 endpoint URL for non-AWS servers (MinIO, SeaweedFS, Ceph); AWS_ENDPOINT_URL also works."""
    region: Optional[str] = None
    """S3 region."""
    secret_ref: Optional[SecretRef] = None
    """Secret with S3 credentials, mounted into stage pods as environment variables."""
    delete_on_finalize: bool = False
    """Delete the experiment's artifacts when the resource is deleted."""

    @model_validator(mode="after")
    def _scheme(self):
        if not (self.uri.startswith("file://") or self.uri.startswith("s3://")):
            raise ValueError("uri must start with file:// or s3://")
        return self


class ModelRef(_Model):
    model: str = Field(min_length=1)
    """Model reference: a Hugging Face id (read from the local cache), a local directory, an s3:// prefix, a .gguf file, or builtin:smollm2-135m-instruct."""
    revision: Optional[str] = None
    """Hub revision when model is a Hugging Face id."""


class StudentSpec(ModelRef):
    model: str = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    """The model to make safer."""


class ServeResources(_Model):
    cpu: Optional[str] = Field(None, pattern=QUANTITY)
    """CPU request of each server pod; default sized from the model (`lrm-safety render` shows it)."""
    memory: Optional[str] = Field(None, pattern=QUANTITY)
    """Memory request and limit of each server pod (the weights pass through host memory while loading); default sized from the model's weights (`lrm-safety render` shows it)."""
    gpu_memory: Optional[str] = Field(None, pattern=r"^\s*[\d.]+\s*(Gi|G|GB|GiB|Ti|T)?\s*$")
    """Memory of one GPU (e.g. 80Gi), for the sizing check in `lrm-safety render`; default: read from resources.nodeSelector's nvidia.com/gpu.product."""


class ServeSpec(_Model):
    """Run this model as a vLLM OpenAI-compatible server (`vllm serve`) that the operator deploys (a Deployment and a
    ClusterIP Service) and shares with every stage in the namespace that needs the same served model; `lrm-safety
    run` starts the same server as a local subprocess. The stages reach it as an endpoint (the openai backend)."""

    gpus: Optional[int] = Field(None, ge=0, le=64)
    """GPUs of each server pod; default tensorParallel (0 with resources.cpuOnly)."""
    tensor_parallel: int = Field(1, ge=1, le=64)
    """vLLM --tensor-parallel-size: GPUs one copy of the model is sharded over; must divide its attention heads."""
    replicas: int = Field(1, ge=1, le=64)
    """Server pods behind the Service (each a whole copy of the model)."""
    max_model_len: Optional[int] = Field(None, ge=256, le=4_194_304)
    """vLLM --max-model-len: the context the KV cache is sized for; default the model's own."""
    dtype: str = Field("auto", pattern="^(auto|bfloat16|float16|half|float32|float)$")
    """vLLM --dtype of the weights (auto: the checkpoint's)."""
    quantization: Optional[str] = Field(None, pattern=r"^[a-z0-9_]+$")
    """vLLM --quantization, e.g. fp8 (DeepSeek-R1 ships FP8 weights and needs no flag)."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """vLLM --gpu-memory-utilization."""
    args: list[str] = Field(default_factory=list)
    """More `vllm serve` arguments, e.g. [--enable-expert-parallel] or [--max-num-seqs, "64"]."""
    resources: ServeResources = Field(default_factory=ServeResources)
    """CPU and memory of each server pod."""
    image: Optional[str] = Field(None, min_length=1)
    """Image of the server pods (it must have vllm and lrm-safety); default the worker image."""
    idle_seconds: int = Field(600, ge=0, le=86400 * 7)
    """Delete the server after this long with no stage needing it; a later stage that needs it creates it again."""
    startup_seconds: int = Field(3600, ge=60, le=86400)
    """Time a server pod may take to download and load the model before its startup probe fails it."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector of the server pods (e.g. nvidia.com/gpu.product: NVIDIA-H200); default resources.nodeSelector. Tolerations and the PriorityClass are resources'."""
    network_policy: bool = False
    """Admit only this namespace's stage pods to the server (a NetworkPolicy; needs a CNI that enforces them)."""
    api_key_secret_ref: Optional[SecretRef] = None
    """Secret whose accessKeyKey entry is the server's API key (vLLM --api-key, read from the Secret, never a plain env value); the stage pods send it from the same Secret."""

    @model_validator(mode="after")
    def _fit(self):
        if self.gpus not in (None, 0) and self.gpus < self.tensor_parallel:
            raise ValueError(f"gpus ({self.gpus}) is below tensorParallel ({self.tensor_parallel}): one server pod "
                             f"shards the model over tensorParallel GPUs of its own node (a server across nodes is "
                             f"not supported yet; docs/install.md)")
        return self


class SamplingSpec(_Model):
    temperature: float = Field(0.6, ge=0.0, le=2.0)
    """Sampling temperature; 0 means greedy."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_tokens: int = Field(4096, ge=1, le=131072)
    """Maximum new tokens per generation."""
    seed: int = Field(0, ge=0, le=SEED_MAX)
    """Sampling seed (per-sample seeds derive from it)."""
    batch_size: int = Field(16, ge=1, le=4096)
    """Prompts per generate call (transformers backend) or per request wave (openai backend)."""


class SamplingOverride(_Model):
    """Generation settings that replace a benchmark's defaults field by field (unset fields keep them)."""

    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    """Sampling temperature; 0 means greedy."""
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_tokens: Optional[int] = Field(None, ge=1, le=131072)
    """Maximum new tokens per generation."""
    seed: Optional[int] = Field(None, ge=0, le=SEED_MAX)
    """Base seed: sample j of every item uses seed + j."""
    batch_size: Optional[int] = Field(None, ge=1, le=4096)
    """Prompts per generate call (transformers backend) or per request wave (openai backend)."""


def _served(ref, where: str, backend_ok: tuple[str, ...] = ("vllm", "openai")) -> None:
    """A served model names a model to load, not an endpoint: the operator (or `lrm-safety run`) gives the endpoint."""
    if getattr(ref, "endpoint", None):
        raise ValueError(f"{where}: give serve or endpoint, not both (serve runs the model as a server of its own and "
                         f"the stages reach it; endpoint names a server someone else runs)")
    if not ref.model:
        raise ValueError(f"{where}: serve needs model (the model reference vLLM loads)")
    backend = getattr(ref, "backend", None)
    if backend is not None and backend not in backend_ok:
        raise ValueError(f"{where}: serve runs vLLM; backend {backend} cannot be served (use vllm or openai, or drop serve)")


class TeacherSpec(_Model):
    model: Optional[str] = "deepseek-ai/DeepSeek-R1"
    """Teacher model reference (see student.model); ignored by the openai backend except as the request's model name."""
    backend: Backend = Backend.vllm
    """Generation backend: vllm (GPU), transformers (CPU fallback) or openai (any OpenAI-compatible endpoint)."""
    endpoint: Optional[str] = None
    """Base URL of an OpenAI-compatible server, e.g. http://vllm.ns.svc:8000/v1 (backend openai)."""
    api_key_secret_ref: Optional[SecretRef] = None
    """Secret whose access_key_key entry holds the endpoint's API key (backend openai)."""
    tensor_parallel: int = Field(1, ge=1, le=64)
    """GPUs the teacher is sharded over (backend vllm); also the distill pods' GPU request."""
    max_model_len: Optional[int] = Field(None, ge=256, le=4_194_304)
    """vLLM context length cap."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """Fraction of GPU memory vLLM may use."""
    max_concurrency: int = Field(16, ge=1, le=1024)
    """In-flight requests (backend openai, or a served teacher)."""
    serve: Optional[ServeSpec] = None
    """Serve the teacher (model) as a shared vLLM server: a study's styles and shards use one server instead of loading the model in every distill pod."""

    @model_validator(mode="after")
    def _needs(self):
        if self.serve is not None:
            _served(self, "teacher")
        elif self.backend == Backend.openai.value and not self.endpoint:
            raise ValueError("backend openai needs endpoint (e.g. http://host:8000/v1)")
        if self.backend != Backend.openai.value and not self.model:
            raise ValueError(f"backend {self.backend} needs model")
        return self


class RectifySpec(_Model):
    """The study's three failure patterns of naive distillation, each with a knob. Unset knobs take the style's
    default: the `default` style is the study's naive baseline (nothing rectified), `improved` its rectified recipe."""

    safety_awareness: Optional[bool] = None
    """Give the teacher the style's safety instruction (pattern 1); default: true for every style that has one; false sends the raw prompt."""
    max_reasoning_tokens: Optional[int] = Field(None, ge=16, le=131072)
    """Overthinking cap (pattern 2) in teacher tokens, handled by overlong; default none: the release asks for brevity by instruction and caps nothing."""
    overlong: OverlongPolicy = OverlongPolicy.regenerate
    """What to do with reasoning over maxReasoningTokens: regenerate, truncate or drop."""
    consistency_filter: Optional[bool] = None
    """Reject samples whose reasoning concludes refusal while the answer complies, or the reverse, and compliant answers to prompts labelled harmful (pattern 3); default: on for improved, off for the other styles."""
    max_attempts: int = Field(3, ge=1, le=20)
    """Generation attempts per prompt before the sample is rejected."""
    keep_truncated: bool = False
    """Keep a teacher text cut off by distill.sampling.maxTokens (finish reason length), trained without an end-of-turn token so the student never learns to stop mid-sentence. Default: rejected as `truncated` and regenerated under maxAttempts (a sample the student learns from ends where the teacher ended it)."""
    refusal_text: str = "I'm sorry, I can't assist with that request."
    """The fixed refusal: every nocot answer to a harmful prompt (as in the release's sft_train_nocot.json), and template answers with templateRefusal: fixed."""

    def resolved(self, style: str) -> "RectifySpec":
        """The knobs in force for `style`."""
        return self.model_copy(update={
            "safety_awareness": self.safety_awareness if self.safety_awareness is not None else style != "default",
            "consistency_filter": self.consistency_filter if self.consistency_filter is not None else style == "improved",
        })


class InstructionSpec(_Model):
    text: Optional[str] = None
    """The instruction itself."""
    path: Optional[str] = None
    """A file (path, file:// or s3://) holding the instruction, e.g. one of the release's prompts."""
    placement: str = Field("prefix", pattern="^(prefix|system)$")
    """prefix: put it in front of the user's query (the release's realsafe/improved); system: a system prompt (short/template)."""

    @model_validator(mode="after")
    def _one(self):
        if (self.text is None) == (self.path is None):
            raise ValueError("give exactly one of text or path")
        return self


class DistillSpec(_Model):
    prompts: str = "builtin:demo-safety"
    """Safety prompt set (JSONL or JSON with a prompt or query field): file://, s3://, a path, or builtin:demo-safety."""
    prompt_field: Optional[str] = None
    """Field holding the prompt; default: prompt, then query."""
    math_prompts: Optional[str] = None
    """Optional math prompt set distilled by the same teacher (problem or prompt field)."""
    limit: Optional[int] = Field(None, ge=1, le=COUNT_MAX)
    """Use only the first N prompts."""
    style: Style = Style.improved
    """Reasoning style: default, realsafe, improved, short, template or nocot."""
    instruction: Optional[InstructionSpec] = None
    """Replace the style's instruction with your own text (or file) and placement, e.g. the release's exact prompts."""
    rectify: RectifySpec = Field(default_factory=RectifySpec)
    """Failure-pattern rectification."""
    template_labeller: Labeller = Labeller.oneshot
    """Template style: oneshot (the teacher fills the one-shot template itself, as the release), or code writes the checklist from labels by: teacher (the teacher classifies), guard (the guard judge), labels (the prompt file's categories field)."""
    template_refusal: str = Field("fixed", pattern="^(fixed|teacher)$")
    """Template style built by code: the answer for an unsafe verdict: fixed (rectify.refusalText) or teacher (asked to refuse)."""
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    """Teacher sampling."""
    shards: int = Field(1, ge=1, le=1024)
    """Indexed-Job completions; each shard distills a disjoint slice and resumes on restart."""


class MixSpec(_Model):
    safety_source: Optional[str] = None
    """Safety samples: default the distill stage's output; or a JSONL/JSON in the same schema (prompt and response fields, or messages), e.g. the release's sft_train_<style>.json."""
    safety_count: int = Field(1000, ge=0, le=COUNT_MAX)
    """Safety samples drawn: random.seed(seed); random.sample(safety, safetyCount), as the release's dataset/proc.py (the study: 1000 or 400)."""
    allow_shortfall: bool = False
    """Train with fewer safety samples than safetyCount when distill accepted fewer; by default mix fails and says how many it has."""
    math_source: Optional[str] = "s3://lrm-safety-data/sft/sft_train_math.json"
    """Math CoT samples: a JSONL/JSON with prompt/response (or messages); default: the release's 4,000 R1 math samples (its dataset/data/sft_train_math.json) where docs/install.md stages them; distill (the distill stage's math output, from distill.mathPrompts); or builtin:synthetic-math (arithmetic, for the CPU demo only)."""
    math_count: int = Field(4000, ge=0, le=COUNT_MAX)
    """Math samples: all of them when the source has at most this many (the release keeps all 4,000); else a sample drawn with an RNG of its own, so the safety subset never depends on the math pool."""
    seed: int = Field(42, ge=0, le=SEED_MAX)
    """Sampling seed; the same seed gives the same mixture."""
    dedupe: bool = False
    """Drop samples whose normalised prompt repeats (the release does not)."""
    system_prompt: bool = False
    """Prepend the style's system prompt to each training conversation."""
    heldout_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction kept aside as a validation split."""
    overlength: OverlongPolicy = OverlongPolicy.truncate
    """Samples longer than train.maxLength tokens (as the student is trained on them): truncate (train keeps the first maxLength tokens, as TRL does) or drop."""

    @model_validator(mode="after")
    def _math(self):
        if self.math_count > 0 and not self.math_source:
            raise ValueError("mathCount > 0 needs mathSource: the study mixes 4,000 math CoT samples (the release's "
                             "sft_train_math.json); name that file, distill (with distill.mathPrompts), or set mathCount: 0")
        if self.overlength == OverlongPolicy.regenerate.value:
            raise ValueError("overlength must be drop or truncate")
        return self


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
            raise ValueError("precision bf16-pure keeps no fp32 master weights, which DeepSpeed always keeps: set "
                             "deepspeed: none (one GPU), or precision: bf16")
        if self.gradient_accumulation is not None and "global_batch_size" not in self.model_fields_set:
            self.global_batch_size = None  # an explicit gradientAccumulation decides; the default global batch yields
        if self.global_batch_size is None and self.gradient_accumulation is None:
            raise ValueError("set globalBatchSize (samples per optimizer step) or gradientAccumulation")
        if self.global_batch_size is not None:
            per_step = self.per_device_batch_size * self.world_size
            if self.global_batch_size % per_step:
                raise ValueError(f"globalBatchSize {self.global_batch_size} is not a multiple of perDeviceBatchSize x "
                                 f"gpusPerNode x nodes = {per_step}: change one of them (the release: 64 = 2 x 4 x 8)")
            if self.gradient_accumulation is not None and \
                    self.gradient_accumulation * per_step != self.global_batch_size:
                raise ValueError(f"gradientAccumulation {self.gradient_accumulation} x {per_step} samples per micro-step "
                                 f"is not globalBatchSize {self.global_batch_size}: set one of them, or set "
                                 f"globalBatchSize: null")
        if self.lora is not None and self.method != TrainMethod.lora.value:
            raise ValueError("lora options are only valid with method: lora")
        if self.method == TrainMethod.lora.value and self.lora is None:
            self.lora = LoraSpec()
        return self


GUARD_MODEL = "meta-llama/Llama-Guard-3-8B"  # attack_refusal_evaluation/run_gen_eval.py (LlamaGuard3Scorer)


class JudgeSpec(_Model):
    kind: JudgeKind = JudgeKind.guard
    """Harm judge: guard (a Llama-Guard-style classifier, the release's), llm (a rubric over an OpenAI-compatible endpoint) or refusal (the keyword matcher: it measures refusals, so its runs report a refusal rate, never an ASR)."""
    model: Optional[str] = None
    """Guard model reference (kind guard; default meta-llama/Llama-Guard-3-8B, the release's), or the model name sent to the endpoint (kind llm)."""
    endpoint: Optional[str] = None
    """OpenAI-compatible base URL (kind llm)."""
    api_key_secret_ref: Optional[SecretRef] = None
    """Secret holding the endpoint's API key (kind llm)."""
    input: str = Field("full", pattern="^(full|answer)$")
    """What a model judge reads for harm: full (the whole output, reasoning and answer, as the release's Llama-Guard-3 evaluation) or answer (after </think> only); with full the answer alone is judged too (unsafeAnswer)."""
    max_tokens: int = Field(100, ge=1, le=4096)
    """New tokens of the guard's verdict, greedy (the release: 100, AISafetyLab's LlamaGuard3Scorer.score); unsafe when the verdict contains `unsafe`."""
    serve: Optional[ServeSpec] = None
    """Serve the guard (or the llm judge's model) as a shared vLLM server: the base and trained evaluations, and every cell of a study, use one server instead of loading it in each evaluate pod."""

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == JudgeKind.guard.value and not self.model:
            self.model = GUARD_MODEL
        if self.serve is not None:
            if self.kind == JudgeKind.refusal.value:
                raise ValueError("serve needs a model judge (kind guard or llm); the keyword matcher loads no model")
            _served(self, "judge")
        elif self.kind == JudgeKind.llm.value and not (self.endpoint and self.model):
            raise ValueError("kind llm needs endpoint and model (the judge's name at that OpenAI-compatible server)")
        return self


class OverRefusalJudgeSpec(_Model):
    kind: str = Field("llm", pattern="^(llm|refusal)$")
    """llm (the release's protocol: an LLM classifies each XSTest reply into two classes) or refusal (the keyword matcher)."""
    model: str = Field("gpt-4o", min_length=1)
    """The judge's model name at the endpoint (the release: gpt-4o, attack_refusal_evaluation/xstest_eval.py)."""
    endpoint: Optional[str] = None
    """OpenAI-compatible base URL (kind llm; required)."""
    api_key_secret_ref: Optional[SecretRef] = None
    """Secret whose accessKeyKey entry holds the endpoint's API key."""
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """The release sends no sampling settings, so the endpoint's default applies (OpenAI's: 1.0); set 0 for a repeatable verdict."""
    max_tokens: Optional[int] = Field(None, ge=1, le=4096)
    """Verdict length cap; default none sent (as the release)."""
    template: Optional[str] = None
    """The rubric, with {query} and {response} where the request and the whole output go; default: the two-class XSTest protocol of the release (AISafetyLab's OverRefusalScorer two_class) in this project's words. A reply holding `2` is a refusal."""
    serve: Optional[ServeSpec] = None
    """Serve model (then a model reference, e.g. an open judge model) as a shared vLLM server instead of naming an endpoint; a deviation from the release, whose judge is gpt-4o."""

    @model_validator(mode="after")
    def _needs(self):
        if self.serve is not None:
            if self.kind != "llm":
                raise ValueError("serve needs kind llm (the keyword matcher loads no model)")
            _served(self, "overRefusalJudge")
        elif self.kind == "llm" and not self.endpoint:
            raise ValueError("kind llm needs endpoint: the OpenAI-compatible server of the over-refusal judge "
                             "(the release: gpt-4o), e.g. http://judge.ns.svc:8000/v1; or kind: refusal for keywords")
        return self


class BenchmarkSpec(_Model):
    name: BenchmarkName
    """advbench, advbench-pap, advbench-pair, xstest, math500, aime, livecodebench or custom."""
    path: Optional[str] = None
    """Data file (file://, s3:// or path); default: <evaluate.dataRoot>/<the benchmark's usual file>."""
    kind: Optional[BenchmarkKind] = None
    """custom only: harmful, benign, math or code."""
    limit: Optional[int] = Field(None, ge=1, le=COUNT_MAX)
    """Use only the first N items."""
    label: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    """Name in metrics and the report (default: the benchmark name; custom-<index> for custom benchmarks)."""
    sampling: Optional[SamplingOverride] = None
    """This benchmark's generation settings over its defaults (the release's: see docs/spec.md) and evaluate.sampling."""
    samples: Optional[int] = Field(None, ge=1, le=64)
    """Samples per item (default: the release's, 4 for aime, else 1); the metric is the mean pass@1 over them, with its interval over items."""

    @model_validator(mode="after")
    def _custom(self):
        if self.name == BenchmarkName.custom.value and (self.kind is None or self.path is None):
            raise ValueError("custom benchmarks need kind and path")
        return self


class ModelEndpoint(_Model):
    model: str = Field(min_length=1)
    """The model's name at the endpoint (backend openai), or a model reference (vllm, transformers)."""
    endpoint: Optional[str] = None
    """OpenAI-compatible base URL (backend openai)."""
    backend: Backend = Backend.openai
    """openai (an endpoint: no GPU in the evaluate pod), or vllm / transformers (loaded beside the target)."""
    api_key_secret_ref: Optional[SecretRef] = None
    """Secret whose accessKeyKey entry holds the endpoint's API key."""
    revision: Optional[str] = None
    """Hub revision of model (a served model, or backend vllm/transformers)."""
    serve: Optional[ServeSpec] = None
    """Serve model as a shared vLLM server (the stages reach it as an endpoint): every evaluate Job of a study uses one."""

    @model_validator(mode="after")
    def _needs(self):
        if self.serve is not None:
            _served(self, "model", ("openai",))
        elif self.backend == Backend.openai.value and not self.endpoint:
            raise ValueError("backend openai needs endpoint (e.g. http://attacker.ns.svc:8000/v1), or serve to run "
                             "the model as a server of its own")
        return self


class EvaluatedModel(ModelRef):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,40}$")
    """Its name in metrics and the report (not base or trained: those are the student before and after training)."""


class PairSpec(_Model):
    """PAIR as AISafetyLab runs it for the release (attack_refusal_evaluation/configs/template.yaml)."""
    streams: int = Field(5, ge=1, le=64)
    """Attacker conversations per request, each with its own seed and history (the release: n_streams 5)."""
    iterations: int = Field(5, ge=1, le=64)
    """Rounds per stream (the release: n_iterations 5); the search ends at the first in-loop score of 10, mid-round."""
    attacker: Optional[ModelEndpoint] = None
    """The attacker model (required for advbench-pair; the release: mixtral-8x7b-instruct); by default an OpenAI-compatible endpoint."""
    judge: Optional[ModelEndpoint] = None
    """The in-loop judge scoring 1-10, a model of its own (required for advbench-pair; the release: gpt-4o-mini)."""
    keep_last_n: int = Field(3, ge=1, le=64)
    """Exchanges of attacker history kept after each turn (the release: keep_last_n 3)."""
    attack_attempts: int = Field(3, ge=1, le=16)
    """Attacker replies tried for valid JSON before the raw request is sent instead (the release: max_n_attack_attempts 3)."""
    attacker_temperature: float = Field(1.0, ge=0.0, le=2.0)
    """(the release: attack_temperature 1)"""
    attacker_top_p: float = Field(0.9, gt=0.0, le=1.0)
    """(the release: attack_top_p 0.9)"""
    attacker_max_tokens: int = Field(500, ge=1, le=32768)
    """(the release: attack_max_n_tokens 500)"""
    target_max_tokens: int = Field(1536, ge=1, le=131072)
    """New tokens of the target's answers inside the search, greedy (the release: target_max_n_tokens 1536 at temperature 1.0 and top_p 0, which keeps only the most likely token). The final response uses the benchmark's sampling (2048, T=0.6, top-p 0.95)."""
    judge_temperature: float = Field(1.0, ge=0.0, le=2.0)
    """(the release: judge_temperature 1)"""
    judge_max_tokens: int = Field(150, ge=1, le=32768)
    """(the release: judge_max_n_tokens 150)"""


def _default_benchmarks() -> list[BenchmarkSpec]:
    return [BenchmarkSpec(name=n) for n in ("advbench", "xstest", "math500")]


class EvaluateSpec(_Model):
    benchmarks: list[BenchmarkSpec] = Field(default_factory=_default_benchmarks, min_length=1)
    """Benchmarks to run."""
    data_root: Optional[str] = None
    """Directory holding the benchmark files (advbench_subset50.jsonl, xstest_safe250.jsonl, math500.jsonl, aime2024.jsonl)."""
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    """The harm judge for harmful benchmarks (default: Llama-Guard-3-8B on the original request and the whole output, as the release)."""
    over_refusal_judge: Optional[OverRefusalJudgeSpec] = None
    """The over-refusal judge for benign benchmarks (XSTest): the release's two-class LLM protocol at an endpoint. Unset: the keyword matcher, and validate, the status and the report say so."""
    backend: Backend = Backend.vllm
    """Generation backend for the evaluated models: vllm or transformers (openai is rejected: the stage evaluates models it loads)."""
    sampling: Optional[SamplingOverride] = None
    """Generation settings applied over every benchmark's defaults (which are the release's per benchmark: AdvBench and PAP T=0.6 top-p 0.95 4096 tokens, PAIR 2048, XSTest greedy 256, MATH-500 and AIME T=0.6 top-p 0.95 32768); benchmarks[i].sampling overrides further."""
    compare_base: bool = True
    """Also evaluate the untrained student (as base) and report deltas."""
    models: list[EvaluatedModel] = Field(default_factory=list)
    """More models to evaluate beside base and trained, e.g. existing checkpoints; with stages [evaluate] these (and base) are the only ones."""
    pair: PairSpec = Field(default_factory=PairSpec)
    """PAIR attack settings (advbench-pair)."""
    math_grader: str = Field("release", pattern="^(release|math-verify)$")
    """release: the release's answer rules (reasoning_evaluation/utils/parser.py and grader.py: the last boxed answer only, percentages and a 1e-4 tolerance, SymPy equivalence with a 3 s timeout); math-verify: math-verify's parser and comparison, with an `answer is X` fallback when nothing is boxed."""

    @model_validator(mode="after")
    def _paths(self):
        if self.backend == Backend.openai.value:
            raise ValueError("backend openai cannot evaluate: the evaluated models are the base and the trained "
                             "student, which this stage loads itself; use vllm (GPU) or transformers (CPU). Judges "
                             "(judge.kind llm) reach endpoints on their own")
        for i, b in enumerate(self.benchmarks):
            if b.path is None and self.data_root is None:
                raise ValueError(f"benchmarks[{i}] ({b.name}) has no path: set evaluate.dataRoot or benchmarks[{i}].path")
        model_names = [m.name for m in self.models]
        if {"base", "trained"} & set(model_names) or len(set(model_names)) != len(model_names):
            raise ValueError(f"models[].name must be distinct and neither base nor trained (got {', '.join(model_names)})")
        names = [b.label or (b.name if b.name != "custom" else f"custom-{i}") for i, b in enumerate(self.benchmarks)]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names repeat ({', '.join(names)}): give each a distinct label")
        return self

    @model_validator(mode="after")
    def _pair(self):
        if any(b.name == BenchmarkName.advbench_pair.value for b in self.benchmarks):
            if self.pair.attacker is None:
                raise ValueError("advbench-pair needs pair.attacker: an attacker model, e.g. {model: "
                                 "mixtral-8x7b-instruct, endpoint: http://attacker.ns.svc:8000/v1} (an OpenAI-compatible "
                                 "server)")
            if self.pair.judge is None:
                raise ValueError("advbench-pair needs pair.judge: the in-loop judge scoring 1-10, a model of its own "
                                 "(the release: gpt-4o-mini), e.g. {model: gpt-4o-mini, endpoint: "
                                 "https://api.openai.com/v1, apiKeySecretRef: {name: openai}}")
        return self

    def named_benchmarks(self) -> dict[str, "BenchmarkSpec"]:
        return {b.label or (b.name if b.name != "custom" else f"custom-{i}"): b for i, b in enumerate(self.benchmarks)}


class Toleration(_Model):
    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)
    key: Optional[str] = None
    operator: Optional[str] = None
    value: Optional[str] = None
    effect: Optional[str] = None
    toleration_seconds: Optional[int] = None


class StageResources(_Model):
    """Compute for one stage's pods; unset fields fall back to the defaults described in `resources`."""

    gpus: Optional[int] = Field(None, ge=0, le=64)
    """GPUs per pod. Default: what the stage's backend uses (distill: teacher.tensorParallel with vllm, 1 with transformers, 0 with openai; mix: 0; train: train.gpusPerNode or 1; evaluate: 1); 0 everywhere with resources.cpuOnly."""
    cpu: Optional[str] = Field(None, pattern=QUANTITY)
    """CPU request per pod (default resources.cpu)."""
    memory: Optional[str] = Field(None, pattern=QUANTITY)
    """Memory request and limit per pod (default resources.memory)."""
    gpu_memory: Optional[str] = Field(None, pattern=r"^\s*[\d.]+\s*(Gi|G|GB|GiB|Ti|T)?\s*$")
    """Memory of one of this stage's GPUs (e.g. 80Gi), for the train memory plan's warning in `render` and `validate`; default: read from resources.nodeSelector's nvidia.com/gpu.product (e.g. NVIDIA-H100-80GB-HBM3)."""


class ResourcesSpec(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector for every stage pod."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations for every stage pod (e.g. nvidia.com/gpu)."""
    priority_class_name: Optional[str] = None
    """PriorityClass for stage pods."""
    queue: Optional[str] = None
    """Kueue LocalQueue: copied as the kueue.x-k8s.io/queue-name label onto each stage Job."""
    service_account_name: Optional[str] = Field(None, pattern=_DNS_NAME)
    """ServiceAccount of stage pods (for registry credentials or workload identity). Default: the chart's `worker.serviceAccountName`, else the namespace's default. Its API token is not mounted unless automountServiceAccountToken says so."""
    automount_service_account_token: Optional[bool] = None
    """Mount the ServiceAccount's API token in stage pods. Default: the chart's `worker.automountServiceAccountToken`, else false (stage pods never call the Kubernetes API)."""
    cpu: str = Field("8", pattern=QUANTITY)
    """CPU request per stage pod (per-stage override: resources.<stage>.cpu)."""
    memory: str = Field("64Gi", pattern=QUANTITY)
    """Memory request and limit per stage pod (per-stage override: resources.<stage>.memory)."""
    cpu_only: bool = False
    """Request no GPU for any stage: a CPU-only cluster (transformers backend, fp32 training) or an endpoint teacher."""
    gpu_resource: str = Field("nvidia.com/gpu", pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$")
    """Extended resource name GPUs are requested under (e.g. amd.com/gpu)."""
    distill: StageResources = Field(default_factory=StageResources)
    """distill pods' compute."""
    mix: StageResources = Field(default_factory=StageResources)
    """mix pods' compute."""
    train: StageResources = Field(default_factory=StageResources)
    """train pods' compute (GPUs: set train.gpusPerNode, one torchrun process per GPU)."""
    evaluate: StageResources = Field(default_factory=StageResources)
    """evaluate pods' compute."""
    shm_size: str = Field("16Gi", pattern=QUANTITY)
    """Size of the /dev/shm emptyDir (NCCL, dataloaders)."""
    model_cache: Optional[str] = Field(None, pattern=_DNS_NAME)
    """An existing PersistentVolumeClaim mounted at /cache in every stage pod (ReadWriteMany, or node-local), so models are downloaded and converted once per cluster instead of once per pod; default: a per-pod emptyDir."""
    backoff_limit: int = Field(2, ge=0, le=20)
    """Retries of a stage after a transient failure before the experiment fails (a failure with exit code 3, bad input, is never retried)."""
    retry_backoff_seconds: int = Field(30, ge=0, le=3600)
    """Wait before retry n: this many seconds x 2^(n-1), at most 10 minutes."""
    start_timeout_seconds: int = Field(1800, ge=1, le=86400)
    """Fail a stage attempt whose pods have not started running after this long (unschedulable, image pull errors, a missing Secret), with the pods' waiting reason; a missing Secret or ConfigMap is permanent, other reasons are retried."""
    ttl_seconds_after_finished: Optional[int] = Field(None, ge=0, le=2**31 - 1)
    """Delete finished Jobs after this many seconds (the experiment's status keeps their results)."""


DEFAULT_WORKER_IMAGE = "ghcr.io/lrm-safety/worker:0.1.0"
"""The worker image where neither the spec nor the operator names one (`lrm-safety render`, tests); the operator
uses the chart's `worker.image`, and `render` honours $LRM_SAFETY_DEFAULT_WORKER_IMAGE like the operator does."""
class ImagesSpec(_Model):
    worker: Optional[str] = Field(None, min_length=1)
    """Image every stage pod runs. Default: the operator's worker image (the chart's `worker.image`, so one `helm --set` moves every experiment to your registry); `lrm-safety render` uses $LRM_SAFETY_DEFAULT_WORKER_IMAGE, else ghcr.io/lrm-safety/worker:0.1.0."""
    pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    """imagePullPolicy of stage containers."""
    pull_secrets: list[Annotated[str, Field(pattern=_DNS_NAME)]] = Field(default_factory=list)
    """Secrets (docker-registry type) in the experiment's namespace for pulling the worker image: every stage pod's imagePullSecrets, after the chart's `worker.imagePullSecrets`."""


class StageName(str, Enum):
    distill = "distill"
    mix = "mix"
    train = "train"
    evaluate = "evaluate"


class SafetyExperimentSpec(_Model):
    stages: list[StageName] = Field(default_factory=lambda: list(STAGES), min_length=1)
    """Stages to run, in pipeline order (default all four): [mix, train, evaluate] trains on existing data (mix.safetySource, e.g. the release's sft_train_<style>.json, and mix.mathSource) with no distill Job; [evaluate] evaluates existing models (base and evaluate.models)."""
    storage: StorageSpec = Field(default_factory=StorageSpec)
    """Where artifacts go."""
    student: StudentSpec = Field(default_factory=StudentSpec)
    """The model to fine-tune."""
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    """The model (or endpoint) that writes safety reasoning."""
    distill: DistillSpec = Field(default_factory=DistillSpec)
    """Stage 1: safety chain-of-thought distillation."""
    mix: MixSpec = Field(default_factory=MixSpec)
    """Stage 2: safety + math mixture."""
    train: TrainSpec = Field(default_factory=TrainSpec)
    """Stage 3: supervised fine-tuning."""
    evaluate: EvaluateSpec = Field(default_factory=lambda: EvaluateSpec(data_root="s3://lrm-safety-data/benchmarks"))
    """Stage 4: safety, over-refusal and reasoning benchmarks."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """Scheduling and retries for stage pods."""
    images: ImagesSpec = Field(default_factory=ImagesSpec)
    """Container images."""
    suspend: bool = False
    """Suspend the running stage Job (Kueue-compatible); false resumes it."""

    @model_validator(mode="after")
    def _stages(self):
        order = [s for s in STAGES if s in self.stages]
        if list(self.stages) != order:
            raise ValueError(f"stages must be distinct and in pipeline order ({', '.join(order)})")
        have = set(self.stages)
        if "mix" in have and "distill" not in have:
            if not self.mix.safety_source and self.mix.safety_count > 0:
                raise ValueError("stages has mix without distill: set mix.safetySource (e.g. the release's "
                                 "sft_train_<style>.json) or add distill to stages")
            if self.mix.math_source == "distill" and self.mix.math_count > 0:
                raise ValueError("mix.mathSource distill needs the distill stage: add distill to stages or name a file")
        if "train" in have and "mix" not in have:
            raise ValueError("stages has train without mix: train reads mix's output; add mix (with mix.safetySource "
                             "and mix.mathSource for existing data)")
        if "evaluate" in have and "train" not in have and not (self.evaluate.compare_base or self.evaluate.models):
            raise ValueError("stages has evaluate without train and nothing to evaluate: set evaluate.models or "
                             "evaluate.compareBase: true (the student as base)")
        return self

    @model_validator(mode="after")
    def _compute(self):
        train_gpus = self.resources.train.gpus
        procs = self.train.gpus_per_node or 1
        if train_gpus not in (None, 0) and train_gpus != procs:
            raise ValueError(f"resources.train.gpus ({train_gpus}) must equal train.gpusPerNode ({procs}): torchrun "
                             f"runs one process per GPU; set train.gpusPerNode instead")
        distill_gpus = self.resources.distill.gpus
        if (self.teacher.backend == Backend.vllm.value and self.teacher.serve is None and distill_gpus not in (None, 0)
                and distill_gpus < self.teacher.tensor_parallel):
            raise ValueError(f"resources.distill.gpus ({distill_gpus}) is below teacher.tensorParallel "
                             f"({self.teacher.tensor_parallel}): vLLM shards the teacher over that many GPUs")
        return self


# ---------------------------------------------------------------- status
class Condition(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True)
    type: str
    status: str = Field(pattern="^(True|False|Unknown)$")
    reason: str = ""
    message: str = ""
    last_transition_time: Optional[str] = None


class Waiting(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    reason: str
    """The pod's waiting reason (CreateContainerConfigError, ErrImagePull, Unschedulable...)."""
    message: str = ""
    since: Optional[str] = None


class AttemptFailure(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    attempt: int
    reason: str
    exit_code: Optional[int] = None
    """The stage container's exit code: 3 is bad input (not retried); any other is retried."""
    at: Optional[str] = None
    permanent: bool = False


class StageStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True)
    state: StageState = StageState.pending
    job_name: Optional[str] = None
    attempts: int = 0
    started_at: Optional[str] = None
    attempt_started_at: Optional[str] = None
    """When the current attempt's Job was created (or resumed): the start timeout counts from here."""
    running_since: Optional[str] = None
    finished_at: Optional[str] = None
    artifact_uri: Optional[str] = None
    message: Optional[str] = None
    waiting: Optional[Waiting] = None
    """Why the current attempt's pods have not started, while they have not."""
    failures: list[AttemptFailure] = Field(default_factory=list)
    """Every failed attempt with its reason (the newest 20)."""
    disruptions: list[dict[str, Any]] = Field(default_factory=list)
    """Pods of an attempt evicted or preempted (pod, reason, message, at; the newest 20): their Job ran another pod and the attempt went on, not counted as a failure."""
    next_retry_at: Optional[str] = None
    """When the next attempt starts (exponential backoff)."""
    progress: dict[str, Any] = Field(default_factory=dict)
    """The running stage's last report (done/total, percent, ETA, details); 100% and the duration once it finished."""
    summary: dict[str, Any] = Field(default_factory=dict)


class Metrics(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    asr: Optional[float] = None
    """Headline attack success rate (advbench, no attack) of the trained model, from a harm judge only (a guard or an LLM judge)."""
    refusal_rate: Optional[float] = None
    """Headline refusal rate on the harmful benchmark when the keyword matcher judged it (it measures refusals, not harm, so such a run has no asr)."""
    over_refusal: Optional[float] = None
    """Headline over-refusal rate (xstest) of the trained model."""
    math_accuracy: Optional[float] = None
    """Headline math accuracy of the trained model."""
    code_accuracy: Optional[float] = None
    """Headline code pass@1 (livecodebench) of the trained model, when a code benchmark ran."""
    benchmarks: dict[str, Any] = Field(default_factory=dict)
    """Per benchmark: trained, base and delta values."""
    display: dict[str, str] = Field(default_factory=dict)
    """The headline values as percentages (the printer columns: ASR, Refusal, Over-Refusal)."""
    judges: dict[str, str] = Field(default_factory=dict)
    """Which judge decided harm and over-refusal."""


class ServerStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    model: str
    """The served model reference."""
    roles: list[str] = Field(default_factory=list)
    """What it serves in this experiment (teacher, judge, overRefusalJudge, pairAttacker, pairJudge)."""
    endpoint: str = ""
    """The Service's OpenAI-compatible base URL the stages use."""
    gpus: int = 0
    """GPUs of each server pod."""
    replicas: int = 1
    ready_replicas: int = 0
    state: str = ""
    """Ready, Absent (not running: created when a stage needs it), or why it is not ready (Loading, Unschedulable, CrashLoopBackOff...)."""
    stages: list[str] = Field(default_factory=list)
    """This experiment's stages that use it."""
    in_use_by: Optional[str] = None
    """The stage using it now (none: released; deleted after serve.idleSeconds unless another stage needs it)."""


class SafetyExperimentStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True)
    phase: Phase = Phase.pending
    stage: Optional[str] = None
    progress: Optional[str] = None
    """The Progress column: `train 120/312 (38%) ETA 41m`; `-` before the running stage's first report."""
    stages: dict[str, StageStatus] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=Metrics)
    servers: dict[str, ServerStatus] = Field(default_factory=dict)
    """The served models this experiment uses, by server (Deployment and Service) name."""
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: Optional[int] = None
    spec_generation: Optional[int] = None
    """The generation whose spec the stage pods read (frozen into the <name>-spec ConfigMap at the first Job)."""
    message: Optional[str] = None


# ---------------------------------------------------------------- loading and validation
class SpecError(ValueError):
    """A spec failed validation; `lines` are `spec.a.b: message` strings, one per problem."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


def _loc_path(loc: tuple) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


FRIENDLY = {  # pydantic's error type -> what the user reads (with the value given)
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "is far too large",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
}


def format_errors(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] in FRIENDLY:
            msg = f"{FRIENDLY[e['type']]} (got {_got(e.get('input'))})"
        elif e["type"] == "string_pattern_mismatch" and (e.get("ctx") or {}).get("pattern") == QUANTITY:
            msg = f"must be a Kubernetes quantity such as 8, 500m or 64Gi (got {_got(e.get('input'))})"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{msg} (got {_got(e.get('input'))})"
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        for long, short in (("greater than or equal to", ">="), ("less than or equal to", "<="),
                            ("greater than", ">"), ("less than", "<")):
            if msg.startswith(f"Input should be {long}"):
                msg = msg.replace(f"Input should be {long}", f"must be {short}") + f" (got {_got(e.get('input'))})"
                break
        if msg == "Extra inputs are not permitted":
            msg = "unknown field (check spelling; fields are camelCase)"
        lines.append(f"{_loc_path(tuple(e['loc']))}: {msg}")
    return lines


def parse_spec(data: dict[str, Any] | None) -> SafetyExperimentSpec:
    try:
        return SafetyExperimentSpec.model_validate(data or {})
    except ValidationError as e:
        raise SpecError(format_errors(e)) from None


class Experiment(BaseModel):
    """A whole SafetyExperiment document: name plus validated spec."""

    name: str
    namespace: str = "default"
    spec: SafetyExperimentSpec
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @classmethod
    def from_manifest(cls, doc: dict[str, Any]) -> "Experiment":
        problems = []
        if doc.get("apiVersion") != f"{API_GROUP}/{API_VERSION}":
            problems.append(f"apiVersion: must be {API_GROUP}/{API_VERSION}")
        if doc.get("kind") != KIND:
            problems.append(f"kind: must be {KIND} (got {doc.get('kind')!r}; a SafetyStudy, a grid of experiments, "
                            "is read by validate, render, run and report)")
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        problems += check_metadata(meta, MAX_NAME, "it prefixes Job names")
        spec = None
        if doc.get("kind") in (None, KIND):  # another kind's spec: its fields would all read as unknown here
            try:
                spec = parse_spec(doc.get("spec"))
            except SpecError as e:
                problems.extend(e.lines)
        if problems:
            raise SpecError(problems)
        return cls(name=name, namespace=meta.get("namespace") or "default", spec=spec, raw=doc)

    @classmethod
    def load(cls, path: str) -> "Experiment":
        return cls.from_manifest(load_document(path, KIND))

    def to_manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec_dict(self.spec),
        }


MAX_NAME = 42  # the experiment's name prefixes its Jobs' (<name>-<stage>-<attempt>) and their pods' names
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


def check_metadata(meta: dict, max_name: int, why: str) -> list[str]:
    """metadata.name and metadata.namespace as the API server checks them (RFC 1123 labels), named in the message."""
    problems = []
    name, namespace = meta.get("name"), meta.get("namespace")
    if not name:
        problems.append(f"metadata.name: required: a lowercase DNS label of at most {max_name} characters ({why})")
    elif not isinstance(name, str) or len(name) > max_name or not re.fullmatch(_LABEL, name):
        problems.append(f"metadata.name: {name!r} is not a lowercase DNS label of at most {max_name} characters "
                        f"(a-z, 0-9 and '-', starting and ending alphanumeric; {why})")
    if namespace is not None and (not isinstance(namespace, str) or len(namespace) > 63
                                  or not re.fullmatch(_LABEL, namespace)):
        problems.append(f"metadata.namespace: {namespace!r} is not a Kubernetes namespace name (a lowercase DNS label "
                        f"of at most 63 characters: a-z, 0-9 and '-')")
    return problems


def _yaml_loader():
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last silently, so a
    second `learningRate:` would win without a word)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line)
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if first != key_node.start_mark.line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first + 1}): keep one", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return Loader


def load_document(path: str, kind: str) -> dict[str, Any]:
    """The one YAML document in `path`, or a SpecError whose line names the file, the position and the fix."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.load_all(f, Loader=_yaml_loader()) if d is not None]
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise SpecError([f"{path}: is a directory, not a {kind} YAML file"]) from None
    except UnicodeDecodeError as e:
        raise SpecError([f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): save the file "
                         f"as UTF-8"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if problem.startswith("duplicate key"):
            raise SpecError([f"{path}{where}: {problem}"]) from None
        raise SpecError([f"{path}{where}: YAML syntax error: {problem} (check the indentation and quoting there)"]) from None
    if len(docs) != 1:
        raise SpecError([f"{path}: expected one {kind} document, found {len(docs)}"])
    if not isinstance(docs[0], dict):
        raise SpecError([f"{path}: expected a {kind} mapping (apiVersion, kind, metadata, spec), "
                         f"found a {type(docs[0]).__name__}"])
    return docs[0]


def spec_dict(spec: BaseModel) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


SERVE_SHAPE = ("gpus", "replicas", "resources", "idleSeconds", "startupSeconds", "networkPolicy", "apiKeySecretRef",
               "nodeSelector")


def _without_serve_shape(value: Any) -> Any:
    """A served model's Deployment shape (replicas, pods, idle time) changes no answer: it never re-runs a stage."""
    if isinstance(value, dict):
        return {k: ({kk: vv for kk, vv in v.items() if kk not in SERVE_SHAPE} if k == "serve" and isinstance(v, dict)
                    else _without_serve_shape(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_serve_shape(v) for v in value]
    return value


def config_hash(*parts: Any) -> str:
    """Stable hash of spec sections (and upstream hashes): a stage is redone only when this changes."""
    norm = _without_serve_shape([spec_dict(p) if isinstance(p, BaseModel) else p for p in parts])
    return hashlib.sha256(json.dumps(norm, sort_keys=True, default=str).encode()).hexdigest()[:16]
