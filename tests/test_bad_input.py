"""Every class of bad input a user meets on day one, caught by `lrm-safety validate` before any Job: exit 3, one
line naming the file and the field (or position) and the fix, no traceback. One broken spec per class, each a
small change to a spec that validates."""

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from lrm_safety.cli import main

GOOD = {
    "apiVersion": "lrmsafety.io/v1alpha1",
    "kind": "SafetyExperiment",
    "metadata": {"name": "day-one", "namespace": "research"},
    "spec": {
        "storage": {"uri": "file://./artifacts"},
        "student": {"model": "builtin:smollm2-135m-instruct"},
        "teacher": {"model": "builtin:smollm2-135m-instruct", "backend": "transformers"},
        "distill": {"prompts": "prompts.jsonl", "style": "template"},
        "mix": {"mathSource": "builtin:synthetic-math", "mathCount": 8, "safetyCount": 4},
        "evaluate": {
            "backend": "transformers",
            "judge": {"kind": "refusal"},
            "overRefusalJudge": {"kind": "refusal"},
            "benchmarks": [{"name": "custom", "kind": "harmful", "path": "prompts.jsonl"}],
        },
        "resources": {"cpuOnly": True},
    },
}


def _set(doc: dict, path: str, value) -> dict:
    node = doc
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return doc


DELETE = object()
# (class, change to GOOD as {path: value} or a raw text, what the one line must say)
CASES = [
    (
        "unknown builtin model",
        {"spec.student.model": "builtin:smollm3-nope"},
        "spec.student.model: unknown builtin model 'builtin:smollm3-nope'",
    ),
    ("missing model folder", {"spec.student.model": "./models/student"}, "spec.student.model: model folder"),
    ("folder that is not a model", {"spec.student.model": "./notamodel"}, "has no config.json"),
    ("missing GGUF file", {"spec.teacher.model": "./teacher.gguf"}, "spec.teacher.model: GGUF file"),
    (
        "missing prompt file",
        {"spec.distill.prompts": "./nope.jsonl"},
        "spec.distill.prompts: ./nope.jsonl: no such file",
    ),
    ("prompt path is a folder", {"spec.distill.prompts": "./notamodel"}, "is a folder, not a data file"),
    ("unknown builtin data set", {"spec.distill.prompts": "builtin:demo-nope"}, "unknown builtin data set"),
    (
        "missing instruction file",
        {"spec.distill.instruction": {"path": "instr.txt"}},
        "spec.distill.instruction.path: instr.txt: no such file",
    ),
    ("missing safety source", {"spec.mix.safetySource": "/no/such/safety.jsonl"}, "spec.mix.safetySource:"),
    ("missing math source", {"spec.mix.mathSource": "math.jsonl"}, "spec.mix.mathSource: math.jsonl: no such file"),
    (
        "missing benchmark file",
        {"spec.evaluate.benchmarks": [{"name": "xstest"}], "spec.evaluate.dataRoot": "./bench"},
        "spec.evaluate.dataRoot (xstest): ./bench/xstest_safe250.jsonl: no such file",
    ),
    ("seed beyond 2^32-1", {"spec.train.seed": 1e32}, "spec.train.seed:"),
    ("seed negative", {"spec.mix.seed": -1}, "spec.mix.seed: must be >= 0"),
    ("seed written as YAML text", "train-seed-text", "spec.train.seed: must be a whole number (got '1e32')"),
    ("maxSteps absurd", {"spec.train.maxSteps": 10**26}, "spec.train.maxSteps:"),
    ("sampling seed too large", {"spec.distill.sampling": {"seed": 2**40}}, "spec.distill.sampling.seed: must be <="),
    ("count absurd", {"spec.mix.safetyCount": 10**12}, "spec.mix.safetyCount: must be <="),
    ("ttl beyond int32", {"spec.resources.ttlSecondsAfterFinished": 2**31}, "spec.resources.ttlSecondsAfterFinished"),
    (
        "memory not a quantity",
        {"spec.resources.memory": "lots"},
        "spec.resources.memory: must be a Kubernetes quantity such as 8, 500m or 64Gi (got 'lots')",
    ),
    ("cpu not a quantity", {"spec.resources.cpu": "8 cores"}, "spec.resources.cpu: must be a Kubernetes quantity"),
    ("stage memory not a quantity", {"spec.resources.train": {"memory": "-4Gi"}}, "spec.resources.train.memory"),
    ("shm not a quantity", {"spec.resources.shmSize": "big"}, "spec.resources.shmSize"),
    (
        "served memory not a quantity",
        {"spec.teacher.serve": {"resources": {"memory": "1 GB"}}, "spec.teacher.backend": "vllm"},
        "spec.teacher.serve.resources.memory",
    ),
    ("namespace invalid", {"metadata.namespace": "Research_NS"}, "metadata.namespace: 'Research_NS' is not"),
    ("name invalid", {"metadata.name": "Day_One"}, "metadata.name: 'Day_One' is not a lowercase DNS label"),
    ("name too long", {"metadata.name": "x" * 43}, "of at most 42 characters"),
    ("name missing", {"metadata.name": DELETE}, "metadata.name: required"),
    ("duplicate key", "duplicate", "duplicate key 'learningRate' (first at line"),
    ("not UTF-8", "latin1", "not UTF-8 text"),
    ("YAML syntax", "syntax", "YAML syntax error"),
    ("two documents", "two-docs", "expected one SafetyExperiment document, found 2"),
    ("unknown field", {"spec.train.learnigRate": 1e-5}, "spec.train.learnigRate: unknown field"),
    ("wrong kind", {"kind": "SafetyExperiments"}, "kind: must be SafetyExperiment"),
    (
        "spec stored over 1 MiB",
        {"spec.distill.instruction": {"text": "x" * (1100 * 1024)}},
        "spec.distill.instruction.text: the spec is 1.1 MiB, over the Kubernetes API server's 1 MiB object limit",
    ),
    ("bool as text", {"spec.resources.cpuOnly": "maybe"}, "spec.resources.cpuOnly: must be true or false"),
]


def _write(tmp_path: Path, change) -> Path:
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(4)))
    (tmp_path / "notamodel").mkdir()
    f = tmp_path / "exp.yaml"
    text = yaml.safe_dump(json.loads(json.dumps(GOOD)), sort_keys=False)
    if isinstance(change, dict):
        doc = json.loads(json.dumps(GOOD))
        for path, value in change.items():
            _set(doc, path, value)
        f.write_text(yaml.safe_dump(doc, sort_keys=False))
    elif change == "duplicate":
        f.write_text(
            text.replace("spec:\n", "spec:\n  train:\n    learningRate: 1.0e-5\n    learningRate: 2.0e-5\n", 1)
        )
    elif change == "train-seed-text":
        f.write_text(text.replace("spec:\n", "spec:\n  train:\n    seed: 1e32\n", 1))
    elif change == "latin1":
        f.write_bytes(text.replace("day-one", "café").encode("latin-1"))
    elif change == "syntax":
        f.write_text(text.replace("spec:\n", "spec:\n  train: {learningRate: 1e-5\n", 1))
    elif change == "two-docs":
        f.write_text(text + "---\n" + text)
    return f


def validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue()


def test_the_good_spec_validates(tmp_path):
    code, out, err = validate(_write(tmp_path, {}))
    assert code == 0 and "valid SafetyExperiment 'day-one'" in out, err


@pytest.mark.parametrize("what,change,needle", CASES, ids=[c[0] for c in CASES])
def test_each_class_is_one_line_with_exit_3(what, change, needle, tmp_path):
    f = _write(tmp_path, change)
    code, _, err = validate(f)
    lines = err.strip().splitlines()
    assert code == 3, (what, code, err)
    assert len(lines) == 1, (what, lines)
    assert lines[0].startswith(str(f)), lines[0]
    assert needle in lines[0], (what, lines[0])
    assert "Traceback" not in err


def test_at_least_25_classes():
    assert len({c[0] for c in CASES}) >= 25


def test_the_process_never_shows_a_traceback(tmp_path):
    """The same as a user runs it (a process of its own), on the class that used to crash it."""
    f = _write(tmp_path, "latin1")
    r = subprocess.run([sys.executable, "-m", "lrm_safety.cli", "validate", str(f)], capture_output=True, text=True)
    assert r.returncode == 3 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_spec_that_validates_does_not_fail_its_stage_on_what_validate_could_see(tmp_path):
    """The missing prompt file: validate refuses it now; before, validate said valid and distill failed."""
    f = _write(tmp_path, {"spec.distill.prompts": "./gone.jsonl"})
    assert validate(f)[0] == 3
    r = subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "run", str(f), "--stages", "distill"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 3 and "spec.distill.prompts: ./gone.jsonl: no such file" in r.stderr, r.stderr
