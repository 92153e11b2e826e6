"""Operator scale: N SafetyExperiments created at once against the kmock API emulator.

The operator runs as its own process (`lrm-safety operator`), so its peak RSS is its own (VmHWM).
Prints the time until every experiment's first-stage Job exists, and the operator's peak RSS.

  python benchmarks/operator_scale.py --experiments 200
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiments", type=int, default=200)
    p.add_argument("--workers", type=int, default=8, help="operator handler threads")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--log", help="write the operator's log here")
    args = p.parse_args(argv)

    from kubernetes import client

    from kube_harness import EmulatedCluster

    with EmulatedCluster() as cluster:
        cfg = client.Configuration()
        cfg.host = cluster.url
        api = client.ApiClient(cfg)
        custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
        env = {**os.environ, "LRM_SAFETY_KUBE_SERVER": cluster.url, "LRM_SAFETY_WORKERS": str(args.workers),
               "LRM_SAFETY_RESYNC_SECONDS": "30", "LRM_SAFETY_LIVENESS": "",
               # kmock has no generateName: every Event after the first fails with 409 and a traceback,
               # which measures the emulator's error path rather than the operator.
               "LRM_SAFETY_EVENTS": "false"}
        log = open(args.log, "w") if args.log else subprocess.DEVNULL
        op = subprocess.Popen([sys.executable, "-m", "lrm_safety.cli", "operator"], env=env, stdout=log, stderr=log)
        try:
            time.sleep(3)  # let the operator start its watches
            rss_idle = peak_rss_mib(op.pid)

            def create(i: int):
                body = {"apiVersion": "lrmsafety.io/v1alpha1", "kind": "SafetyExperiment",
                        "metadata": {"name": f"scale-{i:04d}", "namespace": "default", "uid": f"uid-{i}",
                                     "resourceVersion": "1", "generation": 1},
                        "spec": {"evaluate": {"dataRoot": "s3://data"}}}
                custom.create_namespaced_custom_object("lrmsafety.io", "v1alpha1", "default", "safetyexperiments", body)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(args.experiments)))
            created = time.perf_counter() - t0
            want = {f"scale-{i:04d}-distill-1" for i in range(args.experiments)}
            seen: set[str] = set()
            progress = 0
            while True:
                items = json.loads(batch.list_namespaced_job("default", _preload_content=False).data)["items"]
                seen = {j["metadata"]["name"] for j in items} & want
                if len(seen) == len(want) or time.perf_counter() - t0 > args.timeout:
                    break
                if progress is not None and len(seen) // 25 != progress // 25:
                    print(f"  {len(seen)}/{len(want)} first-stage Jobs after {time.perf_counter() - t0:.1f}s", flush=True)
                progress = len(seen)
                time.sleep(0.25)
            elapsed = time.perf_counter() - t0
            rss = peak_rss_mib(op.pid)
            dupes = len(items) - len({j["metadata"]["name"] for j in items})
        finally:
            op.terminate()
            try:
                op.wait(20)
            except subprocess.TimeoutExpired:
                op.kill()
                op.wait()
    result = {"experiments": args.experiments, "workers": args.workers, "create_s": round(created, 2),
              "all_first_jobs_s": round(elapsed, 2), "jobs_found": len(seen), "duplicate_jobs": dupes,
              "operator_peak_rss_mib": round(rss, 1), "operator_idle_rss_mib": round(rss_idle, 1)}
    print("RESULT", json.dumps(result))
    print(f"{len(seen)}/{args.experiments} first-stage Jobs in {elapsed:.1f}s "
          f"({args.experiments / elapsed:.1f} experiments/s); operator peak RSS {rss:.0f} MiB")
    return 0 if len(seen) == len(want) and dupes == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
