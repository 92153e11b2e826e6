"""The operator's decisions as a pure function: (experiment, its Jobs, pod summaries) -> actions.

All state lives in the experiment's status and in the Job objects, so the same inputs give the same
decision whether the operator has run for days or just restarted.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from lrm_safety.spec import STAGES, SafetyExperimentSpec, SpecError, parse_spec

from . import manifests


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Actions:
    status: dict[str, Any] = field(default_factory=dict)  # the new status (whole), or {} for no change
    create: list[dict] = field(default_factory=list)  # objects to create (409 = adopt)
    patch_jobs: list[tuple[str, dict]] = field(default_factory=list)  # (job name, merge patch)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def job_state(job: Optional[dict]) -> str:
    """'missing', 'suspended', 'running', 'succeeded', 'failed' from a Job's status."""
    if job is None:
        return "missing"
    conds = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        return "succeeded"
    if "Failed" in conds or "FailureTarget" in conds:
        return "failed"
    if (job.get("spec") or {}).get("suspend"):
        return "suspended"
    return "running"


def failure_is_permanent(job: dict) -> bool:
    """Our own validation exits 1-127 -> the pod failure policy fails the Job with reason PodFailurePolicy."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Failed", "FailureTarget") and c.get("status") == "True":
            return c.get("reason") == "PodFailurePolicy"
    return False


def failure_message(job: dict) -> str:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return f"{c.get('reason', 'Failed')}: {c.get('message', '')}".strip(": ")
    return "Job failed"


def parse_termination_message(text: Optional[str]) -> dict:
    """The last JSON line a stage pod wrote to /dev/termination-log."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def set_condition(conditions: list[dict], type_: str, status: bool, reason: str, message: str = "") -> list[dict]:
    """Kubernetes convention: lastTransitionTime changes only when status flips."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions]
    for c in out:
        if c["type"] == type_:
            if c["status"] != value:
                c["lastTransitionTime"] = now_iso()
            c.update(status=value, reason=reason, message=message[:1000])
            return out
    out.append({"type": type_, "status": value, "reason": reason, "message": message[:1000],
                "lastTransitionTime": now_iso()})
    return out


def _metrics_from_summary(summary: dict, metrics: dict) -> dict:
    m = dict(metrics)
    src = summary.get("metrics") or {}
    for key in ("asr", "overRefusal", "mathAccuracy"):
        if src.get(key) is not None:
            m[key] = src[key]
    if src.get("benchmarks"):
        m["benchmarks"] = src["benchmarks"]
    return m


def decide(body: dict, jobs: dict[str, dict], pod_messages: dict[str, str], default_image: str = "") -> Actions:
    """What to do now for one experiment. `jobs` by name; `pod_messages` job name -> termination message;
    `default_image`: the operator's worker image for specs that name none."""
    meta, raw_spec = body.get("metadata") or {}, body.get("spec") or {}
    name, namespace, uid = meta["name"], meta.get("namespace") or "default", meta.get("uid")
    old = body.get("status") or {}
    status = json.loads(json.dumps(old))  # deep copy
    status.setdefault("stages", {})
    status.setdefault("conditions", [])
    status.setdefault("metrics", {})
    if meta.get("generation") is not None:
        status["observedGeneration"] = meta["generation"]
    acts = Actions()

    def finish(phase: str, reason: str, message: str, ready: bool = False, failed: bool = False):
        status["phase"] = phase
        status["message"] = message
        conds = set_condition(status["conditions"], "Ready", ready, reason, message)
        conds = set_condition(conds, "Progressing", False, reason, message)
        status["conditions"] = set_condition(conds, "Failed", failed, reason, message)

    if old.get("phase") in ("Succeeded", "Failed"):
        return acts
    try:
        spec: SafetyExperimentSpec = parse_spec(raw_spec)
    except SpecError as e:
        msg = "invalid spec: " + "; ".join(e.lines)
        finish("Failed", "InvalidSpec", msg, failed=True)
        acts.events.append(("Warning", "InvalidSpec", msg))
        acts.status = status
        return acts
    if default_image and not (raw_spec.get("images") or {}).get("worker"):
        spec.images.worker = default_image

    if not old.get("phase"):
        acts.create.append(manifests.render_configmap(name, namespace, spec, uid))
        acts.events.append(("Normal", "Accepted", f"spec valid; stages: {', '.join(STAGES)}"))

    for stage in STAGES:
        st = status["stages"].setdefault(stage, {"state": "Pending", "attempts": 0})
        if st.get("state") == "Succeeded":
            continue
        attempt = max(st.get("attempts") or 0, 1)
        jname = manifests.job_name(name, stage, attempt)
        job = jobs.get(jname)
        state = job_state(job) if st.get("state") == "Running" else "missing"
        if state == "missing":
            if st.get("state") != "Running":
                st.update(state="Running", attempts=attempt, jobName=jname, startedAt=now_iso(), message=None)
                acts.events.append(("Normal", "StageStarted", f"{stage}: created Job {jname} (attempt {attempt})"))
            # Also after a restart that lost the Job: create is idempotent (409 -> adopt).
            acts.create += manifests.render_stage(name, namespace, spec, stage, attempt, uid)
            state = "suspended" if spec.suspend else "running"
        if state == "succeeded":
            summary = parse_termination_message(pod_messages.get(jname))
            st.update(state="Succeeded", finishedAt=now_iso(), summary=summary,
                      artifactUri=f"{spec.storage.uri.rstrip('/')}/{name}/{stage}", message=None)
            status["metrics"] = _metrics_from_summary(summary, status["metrics"])
            acts.events.append(("Normal", "StageSucceeded", f"{stage}: Job {jname} succeeded"))
            continue
        if state == "failed":
            msg = failure_message(job)
            permanent = failure_is_permanent(job)
            if not permanent and attempt <= spec.resources.backoff_limit:
                st.update(attempts=attempt + 1, jobName=manifests.job_name(name, stage, attempt + 1),
                          message=f"attempt {attempt} failed ({msg}); retrying")
                acts.events.append(("Warning", "StageRetry", f"{stage}: attempt {attempt} failed ({msg}); retrying"))
                acts.create += manifests.render_stage(name, namespace, spec, stage, attempt + 1, uid)
                state = "running"
            else:
                why = "permanent failure (bad input; see the pod log)" if permanent else \
                    f"failed {attempt} time(s), backoffLimit {spec.resources.backoff_limit}"
                st.update(state="Failed", finishedAt=now_iso(), message=f"{msg}; {why}")
                status["stage"] = stage
                finish("Failed", "StageFailed", f"{stage} {why}: {msg}", failed=True)
                acts.events.append(("Warning", "StageFailed", f"{stage}: {why}: {msg}"))
                acts.status = status
                return acts
        # The stage is running or suspended: honour spec.suspend on its Job.
        status["stage"] = stage
        job_suspended = bool(job and (job.get("spec") or {}).get("suspend"))
        queued = bool(spec.resources.queue)
        if job is not None and spec.suspend and not job_suspended:
            acts.patch_jobs.append((jname, {"spec": {"suspend": True}}))
        elif job is not None and not spec.suspend and job_suspended and not queued:
            # With a Kueue queue, Kueue owns suspend on the Job and admits it when capacity frees.
            acts.patch_jobs.append((jname, {"spec": {"suspend": False}}))
        if spec.suspend:
            if old.get("phase") != "Suspended":
                acts.events.append(("Normal", "Suspended", f"{stage}: Job {jname} suspended"))
            status["phase"] = "Suspended"
            conds = set_condition(status["conditions"], "Suspended", True, "SuspendedBySpec", f"{stage} suspended")
            status["conditions"] = set_condition(conds, "Progressing", False, "Suspended", f"{stage} suspended")
        else:
            if old.get("phase") == "Suspended":
                acts.events.append(("Normal", "Resumed", f"{stage}: Job {jname} resumed"))
            status["phase"] = "Running"
            conds = status["conditions"]
            if any(c["type"] == "Suspended" for c in conds):
                conds = set_condition(conds, "Suspended", False, "Resumed", "")
            status["conditions"] = set_condition(conds, "Progressing", True, "StageRunning", f"{stage} running ({jname})")
        status["conditions"] = set_condition(status["conditions"], "Ready", False, "StageRunning", f"{stage} running")
        break
    else:
        status["stage"] = None
        finish("Succeeded", "Succeeded", "all stages succeeded", ready=True)
        acts.events.append(("Normal", "Succeeded", "all stages succeeded"))

    if status != old:
        acts.status = status
    return acts
