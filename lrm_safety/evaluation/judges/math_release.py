"""The release's math answer rules (reasoning_evaluation/utils/parser.py and grader.py), the default grader.

Extraction: the text after the last `boxed` of the whole output, brace-matched (or up to the next `$` when no
brace follows); nothing else counts, so an output without one scores an empty answer. Both sides are normalised
as the release's `strip_string` does (units, `\\text{}`, degrees, dollars, percent signs, `x=`, fractions, ...),
then `math_equal`: the same string; a multiple-choice letter; comma lists in any order; numbers within 1e-4
(absolute), the reference also accepted x100 and /100 (percentages); tuples and matrices element-wise;
equations; and SymPy equivalence, run in a separate process that is killed after 3 seconds (as the release).
The code is this project's; the rules, the unit list and their order are the release's.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Optional

SYMPY_TIMEOUT_S = 3.0  # grader.py: call_with_timeout(symbolic_equal_process, ..., timeout=3)
ABS_TOL = 1e-4  # grader.py: numeric_equal, isclose(reference, prediction, abs_tol=1e-4)

# parser.py's unit words (mostly MathQA's), removed where they stand alone; with their plurals. Patterns, unescaped,
# as the release uses them.
_UNITS = [
    "east",
    "degree",
    "mph",
    "kmph",
    "ft",
    "m sqaure",
    " m east",
    "sq m",
    "deg",
    "mile",
    "q .",
    "monkey",
    "prime",
    "ratio",
    "profit of rs",
    "rd",
    "o",
    "gm",
    "p . m",
    "lb",
    "tile",
    "per",
    "dm",
    "lt",
    "gain",
    "ab",
    "way",
    "west",
    "a .",
    "b .",
    "c .",
    "d .",
    "e .",
    "f .",
    "g .",
    "h .",
    "t",
    "a",
    "h",
    "no change",
    "men",
    "soldier",
    "pie",
    "bc",
    "excess",
    "st",
    "inches",
    "noon",
    "percent",
    "by",
    "gal",
    "kmh",
    "c",
    "acre",
    "rise",
    "a . m",
    "th",
    "π r 2",
    "sq",
    "mark",
    "l",
    "toy",
    "coin",
    "sq . m",
    "gallon",
    "° f",
    "profit",
    "minw",
    "yr",
    "women",
    "feet",
    "am",
    "pm",
    "hr",
    "cu cm",
    "square",
    "v â € ™",
    "are",
    "rupee",
    "rounds",
    "cubic",
    "cc",
    "mtr",
    "s",
    "ohm",
    "number",
    "kmph",
    "day",
    "hour",
    "minute",
    "min",
    "second",
    "man",
    "woman",
    "sec",
    "cube",
    "mt",
    "sq inch",
    "mp",
    "∏ cm ³",
    "hectare",
    "more",
    "sec",
    "unit",
    "cu . m",
    "cm 2",
    "rs .",
    "rs",
    "kg",
    "g",
    "month",
    "km",
    "m",
    "cm",
    "mm",
    "apple",
    "liter",
    "loss",
    "yard",
    "pure",
    "year",
    "increase",
    "decrease",
    "d",
    "less",
    "Surface",
    "litre",
    "pi sq m",
    "s .",
    "metre",
    "meter",
    "inch",
]
UNIT_PATTERNS = [re.compile(r"(^|\W)" + u + r"($|\W)") for u in _UNITS + [u + "s" for u in _UNITS]]
_MONTHS = re.compile(
    r"\b(January|February|March|April|May|June|July|August|September|October|November|December)\b", re.I
)
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
_NUMBER_WORDS.update(
    {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
)
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_CHOICE_PREFIXES = [
    re.compile(p)
    for p in (
        [rf"^\({c}\)" for c in "ABCDE"]
        + [rf"^{c}\." for c in "ABCDE"]
        + [rf"^{c}\)" for c in "ABCDE"]
        + [rf"^\*\*{c}\*\*" for c in "ABCDE"]
        + [rf"^{c}:" for c in "ABCDE"]
    )
]


def extract(response: Optional[str]) -> str:
    """parser.py extract_answer: after the last `boxed`, brace-matched; '' when there is none."""
    text = (response or "").replace("\u043a\u0438", "")
    if "boxed" not in text:
        return ""
    tail = text.split("boxed")[-1]
    if not tail:
        return ""
    if tail[0] == "{":
        depth, out = 1, []
        for c in tail[1:]:
            depth += {"{": 1, "}": -1}.get(c, 0)
            if depth == 0:
                break
            out.append(c)
        pred = "".join(out)
    else:
        pred = tail.split("$")[0].strip()
    pred = re.sub(r"\n\s*", "", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    for end in (".", "/"):
        if pred.endswith(end):
            pred = pred[:-1]
    return pred


def _words_to_number(text: str) -> str:
    """A whole answer written in number words ('twenty one') as digits; a digit string without leading zeros."""
    if text.isdigit():
        return str(int(text))
    words = text.lower().replace("-", " ").split()
    if not words or any(w not in _NUMBER_WORDS and w not in _SCALES and w != "and" for w in words):
        return text
    total = current = 0
    for w in words:
        if w in _NUMBER_WORDS:
            current += _NUMBER_WORDS[w]
        elif w == "hundred":
            current *= 100
        elif w in _SCALES:
            total, current = total + current * _SCALES[w], 0
    return str(total + current)


def _fix_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1b -> \\frac{1}{b}, \\frac1{72} -> \\frac{1}{72}."""
    head, *rest = s.split("\\frac")
    out = head
    for sub in rest:
        out += "\\frac"
        if sub.startswith("{"):
            out += sub
        elif len(sub) < 2:
            return s
        elif sub[1] != "{":
            out += "{" + sub[0] + "}{" + sub[1] + "}" + sub[2:]
        else:
            out += "{" + sub[0] + "}" + sub[1:]
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = parts
    try:
        a2 = a if "sqrt" in a else int(a)
        b2 = b if "sqrt" in b else int(b)
    except ValueError:
        return s
    return f"\\frac{{{a2}}}{{{b2}}}" if s == f"{a2}/{b2}" else s


def strip(s) -> str:
    """parser.py strip_string, rule for rule and in its order."""
    s = str(s).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    unitless = re.sub(r"\\text{.*?}$", "", s).strip()
    if unitless and unitless != s:
        s = unitless
    for pattern in UNIT_PATTERNS:
        candidate = pattern.sub(r"\1\2", s)
        if candidate:
            s = candidate
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = _words_to_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = _MONTHS.sub("", s)
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.isalnum() and ((s[:1], s[-1:]) in (("{", "}"), ("(", ")"), ("[", "]"))):
        s = s[1:-1]  # the release's condition; isalnum() excludes brackets, so it never applies
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(s))


def _number(s: str) -> Optional[float]:
    s = s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        if s.endswith("%"):
            try:
                return float(s[:-1].rstrip("\\")) / 100
            except ValueError:
                pass
    return None


def _choice(pred: str) -> str:
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper())
    return (letters or [pred.strip().strip(".")])[-1].rstrip(".").rstrip("/")


def _pmatrix_from_set(s: str) -> str:
    rows = [m.strip("{}") for m in re.findall(r"\{.*,.*\}", s.strip())]
    return ", ".join(r"\begin{pmatrix}" + m.replace(",", "\\") + r"\end{pmatrix}" for m in rows)


def equal(pred: Optional[str], ref: Optional[str], depth: int = 0) -> bool:
    """grader.py math_equal (include_percentage, is_close, timeout all on, as check_is_correct calls it)."""
    if depth > 5 or pred is None or ref is None:
        return False
    if pred.strip().lower() == ref.strip().lower():
        return True
    if ref in ("A", "B", "C", "D", "E") and _choice(pred) == ref:
        return True
    for prefix in _CHOICE_PREFIXES:
        if prefix.match(pred) and equal(prefix.sub("", pred, count=1).strip(), ref, depth + 1):
            return True
    if "," in pred and "," in ref:
        p, r = sorted(x.strip() for x in pred.split(",")), sorted(x.strip() for x in ref.split(","))
        if len(p) == len(r) and all(equal(a, b, depth + 1) for a, b in zip(p, r)):
            return True
    p_num, r_num = _number(pred), _number(ref)
    if p_num is not None and r_num is not None:
        return any(_close(p_num, r) for r in (r_num / 100, r_num, r_num * 100))
    if not pred:
        return False
    ref, pred = str(ref).strip(), str(pred).strip()
    if "pmatrix" in pred and "pmatrix" not in ref:
        ref = _pmatrix_from_set(ref)
    p_str, r_str = pred, ref
    if (pred.startswith("[") and pred.endswith("]") and not ref.startswith("(")) or (
        pred.startswith("(") and pred.endswith(")") and not ref.startswith("[")
    ):
        p_str, r_str = p_str.strip("[]()"), r_str.strip("[]()")
    for c in "{}()":
        p_str, r_str = p_str.replace(c, ""), r_str.replace(c, "")
    if p_str.lower() == r_str.lower():
        return True
    if re.match(r"(\(|\[).+(\)|\])", pred) and re.match(r"(\(|\[).+(\)|\])", ref):
        p, r = pred[1:-1].split(","), ref[1:-1].split(",")
        if len(p) == len(r) and all(equal(a, b, depth + 1) for a, b in zip(p, r)):
            return True
    if _matrices_equal(pred, ref, depth):
        return True
    if pred.count("=") == 1 and ref.count("=") == 1:
        lp, rp = (x.strip() for x in pred.split("="))
        lr, rr = (x.strip() for x in ref.split("="))
        p_eq, r_eq = f"{lp} - ({rp})", f"{lr} - ({rr})"
        if symbolic_equal(p_eq, r_eq) or symbolic_equal(f"-({p_eq})", r_eq):
            return True
    elif pred.count("=") == 1 and len(pred.split("=")[0].strip()) <= 2 and "=" not in ref:
        if equal(pred.split("=")[1], ref, depth + 1):
            return True
    elif ref.count("=") == 1 and len(ref.split("=")[0].strip()) <= 2 and "=" not in pred:
        if equal(pred, ref.split("=")[1], depth + 1):
            return True
    return symbolic_equal_with_timeout(pred, ref)


def _close(a: float, b: float) -> bool:
    try:
        return math.isclose(b, a, abs_tol=ABS_TOL)
    except (OverflowError, ValueError):
        return False


def _matrices_equal(pred: str, ref: str, depth: int) -> bool:
    starts, ends = ("\\begin{pmatrix}", "\\begin{bmatrix}"), ("\\end{pmatrix}", "\\end{bmatrix}")
    if not (pred.startswith(starts) and pred.endswith(ends) and ref.startswith(starts) and ref.endswith(ends)):
        return False
    cut = slice(len("\\begin{pmatrix}"), -len("\\end{pmatrix}"))
    p_rows = [ln.strip() for ln in pred[cut].split("\\\\") if ln.strip()]
    r_rows = [ln.strip() for ln in ref[cut].split("\\\\") if ln.strip()]
    if len(p_rows) != len(r_rows):
        return False
    for p_row, r_row in zip(p_rows, r_rows):
        p, r = p_row.split("&"), r_row.split("&")
        if len(p) != len(r) or not all(equal(a, b, depth + 1) for a, b in zip(p, r)):
            return False
    return True


def _parse(s: str):
    """parse_latex, then parse_expr, then latex2sympy, each on the text with `\\\\` -> `\\` and as it is; the
    text itself when none parses (the release's order)."""
    from latex2sympy2_extended import latex2sympy
    from sympy.parsing.latex import parse_latex
    from sympy.parsing.sympy_parser import parse_expr

    for f in (parse_latex, parse_expr, latex2sympy):
        for text in (s.replace("\\\\", "\\"), s):
            try:
                return f(text)
            except Exception:  # any parser failure: try the next form, as the release
                pass
    return s


def symbolic_equal(a: str, b: str) -> bool:
    """grader.py symbolic_equal: same string or object, a - b simplifying to 0, equal equations, equal numeric
    values within 1e-4, or matrices equal at 3 decimals."""
    from sympy import N, simplify

    a, b = _parse(a), _parse(b)
    checks = (
        lambda: str(a) == str(b) or a == b,
        lambda: a.equals(b) or simplify(a - b) == 0,
        lambda: abs(a.lhs - a.rhs).equals(abs(b.lhs - b.rhs)),
        lambda: _close(float(N(a)), float(N(b))),
        lambda: a.shape == b.shape and a.applyfunc(lambda x: round(x, 3)).equals(b.applyfunc(lambda x: round(x, 3))),
    )
    for check in checks:
        try:
            if check():
                return True
        except Exception:  # a check that does not apply to these objects
            pass
    return False


_pool: Optional[ProcessPoolExecutor] = None


def symbolic_equal_with_timeout(a: str, b: str, timeout: float = SYMPY_TIMEOUT_S) -> bool:
    """symbolic_equal in a worker process, killed (and replaced) when it runs past the timeout: False then."""
    global _pool
    import multiprocessing

    if _pool is None:
        _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    future = _pool.submit(symbolic_equal, a, b)
    try:
        return bool(future.result(timeout=timeout))
    except FutureTimeout:
        for proc in list(getattr(_pool, "_processes", {}).values()):
            proc.kill()
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None
        return False
    except Exception:  # the worker died (a sympy crash): not equal, and a fresh worker next time
        _pool = None
        return False


def grade(response: str, reference: str) -> dict:
    """eval.py: extract_answer on the whole output, then check_is_correct(strip(pred), strip(ref))."""
    pred = extract(response)
    return {"predicted": pred, "reference": reference, "correct": equal(strip(pred), strip(str(reference)))}
