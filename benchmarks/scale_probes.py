"""What both operator-scale benchmarks measure a process and a cluster with: the operator's peak memory and CPU
time, and a resource's events streamed into a queue (operator_scale.py on kmock, operator_scale_real.py on a real
control plane)."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

BENCH_AGENT = "lrm-safety-benchmark"


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The process's peak resident size (VmHWM), or its current one with field="VmRSS"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: the operator's own cost, apart from the emulator's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_events(fn, *args, into: queue.Queue, kind: str, stop: threading.Event, **kw) -> threading.Thread:
    """Stream one resource's events into a queue: a watch is one request, where polling would add thousands
    that the emulator records and filters (its cost grows with every request it has served)."""
    from kubernetes import watch

    def run():
        while not stop.is_set():
            try:
                for ev in watch.Watch().stream(fn, *args, timeout_seconds=30, **kw):
                    into.put((kind, ev["type"], ev["raw_object"]))
                    if stop.is_set():
                        return
            except Exception as e:
                if not stop.is_set():
                    print(f"  watch {kind}: {e!r}; re-opening", flush=True)
                    time.sleep(0.5)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
