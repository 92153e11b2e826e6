"""What a stage's pods say, as pure functions over pod dicts: waiting reasons, exit codes, summaries.

The operator keeps a trimmed copy of every stage pod in memory (a kopf index fed by the watch), so
reading these costs no API request.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from lrm_safety.errors import BAD_INPUT_EXIT

# Normal steps on the way to running, not reasons to report.
BENIGN_WAITING = {"ContainerCreating", "PodInitializing"}
# Waiting reasons a retry cannot fix: the pod spec names something that is not there.
_PERMANENT = re.compile(r"(secret|configmap)s? \"?[^\"]*\"? not found|InvalidImageName", re.I)


def trim(pod: dict) -> dict:
    """The fields decisions use (the index holds this, not whole pods)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}

    def states(key):
        return [{"name": c.get("name"), "state": c.get("state") or {}} for c in status.get(key) or []]

    return {
        "name": meta.get("name"),
        "labels": dict(meta.get("labels") or {}),
        "creationTimestamp": meta.get("creationTimestamp"),
        "phase": status.get("phase"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions") or []
        ],
        "initContainerStatuses": states("initContainerStatuses"),
        "containerStatuses": states("containerStatuses"),
    }


def disruption(pod: dict) -> Optional[dict]:
    """{reason, message} when the pod was disrupted (preempted, evicted, its node lost): the API server or the
    scheduler marked it DisruptionTarget, and its Job's podFailurePolicy does not count it as a failure."""
    for c in (pod.get("status") or pod).get("conditions") or []:
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            return {"reason": c.get("reason") or "DisruptionTarget", "message": (c.get("message") or "")[:300]}
    return None


def job_of(pod: dict) -> Optional[str]:
    labels = (pod.get("metadata") or pod).get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def _statuses(pod: dict) -> list[dict]:
    status = pod.get("status") or pod
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def started(pods: list[dict]) -> bool:
    """Has any pod of the attempt got past scheduling and container creation?"""
    for pod in pods:
        if (pod.get("status") or pod).get("phase") in ("Running", "Succeeded", "Failed"):
            return True
        if any(("running" in cs.get("state", {}) or "terminated" in cs.get("state", {})) for cs in _statuses(pod)):
            return True
    return False


def waiting_reason(pods: list[dict]) -> Optional[tuple[str, str]]:
    """(reason, message) of the first pod held up: a container waiting on something, or an unschedulable pod."""
    for pod in pods:
        name = (pod.get("metadata") or pod).get("name")
        for cs in _statuses(pod):
            w = (cs.get("state") or {}).get("waiting")
            if w and w.get("reason") and w["reason"] not in BENIGN_WAITING:
                return w["reason"], f"pod {name}: {w.get('message') or w['reason']}"
        for c in (pod.get("status") or pod).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason"):
                return c["reason"], f"pod {name}: {c.get('message') or c['reason']}"
    return None


def waiting_is_permanent(reason: str, message: str) -> bool:
    """A missing Secret or ConfigMap, or an invalid image name: retrying the same pod spec cannot help."""
    return bool(_PERMANENT.search(f"{reason}: {message}"))


def parse_termination_message(text: Optional[str]) -> dict:
    """The last JSON line a stage pod wrote to its termination log."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def terminated(pods: list[dict]) -> list[dict]:
    """Every terminated container: {pod, exitCode, reason, message (parsed JSON when the worker wrote it), raw}."""
    out = []
    for pod in pods:
        for cs in _statuses(pod):
            t = (cs.get("state") or {}).get("terminated")
            if t is not None:
                out.append(
                    {
                        "pod": (pod.get("metadata") or pod).get("name"),
                        "exitCode": t.get("exitCode"),
                        "reason": t.get("reason"),
                        "summary": parse_termination_message(t.get("message")),
                        "raw": (t.get("message") or "").strip(),
                    }
                )
    return out


def combine_summaries(pods: list[dict]) -> dict:
    """The stage's summary from its succeeded pods: the one that saw every shard finish, else the shards' sum."""
    done = [t["summary"] for t in terminated(pods) if t["exitCode"] == 0 and t["summary"]]
    complete = [s for s in done if s.get("complete")]
    if complete:
        return complete[-1]
    if len(done) <= 1:
        return done[0] if done else {}
    counts: dict = {}
    for s in done:
        for k, v in (s.get("counts") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                counts[k] = counts.get(k, 0) + v
    return {"stage": done[0].get("stage"), "counts": counts, "shards": len(done)}


_EXIT = re.compile(r"exit code (\d+)")


SIGNALS = {
    143: "terminated by SIGTERM: the pod was deleted, or stopped by its node (drain, shutdown)",
    137: "killed by SIGKILL: out of memory, or stopped without a grace period",
}


def _why(t: dict) -> str:
    """The worker's one-line error, else the kubelet's reason (OOMKilled...), else what the signal in the exit code
    says (143, 137), else the log's last line."""
    if t["summary"].get("error"):
        return t["summary"]["error"]
    if t["reason"] not in (None, "Error"):
        return t["reason"]
    if t["exitCode"] in SIGNALS:
        return SIGNALS[t["exitCode"]]
    lines = t["raw"].splitlines()
    return lines[-1] if lines else "failed"


def failure(job: Optional[dict], pods: list[dict]) -> dict:
    """{reason, exitCode, permanent} of a failed attempt, from its pods when they are known, else from the Job."""
    failed = [t for t in terminated(pods) if t["exitCode"] not in (0, None)]
    bad = [t for t in failed if t["exitCode"] == BAD_INPUT_EXIT or t["summary"].get("permanent")]
    pick = (bad or failed or [None])[0]
    if pick is not None:
        return {
            "reason": f"exit {pick['exitCode']}: {_why(pick)}"[:500],
            "exitCode": pick["exitCode"],
            "permanent": bool(bad),
        }
    for c in ((job or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Failed", "FailureTarget") and c.get("status") == "True":
            msg = f"{c.get('reason', 'Failed')}: {c.get('message', '')}".strip(": ")
            m = _EXIT.search(c.get("message") or "")
            code = int(m.group(1)) if m else None
            return {"reason": msg[:500], "exitCode": code, "permanent": code == BAD_INPUT_EXIT}
    return {"reason": "Job failed", "exitCode": None, "permanent": False}
