"""A torch JIT-extension cache that a killed pod cannot wedge.

DeepSpeed compiles some ops at start-up (on CPU ranks, its shared-memory collectives) into
`TORCH_EXTENSIONS_DIR`, guarded by torch's `FileBaton`: a bare `lock` file that a waiting process
polls for ever. A rank killed while holding it (a pod evicted mid-build) leaves the file behind,
and every later run on that node's cache hangs before its first step. The baton records no owner,
so staleness is judged with an advisory flock that the kernel drops when its holder dies: each
training holds it shared for its whole run, and one that gets it exclusively knows no other run
is building, so any baton left in the cache is stale and removed.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lrm_safety.models.refs import cache_base

ENV = "TORCH_EXTENSIONS_DIR"
BATON = "lock"  # torch.utils.cpp_extension: FileBaton(os.path.join(build_directory, "lock"))


def default_dir() -> Path:
    """Beside the model cache, so pods keep compiled ops on their /cache volume across restarts."""
    return cache_base() / "torch_extensions"


def stale_batons(root: Path) -> list[Path]:
    """Baton files of the extension builds under `root` (torch nests them as <root>/<name>/lock)."""
    return sorted(p for p in root.glob(f"*/{BATON}") if p.is_file())


@contextmanager
def extension_cache() -> Iterator[tuple[Path, list[Path]]]:
    """Point `TORCH_EXTENSIONS_DIR` at a guarded cache for this process and its children.

    Yields the folder and the stale batons removed. Holds a shared flock until exit, so that a
    concurrent run on the same cache never takes a live build's baton for a stale one.
    """
    root = Path(os.environ.get(ENV) or default_dir())
    root.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(ENV)
    os.environ[ENV] = str(root)
    with open(root / ".lrm-safety.flock", "a") as guard:
        removed: list[Path] = []
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another run holds the cache: its batons may be live
        else:
            for baton in stale_batons(root):
                baton.unlink(missing_ok=True)
                removed.append(baton)
        fcntl.flock(guard, fcntl.LOCK_SH)  # downgrade (or wait our turn behind a cleaner)
        try:
            yield root, removed
        finally:
            if previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = previous
