"""SafetyStudy: a grid of SafetyExperiments (a base spec x axes), expanded here as a pure function.

The study's cells are ordinary SafetyExperiments with deterministic names, so a restarted operator, or a second
`lrm-safety run`, finds the cells it already made. With `baseline` (default) each distinct student is
evaluated once, untrained, by an evaluate-only experiment, and the cells skip compareBase: the base row of
the study's table is computed once per student instead of once per cell.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import Field, ValidationError, model_validator

from lrm_safety.spec.base import API_GROUP, API_VERSION, KIND, STAGES, _Model
from lrm_safety.spec.experiment import (
    SafetyExperimentSpec,
    SpecError,
    check_metadata,
    format_errors,
    load_document,
    parse_spec,
)

STUDY_KIND = "SafetyStudy"
STUDY_PLURAL = "safetystudies"
MAX_STUDY_NAME = 28  # cell names (<study>-<values>) stay within an experiment name's 42 characters
_PATH = r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$"


class Axis(_Model):
    path: str = Field(pattern=_PATH)
    """A spec field as written in YAML (camelCase, dotted), e.g. distill.style, student.model, mix.safetyCount."""
    name: Optional[str] = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9]{0,30}$")
    """The axis' name in cell labels, exclude/include and the report (default: the path's last part)."""
    values: list[Any] = Field(min_length=1)
    """Values the field takes, one cell per value (times the other axes)."""

    @property
    def label(self) -> str:
        return self.name or self.path.rsplit(".", 1)[-1]


class SafetyStudySpec(_Model):
    base: dict[str, Any] = Field(default_factory=dict)
    """The SafetyExperiment spec every cell starts from (see docs/spec.md); each cell sets its axes' fields on it."""
    axes: list[Axis] = Field(min_length=1)
    """The grid: every combination of the axes' values is a cell (the study: distill.style over six styles, students, mix.safetyCount 1000/400, mix.mathCount 0/4000)."""
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    """Cells to leave out: each entry maps axis names to values; a cell matching all of an entry's is dropped."""
    include: list[dict[str, Any]] = Field(default_factory=list)
    """Cells to add beyond the grid: each entry maps every axis name to a value."""
    max_parallel: int = Field(4, ge=1, le=1000)
    """Child experiments running at once; the rest wait their turn in grid order."""
    suspend: bool = False
    """Suspend every running cell (and start no new one); false resumes them."""
    baseline: bool = True
    """Evaluate each distinct student once, untrained, as the study's base row (an evaluate-only experiment named <study>-base...), and turn off evaluate.compareBase in the cells; false: every cell evaluates its base itself."""

    @model_validator(mode="after")
    def _names(self):
        labels = [a.label for a in self.axes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"axis names repeat ({', '.join(labels)}): give axes[].name")
        for where, entries in (("exclude", self.exclude), ("include", self.include)):
            for i, entry in enumerate(entries):
                unknown = set(entry) - set(labels)
                if unknown:
                    raise ValueError(
                        f"{where}[{i}] names {', '.join(sorted(unknown))}: not an axis (axes: {', '.join(labels)})"
                    )
                if where == "include" and set(entry) != set(labels):
                    raise ValueError(f"include[{i}] must give every axis a value ({', '.join(labels)})")
        return self


@dataclass
class Cell:
    name: str
    labels: dict[str, Any]  # axis name -> value, in axis order ({} for a base child)
    raw: dict[str, Any]  # the child's spec as YAML would say it
    spec: SafetyExperimentSpec
    role: str = "cell"  # cell, or base (the untrained student's evaluation)
    students: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return (
            "cells[" + ",".join(f"{k}={short(v)}" for k, v in self.labels.items()) + "]"
            if self.labels
            else f"base[{self.spec.student.model}]"
        )


def short(value: Any) -> str:
    """A value as cell labels show it: a model id's last part, a mapping's model or name."""
    if isinstance(value, dict):
        value = value.get("model") or value.get("name") or json.dumps(value, sort_keys=True)
    text = str(value)
    return text.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def _hash(obj: Any, n: int = 6) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def cell_name(study: str, labels: dict[str, Any]) -> str:
    """<study>-<values>, shortened with a hash of the values when longer than a name may be."""
    slug = _slug("-".join(short(v) for v in labels.values())) or "cell"
    name = f"{study}-{slug}"
    if len(name) <= 42:
        return name
    room = 42 - len(study) - 8
    return f"{study}-{slug[:room].strip('-')}-{_hash(labels)}".replace("--", "-")


def set_path(doc: dict, path: str, value: Any) -> None:
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def _assignments(spec: SafetyStudySpec) -> list[dict[str, Any]]:
    labels = [a.label for a in spec.axes]
    grid = [dict(zip(labels, combo)) for combo in itertools.product(*(a.values for a in spec.axes))]
    grid = [g for g in grid if not any(all(g.get(k) == v for k, v in ex.items()) for ex in spec.exclude)]
    for extra in spec.include:
        ordered = {k: extra[k] for k in labels}
        if ordered not in grid:
            grid.append(ordered)
    return grid


def expand(study: str, spec: SafetyStudySpec) -> list[Cell]:
    """Base children first (one per distinct student and evaluation), then the grid's cells in axis order.
    A SpecError names every invalid cell by its values: `cells[style=short,safetyCount=400].spec.mix...: ...`."""
    problems, cells = [], []
    for labels in _assignments(spec):
        raw = copy.deepcopy(spec.base)
        for axis in spec.axes:
            set_path(raw, axis.path, labels[axis.label])
        if spec.baseline and {"train", "evaluate"} <= set(raw.get("stages") or STAGES):  # base: its own child
            set_path(raw, "evaluate.compareBase", False)
        name = cell_name(study, labels)
        try:
            cells.append(Cell(name, labels, raw, parse_spec(raw)))
        except SpecError as e:
            where = Cell(name, labels, raw, SafetyExperimentSpec.model_construct()).where
            problems += [f"{where}.{line}" for line in e.lines]
    if problems:
        raise SpecError(problems)
    names = [c.name for c in cells]
    for c in cells:  # two value lists that slug alike (Qwen/x vs qwen-x) get the hash too
        if names.count(c.name) > 1:
            c.name = f"{c.name[:34].rstrip('-')}-{_hash(c.labels)}"
    return _baselines(study, spec, cells) + cells


def _baselines(study: str, spec: SafetyStudySpec, cells: list[Cell]) -> list[Cell]:
    if not spec.baseline:
        return []
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        if "evaluate" not in c.spec.stages or "train" not in c.spec.stages:
            continue
        key = json.dumps(
            [
                c.raw.get("student"),
                c.raw.get("storage"),
                {k: v for k, v in (c.raw.get("evaluate") or {}).items() if k != "compareBase"},
            ],
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(c)
    out = []
    for members in groups.values():
        first = members[0]
        raw = copy.deepcopy(first.raw)
        raw["stages"] = ["evaluate"]
        set_path(raw, "evaluate.compareBase", True)
        raw.get("evaluate", {}).pop("models", None)
        label = _slug(short(first.spec.student.model))
        name = f"{study}-base" if len(groups) == 1 else f"{study}-base-{label}"[:35].rstrip("-") + f"-{_hash(raw, 5)}"
        out.append(Cell(name, {}, raw, parse_spec(raw), role="base", students=[m.name for m in members]))
    return out


@dataclass
class Study:
    name: str
    namespace: str
    spec: SafetyStudySpec
    cells: list[Cell]

    @classmethod
    def from_manifest(cls, doc: dict[str, Any]) -> "Study":
        problems = []
        if doc.get("apiVersion") != f"{API_GROUP}/{API_VERSION}":
            problems.append(f"apiVersion: must be {API_GROUP}/{API_VERSION}")
        if doc.get("kind") != STUDY_KIND:
            problems.append(f"kind: must be {STUDY_KIND}")
        meta = doc.get("metadata") or {}
        problems += check_metadata(meta, MAX_STUDY_NAME, "it prefixes the cells' names")
        if problems:
            raise SpecError(problems)
        spec = parse_study(doc.get("spec"))
        return cls(meta["name"], meta.get("namespace") or "default", spec, expand(meta["name"], spec))

    @classmethod
    def load(cls, path: str) -> "Study":
        return cls.from_manifest(load_document(path, STUDY_KIND))


def parse_study(data: Optional[dict]) -> SafetyStudySpec:
    try:
        return SafetyStudySpec.model_validate(data or {})
    except ValidationError as e:
        raise SpecError(format_errors(e)) from None


def document_kind(path: str) -> Optional[str]:
    """SafetyExperiment or SafetyStudy (the CLI's commands take either)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = next((d for d in yaml.safe_load_all(f) if d is not None), None)
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8 (load_document says so)
        return None
    return doc.get("kind") if isinstance(doc, dict) else None


def child_manifest(study: str, namespace: str, cell: Cell, uid: Optional[str] = None) -> dict[str, Any]:
    """The SafetyExperiment the study owns for one cell (deleted with the study; its artifacts stay)."""
    meta: dict[str, Any] = {
        "name": cell.name,
        "namespace": namespace,
        "labels": {f"{API_GROUP}/study": study, f"{API_GROUP}/role": cell.role},
        "annotations": {f"{API_GROUP}/cell": json.dumps({str(k): v for k, v in cell.labels.items()}, default=str)},
    }
    if uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": STUDY_KIND,
                "name": study,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": meta, "spec": cell.raw}
