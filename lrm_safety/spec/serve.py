"""Model references, and `serve`: a model run as a shared vLLM server (student, teacher, and the served-model knobs)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from lrm_safety.spec.base import QUANTITY, Backend, SecretRef, _Model


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
            raise ValueError(
                f"gpus ({self.gpus}) is below tensorParallel ({self.tensor_parallel}): one server pod "
                f"shards the model over tensorParallel GPUs of its own node (a server across nodes is "
                f"not supported yet; docs/install.md)"
            )
        return self


def _served(ref, where: str, backend_ok: tuple[str, ...] = ("vllm", "openai")) -> None:
    """A served model names a model to load, not an endpoint: the operator (or `lrm-safety run`) gives the endpoint."""
    if getattr(ref, "endpoint", None):
        raise ValueError(
            f"{where}: give serve or endpoint, not both (serve runs the model as a server of its own and "
            f"the stages reach it; endpoint names a server someone else runs)"
        )
    if not ref.model:
        raise ValueError(f"{where}: serve needs model (the model reference vLLM loads)")
    backend = getattr(ref, "backend", None)
    if backend is not None and backend not in backend_ok:
        raise ValueError(
            f"{where}: serve runs vLLM; backend {backend} cannot be served (use vllm or openai, or drop serve)"
        )


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
