"""A whole SafetyExperiment: the spec of its sections, loading a document with errors that name the field, and the
config hashes stages are keyed by."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Optional

from pydantic import BaseModel, Field, ValidationError, model_validator

from lrm_safety.spec.base import API_GROUP, API_VERSION, KIND, QUANTITY, STAGES, Backend, StageName, _Model
from lrm_safety.spec.distill import DistillSpec, MixSpec
from lrm_safety.spec.evaluate import EvaluateSpec
from lrm_safety.spec.resources import ImagesSpec, ResourcesSpec, StorageSpec
from lrm_safety.spec.serve import StudentSpec, TeacherSpec
from lrm_safety.spec.train import TrainSpec


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
    prompts: str = Field("auto", pattern="^(auto|release|builtin)$")
    """Whose words the teacher, PAIR's attacker and judge, and the XSTest judge read. auto (default): the release's, verbatim, where `lrm-safety release import` wrote them (promptsFile, else <evaluate.dataRoot>/release-texts.json), else the project's own; release: the imported file must be there; builtin: the project's own wording."""
    prompts_file: Optional[str] = Field(None, min_length=1)
    """The import's file (a path, file:// or s3://); default <evaluate.dataRoot>/release-texts.json."""

    @model_validator(mode="after")
    def _stages(self):
        order = [s for s in STAGES if s in self.stages]
        if list(self.stages) != order:
            raise ValueError(f"stages must be distinct and in pipeline order ({', '.join(order)})")
        have = set(self.stages)
        if "mix" in have and "distill" not in have:
            if not self.mix.safety_source and self.mix.safety_count > 0:
                raise ValueError(
                    "stages has mix without distill: set mix.safetySource (e.g. the release's "
                    "sft_train_<style>.json) or add distill to stages"
                )
            if self.mix.math_source == "distill" and self.mix.math_count > 0:
                raise ValueError("mix.mathSource distill needs the distill stage: add distill to stages or name a file")
        if "train" in have and "mix" not in have:
            raise ValueError(
                "stages has train without mix: train reads mix's output; add mix (with mix.safetySource "
                "and mix.mathSource for existing data)"
            )
        if "evaluate" in have and "train" not in have and not (self.evaluate.compare_base or self.evaluate.models):
            raise ValueError(
                "stages has evaluate without train and nothing to evaluate: set evaluate.models or "
                "evaluate.compareBase: true (the student as base)"
            )
        return self

    @model_validator(mode="after")
    def _compute(self):
        train_gpus = self.resources.train.gpus
        procs = self.train.gpus_per_node or 1
        if train_gpus not in (None, 0) and train_gpus != procs:
            raise ValueError(
                f"resources.train.gpus ({train_gpus}) must equal train.gpusPerNode ({procs}): torchrun "
                f"runs one process per GPU; set train.gpusPerNode instead"
            )
        distill_gpus = self.resources.distill.gpus
        if (
            self.teacher.backend == Backend.vllm.value
            and self.teacher.serve is None
            and distill_gpus not in (None, 0)
            and distill_gpus < self.teacher.tensor_parallel
        ):
            raise ValueError(
                f"resources.distill.gpus ({distill_gpus}) is below teacher.tensorParallel "
                f"({self.teacher.tensor_parallel}): vLLM shards the teacher over that many GPUs"
            )
        return self


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
        for long, short in (
            ("greater than or equal to", ">="),
            ("less than or equal to", "<="),
            ("greater than", ">"),
            ("less than", "<"),
        ):
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
            problems.append(
                f"kind: must be {KIND} (got {doc.get('kind')!r}; a SafetyStudy, a grid of experiments, "
                "is read by validate, render, run and report)"
            )
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
        problems.append(
            f"metadata.name: {name!r} is not a lowercase DNS label of at most {max_name} characters "
            f"(a-z, 0-9 and '-', starting and ending alphanumeric; {why})"
        )
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not re.fullmatch(_LABEL, namespace)
    ):
        problems.append(
            f"metadata.namespace: {namespace!r} is not a Kubernetes namespace name (a lowercase DNS label "
            f"of at most 63 characters: a-z, 0-9 and '-')"
        )
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
                        None, None, f"duplicate key {key!r} (first at line {first + 1}): keep one", key_node.start_mark
                    )
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
        raise SpecError(
            [f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): save the file as UTF-8"]
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if problem.startswith("duplicate key"):
            raise SpecError([f"{path}{where}: {problem}"]) from None
        raise SpecError(
            [f"{path}{where}: YAML syntax error: {problem} (check the indentation and quoting there)"]
        ) from None
    if len(docs) != 1:
        raise SpecError([f"{path}: expected one {kind} document, found {len(docs)}"])
    if not isinstance(docs[0], dict):
        raise SpecError(
            [f"{path}: expected a {kind} mapping (apiVersion, kind, metadata, spec), found a {type(docs[0]).__name__}"]
        )
    return docs[0]


def spec_dict(spec: BaseModel) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


SERVE_SHAPE = (
    "gpus",
    "replicas",
    "resources",
    "idleSeconds",
    "startupSeconds",
    "networkPolicy",
    "apiKeySecretRef",
    "nodeSelector",
)


def _without_serve_shape(value: Any) -> Any:
    """A served model's Deployment shape (replicas, pods, idle time) changes no answer: it never re-runs a stage."""
    if isinstance(value, dict):
        return {
            k: (
                {kk: vv for kk, vv in v.items() if kk not in SERVE_SHAPE}
                if k == "serve" and isinstance(v, dict)
                else _without_serve_shape(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_serve_shape(v) for v in value]
    return value


def config_hash(*parts: Any) -> str:
    """Stable hash of spec sections (and upstream hashes): a stage is redone only when this changes."""
    norm = _without_serve_shape([spec_dict(p) if isinstance(p, BaseModel) else p for p in parts])
    return hashlib.sha256(json.dumps(norm, sort_keys=True, default=str).encode()).hexdigest()[:16]
