"""Where artifacts go, what the stage pods run and on what: storage, images, compute, scheduling, retries."""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from lrm_safety.spec.base import _DNS_NAME, QUANTITY, SecretRef, _Model


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
