"""The operator as one object: a Controller owns its settings, its API client and its books (books.py), and every kopf
handler reaches it through kopf's memo (handlers.py). Its reconciles follow controller-runtime's pattern inside kopf:
read the world, call a pure `decide(observed) -> actions` (status.py, study_status.py), apply the actions.

Event-driven, not polling: the stage Jobs and their pods are kept in memory by kopf indices fed by the watch streams,
so a reconcile reads one object (the experiment, fresh) and lists nothing. One scheduler task runs triggered
reconciles, the wake-ups `decide` asks for (a retry's backoff, a start deadline), a safety net every
`resync_seconds` (+ jitter) for unfinished experiments and studies only, served models' idle clocks, and copies
running stages' progress; a finished experiment costs nothing, not even a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Optional

from kubernetes.client.rest import ApiException

from lrm_safety.spec import parse_spec

from . import claims as claimsmod
from . import kube, manifests
from . import pods as podinfo
from . import servers as servermod
from .books import ClaimBook, Key, ServerBook, StudyBook, Watched, WorkQueue, with_recent_creates
from .settings import Settings
from .status import Observed, decide, is_finished, job_state, now_iso, set_condition, utcnow
from .store_check import ProgressReader, credentials_available, finished_in_store
from .study_status import decide_study, is_study_finished

log = logging.getLogger("lrm-safety-operator")
POD_END_WAIT_SECONDS = 15.0
TRIM_SECONDS = 60.0
FOLDED = {"StageSucceeded", "StageStarted", "Succeeded"}  # the routine steps; others (WorkTakenOver...) stand alone


class Controller:
    """What the operator knows and does; `main` makes one per run, and the handlers only hand it what kopf saw."""

    def __init__(self, settings: Settings, api: Optional[kube.Api] = None):
        self.settings = settings
        self._api = api
        self.queue = WorkQueue(settings.resync_seconds)
        self.claims = ClaimBook()
        self.watched = Watched()
        self.servers = ServerBook()
        self.studies = StudyBook()
        self.progress: dict[Key, ProgressReader] = {}  # experiments whose running stage's pods run
        self.store_readable = True  # False when the operator found no S3 credentials at start
        self.executor = None  # kopf's (settings.execution.max_workers threads), set at start-up

    @property
    def api(self) -> kube.Api:
        if self._api is None:
            self._api = kube.Api.connect(self.settings)
        return self._api

    async def start(self) -> None:
        """At kopf's start-up: the store check, then the scheduler loop (cancelled at clean-up)."""
        if self.settings.read_store:
            self.store_readable = await asyncio.to_thread(credentials_available)
            if not self.store_readable:
                log.warning(
                    "no S3 credentials: create Secret %r (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) in the "
                    "operator's namespace and restart it (chart value s3.credentialsSecret); until then "
                    "finished stages are not reused before their pods start and progress is not copied",
                    self.settings.store_secret,
                )

    async def in_thread(self, fn, *args):
        """On kopf's executor, not asyncio's default of cores + 4 threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # ---------------------------------------------------------------- experiments
    def kick(self, namespace: str, name: str, fresh: Optional[dict] = None) -> None:
        self.queue.kick((namespace, name), fresh)

    def forget(self, key: Key) -> None:
        """A finished or deleted experiment leaves nothing behind in memory."""
        self.queue.forget(key)
        self.watched.forget(key)
        self.progress.pop(key, None)

    def reconcile(
        self,
        namespace: str,
        name: str,
        jobs: dict[str, dict],
        pods: dict[str, list[dict]],
        fresh: Optional[dict] = None,
        served: tuple = ({}, {}, {}, {}),
    ) -> None:
        """Fetch the experiment, decide, act. Serialised per experiment so two triggers never race; reads the current
        object rather than the triggering event's copy, which may be stale (`fresh`: a just-created object with no
        status yet, which is current as it is)."""
        key, s = (namespace, name), self.settings
        with self.queue.locks[key]:
            api = self.api
            body = fresh if fresh is not None else api.get_experiment(namespace, name)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                self.forget(key)
                return
            jobs = self.queue.with_made(key, jobs, time.monotonic())
            for job in jobs:
                self.watched.awaiting.pop((namespace, job), None)
            # Watches on Jobs and pods are not ordered: a running stage's Job can be seen finished before its pods'
            # final state. Read those pods once, so the exit code and termination message are never missed.
            for st in ((body.get("status") or {}).get("stages") or {}).values():
                jname = (st or {}).get("jobName")
                if (
                    (st or {}).get("state") == "Running"
                    and jname in jobs
                    and job_state(jobs[jname]) in ("succeeded", "failed")
                    and not podinfo.terminated(pods.get(jname) or [])
                ):
                    log.info("%s/%s: %s finished before its pods' end was seen: listing them", namespace, name, jname)
                    pods = {**pods, jname: api.job_pods(namespace, jname)}
            spec = None
            lookup = lambda stage: None  # noqa: E731
            try:
                spec = parse_spec(body.get("spec") or {})
                if s.read_store and self.store_readable:
                    lookup = finished_in_store(name, namespace, spec)
            except Exception:  # an invalid spec: decide reports it
                pass
            overrides: dict[str, dict] = {}
            uid = (body.get("metadata") or {}).get("uid")
            try:
                for _ in range(3):  # a claim lost to another experiment: decide again, knowing the winner
                    disrupted = dict(self.watched.disrupted.get(key) or {})
                    acts = decide(
                        Observed(
                            body=body,
                            jobs=jobs,
                            pods=pods,
                            finished_in_store=lookup,
                            now=utcnow(),
                            disruptions=disrupted,
                            claims=lambda work: overrides.get(work) or self.claims.get(namespace, work),
                            claim_grace=s.claim_grace_seconds,
                            servers=served[0],
                            server_pods=served[1],
                            server_services=served[2],
                            server_slices=served[3],
                        ),
                        s.worker,
                    )
                    lost = False
                    for c in acts.claims:
                        won, current = api.claim(
                            claimsmod.render(
                                c.work, c.stage, namespace, name, uid, claimsmod.micro(utcnow()), c.resource_version
                            )
                        )
                        if current is not None:
                            self.claims.put(namespace, c.work, claimsmod.view(current))
                        if not won:
                            overrides[c.work] = claimsmod.view(current)
                            lost = True
                    if not lost:
                        break
                for obj in acts.create:
                    api.create_or_adopt(obj)
                    if obj["kind"] == "Job":
                        self.queue.remember_made(key, obj["metadata"]["name"], trim_job(obj))
                for job, patch in acts.patch_jobs:
                    api.patch_job(namespace, job, patch)
                for server, patch in acts.server_patches:
                    api.patch_deployment(namespace, server, patch)
                for server, patch in acts.service_patches:
                    api.patch_service(namespace, server, patch)
                status = self._with_conditions(body, acts.status)
                if status:
                    api.patch_status(namespace, name, status)
                self.watched.recorded(key, disrupted)  # in status now (or of another attempt): forgotten
                for work, since in acts.marks:
                    api.mark_claim(namespace, claimsmod.lease_name(work), claimsmod.STUCK, since)
                for work in acts.releases:
                    held = self.claims.drop(namespace, work)
                    api.release_claim(namespace, claimsmod.lease_name(work), (held or {}).get("uid"))
            except ApiException as e:
                self.queue.failed(key)
                self._report_api_error(body, e)
                raise
            self.queue.errors.pop(key, None)
            now_status = status or body.get("status") or {}
            self._note_waiting(namespace, name, spec, now_status)
            for type_, reason, message in fold_events(acts.events):
                api.event(body, type_, reason, message)
            if is_finished(now_status):
                self.forget(key)
                return
            self._track_progress(key, spec, now_status)
            jitter = self.queue.jitter()
            self.queue.look_in(key, min(acts.requeue_after, jitter) if acts.requeue_after is not None else jitter)

    def _with_conditions(self, body: dict, status: dict) -> dict:
        """The status to write, with the operator's own conditions: a past error cleared, no store credentials."""
        if degraded(body):
            status = status or dict(body.get("status") or {})
            status["conditions"] = set_condition(status.get("conditions") or [], "Degraded", False, "Reconciled", "")
        if status and not self.store_readable and self.settings.read_store:
            status["conditions"] = set_condition(
                status.get("conditions") or [],
                "StoreReadable",
                False,
                "NoCredentials",
                f"the operator has no S3 credentials (Secret {self.settings.store_secret!r} in its namespace): it "
                f"cannot reuse finished stages before their pods start, keep TTL-deleted Jobs finished, or copy "
                f"progress",
            )
        return status

    def _note_waiting(self, namespace: str, name: str, spec, status: dict) -> None:
        """Remember who waits for another experiment's identical work, so that claim changing wakes them at once."""
        stage = status.get("stage")
        waiting = ((status.get("stages") or {}).get(stage) or {}).get("waiting") or {}
        if waiting.get("reason") == "SameWorkRunning" and spec is not None:
            self.claims.wait(namespace, manifests.stage_work_id(name, spec, stage), name)

    def _track_progress(self, key: Key, spec, status: dict) -> None:
        """The experiments whose stage has a Job to report on (the scheduler reads them only while its pods run)."""
        s, stage = self.settings, status.get("stage")
        st = (status.get("stages") or {}).get(stage) or {}
        running = (
            spec is not None
            and status.get("phase") == "Running"
            and st.get("state") == "Running"
            and not st.get("nextRetryAt")
            and not st.get("waiting")
            and spec.storage.uri.startswith("s3://")
        )
        if not running or not (s.read_store and self.store_readable and s.progress_seconds):
            self.progress.pop(key, None)
        elif (
            key not in self.progress or self.progress[key].stage != stage or self.progress[key].job != st.get("jobName")
        ):
            self.progress[key] = ProgressReader(key[1], spec, stage, st.get("jobName"))

    def _report_api_error(self, body: dict, e: ApiException) -> None:
        """A refused create or patch (RBAC, admission, quota) as a condition and a Warning event with the API's
        words."""
        message = f"{kube.describe_api_error(e)}"
        log.warning("reconcile of %s failed: %s", body["metadata"]["name"], message)
        try:
            conds = set_condition(
                (body.get("status") or {}).get("conditions") or [], "Degraded", True, "ReconcileError", message
            )
            self.api.patch_status(
                body["metadata"].get("namespace") or "default", body["metadata"]["name"], {"conditions": conds}
            )
        except ApiException as e2:
            log.warning("cannot record the error in status either: %s", kube.describe_api_error(e2))
        self.api.event(body, "Warning", "ReconcileError", message)

    def copy_progress(self, key: Key) -> bool:
        """Read one running stage's progress (conditional GETs) and patch status if it changed; True if patched."""
        from lrm_safety.progress import column

        reader = self.progress.get(key)
        if reader is None:
            return False
        doc = reader.read()
        if doc is None:
            return False
        with self.queue.locks[key]:  # the stage may have moved on while the objects were read
            if self.progress.get(key) is not reader:
                return False
            self.api.patch_status(
                key[0], key[1], {"progress": column(reader.stage, doc), "stages": {reader.stage: {"progress": doc}}}
            )
        return True

    def observed(self, namespace: str, name: str) -> tuple[dict, dict]:
        """Snapshots of the experiment's Jobs and pods, taken on the event loop (the indices change there) and
        handed to a worker thread."""
        key = (namespace, name)
        jobs = {j["metadata"]["name"]: j for j in self.watched.index("stage_jobs").get(key, [])}
        pods: dict[str, list[dict]] = defaultdict(list)
        for pod in self.watched.index("stage_pods").get(key, []):
            job = podinfo.job_of(pod)
            if job is None:  # pods are labelled by the Job controller; fall back to ours
                labels = pod["labels"]
                job = manifests.job_name(
                    name, labels.get(manifests.LABEL_STAGE, ""), int(labels.get(manifests.LABEL_ATTEMPT, 1))
                )
            pods[job].append(pod)
        return jobs, dict(pods)

    def served_view(self, namespace: str) -> tuple[dict, dict, dict, dict]:
        """The namespace's served models, their pods, Services and EndpointSlices, from the indices."""
        w = self.watched
        deps = {d["name"]: d for d in w.index("model_servers").get(namespace, [])}
        pods_ix, slices_ix = w.index("model_server_pods"), w.index("model_server_slices")
        services = {sv["name"]: sv for sv in w.index("model_server_services").get(namespace, [])}
        return (
            deps,
            {n: list(pods_ix.get((namespace, n), [])) for n in deps},
            services,
            {n: list(slices_ix.get((namespace, n), [])) for n in deps},
        )

    def pods_run(self, key: Key, job: Optional[str]) -> bool:
        """Has a pod of that Job started, by the index (on the event loop, where the index changes)?"""
        return podinfo.started([p for p in self.watched.index("stage_pods").get(key, []) if podinfo.job_of(p) == job])

    async def run(self, namespace: str, name: str, fresh: Optional[dict] = None) -> None:
        """A work queue of one per experiment: a trigger that arrives while another waits for its turn joins it (that
        one takes its snapshot when its turn comes), so a burst of events costs one reconcile, and every snapshot is
        taken after the previous reconcile of the experiment finished."""
        key, q = (namespace, name), self.queue
        if key in q.queued:
            return
        q.queued.add(key)
        turn = q.turns.setdefault(key, asyncio.Lock())
        try:
            await turn.acquire()
        finally:
            q.queued.discard(key)
        try:
            jobs, pods = self.observed(namespace, name)
            await self.in_thread(self.reconcile, namespace, name, jobs, pods, fresh, self.served_view(namespace))
        finally:
            turn.release()

    # ---------------------------------------------------------------- what the watches saw
    def job_finished(self, namespace: str, experiment: str, body: dict) -> None:
        """A stage Job finished. If the pods watch has not delivered its pod's end (the termination message) yet,
        that pod's event triggers the reconcile instead of a LIST; a look in a few seconds covers one never seen."""
        job = body["metadata"]["name"]
        mine = [
            p for p in self.watched.index("stage_pods").get((namespace, experiment), []) if podinfo.job_of(p) == job
        ]
        if not podinfo.terminated(mine) and job_state(body) == "succeeded":
            self.watched.awaiting[(namespace, job)] = experiment
            self.queue.look_within((namespace, experiment), POD_END_WAIT_SECONDS)
            return
        self.kick(namespace, experiment)

    def pod_changed(self, namespace: str, experiment: Optional[str], type_: str, body: dict, uid: str) -> None:
        """A stage pod that starts, gets stuck (unschedulable, image pull, a missing Secret), ends, or is evicted."""
        w = self.watched
        disrupted = podinfo.disruption(body)
        if disrupted and experiment and f"{uid}/disrupted" not in w.pod_signals:
            w.pod_signals[f"{uid}/disrupted"] = ()  # once per pod, however many events it still has
            log.info(
                "%s/%s: stage pod %s %s: %s",
                namespace,
                experiment,
                body["metadata"]["name"],
                disrupted["reason"],
                disrupted["message"],
            )
            w.note_disruption(
                (namespace, experiment),
                body["metadata"]["name"],
                {**disrupted, "job": podinfo.job_of(body), "at": now_iso()},
            )
            self.kick(namespace, experiment)
        if type_ == "DELETED":
            w.pod_signals.pop(f"{uid}/disrupted", None)
        if type_ == "DELETED" or (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            w.pod_signals.pop(uid, None)  # its end reaches the decision through its Job
            waiting = w.awaiting.pop((namespace, podinfo.job_of(body) or ""), None)
            if waiting and type_ != "DELETED":
                self.kick(namespace, waiting)
            return
        signal = (podinfo.started([body]), podinfo.waiting_reason([body]))
        before = w.pod_signals.get(uid, (False, None))
        if before == signal:
            return
        w.pod_signals[uid] = signal
        # A pod held up is reported at once; a pod that starts matters only if it had been reported held up (the
        # start clock and the progress reads look at the pods in the index themselves): a request saved per stage.
        if experiment and (signal[1] or (signal[0] and before[1])):
            self.kick(namespace, experiment)

    def claim_changed(self, namespace: str, work: str, type_: str, body: dict) -> None:
        """A claim made, marked stuck, taken over or released: the experiments waiting on that work look again."""
        if type_ == "DELETED":
            self.claims.drop(namespace, work)
        else:
            self.claims.put(namespace, work, claimsmod.view(body))
        for waiter in self.claims.wake(namespace, work):
            self.kick(namespace, waiter)

    # ---------------------------------------------------------------- served models
    def kick_users(self, namespace: str, server: Optional[str]) -> None:
        for dep in self.watched.index("model_servers").get(namespace, []):
            if dep["name"] == server:
                for user in servermod.users(dep):
                    self.kick(namespace, user)

    def server_changed(self, namespace: str, type_: str, dep: dict) -> None:
        """A served model's Deployment changed (readiness, users, deleted): its users look again, and so does its
        idle clock."""
        for user in servermod.users(dep):
            self.kick(namespace, user)
        if type_ == "DELETED":
            self.servers.due.pop((namespace, dep["name"]), None)
            return
        self.servers.due[(namespace, dep["name"])] = 0.0
        if self.queue.wake is not None:
            self.queue.wake.set()

    def reconcile_server(self, namespace: str, dep: dict) -> None:
        """A served model with no user is marked idle, and deleted after its idle time (unless a user arrived
        meanwhile: the delete is conditional on the Deployment being unchanged)."""
        api = self.api
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
            self.servers.due[(namespace, name)] = time.monotonic() + wait

    def release_servers(self, namespace: str, uid: Optional[str], name: Optional[str]) -> None:
        """An owner (a study or an experiment) was deleted: its use and its ownership of servers go, and a server it
        owned alone goes at once (as the garbage collector would; this operator sets no finalizer for it)."""
        api = self.api
        for dep in list(self.watched.index("model_servers").get(namespace, [])):
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
            log.info(
                "server %s/%s: %s no longer %s it (%d owner(s) left)",
                namespace,
                dep["name"],
                name or uid,
                "owns or uses" if mine and using else "owns" if mine else "uses",
                len(left),
            )
            patch: dict = {"metadata": {}}
            if mine:
                patch["metadata"]["ownerReferences"] = [
                    {**o, "controller": False, "blockOwnerDeletion": False} for o in left
                ]
            if using:
                patch["metadata"]["annotations"] = {servermod.USERS + name: None}
            api.patch_deployment(namespace, dep["name"], patch)

    # ---------------------------------------------------------------- studies
    def reconcile_study(self, namespace: str, name: str, children: dict[str, dict]) -> bool:
        """One study's reconcile (run_study runs at most one at a time per study); True while it is unfinished."""
        api, key = self.api, (namespace, name)
        body = api.get_study(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.studies.created.pop(key, None)
            return False
        created = self.studies.created.setdefault(key, {})
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
        return not is_study_finished(acts.status or body.get("status"))

    async def run_study(self, namespace: str, name: str) -> None:
        """A work queue of one per study: a run that has not started yet will read the index when it does, so a
        burst of cell events (20 cells finishing together) costs one GET and one status patch, not one each. An
        unfinished study gets the safety net's look (a reconcile that failed with nothing after it)."""
        key, st = (namespace, name), self.studies
        if key in st.queued:
            return
        st.queued.add(key)
        try:
            await st.runs[key].acquire()
        finally:
            st.queued.discard(key)
        unfinished = True
        try:
            children = {c["name"]: c for c in self.watched.index("study_children").get(key, [])}
            unfinished = await self.in_thread(self.reconcile_study, namespace, name, children)
        finally:
            st.runs[key].release()
            if unfinished:
                st.due[key] = time.monotonic() + self.queue.jitter()
            else:
                st.due.pop(key, None)

    # ---------------------------------------------------------------- the scheduler
    async def scheduler(self) -> None:
        """The operator's one loop: triggered reconciles first, then due wake-ups (a retry's backoff, a start deadline,
        the safety net), at most 2 x workers in flight; idle servers; studies' safety net; and the progress of running
        stages. It sleeps in between and costs no API request by itself."""
        s, q = self.settings, self.queue
        wake = q.wake = asyncio.Event()
        next_progress = time.monotonic() + s.progress_seconds
        next_trim = time.monotonic() + TRIM_SECONDS
        running: set[asyncio.Task] = set()
        limit = asyncio.Semaphore(max(s.workers, 1))
        room = 2 * max(s.workers, 1)

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
                trim_heap()
            for key, fresh in q.take_due(now, room - len(running)):
                spawn(self.run(*key, fresh=fresh))
            for key in [k for k, at in list(self.servers.due.items()) if at <= now]:
                del self.servers.due[key]
                dep = next(
                    (d for d in self.watched.index("model_servers").get(key[0], []) if d["name"] == key[1]), None
                )
                if dep is not None:
                    spawn(self.in_thread(self.reconcile_server, key[0], dep))
            for key in [k for k, at in list(self.studies.due.items()) if at <= now]:
                self.studies.due[key] = now + q.jitter()
                spawn(self.run_study(*key))
            if s.progress_seconds and now >= next_progress:
                next_progress = now + s.progress_seconds
                for key in [k for k, reader in list(self.progress.items()) if self.pods_run(k, reader.job)]:
                    spawn(self.in_thread(self.copy_progress, key))
            soonest = min(
                [*dict(q.due).values(), *dict(self.servers.due).values(), *dict(self.studies.due).values()],
                default=now + s.tick_seconds,
            )
            timeout = min(
                max(soonest - time.monotonic(), 0.0), s.tick_seconds, max(next_progress - time.monotonic(), 0.05)
            )
            if timeout > 0:
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)


# ---------------------------------------------------------------- pure helpers
def trim_job(body: dict) -> dict:
    """What decisions read of a Job: its name, labels decide never reads are left out."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    labels = meta.get("labels") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "labels": {k: labels[k] for k in (manifests.LABEL_EXPERIMENT, manifests.LABEL_STAGE) if k in labels},
        },
        "spec": {k: spec[k] for k in ("suspend", "activeDeadlineSeconds") if k in spec},
        "status": {
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "reason", "message")}
                for c in (body.get("status") or {}).get("conditions") or []
                if c.get("status") == "True"
            ]
        },
    }


def fold_events(events: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """One reconcile's routine events as one (a stage finished and the next started: one request, not two), under
    the last one's reason; Warnings and other reasons stay separate, so `--field-selector reason=...` finds them."""
    routine = [e for e in events if e[0] == "Normal" and e[1] in FOLDED]
    if len(routine) < 2:
        return events
    folded = ("Normal", routine[-1][1], "; ".join(m for _, _, m in routine))
    return [e for e in events if e not in routine] + [folded]


def degraded(body: dict) -> bool:
    return any(
        c.get("type") == "Degraded" and c.get("status") == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )


def trim_heap() -> None:
    """Give freed heap back to the OS (glibc keeps it after a burst: 5,000 creations, a wave of Jobs finishing), so
    the resident size follows what is live, not the largest burst so far."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
