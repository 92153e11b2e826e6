"""Shared pieces of every spec section: the API's names, the base model (camelCase on the wire, unknown fields
rejected), the enums, Kubernetes quantities and the bounds that keep numbers within what their consumers accept."""

from __future__ import annotations

import re
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"  # a Kubernetes object name (RFC 1123 subdomain)


# A Kubernetes resource quantity (8, 500m, 64Gi, 1.5e9), as the API server parses one (k8s.io/apimachinery's
# resource.Quantity; the pattern kubebuilder writes into CRDs), without a sign: requests are never negative.
QUANTITY = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


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


class StageName(str, Enum):
    distill = "distill"
    mix = "mix"
    train = "train"
    evaluate = "evaluate"
