"""Judges: refusal matcher, guard-model judge, LLM judge, math grader."""
from .refusal import is_refusal, reasoning_decision, judge_consistency, REFUSAL_PHRASES  # noqa: F401
