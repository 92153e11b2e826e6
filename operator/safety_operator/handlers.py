"""kopf handlers: thin wrappers that gather what the operator observed, call `status.decide`, apply its actions.

Event-driven, not polling: the stage Jobs and their pods are kept in memory by kopf indices fed by the
watch streams, so a reconcile reads one object (the experiment, fresh) and lists nothing. Triggers: the
experiment's create/resume/update, a stage Job finishing, a stage pod starting or getting stuck, a claim on
identical work changing hands, and wake-ups that `decide` asks for (a retry's backoff, a start deadline). One
scheduler task runs those wake-ups and a safety-net reconcile every `resync_seconds` (+ jitter) for unfinished
experiments only, and copies running stages' progress; a finished experiment costs nothing, not even a task.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import threading
import time
import warnings
from collections import defaultdict
from typing import Optional

import kopf
from kubernetes.client.rest import ApiException

from lrm_safety.spec import API_GROUP, API_VERSION, PLURAL, STAGES, parse_spec

from . import claims as claimsmod, kube, manifests
from . import pods as podinfo
from . import servers as servermod
from .settings import Settings
from .status import Observed, decide, ignored_changes, is_finished, job_state, now_iso, set_condition, utcnow
from .store_check import ProgressReader, credentials_available, finished_in_store

log = logging.getLogger("lrm-safety-operator")
Key = tuple[str, str]
_locks: dict[Key, threading.Lock] = defaultdict(threading.Lock)  # one reconcile at a time per experiment
_due: dict[Key, float] = {}  # monotonic time of the next look each unfinished experiment asked for
_errors: dict[Key, int] = defaultdict(int)  # consecutive failed reconciles (for their backoff)
_made: dict[Key, dict[str, tuple[dict, float]]] = {}  # Jobs a reconcile created that the index may not show yet
_claims: dict[tuple[str, str], dict] = {}  # (namespace, work id) -> claims.view: fed by the Lease watch and our writes
_waiters: dict[tuple[str, str], set] = defaultdict(set)  # (namespace, work id) -> experiments waiting on its holder
_progress: dict[Key, ProgressReader] = {}  # experiments whose running stage's pods run: read their progress
_pod_signals: dict[str, tuple] = {}  # pod uid -> what of it matters to a decision (reconcile when it changes)
_awaiting: dict[tuple[str, str], str] = {}  # (namespace, Job) finished before its pods' end was seen -> experiment
_queued: set[Key] = set()  # a reconcile is waiting for the experiment's turn: further triggers join it
_turns: dict[Key, asyncio.Lock] = {}
_fresh: dict[Key, dict] = {}  # a just-created experiment's body (no status yet): its first reconcile needs no GET
_ix: dict[str, object] = {}  # the kopf indices, for the scheduler task (handlers receive them as kwargs)
_server_due: dict[Key, float] = {}  # (namespace, served model's Deployment) -> monotonic time of its idle look
_server_signals: dict[str, tuple] = {}  # server pod uid -> its readiness: its users reconcile when it changes
_disrupted: dict[Key, dict[str, dict]] = {}  # experiment -> stage pods evicted/preempted, until status records them
_store = {"readable": True}  # False when the operator found no S3 credentials at start
SETTINGS = Settings.from_env()
LABELS = {manifests.LABEL_EXPERIMENT: kopf.PRESENT}
MADE_GRACE_SECONDS = 120.0
POD_END_WAIT_SECONDS = 15.0


def _jitter() -> float:
    return SETTINGS.resync_seconds * (1 + 0.2 * random.random())


def _with_made(key: Key, jobs: dict[str, dict], now: float) -> dict[str, dict]:
    """A Job this operator created counts as existing until the watch delivers it, so a reconcile that queued with
    an older snapshot neither re-creates it (a 409) nor thinks the stage lost its Job."""
    made = _made.get(key)
    if not made:
        return jobs
    for name in [n for n, (_, t) in made.items() if n in jobs or now - t > MADE_GRACE_SECONDS]:
        del made[name]
    if not made:
        _made.pop(key, None)
        return jobs
    return {**{n: job for n, (job, _) in made.items()}, **jobs}


def _forget(key: Key) -> None:
    """A finished or deleted experiment leaves nothing behind in memory."""
    for d in (_due, _errors, _made, _progress, _turns, _fresh, _disrupted):
        d.pop(key, None)
    _locks.pop(key, None)


def reconcile(namespace: str, name: str, jobs: dict[str, dict], pods: dict[str, list[dict]],
              fresh: Optional[dict] = None, served: tuple[dict, dict] = ({}, {})) -> None:
    """Fetch the experiment, decide, act. Serialised per experiment so two triggers never race; reads the
    current object rather than the triggering event's copy, which may be stale (`fresh`: a just-created object
    with no status yet, which is current as it is)."""
    key = (namespace, name)
    with _locks[key]:
        api = kube.Api.get()
        body = fresh if fresh is not None else api.get_experiment(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            _forget(key)
            return
        jobs = _with_made(key, jobs, time.monotonic())
        for job in jobs:
            _awaiting.pop((namespace, job), None)
        # Watches on Jobs and pods are not ordered: a running stage's Job can be seen finished before its pods'
        # final state. Read those pods once, so the exit code and termination message are never missed.
        for st in ((body.get("status") or {}).get("stages") or {}).values():
            jname = (st or {}).get("jobName")
            if (st or {}).get("state") == "Running" and jname in jobs and \
                    job_state(jobs[jname]) in ("succeeded", "failed") and not podinfo.terminated(pods.get(jname) or []):
                log.info("%s/%s: %s finished before its pods' end was seen: listing them", namespace, name, jname)
                pods = {**pods, jname: api.job_pods(namespace, jname)}
        spec = None
        lookup = lambda stage: None  # noqa: E731
        try:
            spec = parse_spec(body.get("spec") or {})
            if SETTINGS.read_store and _store["readable"]:
                lookup = finished_in_store(name, namespace, spec)
        except Exception:  # an invalid spec: decide reports it
            pass
        overrides: dict[str, dict] = {}
        uid = (body.get("metadata") or {}).get("uid")
        try:
            for _ in range(3):  # a claim lost to another experiment: decide again, knowing the winner
                disrupted = dict(_disrupted.get(key) or {})
                acts = decide(Observed(body=body, jobs=jobs, pods=pods, finished_in_store=lookup, now=utcnow(),
                                       disruptions=disrupted,
                                       claims=lambda work: overrides.get(work) or _claims.get((namespace, work)),
                                       claim_grace=SETTINGS.claim_grace_seconds, servers=served[0],
                                       server_pods=served[1], server_services=served[2],
                                       server_slices=served[3]), SETTINGS.worker)
                lost = False
                for c in acts.claims:
                    won, current = api.claim(claimsmod.render(c.work, c.stage, namespace, name, uid,
                                                              claimsmod.micro(utcnow()), c.resource_version))
                    if current is not None:
                        _claims[(namespace, c.work)] = claimsmod.view(current)
                    if not won:
                        overrides[c.work] = claimsmod.view(current)
                        lost = True
                if not lost:
                    break
            made = _made.setdefault(key, {})
            for obj in acts.create:
                api.create_or_adopt(obj)
                if obj["kind"] == "Job":
                    made[obj["metadata"]["name"]] = (_trim_job(obj), time.monotonic())
            for job, patch in acts.patch_jobs:
                api.patch_job(namespace, job, patch)
            for server, patch in acts.server_patches:
                api.patch_deployment(namespace, server, patch)
            for server, patch in acts.service_patches:
                api.patch_service(namespace, server, patch)
            status = acts.status
            if _degraded(body) and not status:
                status = dict(body.get("status") or {})
            if status and _degraded(body):
                status["conditions"] = set_condition(status.get("conditions") or [], "Degraded", False,
                                                     "Reconciled", "")
            if status and not _store["readable"] and SETTINGS.read_store:
                status["conditions"] = set_condition(
                    status.get("conditions") or [], "StoreReadable", False, "NoCredentials",
                    f"the operator has no S3 credentials (Secret {SETTINGS.store_secret!r} in its namespace): it cannot "
                    f"reuse finished stages before their pods start, keep TTL-deleted Jobs finished, or copy progress")
            if status:
                api.patch_status(namespace, name, status)
            for pod in disrupted:  # in status now (or of another attempt): forgotten
                (_disrupted.get(key) or {}).pop(pod, None)
            for work, since in acts.marks:
                api.mark_claim(namespace, claimsmod.lease_name(work), claimsmod.STUCK, since)
            for work in acts.releases:
                held = _claims.pop((namespace, work), None)
                api.release_claim(namespace, claimsmod.lease_name(work), (held or {}).get("uid"))
        except ApiException as e:
            _errors[key] += 1
            _report_api_error(api, body, e)
            _due[key] = time.monotonic() + min(10 * 2 ** (_errors[key] - 1), SETTINGS.resync_seconds)
            raise
        _errors.pop(key, None)
        now_status = status or body.get("status") or {}
        _note_waiting(namespace, name, spec, now_status)
        for type_, reason, message in _fold_events(acts.events):
            api.event(body, type_, reason, message)
        if is_finished(now_status):
            _forget(key)
            return
        _track_progress(key, spec, now_status)
        wait = min(acts.requeue_after, _jitter()) if acts.requeue_after is not None else _jitter()
        _due[key] = time.monotonic() + wait


FOLDED = {"StageSucceeded", "StageStarted", "Succeeded"}  # the routine steps; others (WorkTakenOver...) stand alone


def _fold_events(events: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """One reconcile's routine events as one (a stage finished and the next started: one request, not two), under
    the last one's reason; Warnings and other reasons stay separate, so `--field-selector reason=...` finds them."""
    routine = [e for e in events if e[0] == "Normal" and e[1] in FOLDED]
    if len(routine) < 2:
        return events
    folded = ("Normal", routine[-1][1], "; ".join(m for _, _, m in routine))
    return [e for e in events if e not in routine] + [folded]


def _note_waiting(namespace: str, name: str, spec, status: dict) -> None:
    """Remember who waits for another experiment's identical work, so that claim changing wakes them at once."""
    stage = status.get("stage")
    waiting = ((status.get("stages") or {}).get(stage) or {}).get("waiting") or {}
    if waiting.get("reason") == "SameWorkRunning" and spec is not None:
        _waiters[(namespace, manifests.stage_work_id(name, spec, stage))].add(name)


def _track_progress(key: Key, spec, status: dict) -> None:
    """The experiments whose stage has a Job to report on (the scheduler reads them only while its pods run)."""
    stage = status.get("stage")
    st = (status.get("stages") or {}).get(stage) or {}
    running = spec is not None and status.get("phase") == "Running" and st.get("state") == "Running" and \
        not st.get("nextRetryAt") and not st.get("waiting") and spec.storage.uri.startswith("s3://")
    if not running or not (SETTINGS.read_store and _store["readable"] and SETTINGS.progress_seconds):
        _progress.pop(key, None)
    elif key not in _progress or _progress[key].stage != stage or _progress[key].job != st.get("jobName"):
        _progress[key] = ProgressReader(key[1], spec, stage, st.get("jobName"))


def _pods_run(key: Key, job: Optional[str]) -> bool:
    """Has a pod of that Job started, by the index (on the event loop, where the index changes)?"""
    return podinfo.started([p for p in _ix.get("stage_pods", {}).get(key, []) if podinfo.job_of(p) == job])


def copy_progress(key: Key) -> bool:
    """Read one running stage's progress (conditional GETs) and patch status if it changed; True if patched."""
    from lrm_safety.progress import column

    reader = _progress.get(key)
    if reader is None:
        return False
    doc = reader.read()
    if doc is None:
        return False
    with _locks[key]:  # the stage may have moved on while the objects were read
        if _progress.get(key) is not reader:
            return False
        kube.Api.get().patch_status(key[0], key[1], {"progress": column(reader.stage, doc),
                                                     "stages": {reader.stage: {"progress": doc}}})
    return True


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
    """What decisions read of a Job: its name, labels decide never reads are left out."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    labels = meta.get("labels") or {}
    return {"metadata": {"name": meta.get("name"),
                         "labels": {k: labels[k] for k in (manifests.LABEL_EXPERIMENT, manifests.LABEL_STAGE)
                                    if k in labels}},
            "spec": {k: spec[k] for k in ("suspend", "activeDeadlineSeconds") if k in spec},
            "status": {"conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                                      for c in (body.get("status") or {}).get("conditions") or []
                                      if c.get("status") == "True"]}}


@kopf.index("batch", "v1", "jobs", labels=LABELS)
def stage_jobs(namespace, labels, body, **_):
    return {(namespace, labels[manifests.LABEL_EXPERIMENT]): _trim_job(body)}


@kopf.index("", "v1", "pods", labels=LABELS)
def stage_pods(namespace, labels, body, **_):
    return {(namespace, labels[manifests.LABEL_EXPERIMENT]): podinfo.trim(body)}


def _served_view(namespace: str) -> tuple[dict, dict, dict, dict]:
    """The namespace's served models, their pods, Services and EndpointSlices, from the indices (on the event
    loop)."""
    deps = {d["name"]: d for d in _ix.get("model_servers", {}).get(namespace, [])}
    pods_ix, slices_ix = _ix.get("model_server_pods", {}), _ix.get("model_server_slices", {})
    services = {sv["name"]: sv for sv in _ix.get("model_server_services", {}).get(namespace, [])}
    return (deps, {n: list(pods_ix.get((namespace, n), [])) for n in deps}, services,
            {n: list(slices_ix.get((namespace, n), [])) for n in deps})


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


async def _run(namespace: str, name: str, stage_jobs=None, stage_pods=None, fresh: Optional[dict] = None) -> None:
    """A work queue of one per experiment: a trigger that arrives while another waits for its turn joins it (that
    one takes its snapshot when its turn comes), so a burst of events costs one reconcile, and every snapshot is
    taken after the previous reconcile of the experiment finished."""
    stage_jobs = stage_jobs if stage_jobs is not None else _ix.get("stage_jobs", {})
    stage_pods = stage_pods if stage_pods is not None else _ix.get("stage_pods", {})
    key = (namespace, name)
    if key in _queued:
        return
    _queued.add(key)
    turn = _turns.setdefault(key, asyncio.Lock())
    try:
        await turn.acquire()
    finally:
        _queued.discard(key)
    try:
        jobs, pods = _observed(namespace, name, stage_jobs, stage_pods)
        await _in_thread(reconcile, namespace, name, jobs, pods, fresh, _served_view(namespace))
    finally:
        turn.release()


async def _in_thread(fn, *args):
    """On kopf's executor (settings.execution.max_workers threads), not asyncio's default of cores + 4."""
    return await asyncio.get_running_loop().run_in_executor(_ix.get("executor"), fn, *args)


def _keep(stage_jobs, stage_pods, model_servers=None, model_server_pods=None, model_server_services=None,
          model_server_slices=None) -> None:
    _ix["stage_jobs"], _ix["stage_pods"] = stage_jobs, stage_pods
    if model_servers is not None:
        _ix["model_servers"], _ix["model_server_pods"] = model_servers, model_server_pods
        _ix["model_server_services"], _ix["model_server_slices"] = model_server_services, model_server_slices


TRIM_SECONDS = 60.0


def _trim_heap() -> None:
    """Give freed heap back to the OS (glibc keeps it after a burst: 5,000 creations, a wave of Jobs finishing), so
    the resident size follows what is live, not the largest burst so far."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _kick(namespace: str, name: str, fresh: Optional[dict] = None) -> None:
    """A trigger: the experiment is due now. kopf's handler returns at once and its per-object worker ends, so a burst
    (5,000 experiments created together, a wave of Jobs finishing) is a table of due keys drained by a bounded pool,
    not thousands of handler coroutines each holding its object while waiting for a thread."""
    key = (namespace, name)
    if fresh is not None:
        _fresh[key] = fresh
    _due[key] = 0.0
    wake = _ix.get("wake")
    if wake is not None:
        wake.set()


async def _scheduler() -> None:
    """The operator's one loop of reconciles: triggered ones (`_kick`) first, then due wake-ups (a retry's backoff, a
    start deadline, the safety net), at most 2 x workers in flight; and the progress of running stages. It sleeps in
    between and costs no API request by itself."""
    wake = _ix["wake"] = asyncio.Event()
    next_progress = time.monotonic() + SETTINGS.progress_seconds
    next_trim = time.monotonic() + TRIM_SECONDS
    running: set[asyncio.Task] = set()
    limit = asyncio.Semaphore(max(SETTINGS.workers, 1))
    room = 2 * max(SETTINGS.workers, 1)

    async def guarded(coro):
        async with limit:
            try:
                await coro
            except Exception as e:  # reported as a condition and event already; the next look retries
                log.info("scheduled look failed: %s", e)

    def spawn(coro):
        t = asyncio.create_task(guarded(coro))
        running.add(t)
        t.add_done_callback(lambda t: (running.discard(t), wake.set()))

    while True:
        wake.clear()
        now = time.monotonic()
        if now >= next_trim:
            next_trim = now + TRIM_SECONDS
            _trim_heap()
        due = sorted((at, key) for key, at in dict(_due).items() if at <= now)
        for _, key in due[:max(room - len(running), 0)]:
            _due[key] = now + _jitter()  # the reconcile sets the look it needs next
            spawn(_run(*key, fresh=_fresh.pop(key, None)))
        for key in [k for k, at in list(_server_due.items()) if at <= now]:
            del _server_due[key]
            dep = next((d for d in _ix.get("model_servers", {}).get(key[0], []) if d["name"] == key[1]), None)
            if dep is not None:
                spawn(_in_thread(reconcile_server, key[0], dep))
        if SETTINGS.progress_seconds and now >= next_progress:
            next_progress = now + SETTINGS.progress_seconds
            for key in [k for k, reader in list(_progress.items()) if _pods_run(k, reader.job)]:
                spawn(_in_thread(copy_progress, key))
        soonest = min([*dict(_due).values(), *dict(_server_due).values()], default=now + SETTINGS.tick_seconds)
        timeout = min(max(soonest - time.monotonic(), 0.0), SETTINGS.tick_seconds,
                      max(next_progress - time.monotonic(), 0.05))
        if timeout > 0:
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        else:
            await asyncio.sleep(0)


# ---------------------------------------------------------------- triggers
class QuietWatchHandlers(logging.Filter):
    """kopf logs "Handler 'x' succeeded." (and "Indexer 'x' ...", "Timer 'x' ...") at INFO for every event each
    handler sees, thousands an hour on a busy namespace, which buries what the operator did: a deletion handler
    seemed to succeed on every event. Those lines go (failures still log); the operator logs what it did itself."""

    ROUTINE = re.compile(r"(Handler|Indexer|Timer) '[A-Za-z_]+' succeeded\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and self.ROUTINE.fullmatch(str(record.msg)))


class PatientBackoffs:
    """kopf's waits between retries of a request that failed to connect or got a 5xx/429: its default gives up after
    54 s, and a watch that gives up ends the operator. An API server or etcd restart can take longer (the API server
    answers 429 "storage is (re)initializing" for a while), so the operator retries for ever, at most a minute
    apart; 4xx answers are never retried."""

    def __iter__(self):
        return itertools.chain((1, 1, 2, 3, 5, 8, 13, 21, 34), itertools.repeat(60))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo, **_):
    quiet = QuietWatchHandlers()
    for name in ("kopf.objects", "kopf.activities"):
        if not any(isinstance(f, QuietWatchHandlers) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(quiet)
    # A restarted operator (a new event loop) starts from what the API server says, not from a previous run.
    for memory in (_study_queued, _study_runs, _queued, _turns, _due, _errors, _made, _claims, _waiters, _progress,
                   _pod_signals, _awaiting, _fresh, _ix, _server_due, _server_signals, _disrupted):
        memory.clear()
    settings.posting.level = logging.INFO
    settings.posting.enabled = SETTINGS.post_events
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    # kopf also reconnects a watch that brought no event for 70 s: the quiet ones (studies, CRDs, an idle
    # namespace) then ended every 70 s, not at the configured server timeout. A dead stream is still caught by
    # the client timeout.
    settings.watching.inactivity_timeout = SETTINGS.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.networking.error_backoffs = PatientBackoffs()
    settings.execution.max_workers = SETTINGS.workers
    _ix["executor"] = settings.execution.executor
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.peering.name = SETTINGS.peering_name
    settings.peering.mandatory = SETTINGS.peering
    settings.peering.clusterwide = True
    settings.peering.lifetime = SETTINGS.peering_lifetime
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)
    if SETTINGS.read_store:
        _store["readable"] = await asyncio.to_thread(credentials_available)
        if not _store["readable"]:
            log.warning("no S3 credentials: create Secret %r (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) in the "
                        "operator's namespace and restart it (chart value s3.credentialsSecret); until then finished "
                        "stages are not reused before their pods start and progress is not copied", SETTINGS.store_secret)
    memo.scheduler = asyncio.create_task(_scheduler())


@kopf.on.cleanup()
async def stop_scheduler(memo, **_):
    task = getattr(memo, "scheduler", None)
    if task is not None:
        task.cancel()


@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
async def on_create_or_resume(namespace, name, body, reason, status, stage_jobs, stage_pods, **_):
    _keep(stage_jobs, stage_pods, _.get("model_servers"), _.get("model_server_pods"), _.get("model_server_services"),
          _.get("model_server_slices"))
    if is_finished(status):
        return  # a restarted operator reads nothing for finished experiments
    _kick(namespace, name, dict(body) if reason == kopf.Reason.CREATE and not status else None)


@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
async def on_update(namespace, name, body, meta, diff, status, stage_jobs, stage_pods, **_):
    _keep(stage_jobs, stage_pods, _.get("model_servers"), _.get("model_server_pods"), _.get("model_server_services"),
          _.get("model_server_slices"))
    ignored = ignored_changes(diff, status, meta.get("generation"))
    if ignored:
        await asyncio.to_thread(
            kube.Api.get().event, dict(body), "Warning", "SpecChangeIgnored",
            f"changes to {', '.join(ignored)} after start are ignored (only suspend and scheduling fields apply); "
            f"create a new experiment to change them")
    if is_finished(status):
        return
    _kick(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=LABELS)
async def on_job_event(namespace, labels, type, body, stage_jobs, stage_pods, **_):
    # Only a finished Job changes a decision; the Jobs the operator just created or patched need no reconcile.
    _keep(stage_jobs, stage_pods, _.get("model_servers"), _.get("model_server_pods"), _.get("model_server_services"),
          _.get("model_server_slices"))
    if type == "DELETED" or job_state(body) not in ("succeeded", "failed"):
        return
    experiment = labels.get(manifests.LABEL_EXPERIMENT)
    if not experiment or labels.get(manifests.LABEL_STAGE) not in STAGES:
        return
    job = body["metadata"]["name"]
    mine = [p for p in stage_pods.get((namespace, experiment), []) if podinfo.job_of(p) == job]
    if not podinfo.terminated(mine) and job_state(body) == "succeeded":
        # The pods watch has not delivered the pod's end (its termination message) yet: its event triggers the
        # reconcile instead of a LIST of the namespace's pods; a look in a few seconds covers a pod that never comes.
        _awaiting[(namespace, job)] = experiment
        key = (namespace, experiment)
        _due[key] = min(_due.get(key, float("inf")), time.monotonic() + POD_END_WAIT_SECONDS)
        return
    _kick(namespace, experiment)


@kopf.on.event("", "v1", "pods", labels=LABELS)
async def on_pod_event(namespace, labels, type, body, uid, stage_jobs, stage_pods, **_):
    """A stage pod that starts or gets stuck (unschedulable, image pull, a missing Secret) changes the status."""
    _keep(stage_jobs, stage_pods, _.get("model_servers"), _.get("model_server_pods"), _.get("model_server_services"),
          _.get("model_server_slices"))
    disrupted = podinfo.disruption(body)
    experiment = labels.get(manifests.LABEL_EXPERIMENT)
    if disrupted and experiment and f"{uid}/disrupted" not in _pod_signals:
        _pod_signals[f"{uid}/disrupted"] = ()  # once per pod, however many events it still has
        log.info("%s/%s: stage pod %s %s: %s", namespace, experiment, body["metadata"]["name"], disrupted["reason"],
                 disrupted["message"])
        _disrupted.setdefault((namespace, experiment), {})[body["metadata"]["name"]] = {
            **disrupted, "job": podinfo.job_of(body), "at": now_iso()}
        _kick(namespace, experiment)
    if type == "DELETED":
        _pod_signals.pop(f"{uid}/disrupted", None)
    if type == "DELETED" or (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        _pod_signals.pop(uid, None)  # its end reaches the decision through its Job
        experiment = _awaiting.pop((namespace, podinfo.job_of(body) or ""), None)
        if experiment and type != "DELETED":
            _kick(namespace, experiment)
        return
    signal = (podinfo.started([body]), podinfo.waiting_reason([body]))
    before = _pod_signals.get(uid, (False, None))
    if before == signal:
        return
    _pod_signals[uid] = signal
    experiment = labels.get(manifests.LABEL_EXPERIMENT)
    # A pod held up is reported at once; a pod that starts matters only if it had been reported held up (the
    # start clock and the progress reads look at the pods in the index themselves): a request saved per stage.
    if experiment and (signal[1] or (signal[0] and before[1])):
        _kick(namespace, experiment)


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={manifests.LABEL_WORK: kopf.PRESENT})
async def on_claim_event(namespace, labels, type, body, **_):
    """A claim made, marked stuck, taken over or released: the experiments waiting on that work look again."""
    work = labels[manifests.LABEL_WORK]
    if type == "DELETED":
        _claims.pop((namespace, work), None)
    else:
        _claims[(namespace, work)] = claimsmod.view(body)
    for waiter in list(_waiters.pop((namespace, work), ())):
        _kick(namespace, waiter)


def _deletes_artifacts(spec, **_) -> bool:
    return bool(((spec or {}).get("storage") or {}).get("deleteOnFinalize"))


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, when=_deletes_artifacts)
def on_delete(namespace, name, spec, **_):
    """Jobs, Services, the ConfigMap and claims go with the owner (ownerReferences); artifacts only when asked
    (and only those experiments carry the operator's finalizer)."""
    _forget((namespace, name))
    storage = (spec or {}).get("storage") or {}
    from lrm_safety.store import open_store

    store = open_store(storage.get("uri", ""), endpoint=storage.get("endpoint"))
    n = store.delete_prefix(f"{name}/")
    log.info("deleted %d artifacts of %s/%s", n, namespace, name)


@kopf.on.login()
async def login(**kwargs):
    """LRM_SAFETY_KUBE_SERVER points at a test API server; otherwise in-cluster or kubeconfig via the official client.

    kopf's own session has no connection limit: 500 experiments created at once opened about 600 TLS connections
    for its patches, each with a 256 KiB read buffer (tracemalloc: 74 MiB of 123), kept by the allocator afterwards.
    The same credentials in a session with a bounded pool cost a short queue instead."""
    import os

    import aiohttp

    server = os.environ.get("LRM_SAFETY_KUBE_SERVER")
    if server:
        info = kopf.ConnectionInfo(server=server, insecure=True, scheme="Bearer", token="test")
    else:
        info = await asyncio.to_thread(kopf.login_via_client, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=SETTINGS.api_connections, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(), auth=auth, proxy=info.proxy_url, trust_env=info.trust_env)
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, priority=info.priority,
                               default_namespace=info.default_namespace, expiration=info.expiration)


# ---------------------------------------------------------------- served models: shared vLLM servers
SERVED = {servermod.LABEL_SERVER: kopf.PRESENT}


@kopf.index("apps", "v1", "deployments", labels=SERVED)
def model_servers(namespace, body, **_):
    return {namespace: servermod.trim_deployment(body)}


@kopf.index("", "v1", "pods", labels=SERVED)
def model_server_pods(namespace, labels, body, **_):
    return {(namespace, labels[servermod.LABEL_SERVER]): servermod.trim_pod(body)}


def reconcile_server(namespace: str, dep: dict) -> None:
    """A served model with no user is marked idle, and deleted after its idle time (unless a user arrived
    meanwhile: the delete is conditional on the Deployment being unchanged)."""
    api = kube.Api.get()
    action, wait = servermod.decide_idle(dep, utcnow())
    name = dep["name"]
    if action == "mark":
        api.patch_deployment(namespace, name, {"metadata": {"annotations": {servermod.IDLE_SINCE: now_iso()}}})
    elif action == "unmark":
        api.patch_deployment(namespace, name, {"metadata": {"annotations": {servermod.IDLE_SINCE: None}}})
    elif action == "delete":
        if api.delete_server(namespace, name, dep.get("resourceVersion")):
            log.info("deleted idle server %s/%s (%s)", namespace, name, dep["annotations"].get(servermod.MODEL))
    if wait is not None:
        _server_due[(namespace, name)] = time.monotonic() + wait


@kopf.on.event("apps", "v1", "deployments", labels=SERVED)
async def on_server_event(namespace, type, body, **_):
    """A served model's Deployment changed (readiness, users, deleted): its users look again, and so does its
    idle clock."""
    dep = servermod.trim_deployment(body)
    for user in servermod.users(dep):
        _kick(namespace, user)
    if type == "DELETED":
        _server_due.pop((namespace, dep["name"]), None)
        return
    _server_due[(namespace, dep["name"])] = 0.0
    wake = _ix.get("wake")
    if wake is not None:
        wake.set()


@kopf.index("", "v1", "services", labels=SERVED)
def model_server_services(namespace, body, **_):
    return {namespace: servermod.trim_service(body)}


@kopf.index("discovery.k8s.io", "v1", "endpointslices", labels=SERVED)
def model_server_slices(namespace, labels, body, **_):
    return {(namespace, labels[servermod.LABEL_SERVER]): servermod.trim_slice(body)}


def _kick_users(namespace: str, server: str, model_servers) -> None:
    for dep in model_servers.get(namespace, []):
        if dep["name"] == server:
            for user in servermod.users(dep):
                _kick(namespace, user)


def _changed(uid: str, type_: str, signal: tuple) -> bool:
    """Has what matters of this server object changed since its last event (always, when it is gone)?"""
    if type_ == "DELETED":
        _server_signals.pop(uid, None)
        return True
    if _server_signals.get(uid) == signal:
        return False
    _server_signals[uid] = signal
    return True


@kopf.on.event("", "v1", "services", labels=SERVED)
async def on_server_service_event(namespace, labels, type, body, uid, model_servers, **_):
    """A server's Service made, adopted or gone (deleted by hand, or by the garbage collector): its users look
    again, and the next one makes it again."""
    owners = tuple(o.get("uid") for o in (body.get("metadata") or {}).get("ownerReferences") or [])
    if _changed(uid, type, ("service", owners)):
        _kick_users(namespace, labels.get(servermod.LABEL_SERVER), model_servers)


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels=SERVED)
async def on_server_slice_event(namespace, labels, type, body, uid, model_servers, **_):
    """A server's ready endpoints came or went: the stages waiting for it decide again."""
    sl = servermod.trim_slice(body)
    if _changed(uid, type, ("slice", sl["endpoints"] > 0, sl["ready"] > 0)):
        _kick_users(namespace, labels.get(servermod.LABEL_SERVER), model_servers)


@kopf.on.event("", "v1", "pods", labels=SERVED)
async def on_server_pod_event(namespace, labels, type, body, uid, model_servers, **_):
    """A server pod crash-looping, held up or becoming ready: the stages waiting for it decide again."""
    if type == "DELETED":
        _server_signals.pop(uid, None)
        return
    r = servermod.readiness({"readyReplicas": 0}, [servermod.trim_pod(body)])
    signal = (r["reason"], r["crashed"])
    if _server_signals.get(uid) == signal:
        return
    _server_signals[uid] = signal
    _kick_users(namespace, labels.get(servermod.LABEL_SERVER), model_servers)


def release_servers(namespace: str, uid: Optional[str], name: Optional[str], deps: list[dict]) -> None:
    """An owner (a study or an experiment) was deleted: its use and its ownership of servers go, and a server it
    owned alone goes at once (as the garbage collector would; this operator sets no finalizer for it)."""
    api = kube.Api.get()
    for dep in deps:
        owners = dep.get("ownerReferences") or []
        mine = uid is not None and uid in {o.get("uid") for o in owners}
        using = name is not None and name in servermod.users(dep)
        if not (mine or using):
            continue
        left = [o for o in owners if o.get("uid") != uid]
        if mine and not left:
            api.delete_server(namespace, dep["name"])
            log.info("server %s/%s: its last owner %s is gone: deleted it", namespace, dep["name"], name or uid)
            continue
        log.info("server %s/%s: %s no longer %s it (%d owner(s) left)", namespace, dep["name"], name or uid,
                 "owns or uses" if mine and using else "owns" if mine else "uses", len(left))
        patch: dict = {"metadata": {}}
        if mine:
            patch["metadata"]["ownerReferences"] = [{**o, "controller": False, "blockOwnerDeletion": False}
                                                    for o in left]
        if using:
            patch["metadata"]["annotations"] = {servermod.USERS + name: None}
        api.patch_deployment(namespace, dep["name"], patch)


def _deleted(type, **_) -> bool:
    return type == "DELETED"


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, when=_deleted)
async def on_experiment_deleted(namespace, name, uid, model_servers, **_):
    """Runs on a deletion only (kopf logs every run of a handler as succeeded)."""
    deps = list(model_servers.get(namespace, []))
    log.info("experiment %s/%s deleted: releasing its use of %d server(s) in the namespace", namespace, name, len(deps))
    if deps:
        await _in_thread(release_servers, namespace, uid, name, deps)


@kopf.on.event(API_GROUP, API_VERSION, "safetystudies", when=_deleted)
async def on_study_deleted(namespace, name, uid, model_servers, **_):
    deps = list(model_servers.get(namespace, []))
    log.info("study %s/%s deleted: releasing its ownership of %d server(s) in the namespace", namespace, name,
             len(deps))
    if deps:
        await _in_thread(release_servers, namespace, uid, None, deps)


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
