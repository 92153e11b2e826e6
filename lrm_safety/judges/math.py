"""Math grader: last \\boxed{} answer (with fallbacks), normalized, compared exactly or symbolically."""
from __future__ import annotations

import re
from typing import Optional

from ..styles import parse_response


def _boxed_spans(text: str) -> list[str]:
    out, i = [], 0
    while True:
        i = text.find("\\boxed", i)
        if i < 0:
            return out
        j = text.find("{", i)
        if j < 0 or text[i + 6:j].strip():
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
        out.append(text[j + 1:k])
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
    reasoning, answer = parse_response(response)
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
    from sympy.parsing.sympy_parser import (implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    return parse_expr(expr, transformations=standard_transformations + (implicit_multiplication_application,),
                      evaluate=True)


def answers_match(predicted: Optional[str], reference: str) -> bool:
    if predicted is None:
        return False
    a, b = normalize(predicted), normalize(reference)
    if a == b:
        return True
    try:
        va, vb = _sympy_value(a), _sympy_value(b)
        if va is None or vb is None:
            return False
        import sympy

        return bool(sympy.simplify(va - vb) == 0)
    except Exception:
        return False


def grade(response: str, reference: str) -> dict:
    pred = extract_answer(response)
    return {"predicted": pred, "reference": reference, "correct": answers_match(pred, reference)}
