"""The spec, the one source of truth: pydantic models from which the CRD (crd.py), the docs table, validation
messages and the Job manifests derive. One module per section; this is the one import surface
(`from lrm_safety.spec import SafetyExperimentSpec, ...`)."""
from lrm_safety.spec.base import (QUANTITY, quantity_value, SEED_MAX, COUNT_MAX, API_GROUP, API_VERSION, KIND,
                                  PLURAL, STAGES, Style, Backend, Attack, JudgeKind, TrainMethod, DeepSpeedStage,
                                  Loss, Rendering, Precision, BenchmarkName, BenchmarkKind, Labeller, OverlongPolicy,
                                  Phase, StageState, SecretRef, StageName)
from lrm_safety.spec.serve import ModelRef, StudentSpec, ServeResources, ServeSpec, TeacherSpec
from lrm_safety.spec.distill import SamplingSpec, RectifySpec, InstructionSpec, DistillSpec, MixSpec
from lrm_safety.spec.train import EnvFromSecret, LoraSpec, TrainSpec
from lrm_safety.spec.evaluate import (SamplingOverride, GUARD_MODEL, JudgeSpec, OverRefusalJudgeSpec, BENCHMARK_DATA,
                                      BenchmarkSpec, ModelEndpoint, EvaluatedModel, PairSpec, EvaluateSpec)
from lrm_safety.spec.resources import (StorageSpec, Toleration, StageResources, ResourcesSpec, DEFAULT_WORKER_IMAGE,
                                       ImagesSpec)
from lrm_safety.spec.status import (Condition, Waiting, AttemptFailure, StageStatus, Metrics, ServerStatus,
                                    SafetyExperimentStatus)
from lrm_safety.spec.experiment import (SafetyExperimentSpec, SpecError, FRIENDLY, format_errors, parse_spec,
                                        Experiment, MAX_NAME, check_metadata, load_document, spec_dict, SERVE_SHAPE,
                                        config_hash)

__all__ = [
    "QUANTITY", "quantity_value", "SEED_MAX", "COUNT_MAX", "API_GROUP", "API_VERSION", "KIND", "PLURAL", "STAGES",
    "Style", "Backend", "Attack", "JudgeKind", "TrainMethod", "DeepSpeedStage", "Loss", "Rendering", "Precision",
    "BenchmarkName", "BenchmarkKind", "Labeller", "OverlongPolicy", "Phase", "StageState", "SecretRef", "StageName",
    "ModelRef", "StudentSpec", "ServeResources", "ServeSpec", "TeacherSpec", "SamplingSpec", "RectifySpec",
    "InstructionSpec", "DistillSpec", "MixSpec", "EnvFromSecret", "LoraSpec", "TrainSpec", "SamplingOverride",
    "GUARD_MODEL", "JudgeSpec", "OverRefusalJudgeSpec", "BENCHMARK_DATA", "BenchmarkSpec", "ModelEndpoint",
    "EvaluatedModel", "PairSpec", "EvaluateSpec", "StorageSpec", "Toleration", "StageResources", "ResourcesSpec",
    "DEFAULT_WORKER_IMAGE", "ImagesSpec", "Condition", "Waiting", "AttemptFailure", "StageStatus", "Metrics",
    "ServerStatus", "SafetyExperimentStatus", "SafetyExperimentSpec", "SpecError", "FRIENDLY", "format_errors",
    "parse_spec", "Experiment", "MAX_NAME", "check_metadata", "load_document", "spec_dict", "SERVE_SHAPE",
    "config_hash",
]
