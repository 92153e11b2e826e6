"""`operator_scale.py --real`: N experiments through all four stages on a real control plane (see that script)."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scale_probes import BENCH_AGENT, cpu_seconds, peak_rss_mib, watch_events

STAGES = ("distill", "mix", "train", "evaluate")
NS = "scale"


def rss_mib(pid: int) -> float:
    return peak_rss_mib(pid, "VmRSS")


def _t(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def lags(jobs: list[dict], experiments: list[dict]) -> list[float]:
    """Seconds from each stage Job's completion to the next stage's Job, or to the experiment's end."""
    by: dict[str, dict[str, dict]] = {}
    for j in jobs:
        labels = j["metadata"].get("labels") or {}
        by.setdefault(labels.get("lrmsafety.io/experiment"), {})[labels.get("lrmsafety.io/stage")] = j
    ends = {
        e["metadata"]["name"]: _t(((e.get("status") or {}).get("stages") or {}).get("evaluate", {}).get("finishedAt"))
        for e in experiments
    }
    out = []
    for name, stages in by.items():
        for i, stage in enumerate(STAGES):
            job = stages.get(stage)
            done = _t(((job or {}).get("status") or {}).get("completionTime"))
            if done is None:
                continue
            nxt = stages.get(STAGES[i + 1]) if i + 1 < len(STAGES) else None
            then = _t(nxt["metadata"]["creationTimestamp"]) if nxt else ends.get(name)
            if then is not None:
                out.append((then - done).total_seconds())
    return out


def operator_events(cluster, user: str, since: int) -> list[dict]:
    return [e for e in cluster.audit(since) if e["user"]["username"] == user]


def by_kind(events: list[dict]) -> dict[str, int]:
    out: Counter = Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        what = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out[f"{e['verb']} {what} {e.get('responseStatus', {}).get('code')}"] += 1
    return dict(out.most_common())


def real_main(args) -> int:
    from real_kube import RealCluster, start_operator, stop_operator, unavailable

    why = unavailable()
    if why:
        print(why)
        return 2
    n = args.experiments
    state = Path(args.state or tempfile.mkdtemp(prefix="lrm-kube-"))
    with RealCluster(state) as cluster:
        custom, batch, core, _ = cluster.clients(BENCH_AGENT)
        sa = cluster.install_chart_rbac("lrm-system")
        user = f"system:serviceaccount:lrm-system:{sa}"
        cluster.namespace(NS)
        cluster.switch("hold", NS)
        env = {
            "LRM_SAFETY_WORKERS": str(args.workers),
            "LRM_SAFETY_RESYNC_SECONDS": str(args.resync_seconds),
            "LRM_SAFETY_READ_STORE": "false",
            "LRM_SAFETY_TICK_SECONDS": "10",
        }
        if args.tracemalloc:
            env["LRM_SAFETY_TRACEMALLOC"] = str(Path(args.tracemalloc).resolve())
        op = start_operator(cluster.sa_kubeconfig(sa, "lrm-system"), Path(args.log or state / "operator.log"), **env)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample():
            t0 = time.perf_counter()
            while not stop.is_set() and op.poll() is None:
                samples.append((round(time.perf_counter() - t0, 1), round(rss_mib(op.pid), 1)))
                stop.wait(5)

        threading.Thread(target=sample, daemon=True).start()
        events: queue.Queue = queue.Queue()
        watch_events(batch.list_namespaced_job, NS, into=events, kind="job", stop=stop)
        try:
            time.sleep(5)
            rss_start = rss_mib(op.pid)
            mark = cluster.audit_mark()

            def create(i: int):
                body = {
                    "apiVersion": "lrmsafety.io/v1alpha1",
                    "kind": "SafetyExperiment",
                    "metadata": {"name": f"scale-{i:04d}", "namespace": NS},
                    # A distinct distill per experiment: identical ones would share one Job (stage reuse).
                    "spec": {"distill": {"limit": i + 1}, "evaluate": {"dataRoot": "s3://data"}},
                }
                custom.create_namespaced_custom_object("lrmsafety.io", "v1alpha1", NS, "safetyexperiments", body)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(n)))
            created_s = time.perf_counter() - t0
            first: set[str] = set()
            names: Counter = Counter()
            while len(first) < n and time.perf_counter() - t0 < args.timeout:
                try:
                    _, type_, obj = events.get(timeout=1)
                except queue.Empty:
                    continue
                if type_ == "ADDED":
                    names[obj["metadata"]["name"]] += 1
                    if obj["metadata"]["name"].endswith("-distill-1"):
                        first.add(obj["metadata"]["name"])
                        if len(first) % 250 == 0:
                            print(f"  {len(first)}/{n} first Jobs after {time.perf_counter() - t0:.1f}s", flush=True)
            first_s = time.perf_counter() - t0
            time.sleep(5)  # the last status patches and events
            to_first = operator_events(cluster, user, mark)
            rss_first = rss_mib(op.pid)
            print(f"idle window: {args.idle_seconds:.0f}s with {n} experiments' first pods Pending ...", flush=True)
            idle_mark = cluster.audit_mark()
            time.sleep(args.idle_seconds)
            idle = operator_events(cluster, user, idle_mark)
            rss_idle = rss_mib(op.pid)

            # The waves: every stage pod exits 0 after --pod-seconds.
            cluster.switch("instant", f"{args.pod_seconds} {NS}")
            cluster.unswitch("hold")
            wave_mark = cluster.audit_mark()
            t1 = time.perf_counter()
            succeeded: set[str] = set()
            last_report = 0
            while len(succeeded) < n and time.perf_counter() - t1 < args.timeout:
                time.sleep(5)
                items = json.loads(
                    custom.list_namespaced_custom_object(
                        "lrmsafety.io", "v1alpha1", NS, "safetyexperiments", _preload_content=False
                    ).data
                )["items"]
                succeeded = {
                    e["metadata"]["name"] for e in items if (e.get("status") or {}).get("phase") == "Succeeded"
                }
                failed = [e["metadata"]["name"] for e in items if (e.get("status") or {}).get("phase") == "Failed"]
                if failed:
                    print(f"  failed: {failed[:5]}", flush=True)
                    break
                if time.perf_counter() - last_report > 30:
                    last_report = time.perf_counter()
                    print(
                        f"  {len(succeeded)}/{n} Succeeded after {time.perf_counter() - t1:.0f}s; operator RSS "
                        f"{rss_mib(op.pid):.0f} MiB",
                        flush=True,
                    )
            waves_s = time.perf_counter() - t1
            if args.tracemalloc:
                os.kill(op.pid, signal.SIGUSR1)
                time.sleep(20)
            peak = peak_rss_mib(op.pid)
            cpu = cpu_seconds(op.pid)
            waves = operator_events(cluster, user, wave_mark)
            all_jobs = json.loads(batch.list_namespaced_job(NS, _preload_content=False).data)["items"]
            lag = lags(all_jobs, items)
            per_stage = Counter(
                (
                    (j["metadata"].get("labels") or {}).get("lrmsafety.io/experiment"),
                    (j["metadata"].get("labels") or {}).get("lrmsafety.io/stage"),
                )
                for j in all_jobs
            )
            everything = operator_events(cluster, user, mark)
        finally:
            stop.set()
            stop_operator(op)
    conflicts = sum(1 for e in everything if e.get("responseStatus", {}).get("code") == 409)
    result = {
        "experiments": n,
        "workers": args.workers,
        "control_plane": "real (kube-apiserver 1.36, etcd, kcm, podrunner)",
        "create_s": round(created_s, 1),
        "all_first_jobs_s": round(first_s, 1),
        "first_jobs": len(first),
        "operator_rss_mib": {
            "start": round(rss_start, 1),
            "first_jobs": round(rss_first, 1),
            "idle": round(rss_idle, 1),
            "peak": round(peak, 1),
        },
        "requests_to_first_job_per_experiment": round(len(to_first) / n, 2),
        "requests_to_first_job_by_kind": by_kind(to_first),
        "idle_window_s": args.idle_seconds,
        "idle_requests": len(idle),
        "idle_requests_per_experiment_per_5min": round(len(idle) / n / args.idle_seconds * 300, 3),
        "idle_requests_by_kind": by_kind(idle),
        "waves_s": round(waves_s, 1),
        "succeeded": len(succeeded),
        "transition_lag_s": {
            "n": len(lag),
            "p50": percentile(lag, 50),
            "p99": percentile(lag, 99),
            "max": max(lag, default=float("nan")),
            "mean": round(statistics.fmean(lag), 2) if lag else None,
        },
        "wave_requests_per_experiment": round(len(waves) / n, 2),
        "wave_requests_by_kind": by_kind(waves),
        "operator_cpu_s": round(cpu, 1),
        "conflicts_409": conflicts,
        "duplicate_jobs": sum(c - 1 for c in per_stage.values()),
        "rss_samples": samples[:: max(1, len(samples) // 40)],
    }
    print("RESULT", json.dumps(result))
    print(
        f"real control plane, {n} experiments: all first Jobs in {first_s:.1f}s; "
        f"{len(to_first) / n:.1f} requests per experiment to its first Job; operator RSS peak {peak:.0f} MiB "
        f"(start {rss_start:.0f}, first Jobs {rss_first:.0f}, idle {rss_idle:.0f}); idle "
        f"{result['idle_requests_per_experiment_per_5min']} requests per experiment per 5 min; four waves in "
        f"{waves_s:.0f}s, lag p50 {result['transition_lag_s']['p50']}s p99 {result['transition_lag_s']['p99']}s; "
        f"{conflicts} 409s; {result['duplicate_jobs']} duplicate Jobs; {len(succeeded)}/{n} Succeeded"
    )
    ok = len(succeeded) == n and result["duplicate_jobs"] == 0
    return 0 if ok else 1
