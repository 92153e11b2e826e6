"""Benchmark data without hand work: `lrm-safety data push DEST` stages every benchmark file under the name the
registry expects (`evaluate.dataRoot`), from local copies (the study's release ships most of them) or, on a
machine that can reach the Hugging Face hub, from the hub through `datasets`, reduced to the study's subsets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from lrm_safety.errors import BadInput
from lrm_safety.evaluation.benchmarks import REGISTRY

console = Console(stderr=True)


@dataclass(frozen=True)
class HubSource:
    dataset: str
    split: str
    config: Optional[str] = None
    keep: Callable[[dict], bool] = lambda row: True  # the study's subset
    convert: Callable[[dict], dict] = lambda row: row  # to the fields the loader reads
    note: str = ""


def _xstest(row: dict) -> dict:
    return {"query": row["prompt"], "final_query": row["prompt"], "type": row.get("type")}


HUB = {
    # XSTest's 250 safe prompts (over-refusal); the unsafe 200 are left out, as in the study.
    "xstest": HubSource(
        "walledai/XSTest",
        "test",
        keep=lambda r: str(r.get("label")).lower() == "safe",
        convert=_xstest,
        note="the 250 prompts labelled safe",
    ),
    "math500": HubSource("HuggingFaceH4/MATH-500", "test"),
    "aime": HubSource(
        "HuggingFaceH4/aime_2024",
        "train",
        convert=lambda r: {"problem": r["problem"], "answer": str(r["answer"]), "id": r.get("id")},
    ),
    # LiveCodeBench code generation, release_v5, problems from 2024-10-01 on (reasoning_evaluation/eval_code.sh).
    "livecodebench": HubSource(
        "livecodebench/code_generation_lite",
        "test",
        config="release_v5",
        keep=lambda r: str(r.get("contest_date", ""))[:10] >= "2024-10-01",
        note="release_v5, contest_date >= 2024-10-01",
    ),
}
# No hub copy holds the study's own subsets of these: the release's files are the source.
RELEASE_FILES = {
    "advbench": "attack_refusal_evaluation/data/advbench/advbenchsub.jsonl (the study's 50 AdvBench requests)",
    "advbench-pap": "attack_refusal_evaluation/results/pap_advbenchsub.jsonl (PAP rewrites of those 50)",
}


def from_hub(name: str, load=None) -> list[dict]:
    """The benchmark's rows from the hub, reduced to the study's subset; `load` stands in for datasets.load_dataset."""
    src = HUB[name]
    if load is None:
        from datasets import load_dataset as load
    rows = load(src.dataset, src.config, split=src.split) if src.config else load(src.dataset, split=src.split)
    return [src.convert(dict(r)) for r in rows if src.keep(dict(r))]


def push(dest, names: list[str], source_dir: Optional[Path] = None, online: bool = False, load=None) -> dict:
    """Stage each benchmark's file under `dest` (a Store); returns {name: where it came from, or why it is missing}."""
    report = {}
    for name in names:
        if name not in REGISTRY:
            raise BadInput(f"unknown benchmark {name!r}; known: {', '.join(REGISTRY)}")
        filename = REGISTRY[name].filename
        local = source_dir / filename if source_dir else None
        if local is not None and local.is_file():
            dest.upload_file(local, filename)
            report[name] = f"{local} -> {dest.uri(filename)}"
        elif name in HUB and online:
            rows = from_hub(name, load)
            dest.write_bytes(filename, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
            report[name] = (
                f"hub {HUB[name].dataset} ({len(rows)} rows{', ' + HUB[name].note if HUB[name].note else ''}) "
                f"-> {dest.uri(filename)}"
            )
        else:
            where = RELEASE_FILES.get(name) or (f"the hub ({HUB[name].dataset}); add --online" if name in HUB else "")
            report[name] = f"missing: put {filename} in --from DIR (source: {where})"
    return report
