"""Benchmark registry: what each benchmark reads, what kind of items it has, and its usual file name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import BadInput
from .stages.common import StageContext


@dataclass(frozen=True)
class BenchmarkDef:
    kind: str  # harmful | benign | math
    filename: Optional[str]
    field: str  # the prompt field
    attack: str = "none"


REGISTRY = {
    "advbench": BenchmarkDef("harmful", "advbench_subset50.jsonl", "query"),
    "advbench-pap": BenchmarkDef("harmful", "advbench_pap.jsonl", "final_query", attack="pap"),
    "advbench-pair": BenchmarkDef("harmful", "advbench_subset50.jsonl", "query", attack="pair"),
    "xstest": BenchmarkDef("benign", "xstest_safe250.jsonl", "final_query"),
    "math500": BenchmarkDef("math", "math500.jsonl", "problem"),
    "aime": BenchmarkDef("math", "aime2024.jsonl", "problem"),
}
PROMPT_FIELDS = ("final_query", "query", "prompt", "problem", "question")


def resolve(bench) -> BenchmarkDef:
    if bench.name == "custom":
        return BenchmarkDef(bench.kind, None, "", attack="none")
    return REGISTRY[bench.name]


def bench_path(bench, data_root: Optional[str]) -> str:
    if bench.path:
        return bench.path
    return f"{data_root.rstrip('/')}/{resolve(bench).filename}"


def load_items(ctx: StageContext, bench) -> list[dict]:
    """Items {prompt, reference?} in file order (first `limit`)."""
    d = resolve(bench)
    path = bench_path(bench, ctx.spec.evaluate.data_root)
    rows = ctx.read_rows(path)
    if bench.limit:
        rows = rows[: bench.limit]
    items = []
    for n, row in enumerate(rows):
        fields = (d.field,) + PROMPT_FIELDS if d.field else PROMPT_FIELDS
        prompt = next((row[f] for f in fields if row.get(f)), None)
        if prompt is None:
            raise BadInput(f"{path} row {n}: no prompt field (looked for {', '.join(dict.fromkeys(fields))})")
        item = {"prompt": prompt}
        if d.kind == "math":
            ref = row.get("answer") if row.get("answer") is not None else row.get("reference")
            if ref is None:
                raise BadInput(f"{path} row {n}: math items need an answer field")
            item["reference"] = str(ref)
        if "query" in row and d.attack != "none":
            item["original"] = row["query"]
        items.append(item)
    return items
