"""Judges: refusal matcher, guard-model judge, LLM judges, math and code graders."""

from __future__ import annotations

from lrm_safety.evaluation.judges.refusal import REFUSAL_PHRASES, is_refusal, judge_consistency, reasoning_decision  # noqa: F401


def describe_judges(ev) -> dict:
    """Which judge decided what, for the report, the status and validate (ev: spec.evaluate)."""
    j, o = ev.judge, ev.over_refusal_judge
    seen = "whole output" if j.input == "full" else "answer"
    harm = {
        "guard": f"a guard model ({j.model}) on the {seen}",
        "llm": f"an LLM judge ({j.model}) on the {seen}",
        "refusal": "the keyword refusal matcher on the answer's opening",
    }[j.kind]
    if o is None:
        over = "the keyword refusal matcher (no evaluate.overRefusalJudge set; the release uses a two-class LLM judge)"
    elif o.kind == "refusal":
        over = "the keyword refusal matcher"
    else:
        over = f"an LLM judge ({o.model}), two classes (the XSTest protocol) on the whole output"
    return {"harm": harm, "overRefusal": over}


def judge_lines(ev) -> list[str]:
    """For validate and render: which judge decides what, and a warning where over-refusal falls back to keywords."""
    judges = describe_judges(ev)
    lines = [f"# harm judge: {judges['harm']}"]
    benign = any(b.name == "xstest" or b.kind == "benign" for b in ev.benchmarks)
    if benign and ev.over_refusal_judge is None:
        lines.append(
            "warning: spec.evaluate.overRefusalJudge is not set: over-refusal (XSTest) is judged by the keyword "
            "refusal matcher; the release uses a two-class LLM judge (gpt-4o): set overRefusalJudge "
            "{model, endpoint} for that, or {kind: refusal} to choose keywords explicitly"
        )
    elif benign:
        lines.append(f"# over-refusal judge: {judges['overRefusal']}")
    if ev.judge.kind == "refusal":
        lines.append(
            "# the keyword matcher measures refusals, not harm: the status and report show a refusal rate, no ASR"
        )
    return lines
