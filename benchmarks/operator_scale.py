"""Operator scale: N SafetyExperiments created at once against the kmock API emulator.

The operator runs as its own process (`lrm-safety operator`), so its peak RSS is its own (VmHWM). kmock
records every request it serves; the benchmark's own calls carry their own User-Agent and are not counted.
Prints:
- the time until every experiment's first-stage Job exists, and the operator's peak RSS;
- the operator's API requests per experiment until its first Job;
- the operator's request rate with the N experiments idle (a stage running, nothing happening) over
  `--idle-seconds` (use at least the resync interval, 300 s by default, to include the safety net);
- the same with the N experiments finished (expected 0).

  python benchmarks/operator_scale.py --experiments 100 --idle-seconds 330 --finished-seconds 60

With --study: one SafetyStudy of N cells (one mix Job each) under maxParallel; the script plays the Job
controller, completing each Job it sees, so the study must create every cell, at most maxParallel at once:
  python benchmarks/operator_scale.py --study --experiments 100 --max-parallel 20

With --real: the same N experiments on a real control plane (tests/real_kube.py: ../shared/kube's kube-apiserver,
kube-controller-manager and podrunner, etcd from PATH), the operator running as the chart's ServiceAccount. Pods
are held Pending (podrunner `hold`) until every first Job exists and the idle window is over; then every stage pod
exits 0 after `--pod-seconds` (`instant`), so the stages finish in waves of N. Requests are counted from the API
server's audit log (the operator's ServiceAccount only). Prints the time to all first Jobs, peak RSS (and RSS over
time), requests per experiment to the first Job, idle requests per experiment per 5 minutes and watch requests,
p50/p99/max of the lag from a Job's completion to the next stage's Job (or the experiment's end), 409s and
duplicate Jobs:
  python benchmarks/operator_scale.py --real --experiments 1000 --idle-seconds 360
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from scale_probes import BENCH_AGENT, cpu_seconds, peak_rss_mib, watch_events  # noqa: E402


def extra_jobs(jobs: list[dict]) -> int:
    """Jobs beyond one per experiment: the duplicates an operator must never create (Job names are unique in
    the API, so counting names would always give 0)."""
    from safety_operator.manifests import LABEL_EXPERIMENT

    per = Counter((j["metadata"].get("labels") or {}).get(LABEL_EXPERIMENT) for j in jobs)
    return sum(c - 1 for c in per.values())


def operator_requests(emulator, since: int = 0) -> list:
    """The requests kmock served to anyone but this script, from index `since`."""
    return [r for r in list(emulator._requests)[since:] if r.headers.get("User-Agent", "") != BENCH_AGENT]


def kinds(requests) -> dict[str, int]:
    """Requests by method and resource path shape (names replaced), to see where they go."""
    out: Counter = Counter()
    for r in requests:
        parts = [p for p in r.url.path.split("/") if p]
        shape = "/".join(
            p
            if i < 3
            or p
            in (
                "namespaces",
                "status",
                "jobs",
                "pods",
                "events",
                "configmaps",
                "safetyexperiments",
                "safetystudies",
                "services",
            )
            else "*"
            for i, p in enumerate(parts)
        )
        watch = "?watch" if r.params.get("watch") in ("true", "1") else ""
        out[f"{r.method.value if hasattr(r.method, 'value') else r.method} /{shape}{watch}"] += 1
    return dict(out.most_common())


def start_operator(cluster, args):
    """API clients that this script's requests are told apart by, and the operator as its own process."""
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = cluster.url
    api = client.ApiClient(cfg)
    api.user_agent = BENCH_AGENT
    env = {
        **os.environ,
        "LRM_SAFETY_KUBE_SERVER": cluster.url,
        "LRM_SAFETY_WORKERS": str(args.workers),
        "LRM_SAFETY_RESYNC_SECONDS": str(args.resync_seconds),
        "LRM_SAFETY_LIVENESS": "",
        "LRM_SAFETY_READ_STORE": "false",
        "LRM_SAFETY_TICK_SECONDS": "10",
    }
    log = open(args.log, "w") if args.log else subprocess.DEVNULL
    op = subprocess.Popen([sys.executable, "-m", "lrm_safety.cli", "operator"], env=env, stdout=log, stderr=log)
    return client.CustomObjectsApi(api), client.BatchV1Api(api), op


def stop(op) -> None:
    from real_kube import stop_operator

    stop_operator(op)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiments", type=int, default=100)
    p.add_argument("--workers", type=int, default=32, help="operator reconcile threads (the chart's default)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--idle-seconds", type=float, default=60, help="window for the idle request rate")
    p.add_argument("--finished-seconds", type=float, default=30, help="window for the finished request rate")
    p.add_argument("--resync-seconds", type=float, default=300, help="the operator's safety-net interval")
    p.add_argument("--log", help="write the operator's log here")
    p.add_argument("--study", action="store_true", help="one SafetyStudy of --experiments cells instead")
    p.add_argument("--max-parallel", type=int, default=20, help="--study: the study's maxParallel")
    p.add_argument("--real", action="store_true", help="on a real control plane (../shared/kube) instead of kmock")
    p.add_argument("--pod-seconds", type=float, default=0.5, help="--real: how long each stage pod runs")
    p.add_argument("--state", help="--real: the control plane's state directory (default: a new temporary one)")
    p.add_argument("--tracemalloc", help="--real: write the operator's top allocations here at peak (slows it)")
    args = p.parse_args(argv)
    if args.study:
        return study_main(args)
    if args.real:
        from operator_scale_real import real_main

        return real_main(args)

    from kube_harness import EmulatedCluster

    n = args.experiments
    with EmulatedCluster() as cluster:
        custom, batch, op = start_operator(cluster, args)
        try:
            time.sleep(3)  # let the operator start its watches
            rss_idle = peak_rss_mib(op.pid)
            start_index = len(cluster.emulator._requests)

            def create(i: int):
                body = {
                    "apiVersion": "lrmsafety.io/v1alpha1",
                    "kind": "SafetyExperiment",
                    "metadata": {
                        "name": f"scale-{i:04d}",
                        "namespace": "default",
                        "uid": f"uid-{i}",
                        "resourceVersion": "1",
                        "generation": 1,
                    },
                    # A distinct distill per experiment: identical ones would share one Job (stage reuse).
                    "spec": {"distill": {"limit": i + 1}, "evaluate": {"dataRoot": "s3://data"}},
                }
                custom.create_namespaced_custom_object("lrmsafety.io", "v1alpha1", "default", "safetyexperiments", body)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(n)))
            created = time.perf_counter() - t0
            want = {f"scale-{i:04d}-distill-1" for i in range(n)}
            seen: set[str] = set()
            progress = 0
            while True:
                items = json.loads(batch.list_namespaced_job("default", _preload_content=False).data)["items"]
                seen = {j["metadata"]["name"] for j in items} & want
                if len(seen) == len(want) or time.perf_counter() - t0 > args.timeout:
                    break
                if len(seen) // 25 != progress // 25:
                    print(
                        f"  {len(seen)}/{len(want)} first-stage Jobs after {time.perf_counter() - t0:.1f}s", flush=True
                    )
                progress = len(seen)
                time.sleep(0.25)
            elapsed = time.perf_counter() - t0
            rss = peak_rss_mib(op.pid)
            dupes = extra_jobs(items)
            time.sleep(3)  # status patches and events of the last creations
            to_first = operator_requests(cluster.emulator, start_index)
            print(f"operator requests until every first Job: {len(to_first)} ({len(to_first) / n:.1f} per experiment)")

            print(f"idle window: {args.idle_seconds:.0f}s with {n} experiments running a stage ...", flush=True)
            mark = len(cluster.emulator._requests)
            time.sleep(args.idle_seconds)
            idle = operator_requests(cluster.emulator, mark)

            for i in range(n):  # every experiment finishes
                custom.patch_namespaced_custom_object_status(
                    "lrmsafety.io",
                    "v1alpha1",
                    "default",
                    "safetyexperiments",
                    f"scale-{i:04d}",
                    {"status": {"phase": "Succeeded", "stage": None}},
                )
            time.sleep(3)
            print(f"finished window: {args.finished_seconds:.0f}s with {n} finished experiments ...", flush=True)
            mark = len(cluster.emulator._requests)
            time.sleep(args.finished_seconds)
            finished = operator_requests(cluster.emulator, mark)
        finally:
            stop(op)
    per_5min = len(idle) / n / args.idle_seconds * 300
    result = {
        "experiments": n,
        "workers": args.workers,
        "create_s": round(created, 2),
        "all_first_jobs_s": round(elapsed, 2),
        "jobs_found": len(seen),
        "duplicate_jobs": dupes,
        "operator_peak_rss_mib": round(rss, 1),
        "operator_idle_rss_mib": round(rss_idle, 1),
        "requests_to_first_job_per_experiment": round(len(to_first) / n, 2),
        "requests_to_first_job_by_kind": kinds(to_first),
        "idle_window_s": args.idle_seconds,
        "idle_requests": len(idle),
        "idle_requests_per_experiment_per_5min": round(per_5min, 3),
        "idle_requests_by_kind": kinds(idle),
        "finished_window_s": args.finished_seconds,
        "finished_requests": len(finished),
        "finished_requests_by_kind": kinds(finished),
    }
    print("RESULT", json.dumps(result))
    print(
        f"{len(seen)}/{n} first-stage Jobs in {elapsed:.1f}s ({n / elapsed:.1f} experiments/s); "
        f"operator peak RSS {rss:.0f} MiB; {len(to_first) / n:.1f} requests per experiment to its first Job; "
        f"idle: {len(idle)} requests in {args.idle_seconds:.0f}s = {per_5min:.2f} per experiment per 5 min; "
        f"finished: {len(finished)} requests in {args.finished_seconds:.0f}s"
    )
    return 0 if len(seen) == len(want) and dupes == 0 else 1


def study_main(args) -> int:
    """A study of N cells under maxParallel, each cell one Job that this script completes as soon as it appears."""
    from kube_harness import EmulatedCluster

    n, limit = args.experiments, args.max_parallel
    with EmulatedCluster() as cluster:
        custom, batch, op = start_operator(cluster, args)
        events: queue.Queue = queue.Queue()
        stop_watches = threading.Event()
        try:
            time.sleep(3)
            start_index = len(cluster.emulator._requests)
            watch_events(batch.list_namespaced_job, "default", into=events, kind="job", stop=stop_watches)
            watch_events(
                custom.list_namespaced_custom_object,
                "lrmsafety.io",
                "v1alpha1",
                "default",
                "safetyexperiments",
                into=events,
                kind="cell",
                stop=stop_watches,
            )
            watch_events(
                custom.list_namespaced_custom_object,
                "lrmsafety.io",
                "v1alpha1",
                "default",
                "safetystudies",
                into=events,
                kind="study",
                stop=stop_watches,
            )
            body = {
                "apiVersion": "lrmsafety.io/v1alpha1",
                "kind": "SafetyStudy",
                "metadata": {"name": "scale", "namespace": "default"},
                "spec": {
                    "maxParallel": limit,
                    "base": {
                        "stages": ["mix"],
                        "mix": {"safetySource": "s3://data/safety.jsonl", "mathCount": 0},
                        "evaluate": {"dataRoot": "s3://data"},
                    },
                    "axes": [{"path": "mix.seed", "values": list(range(n))}],
                },
            }
            t0 = time.perf_counter()
            custom.create_namespaced_custom_object("lrmsafety.io", "v1alpha1", "default", "safetystudies", body)
            completed: set[str] = set()
            jobs: list[dict] = []
            cells: dict[str, str | None] = {}
            peak_active, phase, reported = 0, None, 0
            while phase != "Succeeded" and time.perf_counter() - t0 < args.timeout:
                try:
                    kind, type_, obj = events.get(timeout=1)
                except queue.Empty:
                    continue
                name = obj["metadata"]["name"]
                if kind == "job" and type_ == "ADDED" and name not in completed:
                    jobs.append(obj)
                    batch.patch_namespaced_job_status(
                        name,
                        "default",
                        {"status": {"conditions": [{"type": "Complete", "status": "True", "reason": "Done"}]}},
                    )
                    completed.add(name)
                elif kind == "cell":
                    if type_ == "DELETED":
                        cells.pop(name, None)
                    else:
                        cells[name] = (obj.get("status") or {}).get("phase")
                    active = sum(p not in ("Succeeded", "Failed") for p in cells.values())
                    peak_active = max(peak_active, active)
                elif kind == "study" and name == "scale":
                    phase = (obj.get("status") or {}).get("phase")
                if len(completed) // 25 > reported:
                    reported = len(completed) // 25
                    print(f"  {len(completed)}/{n} cells' Jobs after {time.perf_counter() - t0:.1f}s", flush=True)
            elapsed = time.perf_counter() - t0
            rss, cpu = peak_rss_mib(op.pid), cpu_seconds(op.pid)
            requests = operator_requests(cluster.emulator, start_index)
            dupes = extra_jobs(jobs)
        finally:
            stop_watches.set()
            stop(op)
    result = {
        "cells": n,
        "max_parallel": limit,
        "study_phase": phase,
        "jobs": len(completed),
        "duplicate_jobs": dupes,
        "peak_active_cells": peak_active,
        "all_cells_done_s": round(elapsed, 2),
        "operator_peak_rss_mib": round(rss, 1),
        "operator_cpu_s": round(cpu, 1),
        "operator_requests": len(requests),
        "operator_requests_per_cell": round(len(requests) / n, 2),
        "requests_by_kind": kinds(requests),
    }
    print("RESULT", json.dumps(result))
    print(
        f"study of {n} cells (maxParallel {limit}): {phase} with {len(completed)} Jobs in {elapsed:.1f}s; "
        f"at most {peak_active} cells active at once; operator peak RSS {rss:.0f} MiB, {cpu:.1f} s CPU; "
        f"{len(requests) / n:.1f} operator requests per cell"
    )
    ok = phase == "Succeeded" and len(completed) == n and dupes == 0 and peak_active <= limit
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
