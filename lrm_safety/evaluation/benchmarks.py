"""Benchmark registry: what each benchmark reads, what kind of items it has, and its usual file name."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Optional

from lrm_safety.context import StageContext
from lrm_safety.errors import BadInput
from lrm_safety.generation.base import Sampling
from lrm_safety.spec import BENCHMARK_DATA


@dataclass(frozen=True)
class BenchmarkDef:
    kind: str  # harmful | benign | math
    filename: Optional[str]
    field: str  # the prompt field
    attack: str = "none"
    # The release's generation settings (Sampling fields) and samples per item, and the file they come from.
    sampling: dict = dataclass_field(default_factory=dict)
    samples: int = 1
    release: str = ""


_ATTACK = dict(temperature=0.6, top_p=0.95, max_tokens=4096)
_MATH = dict(temperature=0.6, top_p=0.95, max_tokens=32768, seed=0)
REGISTRY = {
    "advbench": BenchmarkDef(
        *BENCHMARK_DATA["advbench"], "query", sampling=_ATTACK, release="attack_refusal_evaluation/run_gen_eval.py"
    ),
    "advbench-pap": BenchmarkDef(
        *BENCHMARK_DATA["advbench-pap"],
        "final_query",
        attack="pap",
        sampling=_ATTACK,
        release="attack_refusal_evaluation/run_gen_eval.py",
    ),
    "advbench-pair": BenchmarkDef(
        *BENCHMARK_DATA["advbench-pair"],
        "query",
        attack="pair",
        sampling=dict(_ATTACK, max_tokens=2048),
        release="attack_refusal_evaluation/pair_res.sh",
    ),
    "xstest": BenchmarkDef(
        *BENCHMARK_DATA["xstest"],
        "final_query",
        sampling=dict(temperature=0.0, max_tokens=256),
        release="attack_refusal_evaluation/run_xstest.sh (xstest_eval.py generates greedily)",
    ),
    "math500": BenchmarkDef(
        *BENCHMARK_DATA["math500"], "problem", sampling=_MATH, release="reasoning_evaluation/eval_math.sh"
    ),
    "aime": BenchmarkDef(
        *BENCHMARK_DATA["aime"],
        "problem",
        sampling=_MATH,
        samples=4,
        release="reasoning_evaluation/eval_math.sh (--n_sampling 4)",
    ),
    # LiveCodeBench code generation (release_v5, problems from 2024-10-01 on, as the study), in its own JSONL format:
    # question_content, starter_code, public_test_cases, private_test_cases, metadata (func_name).
    "livecodebench": BenchmarkDef(
        *BENCHMARK_DATA["livecodebench"],
        "question_content",
        sampling=dict(temperature=0.6, top_p=0.95, max_tokens=30000),
        release="reasoning_evaluation/eval_code.sh (release_v5, --start_date 2024-10-01)",
    ),
}
# A custom benchmark generates as the release's benchmark of its kind does.
KIND_DEFAULT = {"harmful": "advbench", "benign": "xstest", "math": "math500", "code": "livecodebench"}
PROMPT_FIELDS = ("final_query", "query", "prompt", "problem", "question")


def sampling_for(bench, evaluate_sampling=None) -> Sampling:
    """The benchmark's defaults, then evaluate.sampling, then the benchmark's own overrides, field by field."""
    d = resolve(bench)
    base = REGISTRY[KIND_DEFAULT[d.kind]] if bench.name == "custom" else d
    values = {"temperature": 0.0, "top_p": 1.0, "seed": 0, "batch_size": 16, **base.sampling}
    for override in (evaluate_sampling, bench.sampling):
        if override is not None:
            values.update({k: v for k, v in override.model_dump().items() if v is not None})
    return Sampling(**values)


def samples_for(bench) -> int:
    return bench.samples or (1 if bench.name == "custom" else resolve(bench).samples)


def resolve(bench) -> BenchmarkDef:
    if bench.name == "custom":
        return BenchmarkDef(bench.kind, None, "", attack="none")
    return REGISTRY[bench.name]


def code_item(row: dict, where: str) -> dict:
    """A LiveCodeBench problem: the fork's message layout (a system message, then the question), every test."""
    import json

    from lrm_safety.evaluation.judges.code import SYSTEM, decode_tests, prompt_for

    if not row.get("question_content"):
        raise BadInput(f"{where}: no question_content field (LiveCodeBench's code-generation format)")
    tests = decode_tests(row.get("public_test_cases")) + decode_tests(row.get("private_test_cases"))
    if not tests:
        raise BadInput(f"{where}: no public_test_cases or private_test_cases")
    meta = row.get("metadata") or {}
    meta = json.loads(meta) if isinstance(meta, str) else meta
    return {
        "prompt": prompt_for(row),
        "system": SYSTEM,
        "tests": tests,
        "fn_name": meta.get("func_name"),
        "id": row.get("question_id"),
    }


def bench_path(bench, data_root: Optional[str]) -> str:
    return bench.data_path(data_root)


def load_items(ctx: StageContext, bench) -> list[dict]:
    """Items {prompt, reference?} in file order (first `limit`)."""
    d = resolve(bench)
    path = bench_path(bench, ctx.spec.evaluate.data_root)
    rows = ctx.read_rows(path)
    if bench.limit:
        rows = rows[: bench.limit]
    if d.kind == "code":
        return [code_item(row, f"{path} row {n}") for n, row in enumerate(rows)]
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
        if row.get("target"):  # AdvBench's affirmative opening: PAIR's success target
            item["target"] = row["target"]
        items.append(item)
    return items
