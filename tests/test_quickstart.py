"""End to end through the real CLI: a reduced quickstart creates all four manifests; a rerun skips all four."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def reduced_quickstart(tmp_path: Path) -> Path:
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    s = doc["spec"]
    s["storage"]["uri"] = f"file://{tmp_path}/artifacts"
    s["distill"]["limit"] = 12
    s["distill"]["sampling"] = {"temperature": 0.7, "maxTokens": 24, "batchSize": 12}
    s["distill"]["rectify"] = {"maxAttempts": 1}  # 24 tokens cut most benign answers: drop them, do not retry
    s["mix"]["mathCount"] = 8
    s["train"].update(maxSteps=2, perDeviceBatchSize=4, maxLength=256)
    s["evaluate"]["sampling"] = {"temperature": 0.0, "maxTokens": 32, "batchSize": 12}
    for b in s["evaluate"]["benchmarks"]:
        b["limit"] = 4
    path = tmp_path / "quickstart-small.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def lrm(*args):
    return subprocess.run([sys.executable, "-m", "lrm_safety.cli", *args], capture_output=True, text=True, timeout=1200)


def test_reduced_quickstart_end_to_end_and_rerun_skips(tmp_path, smol_dir):
    spec = reduced_quickstart(tmp_path)
    first = lrm("run", str(spec))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    root = tmp_path / "artifacts" / "quickstart"
    for stage in ("distill", "mix", "train", "evaluate"):
        manifest = json.loads((root / stage / "_SUCCESS.json").read_text())
        assert manifest["stage"] == stage and manifest["configHash"] and manifest["files"]
    assert (root / "train" / "model" / "model.safetensors").is_file()
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"benchmarks", "headline", "order", "models"} and metrics["models"] == ["base", "trained"]
    assert metrics["order"] == ["harmful-heldout", "benign-lookalikes", "synthetic-math"]
    assert set(metrics["headline"]) == {"asr", "refusalRate", "overRefusal", "mathAccuracy"}
    assert metrics["headline"]["asr"] is None and metrics["headline"]["refusalRate"] is not None, "keyword-judged"
    for name, entry in metrics["benchmarks"].items():
        assert {"kind", "metric", "base", "trained", "delta"} <= set(entry), name
        for model in ("base", "trained"):
            assert entry[model]["n"] == 4 and 0.0 <= entry[model]["value"] <= 1.0
            lo, hi = entry[model]["ci95"]
            assert lo <= entry[model]["value"] <= hi
    assert (root / "evaluate" / "report.md").read_text().startswith("# lrm-safety report")
    assert sorted(p.name for p in (root / "evaluate").glob("chart-*.png")) == [
        "chart-accuracy.png",
        "chart-loss.png",
        "chart-overRefusal.png",
        "chart-refusalRate.png",
    ]  # keyword-judged
    assert "![chart-loss.png](chart-loss.png)" in (root / "evaluate" / "report.md").read_text()
    assert list((root / "train" / "runs").rglob("events.out.tfevents.*")), "TensorBoard curves in the store"
    assert "base vs trained" in first.stdout and "report:" in first.stdout
    # The runner shows each stage's progress as the operator's Progress column does.
    assert "train 2/2 (100%)" in first.stdout and "distill 12/12 (100%)" in first.stdout, first.stdout[-3000:]

    shown = lrm("inspect", str(spec), "--rows", "12")  # the mix output, rendered as train renders it
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "from the mix stage's output" in shown.stdout.replace("\n", " ") or "mix stage's output" in shown.stdout
    assert "<|im_start|>assistant" in shown.stdout and "</think>" in shown.stdout
    assert "* illicit/violent: " in shown.stdout, "template reasoning is in the trained part"
    assert "holds no reasoning" not in shown.stdout

    second = lrm("run", str(spec))
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("already done for this spec, skipped") == 4
    assert "▶" not in second.stdout


def test_invalid_spec_is_rejected_before_any_stage(tmp_path):
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["storage"]["uri"] = f"file://{tmp_path}/artifacts"
    doc["spec"]["train"]["learningRate"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    r = lrm("run", str(path))
    assert r.returncode == 3 and f"{path}: spec.train.learningRate: must be > 0" in r.stderr
    assert not (tmp_path / "artifacts").exists(), "nothing is written for an invalid spec"
