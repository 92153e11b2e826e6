"""Code reasoning (LiveCodeBench-style): take the program from the answer, run it against the problem's tests in a
sandbox, pass@1.

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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zlib
from typing import Optional

from ..styles import parse_response

NOBODY = 65534

PROMPT = (
    "Solve the programming problem below with a correct Python 3 program that passes all its tests. {io}\n"
    "Put the whole program in one ```python code block at the end of your answer.\n\n### Problem\n{question}\n"
)
STDIN_IO = "The program reads the input from standard input and writes the answer to standard output."
FUNCTIONAL_IO = "Complete this starter code; it is called with the test's arguments:\n```python\n{starter}\n```"


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
    starter = (item.get("starter_code") or "").strip()
    io = FUNCTIONAL_IO.format(starter=starter) if starter else STDIN_IO
    return PROMPT.format(io=io, question=item["question_content"].strip())


def extract_program(response: str) -> Optional[str]:
    """The last fenced code block of the answer (after the reasoning); None when there is none."""
    _, answer = parse_response(response)
    blocks = re.findall(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", answer, re.S)
    return blocks[-1] if blocks else None


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
    """Runs the program; for functional tests, calls `fn_name` (a method of `Solution` or a function) with the test's
    JSON arguments (one per line on stdin) and prints the JSON result."""
    if not fn_name:
        return "import runpy\nrunpy.run_path('solution.py', run_name='__main__')\n"
    return (
        "import json, sys, runpy\n"
        "ns = runpy.run_path('solution.py')\n"
        f"fn = getattr(ns['Solution'](), {fn_name!r}) if 'Solution' in ns else ns[{fn_name!r}]\n"
        "args = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]\n"
        "print(json.dumps(fn(*args)))\n"
    )


def _same(expected: str, got: str, functional: bool) -> bool:
    if functional:
        try:
            return json.loads(expected) == json.loads(got)
        except ValueError:
            return expected.strip() == got.strip()
    return [line.rstrip() for line in expected.strip().splitlines()] == [line.rstrip() for line in got.strip().splitlines()]


def run_tests(program: str, tests: list[dict], fn_name: Optional[str] = None, timeout_s: float = 6.0,
              memory_mb: int = 1024) -> dict:
    """{passed, passedTests, tests, error}: the program against every test, stopping at the first failure."""
    work = tempfile.mkdtemp(prefix="lrm-code-")
    os.chmod(work, 0o755)
    try:
        with open(os.path.join(work, "solution.py"), "w") as f:
            f.write(program)
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write(_harness(fn_name))
        for path in ("solution.py", "main.py"):
            os.chmod(os.path.join(work, path), 0o644)
        unshare = shutil.which("unshare")
        base = [unshare, "-rn"] if unshare else []
        cmd = base + [sandbox_python(), "-I", "-S", "main.py"]
        for n, test in enumerate(tests):
            proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, preexec_fn=_limits(int(timeout_s) + 1, memory_mb),
                                    env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"})
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
            if not _same(test.get("output", ""), out, bool(fn_name)):
                return {"passed": False, "passedTests": n, "tests": len(tests), "error": f"test {n}: wrong answer"}
        return {"passed": True, "passedTests": len(tests), "tests": len(tests), "error": None}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def grade_code(response: str, item: dict) -> dict:
    program = extract_program(response)
    if program is None:
        return {"passed": False, "passedTests": 0, "tests": len(item["tests"]), "error": "no code block in the answer"}
    return run_tests(program, item["tests"], item.get("fn_name"))
