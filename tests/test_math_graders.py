"""The release's math answer rules (the default grader) against math-verify (the opt-in), on pairs where they
disagree, each with the rule that decides it. Release files: reasoning_evaluation/utils/parser.py
(extract_answer, strip_string) and reasoning_evaluation/utils/grader.py (math_equal, numeric_equal,
symbolic_equal, call_with_timeout), applied as reasoning_evaluation/eval.py applies them."""

import time

import pytest

from lrm_safety.evaluation.judges import math_release
from lrm_safety.evaluation.judges.math import grade
from lrm_safety.spec import parse_spec

# (whole output, reference, release's verdict, math-verify's verdict, the rule)
DISAGREE = [
    ("The answer is 5.", "5", False, True, "only a boxed answer counts"),
    ("Answer: 12", "12", False, True, "only a boxed answer counts"),
    ("So the final answer is 9.", "9", False, True, "only a boxed answer counts"),
    ("Answer: \\frac{1}{2}", "\\frac12", False, True, "only a boxed answer counts"),
    ("Final answer: 42", "42", False, True, "only a boxed answer counts"),
    ("the answer is $\\frac{3}{4}$", "\\frac34", False, True, "only a boxed answer counts"),
    ("\\boxed{0.5}", "50", True, False, "the reference /100 (a percentage)"),
    ("\\boxed{0.2}", "20", True, False, "the reference /100 (a percentage)"),
    ("\\boxed{0.07}", "7", True, False, "the reference /100 (a percentage)"),
    ("\\boxed{1}", "100", True, False, "the reference /100 (a percentage)"),
    ("\\boxed{50}", "0.5", True, False, "the reference x100 (a percentage)"),
    ("\\boxed{7}", "700", True, False, "the reference /100 (a percentage)"),
    ("\\boxed{12.5}", "0.125", True, False, "the reference x100 (a percentage)"),
    ("\\boxed{2.5}", "250", True, False, "the reference /100 (a percentage)"),
    ("\\boxed{1}", "0.01", True, False, "the reference x100 (a percentage)"),
    ("\\boxed{100}", "1", True, False, "the reference x100 (a percentage)"),
    ("\\boxed{3.14159}", "3.1416", True, False, "numbers within 1e-4"),
    ("\\boxed{1.00001}", "1", True, False, "numbers within 1e-4"),
    ("\\boxed{2.00005}", "2", True, False, "numbers within 1e-4"),
    ("\\boxed{0.33333}", "\\frac{1}{3}", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{0.14286}", "\\frac{1}{7}", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{-\\frac{2}{3}}", "-0.6667", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{\\pi}", "3.14159", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{3.1416}", "\\pi", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{2\\pi}", "6.2832", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{1.41421}", "\\sqrt{2}", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{1.7321}", "\\sqrt{3}", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{0.7854}", "\\frac{\\pi}{4}", True, False, "SymPy: numeric value within 1e-4"),
    ("\\boxed{five}", "5", True, False, "number words become digits"),
    ("\\boxed{twenty}", "20", True, False, "number words become digits"),
    ("\\boxed{three}", "3", True, False, "number words become digits"),
    ("\\boxed{eight}", "8", True, False, "number words become digits"),
    ("\\boxed{one hundred}", "100", True, False, "number words become digits"),
    ("\\boxed{(C) 7}", "7", True, False, "a choice prefix (C) is dropped"),
    ("\\boxed{(B) 12}", "12", True, False, "a choice prefix (B) is dropped"),
    ("\\boxed{B: 5}", "5", True, False, "a choice prefix B: is dropped"),
    ("\\boxed{(1,2)}", "[1,2]", True, False, "brackets stripped before comparing"),
    ("\\boxed{(3,4)}", "[3,4]", True, False, "brackets stripped before comparing"),
    (
        "\\boxed{2x + 1 = y}",
        "y = 2x+1",
        False,
        True,
        "equations compared as lhs - rhs, up to sign: y - 2x - 1 is -(2x + 1 - y), yet (x, y) leaves = off one side",
    ),
    ("\\boxed{x \\in [2, 5)}", "[2,5)", False, True, "x\\in is dropped but the space before \\in keeps it whole"),
    ("\\boxed{\\frac{1}{4}}", "25\\%", False, True, "% dropped: 1/4 against 25 (not a plain number, no x100 rule)"),
]


@pytest.mark.parametrize(
    "response,reference,release,mathverify,rule", DISAGREE, ids=[f"{i}-{r[4][:28]}" for i, r in enumerate(DISAGREE)]
)
def test_the_graders_disagree_as_their_rules_say(response, reference, release, mathverify, rule):
    assert grade(response, reference)["correct"] is release, rule
    assert grade(response, reference, "math-verify")["correct"] is mathverify


def test_the_table_is_large_and_every_row_disagrees():
    assert len(DISAGREE) >= 30 and all(r[2] != r[3] for r in DISAGREE)


def test_release_extraction_is_the_last_boxed_and_nothing_else():
    ext = math_release.extract
    assert ext("<think>\\boxed{1}</think>\n\nAfter all, \\boxed{2}.") == "2", "the whole output, last one"
    assert ext("\\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}" and ext("\\boxed 5$ done") == "5"
    assert ext("no box, the answer is 3") == "" and ext(None) == ""
    assert ext("Answer boxed{3}") == "3", "the word boxed, with or without its backslash, as the release splits"
    assert ext("\\boxed{\n12\n}") == "12" and ext("\\boxed{:7.}") == "7"
    assert grade("no box here", "3") == {"predicted": "", "reference": "3", "correct": False}


def test_release_normalisation_rules():
    s = math_release.strip
    assert s("5 \\text{ cm}") == "5" and s("90^\\circ") == "90" and s("\\$18.90") == "18.90" and s("6.00") == "6"
    assert s("x=3") == "3" and s("\\dfrac12") == "\\frac{1}{2}" and s("1/2") == "\\frac{1}{2}"
    assert s("\\sqrt2") == "\\sqrt{2}" and s("10\\%") == "10" and s("3 hours") == "3"
    assert s("\\left( 1, 2 \\right)") == "(1,2)" and s(".5") == "0.5" and s("007") == "7"


def test_sympy_runs_under_a_timeout_in_a_separate_process(monkeypatch):
    """grader.py: symbolic_equal in its own process, terminated after 3 s, counts as not equal."""
    monkeypatch.setattr(math_release, "symbolic_equal", lambda a, b: time.sleep(30) or True)
    t = time.monotonic()
    assert math_release.symbolic_equal_with_timeout("x", "x", timeout=0.5) is False
    assert time.monotonic() - t < 5
    monkeypatch.undo()
    assert math_release.symbolic_equal_with_timeout("x^2 + 2x + 1", "(x+1)^2") is True, "a fresh worker after a kill"


def test_the_default_grader_is_the_release_and_math_verify_is_an_opt_in():
    assert parse_spec({"evaluate": {"dataRoot": "/d"}}).evaluate.math_grader == "release"
    assert (
        parse_spec({"evaluate": {"dataRoot": "/d", "mathGrader": "math-verify"}}).evaluate.math_grader == "math-verify"
    )
