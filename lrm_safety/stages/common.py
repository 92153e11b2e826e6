"""What every stage shares: the experiment, its store, prefixes, config hashes, inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from lrm_safety.context import StageContext
from lrm_safety.generation.base import estimate_tokens

TERMINATION_LOG_ENV = "LRM_SAFETY_TERMINATION_LOG"


def write_termination_summary(summary: dict) -> None:
    """Kubernetes copies this file into the pod status; the operator reads it into the experiment.

    Written only where the pod spec names the file (LRM_SAFETY_TERMINATION_LOG): a local run, or a test run
    as root, must never write the host's /dev/termination-log.
    """
    path = os.environ.get(TERMINATION_LOG_ENV)
    if not path:
        return
    text = json.dumps(summary, separators=(",", ":"), default=str)
    if len(text) > 3500:  # the kubelet keeps 4 KiB
        text = json.dumps({k: v for k, v in summary.items() if k in SUMMARY_KEYS}, separators=(",", ":"), default=str)[
            :3500
        ]
    try:
        with open(path, "w") as f:
            f.write(text + "\n")
    except OSError:
        pass


SUMMARY_KEYS = ("stage", "counts", "metrics", "complete", "shard", "error", "permanent", "skipped")


def summary_from_manifest(manifest: dict, **extra) -> dict:
    """What a finished stage reports to the operator, rebuilt from its manifest (a skipped rerun reports the same)."""
    summary = manifest.get("summary") or {"counts": manifest.get("counts", {}), "metrics": manifest.get("metrics", {})}
    return {"stage": manifest.get("stage"), **summary, "complete": True, **extra}


def skipped(ctx: "StageContext", stage: str, console) -> Optional[dict]:
    """The stage's summary if it is finished for this exact config (then the stage does nothing), else None: by
    this experiment, or by another in the same store with the same config and inputs (then it is linked here)."""
    from lrm_safety.reuse import link

    found = ctx.resolve(stage)
    if found is None:
        return None
    src, manifest = found
    if src == ctx.prefix(stage) or manifest.get("linkedAt"):
        console.print(f"[green]{stage}: manifest matches this spec, skipping")
        return summary_from_manifest(manifest, skipped=True)
    link(ctx, stage, found)
    console.print(f"[green]{stage}: reusing {manifest.get('reusedFrom')}'s output (same config and inputs): {src}")
    return summary_from_manifest(manifest, skipped=True, reusedFrom=manifest.get("reusedFrom"))


def token_counter(model_dir: Optional[Path]):
    """Token counts with the model's tokenizer when we have one; a words-based estimate otherwise."""
    if model_dir is not None:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(model_dir)
            return lambda text: len(tok(text, add_special_tokens=False)["input_ids"]), tok
        except Exception:
            pass
    return estimate_tokens, None


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"n": 0}
    s = sorted(lengths)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "mean": round(sum(s) / len(s), 1), "p50": pick(0.5), "p90": pick(0.9), "max": s[-1]}
