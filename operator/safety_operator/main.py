"""`lrm-safety operator`: run the kopf operator with the chart's settings."""
from __future__ import annotations

import argparse
import asyncio
import logging
import random
import threading
from typing import Optional

import kopf

from .settings import Settings

# kopf pauses every operator when peers share a priority, so the chart's identical replicas would all stand
# still. Each replica adds a random tie-breaker below the configured priority: the highest one acts, the
# rest stand by and take over once its peering entry expires (settings.peering_lifetime).
TIE_BREAK = 1_000_000


def effective_priority(settings: Settings, rng: random.Random = random.SystemRandom()) -> int:
    return settings.priority * TIE_BREAK + rng.randrange(TIE_BREAK) if settings.peering else settings.priority


def run(settings: Settings, *, stop_flag: Optional[threading.Event] = None, ready_flag=None,
        registry: Optional[kopf.OperatorRegistry] = None, liveness: Optional[str] = None) -> None:
    from . import handlers  # noqa: F401  registers the handlers

    standalone = not settings.peering
    priority = effective_priority(settings)
    if not standalone:
        logging.getLogger(__name__).info("peering %r with priority %d", settings.peering_name, priority)
    kw = dict(standalone=standalone, priority=priority, stop_flag=stop_flag, ready_flag=ready_flag,
              liveness_endpoint=liveness, registry=registry)
    if settings.namespaces:
        kw["namespaces"] = list(settings.namespaces)
    else:
        kw["clusterwide"] = True
    if not standalone:
        kw["peering_name"] = settings.peering_name
    asyncio.run(kopf.operator(**kw))


def _trace_memory(path: str) -> None:
    """LRM_SAFETY_TRACEMALLOC=PATH: trace allocations; SIGUSR1 writes the largest live ones to PATH (for
    benchmarks/operator_scale.py: where the operator's memory goes, measured rather than guessed)."""
    import os
    import signal
    import tracemalloc

    frames = int(os.environ.get("LRM_SAFETY_TRACEMALLOC_FRAMES", "0"))
    if frames:
        tracemalloc.start(frames)  # exact, but it slows the operator several times over
    else:
        def census(*_):
            try:
                _census(path)
            except Exception as e:  # a signal handler must never raise into the operator's code
                logging.getLogger(__name__).warning("memory census failed: %r", e)

        signal.signal(signal.SIGUSR1, census)  # live objects by type: costs nothing until asked
        return

    def dump(*_):
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        lines = [f"traced: {sum(s.size for s in snap.statistics('filename')) / 2**20:.1f} MiB"]
        for key, limit in (("filename", 25), ("lineno", 40)):
            lines.append(f"-- by {key}")
            lines += [f"{st.size / 2**20:8.2f} MiB {st.count:9d} {st.traceback[0]}"
                      for st in snap.statistics(key)[:limit]]
        lines.append("-- by traceback (top 12)")
        for st in snap.statistics("traceback")[:12]:
            lines.append(f"{st.size / 2**20:8.2f} MiB {st.count:9d}")
            lines += [f"      {frame}" for frame in st.traceback.format()[-12:]]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, dump)


def _census(path: str) -> None:
    """Live objects by type (count, shallow size) and the operator's own in-memory tables by length."""
    import gc
    import sys
    from collections import Counter

    from . import handlers

    count: Counter = Counter()
    size: Counter = Counter()
    for obj in gc.get_objects():
        name = f"{getattr(type(obj), '__module__', '?')}.{getattr(type(obj), '__qualname__', '?')}"
        count[name] += 1
        size[name] += sys.getsizeof(obj)
    lines = [f"gc objects: {sum(count.values())}, shallow {sum(size.values()) / 2**20:.1f} MiB"]
    lines += [f"{size[k] / 2**20:8.2f} MiB {count[k]:9d} {k}" for k, _ in size.most_common(40)]
    lines.append("-- operator tables")
    for name in ("_due", "_errors", "_made", "_claims", "_waiters", "_progress", "_pod_signals", "_awaiting",
                 "_locks", "_turns", "_child_signals"):
        lines.append(f"{name}: {len(getattr(handlers, name, {}))}")
    for name, index in handlers._ix.items():
        if hasattr(index, "__len__") and name.startswith("stage"):
            lines.append(f"index {name}: {len(index)} keys, {sum(len(v) for v in index.values())} values")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    import os

    if os.environ.get("LRM_SAFETY_TRACEMALLOC"):
        _trace_memory(os.environ["LRM_SAFETY_TRACEMALLOC"])
    p = argparse.ArgumentParser(prog="lrm-safety operator")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=True)  # "[namespace/name]" on every per-object line
    settings = Settings.from_env()
    run(settings, liveness=settings.liveness or None)
    return 0
