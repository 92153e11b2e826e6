"""Math graders. `release` (the default, judges/math_release.py) applies the release's own answer rules;
`math-verify` (opt-in) takes the last \\boxed{} of the whole output, else an `answer is X` line, and compares
with math-verify.

math-verify (the grader open-r1 and lighteval use) parses LaTeX into SymPy and compares symbolically, so
`\\sqrt3` = `\\sqrt{3}`, `\\sqrt{2}/2` = `\\frac{\\sqrt{2}}{2}`, `5\\text{ cm}` = `5`, `90^\\circ` = `90`. A string
normaliser and a SymPy fallback keep the grade defined where math-verify cannot parse either side.
"""

from __future__ import annotations

import re
from typing import Optional

from lrm_safety.styles import parse_response


def _boxed_spans(text: str) -> list[str]:
    out, i = [], 0
    while True:
        i = text.find("\\boxed", i)
        if i < 0:
            return out
        j = text.find("{", i)
        if j < 0 or text[i + 6 : j].strip():
            # \boxed 5 (no braces)
            m = re.match(r"\\boxed\s+([^\s$]+)", text[i:])
            if m:
                out.append(m.group(1))
            i += 6
            continue
        depth, k = 0, j
        while k < len(text):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                break
            k += 1
        out.append(text[j + 1 : k])
        i = k


def extract_boxed(text: Optional[str]) -> Optional[str]:
    """The last \\boxed{...}; else 'answer is X' / 'Answer: X'; else None."""
    if not text:
        return None
    spans = _boxed_spans(text)
    if spans:
        return spans[-1].strip()
    m = re.findall(r"(?:final answer|answer)\s*(?:is|:)\s*\$?([^\n$]+?)\$?(?:\.|\n|$)", text, re.I)
    return m[-1].strip() if m else None


def extract_answer(response: str) -> Optional[str]:
    """The last \\boxed{} anywhere in the output, reasoning included (a cut-off answer still counts what the
    reasoning boxed, as the release grades); else an `answer is X` line, the answer's before the reasoning's."""
    spans = _boxed_spans(response or "")
    if spans:
        return spans[-1].strip()
    reasoning, answer = parse_response(response or "")
    return extract_boxed(answer) or extract_boxed(reasoning)


def normalize(ans: str) -> str:
    s = ans.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|mathbf|textbf)\{([^}]*)\}", r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\{([^{}]+)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"^[a-z]\s*=", "", s)
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.\d*?0+", s):
        s = s.rstrip("0").rstrip(".")
    return s


def _sympy_value(s: str):
    expr = s
    expr = re.sub(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", r"((\1)/(\2))", expr)
    expr = re.sub(r"\\sqrt\{([^{}]+)\}", r"sqrt(\1)", expr)
    expr = expr.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    expr = expr.replace("{", "(").replace("}", ")")
    if "\\" in expr:
        return None
    from sympy.parsing.sympy_parser import implicit_multiplication_application, parse_expr, standard_transformations

    return parse_expr(
        expr, transformations=standard_transformations + (implicit_multiplication_application,), evaluate=True
    )


def _math_verify(predicted: str, reference: str) -> Optional[bool]:
    """math-verify's verdict, or None when it cannot parse one side (or is not installed)."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    try:
        gold, pred = parse(f"\\boxed{{{reference}}}"), parse(f"\\boxed{{{predicted}}}")
        if not gold or not pred:
            return None
        return bool(verify(gold, pred))
    except Exception:  # its own timeouts need the main thread; a parse error is "cannot tell"
        return None


def answers_match(predicted: Optional[str], reference: str) -> bool:
    if predicted is None:
        return False
    a, b = normalize(predicted), normalize(reference)
    if a == b:
        return True
    verdict = _math_verify(predicted, reference)
    if verdict is not None:
        return verdict
    try:
        va, vb = _sympy_value(a), _sympy_value(b)
        if va is None or vb is None:
            return False
        import sympy

        return bool(sympy.simplify(va - vb) == 0)
    except Exception:
        return False


def grade(response: str, reference: str, grader: str = "release") -> dict:
    """{predicted, reference, correct} by the named grader (spec.evaluate.mathGrader)."""
    if grader == "release":
        from lrm_safety.evaluation.judges import math_release

        return math_release.grade(response, reference)
    pred = extract_answer(response)
    return {"predicted": pred, "reference": reference, "correct": answers_match(pred, reference)}
