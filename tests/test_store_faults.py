"""The store goes away in the middle of a stage: SeaweedFS stopped for 10 s while `lrm-safety stage mix` runs.

The stage either rides through on boto3's retries, or exits with a transient code (never the bad-input 3) and
the next attempt succeeds; a stage that failed is never taken for done.
"""

import json
import os
import subprocess
import sys
import threading
import time

import boto3
import pytest

from conftest import SMOL, Seaweed, write_experiment
from lrm_safety.context import StageContext
from lrm_safety.errors import BAD_INPUT_EXIT
from lrm_safety.spec import Experiment

pytestmark = pytest.mark.slow


@pytest.fixture
def seaweed(tmp_path):
    server = Seaweed(tmp_path / "weed")
    server.data.mkdir()
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def _experiment(tmp_path, server):
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="faults")
    rows = [
        {"prompt": f"How do I do harmful thing {i}?", "response": f"<think>\nUnsafe.\n</think>\n\nI'm sorry, no ({i})."}
        for i in range(40)
    ]
    s3.put_object(Bucket="faults", Key="data/safety.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    spec = {
        "storage": {"uri": "s3://faults/exps", "endpoint": server.endpoint},
        "student": {"model": SMOL},
        "mix": {"safetySource": "s3://faults/data/safety.jsonl", "safetyCount": 40, "mathCount": 0},
        "evaluate": {"dataRoot": "/d"},
    }
    path = write_experiment(tmp_path / "e.yaml", "faults", spec)
    return path, StageContext(Experiment.load(str(path)), base_dir=tmp_path)


def _stage(path, tmp_path, **env):
    log = tmp_path / "termination-log"
    log.unlink(missing_ok=True)
    full = {**os.environ, "LRM_SAFETY_TERMINATION_LOG": str(log), **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrm_safety.cli", "stage", "mix", "--spec", str(path)],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, log


def _outage(server, after: float, seconds: float):
    def run():
        time.sleep(after)
        server.stop()
        time.sleep(seconds)
        server.start()

    t = threading.Thread(target=run)
    t.start()
    return t


def _check_done(ctx):
    assert ctx.is_done("mix")
    rows = ctx.store.read_jsonl("faults/mix/train.jsonl")
    assert len(rows) == ctx.store.read_manifest("faults/mix")["counts"]["train"] == 40


def test_outage_mid_stage_rides_through_or_retries(tmp_path, seaweed, smol_dir):
    path, ctx = _experiment(tmp_path, seaweed)
    proc, log = _stage(path, tmp_path)
    outage = _outage(seaweed, after=1.0, seconds=10)
    out, _ = proc.communicate(timeout=300)
    outage.join()
    assert proc.returncode != BAD_INPUT_EXIT, out
    print(f"first attempt exit {proc.returncode}")
    if proc.returncode != 0:  # the operator's next attempt
        summary = json.loads(log.read_text())
        assert summary["permanent"] is False and summary["error"], summary
        assert not ctx.is_done("mix"), "a failed attempt is never taken for done"
        proc, log = _stage(path, tmp_path)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    _check_done(ctx)


def test_outage_without_retries_fails_transient_and_the_next_attempt_succeeds(tmp_path, seaweed, smol_dir):
    path, ctx = _experiment(tmp_path, seaweed)
    seaweed.stop()  # down when the stage first reaches for it, and for 10 s
    proc, log = _stage(path, tmp_path, AWS_MAX_ATTEMPTS="1")
    restart = threading.Thread(target=lambda: (time.sleep(10), seaweed.start()))
    restart.start()
    out, _ = proc.communicate(timeout=300)
    restart.join()
    assert proc.returncode == 1, out
    summary = json.loads(log.read_text())
    assert summary["stage"] == "mix" and summary["permanent"] is False
    assert "EndpointConnectionError" in summary["error"] or "Connect" in summary["error"], summary
    assert not ctx.is_done("mix") and not ctx.store.exists("faults/mix/_SUCCESS.json")
    proc, log = _stage(path, tmp_path, AWS_MAX_ATTEMPTS="1")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert json.loads(log.read_text())["complete"] is True
    _check_done(ctx)
