"""kopf handlers: thin wrappers that gather what the operator observed, call `status.decide`, apply its actions.

Event-driven, not polling: the stage Jobs and their pods are kept in memory by kopf indices fed by the
watch streams, so a reconcile reads one object (the experiment, fresh) and lists nothing. Triggers: the
experiment's create/resume/update, a stage Job finishing, a stage pod starting or getting stuck, and
wake-ups that `decide` asks for (a retry's backoff, a start deadline). A safety-net reconcile runs every
`resync_seconds` (+ jitter) for unfinished experiments only; a finished one costs nothing.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import defaultdict

import kopf
from kubernetes.client.rest import ApiException

from lrm_safety.spec import API_GROUP, API_VERSION, PLURAL, STAGES, parse_spec

from . import kube, manifests
from . import pods as podinfo
from .settings import Settings
from .status import Observed, decide, ignored_changes, is_finished, job_state, set_condition, utcnow
from .store_check import finished_in_store

log = logging.getLogger("lrm-safety-operator")
_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
_due: dict[tuple[str, str], float] = {}  # monotonic time of the next look each experiment asked for
_errors: dict[tuple[str, str], int] = defaultdict(int)  # consecutive failed reconciles (for their backoff)
_pod_signals: dict[str, tuple] = {}  # pod uid -> what of it matters to a decision (reconcile when it changes)
_waiters: dict[str, set] = defaultdict(set)  # work id -> experiments waiting for another's Job doing that work
SETTINGS = Settings.from_env()
LABELS = {manifests.LABEL_EXPERIMENT: kopf.PRESENT}


def _jitter() -> float:
    return SETTINGS.resync_seconds * (1 + 0.2 * random.random())


def reconcile(namespace: str, name: str, jobs: dict[str, dict], pods: dict[str, list[dict]],
              work_holders=lambda work: []) -> None:
    """Fetch the experiment, decide, act. Serialised per experiment so two triggers never race; always reads the
    current object rather than the triggering event's copy, which may be stale."""
    key = (namespace, name)
    with _locks[key]:
        api = kube.Api.get()
        body = api.get_experiment(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            _due.pop(key, None)
            return
        # Watches on Jobs and pods are not ordered: a running stage's Job can be seen finished before its pods'
        # final state. Read those pods once, so the exit code and termination message are never missed.
        for st in ((body.get("status") or {}).get("stages") or {}).values():
            jname = (st or {}).get("jobName")
            if (st or {}).get("state") == "Running" and jname in jobs and \
                    job_state(jobs[jname]) in ("succeeded", "failed") and not podinfo.terminated(pods.get(jname) or []):
                pods = {**pods, jname: api.job_pods(namespace, jname)}
        lookup = lambda stage: None  # noqa: E731
        if SETTINGS.read_store:
            try:
                lookup = finished_in_store(name, namespace, parse_spec(body.get("spec") or {}))
            except Exception:  # an invalid spec: decide reports it
                pass
        acts = decide(Observed(body=body, jobs=jobs, pods=pods, finished_in_store=lookup, now=utcnow(),
                               work_holders=work_holders), SETTINGS.worker)
        try:
            for obj in acts.create:
                api.create_or_adopt(obj)
            for job, patch in acts.patch_jobs:
                api.patch_job(namespace, job, patch)
            status = acts.status
            if _degraded(body) and not status:
                status = dict(body.get("status") or {})
            if status and _degraded(body):
                status["conditions"] = set_condition(status.get("conditions") or [], "Degraded", False,
                                                     "Reconciled", "")
            if status:
                api.patch_status(namespace, name, status)
        except ApiException as e:
            _errors[key] += 1
            _report_api_error(api, body, e)
            _due[key] = time.monotonic() + min(10 * 2 ** (_errors[key] - 1), SETTINGS.resync_seconds)
            raise
        _errors.pop(key, None)
        _note_waiting(namespace, name, body, status or body.get("status") or {})
        for type_, reason, message in acts.events:
            api.event(body, type_, reason, message)
        wait = min(acts.requeue_after, _jitter()) if acts.requeue_after is not None else _jitter()
        _due[key] = time.monotonic() + (wait if not is_finished(status or body.get("status")) else float("inf"))


def _note_waiting(namespace: str, name: str, body: dict, status: dict) -> None:
    """Remember who waits for another experiment's identical work, so that Job finishing wakes them at once."""
    for works in _waiters.values():
        works.discard((namespace, name))
    stage = status.get("stage")
    waiting = ((status.get("stages") or {}).get(stage) or {}).get("waiting") or {}
    if waiting.get("reason") == "SameWorkRunning":
        try:
            _waiters[manifests.stage_work_id(name, parse_spec(body.get("spec") or {}), stage)].add((namespace, name))
        except Exception:
            pass


def _degraded(body: dict) -> bool:
    return any(c.get("type") == "Degraded" and c.get("status") == "True"
               for c in (body.get("status") or {}).get("conditions") or [])


def _report_api_error(api: "kube.Api", body: dict, e: ApiException) -> None:
    """A refused create or patch (RBAC, admission, quota) as a condition and a Warning event with the API's words."""
    message = f"{kube.describe_api_error(e)}"
    log.warning("reconcile of %s failed: %s", body["metadata"]["name"], message)
    try:
        conds = set_condition((body.get("status") or {}).get("conditions") or [], "Degraded", True, "ReconcileError",
                              message)
        api.patch_status(body["metadata"].get("namespace") or "default", body["metadata"]["name"],
                         {"conditions": conds})
    except ApiException as e2:
        log.warning("cannot record the error in status either: %s", kube.describe_api_error(e2))
    api.event(body, "Warning", "ReconcileError", message)


# ---------------------------------------------------------------- in-memory views of the stage Jobs and pods
def _trim_job(body: dict) -> dict:
    meta = body.get("metadata") or {}
    return {"metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
            "spec": {k: v for k, v in (body.get("spec") or {}).items() if k in ("suspend", "completions",
                                                                                 "activeDeadlineSeconds")},
            "status": {"conditions": list((body.get("status") or {}).get("conditions") or [])}}


@kopf.index("batch", "v1", "jobs", labels=LABELS)
def stage_jobs(namespace, labels, body, **_):
    return {(namespace, labels[manifests.LABEL_EXPERIMENT]): _trim_job(body)}


@kopf.index("", "v1", "pods", labels=LABELS)
def stage_pods(namespace, labels, body, **_):
    return {(namespace, labels[manifests.LABEL_EXPERIMENT]): podinfo.trim(body)}


@kopf.index("batch", "v1", "jobs", labels={manifests.LABEL_WORK: kopf.PRESENT},
            when=lambda body, **_: job_state(body) not in ("succeeded", "failed"))  # a finished Job leaves it
def work_jobs(namespace, labels, body, **_):
    """Unfinished stage Jobs by the work they do (reuse.work_id), across experiments and namespaces."""
    return {labels[manifests.LABEL_WORK]: labels.get(manifests.LABEL_EXPERIMENT)}


def _observed(namespace: str, name: str, stage_jobs, stage_pods) -> tuple[dict, dict]:
    """Snapshots taken on the event loop (indices change there), handed to a worker thread."""
    key = (namespace, name)
    jobs = {j["metadata"]["name"]: j for j in stage_jobs.get(key, [])}
    pods: dict[str, list[dict]] = defaultdict(list)
    for pod in stage_pods.get(key, []):
        job = podinfo.job_of(pod)
        if job is None:  # pods are labelled by the Job controller; fall back to ours
            labels = pod["labels"]
            job = manifests.job_name(name, labels.get(manifests.LABEL_STAGE, ""), int(labels.get(manifests.LABEL_ATTEMPT, 1)))
        pods[job].append(pod)
    return jobs, dict(pods)


async def _run(namespace: str, name: str, stage_jobs, stage_pods, work_jobs=None) -> None:
    jobs, pods = _observed(namespace, name, stage_jobs, stage_pods)
    holders = (lambda work: list(work_jobs.get(work, []))) if work_jobs is not None else (lambda work: [])
    await asyncio.to_thread(reconcile, namespace, name, jobs, pods, holders)


# ---------------------------------------------------------------- triggers
@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    _study_queued.clear()  # a restarted operator (a new event loop) starts with an empty study work queue
    _study_runs.clear()
    settings.posting.level = logging.INFO
    settings.posting.enabled = SETTINGS.post_events
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.execution.max_workers = SETTINGS.workers
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.peering.name = SETTINGS.peering_name
    settings.peering.mandatory = SETTINGS.peering
    settings.peering.clusterwide = True
    settings.peering.lifetime = SETTINGS.peering_lifetime
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)


@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
async def on_create_or_resume(namespace, name, status, stage_jobs, stage_pods, work_jobs, **_):
    if is_finished(status):
        return  # a restarted operator reads nothing for finished experiments
    await _run(namespace, name, stage_jobs, stage_pods, work_jobs)


@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
async def on_update(namespace, name, body, meta, diff, status, stage_jobs, stage_pods, work_jobs, **_):
    ignored = ignored_changes(diff, status, meta.get("generation"))
    if ignored:
        await asyncio.to_thread(
            kube.Api.get().event, dict(body), "Warning", "SpecChangeIgnored",
            f"changes to {', '.join(ignored)} after start are ignored (only suspend and scheduling fields apply); "
            f"create a new experiment to change them")
    if is_finished(status):
        return
    await _run(namespace, name, stage_jobs, stage_pods, work_jobs)


def copy_progress(namespace: str, name: str, status: dict, spec: dict) -> bool:
    """Read the running stage's progress object and patch status (one request) if it changed; True if patched."""
    from lrm_safety.progress import column

    from .store_check import read_progress

    stage = status.get("stage")
    if status.get("phase") != "Running" or not stage:
        return False
    doc = read_progress(name, parse_spec(spec), stage)
    if doc is None or doc == ((status.get("stages") or {}).get(stage) or {}).get("progress"):
        return False
    kube.Api.get().patch_status(namespace, name, {"progress": column(stage, doc), "stages": {stage: {"progress": doc}}})
    return True


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, when=lambda status, **_: not is_finished(status), cancellation_timeout=5)
async def wake_up(namespace, name, body, stopped, stage_jobs, stage_pods, work_jobs, **_):
    """One sleeping task per unfinished experiment: it reconciles when a look is due (a retry's backoff, a start
    deadline, the safety net) and copies a running stage's progress every `progress_seconds`; it costs no API
    request otherwise, and ends when the experiment finishes."""
    key = (namespace, name)
    _due.setdefault(key, time.monotonic() + _jitter())  # resume/create has just reconciled it
    progress_every = SETTINGS.progress_seconds if SETTINGS.read_store else 0
    next_progress = time.monotonic() + progress_every
    while not stopped:
        now = time.monotonic()
        if progress_every and now >= next_progress:
            next_progress = now + progress_every
            try:
                await asyncio.to_thread(copy_progress, namespace, name, dict(body.get("status") or {}),
                                        dict(body.get("spec") or {}))
            except Exception as e:
                log.info("progress of %s/%s not copied: %s", namespace, name, e)
        left = _due.get(key, 0.0) - time.monotonic()
        if left > 0:
            wait = min(left, SETTINGS.tick_seconds, max(next_progress - time.monotonic(), 0.05) if progress_every else left)
            await stopped.wait(wait)  # re-read: a reconcile may bring the look forward
            continue
        _due[key] = time.monotonic() + _jitter()
        try:
            await _run(namespace, name, stage_jobs, stage_pods, work_jobs)
        except Exception as e:  # reported as a condition and event already; the next look retries
            log.info("wake-up reconcile of %s/%s failed: %s", namespace, name, e)
    log.debug("wake-ups of %s/%s end: %s", namespace, name, getattr(stopped, "reason", None))


@kopf.on.event("batch", "v1", "jobs", labels=LABELS)
async def on_job_event(namespace, labels, type, body, stage_jobs, stage_pods, work_jobs, **_):
    # Only a finished Job changes a decision; the Jobs the operator just created or patched need no reconcile.
    if type == "DELETED" or job_state(body) not in ("succeeded", "failed"):
        return
    experiment = labels.get(manifests.LABEL_EXPERIMENT)
    if experiment and labels.get(manifests.LABEL_STAGE) in STAGES:
        await _run(namespace, experiment, stage_jobs, stage_pods, work_jobs)
    for ns, waiter in list(_waiters.pop(labels.get(manifests.LABEL_WORK, ""), ())):  # their wait is over
        await _run(ns, waiter, stage_jobs, stage_pods, work_jobs)


@kopf.on.event("", "v1", "pods", labels=LABELS)
async def on_pod_event(namespace, labels, type, body, uid, stage_jobs, stage_pods, work_jobs, **_):
    """A stage pod that starts or gets stuck (unschedulable, image pull, a missing Secret) changes the status."""
    if type == "DELETED":
        _pod_signals.pop(uid, None)
        return
    signal = (podinfo.started([body]), podinfo.waiting_reason([body]))
    if _pod_signals.get(uid) == signal:
        return
    _pod_signals[uid] = signal
    experiment = labels.get(manifests.LABEL_EXPERIMENT)
    if experiment and (signal[0] or signal[1]):
        await _run(namespace, experiment, stage_jobs, stage_pods, work_jobs)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, optional=True)
def on_delete(namespace, name, spec, **_):
    """Jobs, Services and the ConfigMap go with the owner (ownerReferences); artifacts stay unless asked."""
    _due.pop((namespace, name), None)
    storage = (spec or {}).get("storage") or {}
    if storage.get("deleteOnFinalize"):
        from lrm_safety.store import open_store

        store = open_store(storage.get("uri", ""), endpoint=storage.get("endpoint"))
        n = store.delete_prefix(f"{name}/")
        log.info("deleted %d artifacts of %s/%s", n, namespace, name)


@kopf.on.login()
def login(**kwargs):
    """LRM_SAFETY_KUBE_SERVER points at a test API server; otherwise in-cluster or kubeconfig via the official client."""
    import os

    server = os.environ.get("LRM_SAFETY_KUBE_SERVER")
    if server:
        return kopf.ConnectionInfo(server=server, insecure=True, scheme="Bearer", token="test")
    return kopf.login_via_client(**kwargs)


# ---------------------------------------------------------------- SafetyStudy: a grid of owned experiments
LABEL_STUDY = f"{API_GROUP}/study"
_child_signals: dict[str, tuple] = {}  # child uid -> (phase, stage, metrics): the study reconciles when it changes
_created_cells: dict[tuple, dict[str, float]] = {}  # (namespace, study) -> child name -> monotonic time created
CREATED_GRACE_SECONDS = 120.0


def with_recent_creates(children: dict[str, dict], created: dict[str, float], now: float) -> dict[str, dict]:
    """Cells this operator created that the index has not shown yet count as active, so that a lagging watch
    neither re-creates them nor lets more than maxParallel run. After the grace a missing cell is missing
    (deleted by hand) and is created again. Prunes `created` of cells the index now shows or past the grace."""
    for name in [n for n, t in created.items() if n in children or now - t > CREATED_GRACE_SECONDS]:
        del created[name]
    pending = {n: {"name": n, "phase": None, "stage": None, "suspend": False, "metrics": {}} for n in created}
    return {**pending, **children}


@kopf.index(API_GROUP, API_VERSION, PLURAL, labels={LABEL_STUDY: kopf.PRESENT})
def study_children(namespace, name, labels, body, **_):
    from .study_status import trim_child

    return {(namespace, labels[LABEL_STUDY]): {"name": name, **trim_child(body)}}


def reconcile_study(namespace: str, name: str, children: dict[str, dict]) -> None:
    """One study's reconcile; _run_study runs at most one at a time per study."""
    from .study_status import decide_study

    api = kube.Api.get()
    body = api.get_study(namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        _created_cells.pop((namespace, name), None)
        return
    created = _created_cells.setdefault((namespace, name), {})
    acts = decide_study(body, with_recent_creates(children, created, time.monotonic()))
    for obj in acts.create:
        api.create_or_adopt(obj)
        created[obj["metadata"]["name"]] = time.monotonic()
    for child, patch in acts.patch_children:
        api.patch_experiment(namespace, child, patch)
    if acts.status:
        api.patch_study_status(namespace, name, acts.status)
    for type_, reason, message in acts.events:
        api.event(body, type_, reason, message)


_study_queued: set[tuple[str, str]] = set()
_study_runs: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


async def _run_study(namespace: str, name: str, study_children) -> None:
    """A work queue of one per study: a run that has not started yet will read the index when it does, so a
    burst of cell events (20 cells finishing together) costs one GET and one status patch, not one each."""
    key = (namespace, name)
    if key in _study_queued:
        return
    _study_queued.add(key)
    try:
        await _study_runs[key].acquire()
    finally:
        _study_queued.discard(key)
    try:
        children = {c["name"]: c for c in study_children.get(key, [])}
        await asyncio.to_thread(reconcile_study, namespace, name, children)
    finally:
        _study_runs[key].release()


def _study_finished(status) -> bool:
    return (status or {}).get("phase") in ("Succeeded", "Failed") and \
        not any(c.get("reason") == "InvalidSpec" for c in (status or {}).get("conditions") or [])


@kopf.on.create(API_GROUP, API_VERSION, "safetystudies")
@kopf.on.resume(API_GROUP, API_VERSION, "safetystudies")
@kopf.on.update(API_GROUP, API_VERSION, "safetystudies", field="spec")
async def on_study(namespace, name, status, study_children, **_):
    if not _study_finished(status):
        await _run_study(namespace, name, study_children)


@kopf.timer(API_GROUP, API_VERSION, "safetystudies", interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds,
            when=lambda status, **_: not _study_finished(status))
async def study_safety_net(namespace, name, study_children, **_):
    """Children's events drive a study; this catches a reconcile that failed (an API error) with nothing after it."""
    await _run_study(namespace, name, study_children)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, labels={LABEL_STUDY: kopf.PRESENT})
async def on_child_event(namespace, labels, uid, type, body, study_children, **_):
    """A cell's phase, stage or headline metrics changed (not its progress): the study's table changes."""
    from .study_status import trim_child

    if type == "DELETED":
        _child_signals.pop(uid, None)
        signal = None
    else:
        t = trim_child(body)
        signal = (t["phase"], t["stage"], json.dumps(t["metrics"], sort_keys=True), t["suspend"])
        if _child_signals.get(uid) == signal:
            return
        _child_signals[uid] = signal
    await _run_study(namespace, labels[LABEL_STUDY], study_children)
