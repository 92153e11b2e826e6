"""mix: counts, seed reproducibility, dedupe, over-length accounting, the missing-math error."""
import json

import pytest

from conftest import make_ctx
from lrm_safety.errors import BadInput
from lrm_safety.mathgen import synthetic_math
from lrm_safety.judges.math import grade
from lrm_safety.stages import mix


def _safety_file(tmp_path, n=30, dupes=5):
    rows = [{"prompt": f"harmful request number {i}", "response": f"<think>\nunsafe\n</think>\n\nI'm sorry ({i})."}
            for i in range(n)]
    rows += [{"prompt": f"Harmful  request number {i}", "response": "dup"} for i in range(dupes)]  # same prompt, spacing/case
    path = tmp_path / "safety.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def _build(tmp_path, name="exp", **mix_over):
    ctx = make_ctx(tmp_path, {"mix": {"safetySource": _safety_file(tmp_path), "safetyCount": 20,
                                      "mathSource": "builtin:synthetic-math", "mathCount": 10, **mix_over}}, name=name)
    count = lambda text: len(text.split())  # noqa: E731
    return mix.build(ctx, count, None)


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


def test_dedupe_by_normalized_prompt(tmp_path):
    splits, counts, _ = _build(tmp_path, safetyCount=1000, mathCount=0)
    prompts = [s["messages"][0]["content"] for s in splits["train"]]
    assert len(prompts) == 30 and counts["duplicatesDropped"] == 5
    assert counts["safetyShortfall"] == 970, "asking for more than exists is reported, not hidden"


def test_overlength_drop_and_truncate(tmp_path):
    _, dropped, _ = _build(tmp_path, maxLength=40, overlength="drop", mathCount=10)
    assert dropped["overLength"] > 0 and dropped["train"] == 30 - dropped["overLength"]
    splits, trunc, _ = _build(tmp_path, maxLength=40, overlength="truncate", mathCount=10)
    assert trunc["overLength"] == dropped["overLength"] and trunc["train"] == 30
    assert max(s["tokens"] for s in splits["train"]) <= 40


def test_heldout_split_and_system_prompt(tmp_path):
    splits, counts, _ = _build(tmp_path, heldoutFraction=0.2, systemPrompt=True)
    assert counts["heldout"] == 6 and counts["train"] == 24
    assert splits["train"][0]["messages"][0]["role"] == "system"


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
