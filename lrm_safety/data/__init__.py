"""The builtin data sets: the demo's prompt sets shipped as JSONL beside this file, and synthetic arithmetic generated
on demand (synthetic.py), named `builtin:...` in a spec."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
BUILTIN_DATA = {
    "builtin:demo-safety": DATA_DIR / "demo_safety.jsonl",
    "builtin:demo-eval-harmful": DATA_DIR / "demo_eval_harmful.jsonl",
    "builtin:demo-eval-benign": DATA_DIR / "demo_eval_benign.jsonl",
}
SYNTHETIC_EVAL = "builtin:synthetic-math-eval"  # generated (mathgen), never trained on
