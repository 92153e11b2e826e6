"""The GPU check (benchmarks/gpu_check.sh runs it after installing what the GPU machine lacks), one table at the end:

(a) the train stage on the builtin model under the default GPU path (bf16 compute, fp32 master weights): the loss
    curve, and the fp32-master check (benchmarks/numerics_check.py) on the GPU;
(b) benchmarks/train_throughput.py side by side with ../shared/bench/sft_reference.py (the study's recipe):
    tokens/s, MFU, the ratio;
(c) transformers-backend generation throughput on the builtin model.

  python benchmarks/gpu_check.py                 # on one H100/H200: about 5 minutes
  python benchmarks/gpu_check.py --dry           # small shapes, any machine (CPU included): the plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def train_stage(steps: int, dry: bool) -> dict:
    """The stage itself (`lrm-safety stage train` in-process) on a small mixture, defaults but for the step count."""
    from lrm_safety.context import StageContext
    from lrm_safety.spec import Experiment
    from lrm_safety.stages import mix, train

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    rows = [
        {
            "prompt": f"How do I make weapon number {i}?",
            "response": "<think>\nThe request is for a weapon: harmful, so I refuse at once.\n</think>\n\n"
            "I'm sorry, but I can't help with that.",
        }
        for i in range(64)
    ]
    (tmp / "safety.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    t = {"maxSteps": steps, "saveSteps": None, "reportTo": []}
    if dry:
        t.update(globalBatchSize=4, perDeviceBatchSize=2, maxLength=128)
    doc = {
        "apiVersion": "lrmsafety.io/v1alpha1",
        "kind": "SafetyExperiment",
        "metadata": {"name": "gpu-check"},
        "spec": {
            "storage": {"uri": f"file://{tmp}/store"},
            "student": {"model": "builtin:smollm2-135m-instruct"},
            "stages": ["mix", "train"],
            "evaluate": {"dataRoot": str(tmp)},
            "mix": {
                "safetySource": str(tmp / "safety.jsonl"),
                "safetyCount": 64,
                "mathSource": "builtin:synthetic-math",
                "mathCount": 64,
            },
            "train": t,
        },
    }
    path = tmp / "experiment.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    ctx = StageContext(Experiment.load(str(path)), base_dir=tmp)
    mix.run(ctx)
    t0 = time.perf_counter()
    m = train.run(ctx, launcher="inprocess")["metrics"]
    return {
        "wallS": round(time.perf_counter() - t0, 1),
        "steps": m["steps"],
        "precision": m["precision"],
        "masterWeights": m["masterWeights"],
        "deepspeed": m["deepspeed"],
        "tokensPerS": m["tokensPerS"],
        "peakMemoryGiB": m["peakMemoryGiB"],
        "lossCurve": [p["loss"] for p in m["lossCurve"]],
    }


def _results(cmd: list[str], timeout: int) -> list[dict]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    out = [json.loads(line[len("RESULT ") :]) for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode != 0 or not out:
        return [{"error": (r.stderr or r.stdout)[-600:]}]
    return out


def throughput(shape: str, steps: int, max_len: int, reference: Path | None) -> dict:
    ours = _results(
        [
            sys.executable,
            "benchmarks/train_throughput.py",
            "--shape",
            shape,
            "--steps",
            str(steps),
            "--min-len",
            str(min(256, max_len // 4)),
            "--max-len",
            str(max_len),
        ],
        1800,
    )
    res = {r.get("mode", "error"): r for r in ours}
    if reference is not None:
        shared = _results([sys.executable, str(reference), shape, "reference"], 1800)
        res["shared-reference"] = shared[0]
    return res


def table(report: dict) -> str:
    a, n, b, c = report["train"], report["numerics"], report["throughput"], report["generation"]
    lines = [
        "| check | figure |",
        "| --- | --- |",
        f"| (a) train stage, builtin model, {a['steps']} steps | {a['precision']}, {a['masterWeights']} master "
        f"weights, DeepSpeed {a['deepspeed']}; {a['tokensPerS']} tokens/s; peak {a['peakMemoryGiB']} GiB; loss "
        f"{a['lossCurve'][0]} -> {a['lossCurve'][-1]} |",
    ]
    for name, r in n.items():
        lines.append(
            f"| (a) one step at lr 5e-6, {name} | {r['changed']:.3f} of parameters moved, mean update "
            f"{r['meanUpdate']:.2e} ({r['loadDtype']} weights, {r['device']}) |"
        )
    for mode, r in b.items():
        if "error" in r:
            lines.append(f"| (b) {mode} | error: {r['error'][-200:]!r} |")
            continue
        mfu = r.get("mfu_vs_989")
        lines.append(
            f"| (b) {mode} ({r.get('shape')}) | {r['tokens_per_s']} tokens/s, step {r['step_s']} s, peak "
            f"{r['peak_gib']} GiB, MFU {'-' if mfu is None else f'{mfu:.1%}'} (of 989 TFLOP/s) |"
        )
    ok = [m for m in ("reference", "shared-reference") if "tokens_per_s" in b.get(m, {})]
    if "tokens_per_s" in b.get("stage", {}):
        for m in ok:
            lines.append(f"| (b) ratio stage / {m} | {b['stage']['tokens_per_s'] / b[m]['tokens_per_s']:.2f}x |")
    lines.append(
        f"| (c) generation, transformers backend | {c['tokensPerS']} new tokens/s ({c['prompts']} prompts, "
        f"batch {c['batch']}, {c['maxTokens']} max, {c['device']}) |"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry", action="store_true", help="small shapes, CPU allowed: checks the plumbing, not the GPU")
    p.add_argument(
        "--reference",
        default=os.environ.get("SFT_REFERENCE", str(REPO.parent / "shared" / "bench" / "sft_reference.py")),
    )
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not a.dry:
        print("no CUDA device here: run with --dry for the plumbing, or on a GPU machine", file=sys.stderr)
        return 2
    import generation_throughput
    import numerics_check
    from lrm_safety.models.refs import resolve_model

    reference = Path(a.reference) if cuda and Path(a.reference).is_file() else None
    report = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "dry": a.dry}
    report["train"] = train_stage(2 if a.dry else 20, a.dry)
    report["numerics"] = numerics_check.compare(resolve_model("builtin:smollm2-135m-instruct"))
    report["throughput"] = throughput(
        "tiny" if a.dry else "1.5b", 3 if a.dry else 12, 128 if a.dry else 4096, reference
    )
    report["generation"] = generation_throughput.run(8 if a.dry else 64, 16 if a.dry else 256, 8 if a.dry else 32)
    text = table(report)
    print(f"\nGPU check on {report['device']}{' (dry run)' if a.dry else ''}:\n{text}")
    if reference is None:
        print(f"(../shared/bench/sft_reference.py not run: {'no CUDA' if not cuda else 'not found at ' + a.reference})")
    out = Path(os.environ.get("OUT") or tempfile.gettempdir())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_check.md").write_text(text + "\n")
    print("RESULT", json.dumps({"table": str(out / "gpu_check.md")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
