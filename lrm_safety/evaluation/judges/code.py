"""Code reasoning (LiveCodeBench): the program from the whole output, run against the problem's tests in a
sandbox, pass@1, by the rules of the release's fork (reasoning_evaluation/LiveCodeBench/lcb_runner:
prompts/code_generation.py, utils/extraction_utils.py, evaluation/testing_util.py): the code between the last
two ``` lines, the fork's import prelude, 6 s a test, stop at the first failing test, stdout compared line by
line as text or as exact decimals, a functional result compared as JSON values.

The sandbox is a subprocess of its own: a new network namespace with no interface up (`unshare -rn`), run as an
unprivileged user when we are root, resource limits (CPU seconds, address space, processes, file size), its own
empty temp dir and session, and the whole process group killed when it ends or times out, so an infinite loop,
a fork bomb or a network call costs one test, not the stage.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import zlib
from typing import Optional

NOBODY = 65534

# The release's fork (reasoning_evaluation/LiveCodeBench, lcb_runner/prompts/code_generation.py) registers every
# model it is given with the DeepSeekAPI style (lm_styles.register_language_model), whose prompt is a system
# message and a user message laid out as `### Question:` / `### Format:` with a code block / `### Answer:`. Same
# layout here, the wording this project's own.
SYSTEM = (
    "You are an expert Python programmer. Given a programming problem, you write a correct Python program "
    "that meets its specification and passes all of its tests."
)
STARTER_FORMAT = "Use the starter code below for your solution and put your code between the delimiters."
STDIN_FORMAT = (
    "Read the input from stdin, solve the problem and write the answer to stdout (do not test the "
    "sample inputs directly). Put your code between the delimiters below, so that the program reads "
    "the input, runs the algorithm and writes the output to STDOUT."
)
ANSWER_LINE = "### Answer: (use the format given, with the backticks)"
# What the fork prepends to every program before running it (testing_util.py import_string): the standard
# modules a contest solution tends to use without importing them, and a deep recursion limit.
PRELUDE = (
    "".join(
        f"from {m} import *\n"
        for m in (
            "string",
            "re",
            "datetime",
            "collections",
            "heapq",
            "bisect",
            "copy",
            "math",
            "random",
            "statistics",
            "itertools",
            "functools",
            "operator",
            "io",
            "sys",
            "json",
            "builtins",
            "typing",
        )
    )
    + "".join(
        f"import {m}\n"
        for m in (
            "string",
            "re",
            "datetime",
            "collections",
            "heapq",
            "bisect",
            "copy",
            "math",
            "random",
            "statistics",
            "itertools",
            "functools",
            "operator",
            "io",
            "sys",
            "json",
        )
    )
    + "sys.setrecursionlimit(50000)\n"
)
TEST_TIMEOUT_S = 6.0  # lcb_runner/runner/parser.py --timeout (eval_code.sh leaves it): per test


def decode_tests(field) -> list[dict]:
    """LiveCodeBench test cases: a JSON list, or (its private tests) base64 of zlib of a pickle of that JSON."""
    if isinstance(field, list):
        return field
    if not field:
        return []
    try:
        return json.loads(field)
    except ValueError:
        return json.loads(pickle.loads(zlib.decompress(base64.b64decode(field))))


def prompt_for(item: dict) -> str:
    """The user message (the fork's get_generic_question_template_answer layout)."""
    starter = (item.get("starter_code") or "").strip("\n")
    text = f"### Question:\n{item['question_content']}\n\n"
    if starter:
        text += f"### Format: {STARTER_FORMAT}\n```python\n{starter}\n```\n\n"
    else:
        text += f"### Format: {STDIN_FORMAT}\n```python\n# YOUR CODE HERE\n```\n\n"
    return text + ANSWER_LINE + "\n\n"


def extract_program(response: str) -> Optional[str]:
    """The fork's extract_code on the whole output: the lines between the last two lines holding ```; None when
    there are fewer than two such lines (the fork scores an empty program)."""
    lines = (response or "").split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return None
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])


def sandbox_python() -> str:
    """An interpreter the unprivileged sandbox user can run: LRM_SAFETY_SANDBOX_PYTHON, else the system Python 3
    (solutions need only the standard library; a venv under /root is not readable by nobody), else ours."""
    for candidate in (os.environ.get("LRM_SAFETY_SANDBOX_PYTHON"), "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and os.path.exists(candidate):
            return candidate
    return sys.executable


def _limits(cpu_s: int, memory_mb: int):
    def apply():
        import resource

        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_NPROC, (32, 32))
        if os.getuid() == 0:  # root ignores RLIMIT_NPROC: become nobody first
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    return apply


def _harness(fn_name: Optional[str]) -> str:
    """Runs the program after the fork's prelude of imports, a SystemExit counting as a normal end (as the fork's
    call_method); for functional tests, calls `fn_name` (a method of `Solution` or a function) with the test's
    JSON arguments (one per line on stdin) and prints the JSON result (a tuple as a list, as the fork)."""
    head = (
        "import runpy, sys\nprelude = {}\nexec(open('prelude.py').read(), prelude)\nprelude.pop('__builtins__', None)\n"
    )
    if not fn_name:
        return head + (
            "try:\n    runpy.run_path('solution.py', init_globals=prelude, run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
        )
    return head + (
        "import json\n"
        "ns = runpy.run_path('solution.py', init_globals=prelude)\n"
        f"fn = getattr(ns['Solution'](), {fn_name!r}) if 'Solution' in ns else ns[{fn_name!r}]\n"
        "args = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]\n"
        "out = fn(*args)\n"
        "print(json.dumps(list(out) if isinstance(out, tuple) else out))\n"
    )


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> Optional[list]:
    from decimal import Decimal, InvalidOperation

    try:
        return [Decimal(tok) for tok in line.split()]
    except InvalidOperation:
        return None


def same_output(expected: str, got: str, functional: bool) -> bool:
    """The fork's rules (testing_util.py): functional, the JSON values equal; stdio, the same number of stripped
    lines, each equal as text or, token by token, as exact decimals ("2.50" equals "2.5"; no tolerance)."""
    if functional:
        try:
            return json.loads(expected) == json.loads(got)
        except ValueError:
            return False
    exp, out = _lines(expected), _lines(got)
    if len(exp) != len(out):
        return False
    for e, o in zip(exp, out):
        if e == o:
            continue
        de, do = _decimals(e), _decimals(o)
        if de is None or do is None or de != do:
            return False
    return True


def run_tests(
    program: str,
    tests: list[dict],
    fn_name: Optional[str] = None,
    timeout_s: float = TEST_TIMEOUT_S,
    memory_mb: int = 1024,
) -> dict:
    """{passed, passedTests, tests, error}: the program against every test, stopping at the first failure."""
    work = tempfile.mkdtemp(prefix="lrm-code-")
    os.chmod(work, 0o755)
    try:
        with open(os.path.join(work, "solution.py"), "w") as f:
            f.write(program)
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write(_harness(fn_name))
        with open(os.path.join(work, "prelude.py"), "w") as f:
            f.write(PRELUDE)
        for path in ("solution.py", "main.py", "prelude.py"):
            os.chmod(os.path.join(work, path), 0o644)
        unshare = shutil.which("unshare")
        base = [unshare, "-rn"] if unshare else []
        cmd = base + [sandbox_python(), "-I", "-S", "main.py"]
        for n, test in enumerate(tests):
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=_limits(int(timeout_s) + 1, memory_mb),
                env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
            )
            try:
                out, err = proc.communicate(test.get("input", ""), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                out, err = "", "timeout"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its children too (a fork bomb's)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            if err == "timeout":
                return {"passed": False, "passedTests": n, "tests": len(tests), "error": f"test {n}: timed out"}
            if proc.returncode != 0:
                last = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
                return {"passed": False, "passedTests": n, "tests": len(tests), "error": f"test {n}: {last}"[:300]}
            if not same_output(test.get("output", ""), out, bool(fn_name)):
                return {"passed": False, "passedTests": n, "tests": len(tests), "error": f"test {n}: wrong answer"}
        return {"passed": True, "passedTests": len(tests), "tests": len(tests), "error": None}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def grade_code(response: str, item: dict) -> dict:
    program = extract_program(response)
    if program is None:
        return {"passed": False, "passedTests": 0, "tests": len(item["tests"]), "error": "no code block in the answer"}
    return run_tests(program, item["tests"], item.get("fn_name"))
