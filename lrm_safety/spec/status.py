"""The status the operator writes: phase, per-stage state, metrics, servers, conditions."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from lrm_safety.spec.base import Phase, StageState, _Model


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
    """Which judge decided harm and over-refusal, and whose words (`words`: the release's by import, or the project's, with each text's hash) PAIR and the XSTest judge read."""


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
