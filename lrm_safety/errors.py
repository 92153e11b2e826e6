"""Bad input vs bad luck: the one exit code that tells the operator not to retry.

Python exits 1 on any uncaught exception (an S3 outage, CUDA OOM, an NCCL timeout), so 1 can never mean
"permanent". The worker exits BAD_INPUT only where it has checked its input and found it wrong: an
invalid spec, a missing input file or model, an unsupported option. Every other failure is transient and
the operator retries it.
"""

from __future__ import annotations

BAD_INPUT_EXIT = 3


class BadInput(ValueError):
    """The input is wrong and a retry cannot help; the message names the file or field and the fix."""


def one_line(exc: BaseException) -> str:
    """A short reason for status and logs: the exception's first line, prefixed by its type unless it is ours."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, BadInput):
        return text or "bad input"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def quiet_broken_pipe() -> int:
    """`lrm-safety ... | head -1`: the reader went away. End quietly, as Unix tools do, with no second error when
    Python flushes stdout at exit (the recipe of Python's signal docs)."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe
