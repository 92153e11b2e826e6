"""mix: counts, seed reproducibility, dedupe, over-length accounting, the missing-math error."""

import json

import pytest

from conftest import make_ctx
from lrm_safety.data.synthetic import synthetic_math
from lrm_safety.errors import BadInput
from lrm_safety.evaluation.judges.math import grade
from lrm_safety.stages import mix


def _safety_file(tmp_path, n=30, dupes=5):
    rows = [
        {"prompt": f"harmful request number {i}", "response": f"<think>\nunsafe\n</think>\n\nI'm sorry ({i})."}
        for i in range(n)
    ]
    rows += [
        {"prompt": f"Harmful  request number {i}", "response": "dup"} for i in range(dupes)
    ]  # same prompt, spacing/case
    path = tmp_path / "safety.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def _build(tmp_path, name="exp", **mix_over):
    ctx = make_ctx(
        tmp_path,
        {
            "mix": {
                "safetySource": _safety_file(tmp_path),
                "safetyCount": 20,
                "mathSource": "builtin:synthetic-math",
                "mathCount": 10,
                **mix_over,
            }
        },
        name=name,
    )
    return mix.build(ctx, None)


def test_counts_and_chat_format(tmp_path):
    splits, counts, metrics = _build(tmp_path)
    assert counts["safety"] == 20 and counts["math"] == 10 and counts["train"] == 30 and counts["heldout"] == 0
    sample = splits["train"][0]
    assert [m["role"] for m in sample["messages"]] == ["user", "assistant"]
    assert metrics["tokens"]["n"] == 30 and metrics["totalTokens"] > 0


def test_same_seed_same_mixture_other_seed_differs(tmp_path):
    a, _, _ = _build(tmp_path, seed=7)
    b, _, _ = _build(tmp_path, seed=7)
    c, _, _ = _build(tmp_path, seed=8)
    assert a == b
    assert a != c


def test_the_release_mixture_all_math_and_random_sample_of_safety(tmp_path):
    """dataset/proc.py: every math sample, then random.seed(42); random.sample(safety, k)."""
    import random

    safety = [
        {"prompt": f"unsafe request {i}", "response": f"<think>\nno\n</think>\n\nSorry ({i})."} for i in range(50)
    ]
    math = [
        {"prompt": f"What is {i} + {i}?", "response": f"<think>\n{i}+{i}\n</think>\n\n\\boxed{{{2 * i}}}"}
        for i in range(12)
    ]
    (tmp_path / "safety.json").write_text(json.dumps(safety))  # the release's files are JSON arrays
    (tmp_path / "math.json").write_text(json.dumps(math))
    for k in (10, 4):
        ctx = make_ctx(
            tmp_path,
            {
                "mix": {
                    "safetySource": str(tmp_path / "safety.json"),
                    "safetyCount": k,
                    "mathSource": str(tmp_path / "math.json"),
                    "mathCount": 4000,
                }
            },
        )
        splits, counts, _ = mix.build(ctx, None)
        random.seed(42)
        expected = random.sample(safety, k)
        got = [s["messages"] for s in splits["train"]]
        assert got[:12] == [
            [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}] for r in math
        ], "all math, in order"
        assert [m[0]["content"] for m in got[12:]] == [r["prompt"] for r in expected]
        assert counts["math"] == 12 and counts["safety"] == k


def test_math_subset_does_not_depend_on_the_safety_pool(tmp_path):
    a, _, _ = _build(tmp_path, mathCount=5, safetyCount=20)
    b, _, _ = _build(tmp_path, mathCount=5, safetyCount=3)
    math = lambda splits: [s["messages"] for s in splits["train"] if s["kind"] == "math"]  # noqa: E731
    assert math(a) == math(b) and len(math(a)) == 5


def test_dedupe_is_opt_in(tmp_path):
    splits, counts, _ = _build(tmp_path, safetyCount=30, mathCount=0, dedupe=True)
    prompts = [s["messages"][0]["content"] for s in splits["train"]]
    assert len(prompts) == 30 and counts["duplicatesDropped"] == 5
    _, counts, _ = _build(tmp_path, safetyCount=35, mathCount=0)
    assert counts["safety"] == 35 and counts["duplicatesDropped"] == 0, "the release keeps every sample"


def test_a_safety_shortfall_fails_unless_allowed(tmp_path):
    with pytest.raises(BadInput, match=r"safetyCount is 1000 but only 35 safety samples.*allowShortfall"):
        _build(tmp_path, safetyCount=1000, mathCount=0)
    splits, counts, _ = _build(tmp_path, safetyCount=1000, mathCount=0, allowShortfall=True)
    assert counts["safety"] == 35 and counts["safetyShortfall"] == 965, "reported, not hidden"


def test_overlength_counted_in_trained_tokens_then_kept_or_dropped(tmp_path, smol_dir):
    from transformers import AutoTokenizer

    from lrm_safety.training.text import Renderer

    renderer = Renderer(AutoTokenizer.from_pretrained(smol_dir))
    ctx = make_ctx(
        tmp_path,
        {
            "train": {"maxLength": 40},
            "mix": {
                "safetySource": _safety_file(tmp_path),
                "safetyCount": 20,
                "mathSource": "builtin:synthetic-math",
                "mathCount": 10,
                "overlength": "drop",
            },
        },
    )
    _, dropped, _ = mix.build(ctx, renderer)
    assert dropped["overLength"] > 0 and dropped["train"] == 30 - dropped["overLength"]
    ctx = make_ctx(
        tmp_path,
        {
            "train": {"maxLength": 40},
            "mix": {
                "safetySource": _safety_file(tmp_path),
                "safetyCount": 20,
                "mathSource": "builtin:synthetic-math",
                "mathCount": 10,
            },
        },
    )
    splits, kept, _ = mix.build(ctx, renderer)
    assert kept["overLength"] == dropped["overLength"] and kept["train"] == 30, "truncated in train, as TRL does"
    assert kept["overLengthPolicy"] == "truncate" and max(s["tokens"] for s in splits["train"]) == 40


def test_heldout_split_and_system_prompt(tmp_path):
    ctx = make_ctx(
        tmp_path,
        {
            "distill": {"style": "short"},
            "mix": {
                "safetySource": _safety_file(tmp_path),
                "safetyCount": 20,
                "mathSource": "builtin:synthetic-math",
                "mathCount": 10,
                "heldoutFraction": 0.2,
                "systemPrompt": True,
            },
        },
    )
    splits, counts, _ = mix.build(ctx, None)
    assert counts["heldout"] == 6 and counts["train"] == 24
    assert splits["train"][0]["messages"][0] == {"role": "system", "content": __import__("lrm_safety").styles.SHORT}


def test_missing_math_source_is_a_clear_error(tmp_path):
    from lrm_safety.spec import SpecError, parse_spec

    with pytest.raises(SpecError, match="mathCount > 0 needs mathSource"):
        parse_spec({"mix": {"mathSource": None, "mathCount": 10}})
    splits, counts, _ = _build(tmp_path, mathSource=None, mathCount=0)
    assert counts["math"] == 0 and counts["train"] == 20


def test_math_from_distill_without_math_prompts_is_a_clear_error(tmp_path):
    ctx = make_ctx(tmp_path, {"mix": {"mathSource": "distill", "mathCount": 5}})
    with pytest.raises(BadInput, match="stage distill has not finished"):
        mix._math_rows(ctx)


def test_synthetic_math_is_correct_and_seeded():
    rows = synthetic_math(50, seed=3)
    assert rows == synthetic_math(50, seed=3) and len({r["prompt"] for r in rows}) == 50
    for r in rows:
        assert grade(r["response"], r["reference"])["correct"], r


def test_a_kept_cut_off_answer_is_marked_for_training_without_end_of_turn(tmp_path):
    rows = [
        {"prompt": f"q{i}", "response": f"<think>\nr{i}\n</think>\n\na{i}", **({"finish": "length"} if i == 0 else {})}
        for i in range(3)
    ]
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    ctx = make_ctx(
        tmp_path,
        {
            "mix": {
                "safetySource": str(src),
                "safetyCount": 3,
                "mathSource": "builtin:synthetic-math",
                "mathCount": 1,
                "heldoutFraction": 0.0,
            }
        },
    )
    calls = []
    splits, _, _ = mix.build(ctx, lambda msgs, eot=True: calls.append(eot) or [0] * 10)
    marked = {s["messages"][-2]["content"]: s.get("endOfTurn", True) for s in splits["train"] if s["kind"] == "safety"}
    assert marked == {"q0": False, "q1": True, "q2": True}
    assert sorted(calls) == [False, True, True, True], "lengths are counted as train renders them"
