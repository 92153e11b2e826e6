"""`lrm-safety operator`: run the kopf operator with the chart's settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import threading
from typing import Optional

import kopf

from .controller import Controller
from .settings import Settings

# kopf pauses every operator when peers share a priority, so the chart's identical replicas would all stand
# still. Each replica adds a random tie-breaker below the configured priority: the highest one acts, the
# rest stand by and take over once its peering entry expires (settings.peering_lifetime).
TIE_BREAK = 1_000_000


def effective_priority(settings: Settings, rng: random.Random = random.SystemRandom()) -> int:
    return settings.priority * TIE_BREAK + rng.randrange(TIE_BREAK) if settings.peering else settings.priority


def run(
    settings: Settings,
    *,
    stop_flag: Optional[threading.Event] = None,
    ready_flag=None,
    registry: Optional[kopf.OperatorRegistry] = None,
    liveness: Optional[str] = None,
    controller: Optional[Controller] = None,
) -> None:
    """One run of the operator: a Controller of its own (all the state it keeps), handed to every handler through
    kopf's memo, so a restart (or a second operator in the same process) starts from what the API server says."""
    from . import handlers  # noqa: F401  registers the handlers

    controller = controller or Controller(settings)

    standalone = not settings.peering
    priority = effective_priority(settings)
    if not standalone:
        logging.getLogger(__name__).info("peering %r with priority %d", settings.peering_name, priority)
    kw = dict(
        standalone=standalone,
        priority=priority,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness,
        registry=registry,
        memo=kopf.Memo(controller=controller),
    )
    if settings.namespaces:
        kw["namespaces"] = list(settings.namespaces)
    else:
        kw["clusterwide"] = True
    if not standalone:
        kw["peering_name"] = settings.peering_name
    asyncio.run(kopf.operator(**kw))


def _trace_memory(path: str, controller: Controller) -> None:
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
                _census(path, controller)
            except Exception as e:  # a signal handler must never raise into the operator's code
                logging.getLogger(__name__).warning("memory census failed: %r", e)

        signal.signal(signal.SIGUSR1, census)  # live objects by type: costs nothing until asked
        return

    def dump(*_):
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        lines = [f"traced: {sum(s.size for s in snap.statistics('filename')) / 2**20:.1f} MiB"]
        for key, limit in (("filename", 25), ("lineno", 40)):
            lines.append(f"-- by {key}")
            lines += [
                f"{st.size / 2**20:8.2f} MiB {st.count:9d} {st.traceback[0]}" for st in snap.statistics(key)[:limit]
            ]
        lines.append("-- by traceback (top 12)")
        for st in snap.statistics("traceback")[:12]:
            lines.append(f"{st.size / 2**20:8.2f} MiB {st.count:9d}")
            lines += [f"      {frame}" for frame in st.traceback.format()[-12:]]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, dump)


def _census(path: str, controller: Controller) -> None:
    """Live objects by type (count, shallow size) and the operator's own in-memory tables by length."""
    import gc
    import sys
    from collections import Counter

    count: Counter = Counter()
    size: Counter = Counter()
    for obj in gc.get_objects():
        name = f"{getattr(type(obj), '__module__', '?')}.{getattr(type(obj), '__qualname__', '?')}"
        count[name] += 1
        size[name] += sys.getsizeof(obj)
    lines = [f"gc objects: {sum(count.values())}, shallow {sum(size.values()) / 2**20:.1f} MiB"]
    lines += [f"{size[k] / 2**20:8.2f} MiB {count[k]:9d} {k}" for k, _ in size.most_common(40)]
    lines.append("-- operator tables")
    q = controller.queue
    for name, table in (
        ("due", q.due),
        ("errors", q.errors),
        ("made", q.made),
        ("locks", q.locks),
        ("turns", q.turns),
        ("claims", controller.claims.claims),
        ("waiters", controller.claims.waiters),
        ("progress", controller.progress),
        ("pod_signals", controller.watched.pod_signals),
        ("awaiting", controller.watched.awaiting),
        ("child_signals", controller.studies.child_signals),
    ):
        lines.append(f"{name}: {len(table)}")
    for name, index in controller.watched.indices.items():
        if hasattr(index, "__len__") and name.startswith("stage"):
            lines.append(f"index {name}: {len(index)} keys, {sum(len(v) for v in index.values())} values")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    import os

    p = argparse.ArgumentParser(prog="lrm-safety operator")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=True)  # "[namespace/name]" on every per-object line
    settings = Settings.from_env()
    controller = Controller(settings)
    if os.environ.get("LRM_SAFETY_TRACEMALLOC"):
        _trace_memory(os.environ["LRM_SAFETY_TRACEMALLOC"], controller)
    run(settings, liveness=settings.liveness or None, controller=controller)
    return 0
