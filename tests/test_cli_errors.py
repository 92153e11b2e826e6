"""Every user error of every `lrm-safety` command: one line naming the file, position or field, exit code 3,
no traceback (unless --debug)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FILE_COMMANDS = [["validate"], ["run"], ["render"], ["stage", "mix", "--spec"]]


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def one_clear_line(r, *needles):
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("cmd", FILE_COMMANDS, ids=lambda c: c[0])
def test_malformed_yaml_names_file_line_and_column(cmd, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: lrmsafety.io/v1alpha1\nkind: SafetyExperiment\nspec:\n  train: {learningRate: 1e-5\n")
    line = one_clear_line(cli(*cmd, bad), str(bad), "YAML syntax error")
    assert f"{bad}:5:1" in line or f"{bad}:4:" in line, line


@pytest.mark.parametrize("cmd", FILE_COMMANDS, ids=lambda c: c[0])
def test_missing_file(cmd, tmp_path):
    one_clear_line(cli(*cmd, tmp_path / "nope.yaml"), f"{tmp_path / 'nope.yaml'}: no such file")


@pytest.mark.parametrize("cmd", FILE_COMMANDS, ids=lambda c: c[0])
def test_wrong_kind(cmd, tmp_path):
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: lrmsafety.io/v1alpha1\nkind: Pod\nmetadata: {name: x}\nspec: {}\n")
    one_clear_line(cli(*cmd, pod), str(pod), "kind: must be SafetyExperiment")


def test_not_a_mapping(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    one_clear_line(cli("validate", f), str(f), "expected a SafetyExperiment mapping")


def test_debug_shows_the_traceback(tmp_path):
    r = cli("--debug", "validate", tmp_path / "nope.yaml")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_report_on_a_prefix_without_an_evaluate_manifest(tmp_path):
    (tmp_path / "store" / "exp" / "evaluate").mkdir(parents=True)
    one_clear_line(cli("report", f"file://{tmp_path}/store/exp/evaluate"), "no _SUCCESS.json", "'exp'")


def test_report_on_a_path_that_is_not_an_evaluate_prefix(tmp_path):
    one_clear_line(cli("report", f"file://{tmp_path}/store/exp/train"), "not an evaluate stage prefix")


def test_report_on_another_stages_manifest(tmp_path):
    from lrm_safety.store import open_store

    store = open_store(f"file://{tmp_path}/store")
    store.write_manifest("exp/evaluate", stage="mix", config_hash="h")
    one_clear_line(cli("report", f"file://{tmp_path}/store/exp/evaluate"), "'mix' stage's, not evaluate's")


def test_stage_with_a_missing_input_file_is_bad_input_and_reports_it(tmp_path):
    """In a pod the reason and `permanent` go to the termination message, so the operator fails at once."""
    import json

    spec = tmp_path / "e.yaml"
    spec.write_text(f"""apiVersion: lrmsafety.io/v1alpha1
kind: SafetyExperiment
metadata: {{name: e}}
spec:
  storage: {{uri: "file://{tmp_path}/store"}}
  student: {{model: builtin:smollm2-135m-instruct}}
  mix: {{safetySource: "{tmp_path}/missing.jsonl", mathCount: 0}}
  evaluate: {{dataRoot: /d}}
""")
    log = tmp_path / "termination-log"
    env = {**__import__("os").environ, "LRM_SAFETY_TERMINATION_LOG": str(log)}
    r = subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "stage", "mix", "--spec", str(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
    assert (
        r.stderr.strip().splitlines()[-1] == f"{tmp_path}/missing.jsonl: no such file; fix the path in the spec "
        "or upload the file"
    )
    summary = json.loads(log.read_text())
    assert summary["permanent"] is True and "missing.jsonl: no such file" in summary["error"]


def test_local_runs_never_write_a_termination_log(tmp_path, monkeypatch):
    from lrm_safety.stages.common import write_termination_summary

    monkeypatch.delenv("LRM_SAFETY_TERMINATION_LOG", raising=False)
    monkeypatch.chdir(tmp_path)
    write_termination_summary({"stage": "mix"})  # no file named: nothing is written anywhere
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / "t"
    monkeypatch.setenv("LRM_SAFETY_TERMINATION_LOG", str(target))
    write_termination_summary({"stage": "mix"})
    assert target.read_text().strip() == '{"stage":"mix"}'


def test_store_without_credentials_is_one_line_with_the_fix(tmp_path):
    """`render --plan` on the paper example (s3:// storage) with no credentials: no botocore traceback."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    r = subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "render", str(REPO / "examples" / "experiment.yaml"), "--plan"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr[-2000:]  # the user's to fix: bad input
    lines = r.stderr.strip().splitlines()
    assert lines == [
        "error: no S3 credentials for the store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
        "AWS_PROFILE), or use a file:// storage.uri"
    ], lines


def test_store_problem_lines():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from lrm_safety.store import store_problem

    nb = ClientError({"Error": {"Code": "NoSuchBucket", "BucketName": "b1", "Message": "x"}}, "ListObjectsV2")
    assert store_problem(nb) == "bucket b1 does not exist: create it or fix storage.uri"
    assert "storage.endpoint" in store_problem(EndpointConnectionError(endpoint_url="http://s3.local:9"))
    assert store_problem(ValueError("other")) is None, "anything else keeps its traceback"


def test_a_stage_whose_store_is_unreachable_exits_transient_not_bad_input(tmp_path):
    """A person's command exits 3 on a store problem (the fix is theirs); a stage pod exits 1, so the operator
    retries it: the store may be back for the next attempt."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "e.yaml"
    spec.write_text(f"""apiVersion: lrmsafety.io/v1alpha1
kind: SafetyExperiment
metadata: {{name: e}}
spec:
  storage: {{uri: "s3://b/x", endpoint: "http://127.0.0.1:{port}"}}
  mix: {{safetySource: "s3://b/s.jsonl", mathCount: 0}}
  evaluate: {{dataRoot: s3://d}}
""")
    env = {
        **__import__("os").environ,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
    }
    r = subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "stage", "mix", "--spec", str(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 1 and "cannot reach the S3 endpoint" in r.stderr, (r.returncode, r.stderr[-1500:])
    r = subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "render", str(spec), "--plan"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 3 and "cannot reach the S3 endpoint" in r.stderr, (r.returncode, r.stderr[-1500:])
