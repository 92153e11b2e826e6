"""The operator's decisions as a pure function: what it observed of one experiment -> actions.

All state lives in the experiment's status, the Job objects, their pods and the store's manifests, so
the same observation gives the same decision whether the operator has run for days or just restarted.
`decide` also says when it next needs to look (a retry's backoff, a start deadline), so the operator
polls nothing: watches and those wake-ups drive it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from lrm_safety.evaluation.report import HEADLINE_KEYS, pct
from lrm_safety.serving import served as serving
from lrm_safety.spec import SafetyExperimentSpec, SpecError, parse_spec

from . import claims as claimsmod
from . import manifests
from . import pods as podinfo
from . import servers as servermod
from .manifests import WorkerDefaults

MAX_BACKOFF_S = 600


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def now_iso() -> str:
    return iso(utcnow())


@dataclass
class Observed:
    """One experiment as the operator sees it now."""

    body: dict
    jobs: dict[str, dict] = field(default_factory=dict)  # this experiment's Jobs by name
    pods: dict[str, list[dict]] = field(default_factory=dict)  # Job name -> its pods
    # stage -> the summary of a finished manifest for this stage's config in the store, or None (not there, or
    # the operator cannot read the store). Called only before a stage's first Job and when a Job has vanished.
    finished_in_store: Callable[[str], Optional[dict]] = lambda stage: None
    # work id (manifests.LABEL_WORK) -> the claim on that work in this namespace (claims.view), or None: a stage
    # whose identical work another experiment holds waits for it, then reuses its output.
    claims: Callable[[str], Optional[dict]] = lambda work: None
    claim_grace: float = 120.0  # seconds a stuck holder keeps its claim before another may take the work over
    # served models of this namespace: server name -> its Deployment (servers.trim_deployment), and its pods
    servers: dict[str, dict] = field(default_factory=dict)
    server_pods: dict[str, list[dict]] = field(default_factory=dict)
    # their Services (servers.trim_service) by name, and the EndpointSlices of each (servers.trim_slice)
    server_services: dict[str, dict] = field(default_factory=dict)
    server_slices: dict[str, list[dict]] = field(default_factory=dict)
    # stage pods disrupted (evicted, preempted) as the pods watch saw them: pod name -> {job, reason, message, at}
    disruptions: dict[str, dict] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Claim:
    """A claim to make before the stage's Job: create the Lease, or (resource_version) take a stuck one over."""

    work: str
    stage: str
    resource_version: Optional[str] = None


@dataclass
class Actions:
    status: dict[str, Any] = field(default_factory=dict)  # the new status (whole), or {} for no change
    create: list[dict] = field(default_factory=list)  # objects to create (409 = adopt)
    patch_jobs: list[tuple[str, dict]] = field(default_factory=list)  # (job name, merge patch)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: Optional[float] = None  # seconds until the next look is due (None: only on events)
    claims: list[Claim] = field(default_factory=list)  # made before `create`; a lost one means: decide again
    releases: list[str] = field(default_factory=list)  # work ids whose claim this experiment gives up
    marks: list[tuple[str, Optional[str]]] = field(default_factory=list)  # (work id, stuck since or None)
    server_patches: list[tuple[str, dict]] = field(default_factory=list)  # (served model's Deployment, merge patch)
    service_patches: list[tuple[str, dict]] = field(default_factory=list)  # (served model's Service, merge patch)


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


def set_condition(
    conditions: list[dict], type_: str, status: bool, reason: str, message: str = "", now: Optional[dt.datetime] = None
) -> list[dict]:
    """Kubernetes convention: lastTransitionTime changes only when status flips."""
    value = "True" if status else "False"
    stamp = iso(now or utcnow())
    out = [dict(c) for c in conditions]
    for c in out:
        if c["type"] == type_:
            if c["status"] != value:
                c["lastTransitionTime"] = stamp
            c.update(status=value, reason=reason, message=message[:1000])
            return out
    out.append(
        {"type": type_, "status": value, "reason": reason, "message": message[:1000], "lastTransitionTime": stamp}
    )
    return out


def retry_delay(base: int, attempt: int) -> int:
    """Seconds before attempt `attempt + 1`: base x 2^(attempt-1), capped."""
    return min(base * 2 ** max(attempt - 1, 0), MAX_BACKOFF_S) if base else 0


def percent(value) -> Optional[str]:
    """A fraction as the printer columns show it (report.pct); none stays none, so the column is empty."""
    return None if value is None else pct(value)


def _metrics_from_summary(summary: dict, metrics: dict) -> dict:
    """The evaluate stage's headline replaces the old one whole, so a re-run under another judge leaves no stale
    ASR; `display` holds the percentages the printer columns show."""
    src = summary.get("metrics") or {}
    if not src:
        return dict(metrics)
    m = {key: src[key] for key in HEADLINE_KEYS if src.get(key) is not None}
    for key in ("benchmarks", "judges"):
        if src.get(key):
            m[key] = src[key]
    m["display"] = {
        k: percent(m[k])
        for k in ("asr", "refusalRate", "overRefusal", "mathAccuracy", "codeAccuracy")
        if m.get(k) is not None
    }
    return m


def finish(
    status: dict, phase: str, reason: str, message: str, now: dt.datetime, ready: bool = False, failed: bool = False
) -> None:
    """An end state: phase, message and the Ready/Progressing/Failed conditions agree."""
    status["phase"] = phase
    status["message"] = message
    if phase == "Failed" and status.get("progress") not in (None, "done"):
        status["progress"] = "-"  # the column never shows a report of work that has stopped
    conds = set_condition(status["conditions"], "Ready", ready, reason, message, now)
    conds = set_condition(conds, "Progressing", False, reason, message, now)
    status["conditions"] = set_condition(conds, "Failed", failed, reason, message, now)


def _clear(st: dict, *keys: str) -> None:
    """Drop keys from a status section: null where the stored status has them (a merge patch deletes a null)."""
    for key in keys:
        if key in st:
            st[key] = None


def _never_started(status: dict) -> bool:
    return not any((st or {}).get("attempts") for st in (status.get("stages") or {}).values())


def is_finished(status: Optional[dict]) -> bool:
    """Nothing left to do: Succeeded, or Failed after a Job started (a spec that was invalid from the start may
    still be fixed, so it is looked at again)."""
    status = status or {}
    if status.get("phase") == "Succeeded":
        return True
    if status.get("phase") != "Failed":
        return False
    invalid = any(
        c.get("type") == "Failed" and c.get("status") == "True" and c.get("reason") == "InvalidSpec"
        for c in status.get("conditions") or []
    )
    return not (invalid and _never_started(status))


JOIN_SECONDS = 3.0  # after creating a served model: join it as a user if another experiment's create won


class _Decision:
    """One reconcile's working state; `decide` is its only entry point."""

    def __init__(self, obs: Observed, spec: SafetyExperimentSpec, status: dict, old: dict):
        meta = obs.body.get("metadata") or {}
        self.obs, self.spec, self.status, self.old = obs, spec, status, old
        self.name, self.namespace, self.uid = meta["name"], meta.get("namespace") or "default", meta.get("uid")
        self.now = obs.now
        self.acts = Actions()
        self.works: dict[str, str] = {}
        self.made_servers: set[str] = set()
        self.made_services: set[str] = set()
        self.using: dict[str, str] = {}  # server name -> the stage of this experiment that needs it now

    # -- helpers
    def cond(self, type_: str, ok: bool, reason: str, message: str = "") -> None:
        self.status["conditions"] = set_condition(self.status["conditions"], type_, ok, reason, message, self.now)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.acts.events.append((type_, reason, message))

    def wake_in(self, seconds: float) -> None:
        seconds = max(float(seconds), 1.0)
        if self.acts.requeue_after is None or seconds < self.acts.requeue_after:
            self.acts.requeue_after = seconds

    def finish(self, phase: str, reason: str, message: str, ready: bool = False, failed: bool = False) -> None:
        finish(self.status, phase, reason, message, self.now, ready=ready, failed=failed)

    def start_attempt(self, stage: str, st: dict, attempt: int) -> None:
        jname = manifests.job_name(self.name, stage, attempt)
        if _never_started(self.status) or "specGeneration" not in self.status:
            # The spec every pod reads, frozen when the first Job starts (an attempt that failed on its server
            # before any Job counts as started, but made no ConfigMap).
            self.acts.create.append(manifests.render_configmap(self.name, self.namespace, self.spec, self.uid))
            self.status["specGeneration"] = (self.obs.body.get("metadata") or {}).get("generation")
        st.update(state="Running", attempts=attempt, jobName=jname, attemptStartedAt=iso(self.now), message=None)
        _clear(st, "nextRetryAt", "waiting", "runningSince")
        st["startedAt"] = st.get("startedAt") or iso(self.now)
        self.acts.create += manifests.render_stage(self.name, self.namespace, self.spec, stage, attempt, self.uid)
        self.status["progress"] = "-"  # until the stage's first report
        self.event("Normal", "StageStarted", f"{stage}: created Job {jname} (attempt {attempt})")

    def succeed(self, stage: str, st: dict, summary: dict, how: str) -> None:
        started = parse_time(st.get("startedAt"))
        where = summary.pop("source", None) or f"{self.name}/{stage}"
        if summary.get("reusedFrom"):
            st["reusedFrom"] = summary["reusedFrom"]
        last = dict(st.get("progress") or {})
        if last.get("total"):
            last["done"] = last["total"]  # the last report may predate the end by its throttle interval
        st.update(
            state="Succeeded",
            finishedAt=iso(self.now),
            summary=summary,
            message=how,
            artifactUri=f"{self.spec.storage.uri.rstrip('/')}/{where}",
            progress={
                **last,
                "percent": 100.0,
                "etaSeconds": 0,
                "durationSeconds": round((self.now - started).total_seconds()) if started else None,
            },
        )
        _clear(st, "nextRetryAt", "waiting", "attemptStartedAt", "runningSince")
        self.status["metrics"] = _metrics_from_summary(summary, self.status["metrics"])
        self.event("Normal", "StageSucceeded", f"{stage}: {how}")

    def fail_attempt(self, stage: str, st: dict, reason: str, permanent: bool, exit_code=None) -> bool:
        """Record a failed attempt; schedule the retry, or fail the experiment. True when the experiment failed."""
        attempt = st.get("attempts") or 1
        failures = list(st.get("failures") or [])
        failures.append(
            {"attempt": attempt, "reason": reason, "exitCode": exit_code, "at": iso(self.now), "permanent": permanent}
        )
        st["failures"] = failures[-20:]
        _clear(st, "waiting", "runningSince")
        limit = self.spec.resources.backoff_limit
        if permanent or attempt > limit:
            why = "bad input, not retried" if permanent else f"failed {attempt} time(s), backoffLimit {limit}"
            every = "; ".join(f"attempt {f['attempt']}: {f['reason']}" for f in st["failures"])
            st.update(state="Failed", finishedAt=iso(self.now), message=f"{why}: {every}")
            self.status["stage"] = stage
            self.finish("Failed", "StageFailed", f"{stage} {why}: {reason}", failed=True)
            self.event("Warning", "StageFailed", f"{stage}: {why}: {reason}")
            return True
        delay = retry_delay(self.spec.resources.retry_backoff_seconds, attempt)
        st.update(
            attempts=attempt + 1,
            jobName=manifests.job_name(self.name, stage, attempt + 1),
            nextRetryAt=iso(self.now + dt.timedelta(seconds=delay)),
            message=f"attempt {attempt} failed ({reason}); retry {attempt + 1} of {limit + 1} in {delay}s",
        )
        self.event("Warning", "StageRetry", f"{stage}: attempt {attempt} failed ({reason}); retrying in {delay}s")
        return False

    # -- the stage being worked on
    def run_stage(self, stage: str, st: dict) -> str:
        """Advance one stage; returns 'next' (it succeeded: go on), 'wait' (it is in progress) or 'failed'."""
        if st.get("state") in (None, "Pending"):
            done = self.obs.finished_in_store(stage)
            if done is not None:
                how = (
                    f"reused from {done['reusedFrom']} (same config and inputs): no Job"
                    if done.get("reusedFrom")
                    else "already finished in the store for this config: no Job"
                )
                self.succeed(stage, st, dict(done), how)
                return "next"
            if self.wait_for_holder(stage, st):
                return "wait"
            gate = self.servers_up(stage, st)
            if gate != "ready":
                return gate
            _clear(st, "waiting")
            self.start_attempt(stage, st, 1)
            return "wait"
        retry_at = parse_time(st.get("nextRetryAt"))
        if retry_at is not None:
            if self.now < retry_at:
                self.wake_in((retry_at - self.now).total_seconds())
                return "wait"
            gate = self.servers_up(stage, st)
            if gate != "ready":
                return gate
            self.start_attempt(stage, st, st["attempts"])
            return "wait"
        jname = st.get("jobName") or manifests.job_name(self.name, stage, st.get("attempts") or 1)
        job = self.obs.jobs.get(jname)
        pods = self.obs.pods.get(jname) or []
        state = job_state(job)
        if state == "missing":
            done = self.obs.finished_in_store(stage)
            if done is not None:  # e.g. the Job was deleted after it finished (ttlSecondsAfterFinished)
                self.succeed(stage, st, done, f"Job {jname} is gone; the store has the finished stage")
                return "next"
            # Lost before it finished: create it again (same name, so an existing one answers 409 and is adopted).
            self.acts.create += manifests.render_stage(
                self.name, self.namespace, self.spec, stage, st.get("attempts") or 1, self.uid
            )
            state = "suspended" if self.spec.suspend else "running"
        if state == "succeeded":
            summary = podinfo.combine_summaries(pods) or self.obs.finished_in_store(stage) or {}
            self.succeed(stage, st, summary, f"Job {jname} succeeded")
            return "next"
        if state == "failed":
            f = podinfo.failure(job, pods)
            if self.fail_attempt(stage, st, f["reason"], f["permanent"], f["exitCode"]):
                return "failed"
            return self.run_stage(stage, st)  # starts the retry now if there is no backoff
        self.note_disruptions(stage, st, jname)
        if self.watch_start(stage, st, jname, job, pods, state):
            return "failed"
        self.apply_suspend(stage, jname, job)
        return "wait"

    def note_disruptions(self, stage: str, st: dict, jname: str) -> None:
        """A pod of this attempt evicted or preempted: its Job runs another and the attempt goes on (podFailurePolicy
        Ignore), so nothing failed; status and an event say what happened to it."""
        seen = {d.get("pod") for d in st.get("disruptions") or []}
        for pod, d in sorted(self.obs.disruptions.items(), key=lambda kv: kv[1].get("at") or ""):
            if d.get("job") != jname or pod in seen:
                continue
            st["disruptions"] = [
                *(st.get("disruptions") or []),
                {
                    "pod": pod,
                    "reason": d["reason"],
                    "message": d.get("message", ""),
                    "at": d.get("at") or iso(self.now),
                },
            ][-20:]
            self.event(
                "Warning",
                "PodDisrupted",
                f"{stage}: pod {pod} {d['reason']}: {d.get('message') or ''}"
                f"; its Job runs another and the attempt goes on (not a failure)"[:1000],
            )

    # -- served models
    def ensure_servers(self, stage: str) -> list[tuple[serving.Served, dict]]:
        """The stage's servers exist and list this experiment as a user: created when missing (an idle one was
        deleted: created again), annotated and owned when another made it. Each with its readiness."""
        out = []
        owner = servermod.owner(self.obs.body)
        for s in serving.served(self.spec, stage):
            self.using[s.name] = stage
            dep = self.obs.servers.get(s.name)
            if dep is None or dep.get("deletionTimestamp"):
                if s.name not in self.made_servers:
                    self.made_servers.add(s.name)
                    # the Service follows once the Deployment exists, owned by it (its uid comes with the watch)
                    self.acts.create.append(
                        servermod.render_deployment(self.spec, self.namespace, s, owner, {self.name: stage})
                    )
                    self.event(
                        "Normal",
                        "ServerCreated",
                        f"{stage}: server {s.name} for {s.model} "
                        f"({serving.server_gpus(self.spec, s)} GPU(s) x "
                        f"{s.serve.replicas})",
                    )
                    # Another user may have made it in the same instant (our create is then a 409): only its users'
                    # reconciles follow the Deployment's events, so look again soon to join it.
                    self.wake_in(JOIN_SECONDS)
                dep = None
            else:
                patch: dict = {}
                if servermod.users(dep).get(self.name) != stage:
                    patch.setdefault("metadata", {})["annotations"] = {servermod.USERS + self.name: stage}
                owners = dep.get("ownerReferences") or []
                if owner.get("uid") and owner["uid"] not in {o.get("uid") for o in owners}:
                    patch.setdefault("metadata", {})["ownerReferences"] = [
                        {**o, "controller": False, "blockOwnerDeletion": False} for o in [*owners, owner]
                    ]
                if patch:
                    self.acts.server_patches.append((s.name, patch))
                self.ensure_service(s, dep)
            out.append((s, self.server_readiness(s.name, dep)))
        return out

    def ensure_service(self, s: serving.Served, dep: dict) -> None:
        """The server's Service exists and belongs to its Deployment: made when missing (deleted by hand, or by the
        garbage collector with a user that owned it before Services were the Deployment's), adopted when another
        owner holds it."""
        if not dep.get("uid") or s.name in self.made_services:
            return
        svc = self.obs.server_services.get(s.name)
        if svc is None or svc.get("deletionTimestamp"):
            self.made_services.add(s.name)
            self.acts.create += servermod.render_companions(self.namespace, s, dep)
            self.event("Normal", "ServiceCreated", f"server {s.name}: its Service, owned by its Deployment")
        elif dep["uid"] not in (svc.get("owners") or []):
            self.made_services.add(s.name)
            self.acts.service_patches.append(
                (s.name, {"metadata": {"ownerReferences": [servermod.deployment_owner(dep)]}})
            )

    def server_readiness(self, name: str, dep: Optional[dict]) -> dict:
        return servermod.readiness(
            dep,
            self.obs.server_pods.get(name) or [],
            self.obs.server_services.get(name),
            self.obs.server_slices.get(name) or [],
            need_service=True,
        )

    def servers_up(self, stage: str, st: dict) -> str:
        """'ready' when every server the stage needs answers; else 'wait' (ServerNotReady, with the server's own
        reason, under the stage's start timeout) or 'failed' (a server crash-loops: its container's reason)."""
        states = self.ensure_servers(stage)
        down = [(s, r) for s, r in states if not r["ready"]]
        if not down:
            return "ready"
        crashed = [(s, r) for s, r in down if r["crashed"]]
        if crashed:
            s, r = crashed[0]
            self.no_job_attempt(st)
            reason = f"server {s.name} ({s.model}) {r['reason']}: {r['message']}"
            return "failed" if self.fail_attempt(stage, st, reason, False) else "wait"
        message = "; ".join(f"{s.name} ({s.model}): {r['reason']}: {r['message']}" for s, r in down)
        w = st.get("waiting") or {}
        since = w.get("since") if w.get("reason") == "ServerNotReady" and w.get("since") else iso(self.now)
        if w.get("reason") != "ServerNotReady":
            self.event("Normal", "ServerNotReady", f"{stage}: waiting for {message}"[:1000])
        st["waiting"] = {"reason": "ServerNotReady", "message": message[:500], "since": since}
        deadline = parse_time(since) + dt.timedelta(seconds=self.spec.resources.start_timeout_seconds)
        if self.now < deadline:
            self.wake_in((deadline - self.now).total_seconds())
            return "wait"
        self.no_job_attempt(st)
        why = f"ServerNotReady: {message} (start timeout {self.spec.resources.start_timeout_seconds}s)"
        return "failed" if self.fail_attempt(stage, st, why, False) else "wait"

    @staticmethod
    def no_job_attempt(st: dict) -> None:
        """An attempt that failed before its Job (its server): counted, and past Pending, so its retry waits for
        the backoff like any other."""
        st["attempts"] = st.get("attempts") or 1
        st["state"] = "Running"

    def tend_servers(self, stage: Optional[str]) -> None:
        """This experiment's use of servers follows its stage: the running stage's servers are kept (re-created if
        they vanished), every other server it used is released (the server goes after its idle time); and the
        status lists them."""
        st = (self.status["stages"].get(stage) or {}) if stage else {}
        if (
            stage
            and st.get("state") in ("Pending", "Running")
            and self.status.get("phase") != "Failed"
            and not self.using
        ):
            self.ensure_servers(stage)
        for name, dep in self.obs.servers.items():
            if self.name in servermod.users(dep) and name not in self.using:
                self.acts.server_patches.append(
                    (name, {"metadata": {"annotations": {servermod.USERS + self.name: None}}})
                )
        shown = {}
        for s in serving.served(self.spec):
            dep = self.obs.servers.get(s.name)
            r = self.server_readiness(s.name, dep) if dep else None
            shown[s.name] = {
                "model": s.model,
                "roles": sorted({role for stg in self.spec.stages for role in serving.roles_of(self.spec, stg, s)}),
                "endpoint": s.endpoint(self.namespace),
                "gpus": serving.server_gpus(self.spec, s),
                "replicas": s.serve.replicas,
                "readyReplicas": (dep or {}).get("readyReplicas", 0),
                "state": "Absent" if dep is None else r["reason"],
                "stages": [stg for stg in self.spec.stages if s.key in {x.key for x in serving.served(self.spec, stg)}],
                "inUseBy": self.using.get(s.name),
            }
        if shown or self.status.get("servers"):
            self.status["servers"] = shown

    def work(self, stage: str) -> str:
        """The stage's work id, hashed once per reconcile (the claim, its upkeep and the waiters all ask)."""
        if stage not in self.works:
            self.works[stage] = manifests.stage_work_id(self.name, self.spec, stage)
        return self.works[stage]

    def wait_for_holder(self, stage: str, st: dict) -> bool:
        """True when another experiment holds this stage's work and is moving: wait for it, then reuse its output.
        Otherwise claim the work (or take a stuck holder's claim over) before the Job is made."""
        work = self.work(stage)
        claim = self.obs.claims(work)
        if claim is None:
            self.acts.claims.append(Claim(work, stage))
            return False
        holder = claim.get("holder")
        if holder in (None, self.name):
            return False  # ours already (a reconcile that claimed, then stopped before the Job)
        left = claimsmod.takeover_in(claim, self.now, self.obs.claim_grace)
        if left == 0:
            self.acts.claims.append(Claim(work, stage, claim.get("resourceVersion")))
            self.event(
                "Normal",
                "WorkTakenOver",
                f"{stage}: {holder}'s pods for the same work are held up since {claim['stuckSince']}; running it here",
            )
            return False
        message = f"{holder} is running the same {stage} work; its output is reused when it finishes"
        if left is not None:
            at = iso(self.now + dt.timedelta(seconds=left))
            message += f" (its pods are held up since {claim['stuckSince']}; taken over at {at} unless they start)"
            self.wake_in(left)
        w = st.get("waiting") or {}
        if w.get("reason") != "SameWorkRunning" or w.get("message") != message:
            same_holder = w.get("reason") == "SameWorkRunning" and (w.get("message") or "").startswith(f"{holder} ")
            st["waiting"] = {
                "reason": "SameWorkRunning",
                "message": message,
                "since": w.get("since") if w.get("reason") == "SameWorkRunning" else iso(self.now),
            }
            if not same_holder:
                self.event("Normal", "SameWorkRunning", f"{stage}: {message}")
        return True

    def tend_claim(self, stage: str, st: dict) -> None:
        """Keep this experiment's claim on the stage's work truthful: released when the stage ends, marked stuck
        while its pods are held up or its attempt waits for a retry, unmarked once they run."""
        work = self.work(stage)
        claim = self.obs.claims(work)
        if claim is not None and claim.get("holder") != self.name:
            return  # another's (this stage reused it, or took it over)
        if st.get("state") in ("Succeeded", "Failed"):
            if claim is not None or st.get("jobName"):
                self.acts.releases.append(work)
            return
        if claim is None:
            return  # just claimed: the index shows it soon
        stuck = None
        if st.get("nextRetryAt"):
            stuck = ((st.get("failures") or [{}])[-1]).get("at") or iso(self.now)
        elif (st.get("waiting") or {}).get("reason") not in (None, "SameWorkRunning"):
            stuck = st["waiting"].get("since") or iso(self.now)
        if claim.get("stuckSince") != stuck:
            self.acts.marks.append((work, stuck))

    def watch_start(self, stage: str, st: dict, jname: str, job, pods: list[dict], state: str) -> bool:
        """Report pods held up before they run, and fail the attempt once resources.startTimeoutSeconds passes.
        True when that failed the experiment."""
        if state == "suspended" or self.spec.suspend:
            # Queued (Kueue) or paused: the start clock begins again when it resumes.
            _clear(st, "attemptStartedAt", "waiting", "runningSince")
            return False
        if not st.get("attemptStartedAt"):
            st["attemptStartedAt"] = iso(self.now)
        if st.get("runningSince") or podinfo.started(pods):
            # Running: the start clock is done with (a pod recreated after an eviction is the Job's business).
            st["runningSince"] = st.get("runningSince") or iso(self.now)
            if st.get("waiting"):
                _clear(st, "waiting")
                self.event("Normal", "PodsStarted", f"{stage}: {jname} is running")
            return False
        held = podinfo.waiting_reason(pods)
        if held:
            reason, message = held
            previous = (st.get("waiting") or {}).get("reason")
            st["waiting"] = {
                "reason": reason,
                "message": message[:500],
                "since": (st.get("waiting") or {}).get("since") if previous == reason else iso(self.now),
            }
            if previous != reason:
                self.event("Warning", reason, f"{stage}: {message}")
        deadline = parse_time(st["attemptStartedAt"]) + dt.timedelta(seconds=self.spec.resources.start_timeout_seconds)
        if self.now < deadline:
            self.wake_in((deadline - self.now).total_seconds())
            return False
        w = st.get("waiting") or {}
        reason = (
            f"{w['reason']}: {w['message']}" if w else "no pod started"
        ) + f" (start timeout {self.spec.resources.start_timeout_seconds}s)"
        if job is not None:  # stop the held-up pods: the Job controller fails the Job (DeadlineExceeded)
            self.acts.patch_jobs.append((jname, {"spec": {"activeDeadlineSeconds": 1}}))
        permanent = bool(w) and podinfo.waiting_is_permanent(w["reason"], w["message"])
        if self.fail_attempt(stage, st, reason, permanent):
            return True
        return self.run_stage(stage, st) == "failed"

    def apply_suspend(self, stage: str, jname: str, job) -> None:
        st_phase = self.old.get("phase")
        job_suspended = bool(job and (job.get("spec") or {}).get("suspend"))
        if job is not None and self.spec.suspend and not job_suspended:
            self.acts.patch_jobs.append((jname, {"spec": {"suspend": True}}))
        elif job is not None and not self.spec.suspend and job_suspended and not self.spec.resources.queue:
            # With a Kueue queue, Kueue owns suspend on the Job and admits it when capacity frees.
            self.acts.patch_jobs.append((jname, {"spec": {"suspend": False}}))
        if self.spec.suspend:
            if st_phase != "Suspended":
                self.event("Normal", "Suspended", f"{stage}: Job {jname} suspended")
            self.status["phase"] = "Suspended"
            self.cond("Suspended", True, "SuspendedBySpec", f"{stage} suspended")
            self.cond("Progressing", False, "Suspended", f"{stage} suspended")
        else:
            if st_phase == "Suspended":
                self.event("Normal", "Resumed", f"{stage}: Job {jname} resumed")
            self.status["phase"] = "Running"
            if any(c["type"] == "Suspended" for c in self.status["conditions"]):
                self.cond("Suspended", False, "Resumed", "")
        self.cond("Ready", False, "StageRunning", f"{stage} running")

    def progressing(self, stage: str, st: dict) -> None:
        """The Progressing condition says what the running stage waits for, if anything."""
        if self.spec.suspend or self.status.get("phase") == "Failed":
            return
        if st.get("nextRetryAt"):
            self.cond("Progressing", True, "RetryScheduled", f"{stage}: {st.get('message')}")
        elif st.get("waiting"):
            w = st["waiting"]
            self.cond("Progressing", False, w["reason"], f"{stage}: {w['message']}")
        else:
            self.cond("Progressing", True, "StageRunning", f"{stage} running ({st.get('jobName')})")

    def run(self) -> Actions:
        for stage in self.spec.stages:
            st = self.status["stages"].setdefault(stage, {"state": "Pending", "attempts": 0})
            if st.get("state") == "Succeeded":
                continue
            outcome = self.run_stage(stage, st)
            self.tend_claim(stage, st)
            if outcome == "next":
                continue
            if outcome == "wait":
                if self.old.get("stage") != stage:
                    self.status["progress"] = "-"  # a new stage: the previous stage's report goes
                self.status["stage"] = stage
                if self.status.get("phase") not in ("Running", "Suspended"):
                    self.status["phase"] = "Suspended" if self.spec.suspend else "Running"
                    self.cond("Ready", False, "StageRunning", f"{stage} running")
                self.progressing(stage, st)
            break
        else:
            stage = None
            self.status["stage"] = None
            self.status["progress"] = "done"
            self.finish("Succeeded", "Succeeded", "all stages succeeded", ready=True)
            self.event("Normal", "Succeeded", "all stages succeeded")
        self.tend_servers(stage if self.status.get("phase") in ("Running", "Suspended") else None)
        if self.status != self.old:
            self.acts.status = self.status
        return self.acts


HONOURED = {
    ("spec", "suspend"),
    ("spec", "resources", "nodeSelector"),
    ("spec", "resources", "tolerations"),
    ("spec", "resources", "priorityClassName"),
    ("spec", "resources", "queue"),
}


def ignored_changes(diff, status: Optional[dict], generation: Optional[int]) -> list[str]:
    """Spec fields changed after the spec was frozen for the stage pods (other than suspend and scheduling).

    Frozen means: a Job has started, at a generation below this one. A change to a spec that never started a
    Job is not ignored (it is validated again), and neither is a replay of the change that started it.
    """
    status = status or {}
    if _never_started(status):
        return []
    frozen = status.get("specGeneration")
    if frozen is not None and generation is not None and generation <= frozen:
        return []
    return sorted(
        {
            ".".join(map(str, path))
            for _, path, _, _ in diff
            if path and path[0] == "spec" and tuple(path[:3]) not in HONOURED and tuple(path[:2]) not in HONOURED
        }
    )


def decide(obs: Observed, worker: WorkerDefaults = WorkerDefaults()) -> Actions:
    """What to do now for one experiment. `worker`: the operator's stage-pod defaults (image, pull secrets...)."""
    body = obs.body
    meta, raw_spec = body.get("metadata") or {}, body.get("spec") or {}
    old = body.get("status") or {}
    status = json.loads(json.dumps(old))  # deep copy
    status.setdefault("stages", {})
    status.setdefault("conditions", [])
    status.setdefault("metrics", {})
    if meta.get("generation") is not None:
        status["observedGeneration"] = meta["generation"]
    if is_finished(old):
        return Actions()
    try:
        spec: SafetyExperimentSpec = parse_spec(raw_spec)
    except SpecError as e:
        msg = "invalid spec: " + "; ".join(e.lines)
        if old.get("message") == msg and old.get("phase") == "Failed":
            return Actions()
        finish(status, "Failed", "InvalidSpec", msg, obs.now, failed=True)
        return Actions(status=status, events=[("Warning", "InvalidSpec", msg)])
    if old.get("phase") == "Failed":  # fixed before any Job started: start over
        status["phase"] = None
        status["message"] = None
        status["conditions"] = set_condition(
            status["conditions"], "Failed", False, "SpecFixed", "the spec is valid now", obs.now
        )
    spec = worker.apply(spec)
    d = _Decision(obs, spec, status, old)
    acts = d.run()
    if not old.get("phase") or old.get("phase") == "Failed":
        accepted = f"spec valid; stages: {', '.join(spec.stages)}"
        if acts.events:  # one event, not two, for the experiment's first steps: it saves a request each
            type_, reason, message = acts.events[0]
            acts.events[0] = (type_, reason, f"{accepted}. {message}")
        else:
            acts.events.append(("Normal", "Accepted", accepted))
    return acts
