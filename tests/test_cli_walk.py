"""Every `lrm-safety` subcommand as a user meets it on day one: a missing file, the wrong kind of file and a reader
that goes away (`| head -1`) each end with one line (or quietly) and the right exit code, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Each subcommand that reads a spec file, with the arguments around the file.
FILE_TAKERS = {
    "validate": ["validate", "{f}"],
    "run": ["run", "{f}"],
    "stage": ["stage", "mix", "--spec", "{f}"],
    "inspect": ["inspect", "{f}"],
    "render": ["render", "{f}"],
    "render --plan": ["render", "{f}", "--plan"],
    "report": ["report", "{f}"],
}


def cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", *map(str, args)], capture_output=True, text=True, timeout=300, **kw
    )


def _one_line(r, code=3):
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("cmd", list(FILE_TAKERS))
def test_missing_file(cmd, tmp_path):
    missing = tmp_path / "nope.yaml"
    args = [a.format(f=missing) for a in FILE_TAKERS[cmd]]
    line = _one_line(cli(*args))
    assert line.startswith(str(missing)) and "no such file" in line, line


@pytest.mark.parametrize("cmd", list(FILE_TAKERS))
def test_wrong_kind(cmd, tmp_path):
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n")
    args = [a.format(f=pod) for a in FILE_TAKERS[cmd]]
    r = cli(*args)
    assert "Traceback" not in r.stderr and r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert any("kind: must be SafetyExperiment" in ln or "kind: must be SafetyStudy" in ln for ln in lines), lines
    assert not any("unknown field" in ln for ln in lines), "another kind's fields are not reported one by one"


def test_a_study_where_an_experiment_is_needed_names_the_cell_to_pick(tmp_path):
    line = _one_line(cli("inspect", REPO / "examples" / "study.yaml"))
    assert "inspect one with --cell NAME" in line and "r1-qwen7b-styles-template" in line
    line = _one_line(cli("stage", "mix", "--spec", REPO / "examples" / "study.yaml"))
    assert "kind: must be SafetyExperiment (got 'SafetyStudy'" in line


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "examples/experiment.yaml"],
        ["render", "examples/experiment.yaml"],
        ["render", "examples/study.yaml"],
        ["crd"],
        ["crd", "--docs"],
        ["--help"],
        ["render", "examples/quickstart.yaml", "--plan"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_closed_pipe_ends_quietly(args):
    """`lrm-safety validate x.yaml | head -1`: the reader leaves after a line; no BrokenPipeError."""
    r = subprocess.run(
        f"{sys.executable} -m lrm_safety.cli {' '.join(args)} | head -c 20 >/dev/null; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr[-2000:]
    assert r.returncode in (0, 141), (r.returncode, r.stderr)


def test_unknown_stage_names_list_the_valid_ones():
    line = _one_line(cli("run", REPO / "examples" / "quickstart.yaml", "--stages", "mix,bogus"))
    assert line == (
        "--stages: unknown stage 'bogus'; choose from distill, mix, train, evaluate (comma-separated, "
        "e.g. --stages mix,train)"
    )


def test_debug_before_or_after_the_subcommand(tmp_path):
    for args in (["--debug", "validate", tmp_path / "x.yaml"], ["validate", tmp_path / "x.yaml", "--debug"]):
        r = cli(*args)
        assert r.returncode != 0 and "Traceback" in r.stderr, args


def test_data_push_from_a_missing_folder(tmp_path):
    line = _one_line(cli("data", "push", tmp_path / "dest", "--from", tmp_path / "nope"))
    assert line == f"--from {tmp_path / 'nope'}: no such directory"
