"""kopf registrations, thin: each hands the Controller (controller.py, kopf's memo) what kopf saw. Indices keep the
stage Jobs and pods, the served models' objects and a study's cells in memory; the handlers say which experiment (or
study, or server) is due, and the controller's one scheduler task does the rest.

No state lives here: `main` creates the Controller and kopf hands every handler the same one as `memo.controller`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import warnings

import kopf

from lrm_safety.spec import API_GROUP, API_VERSION, PLURAL, STAGES

from . import manifests
from . import pods as podinfo
from . import servers as servermod
from .controller import Controller
from .status import ignored_changes, is_finished, job_state
from .study_status import is_study_finished, trim_child

log = logging.getLogger("lrm-safety-operator")
LABELS = {manifests.LABEL_EXPERIMENT: kopf.PRESENT}
SERVED = {servermod.LABEL_SERVER: kopf.PRESENT}
LABEL_STUDY = f"{API_GROUP}/study"
INDICES = (
    "stage_jobs",
    "stage_pods",
    "model_servers",
    "model_server_pods",
    "model_server_services",
    "model_server_slices",
    "study_children",
)


def _controller(memo, kwargs: dict) -> Controller:
    """The run's Controller, given the indices this handler was handed (the scheduler reads them between events)."""
    ctl: Controller = memo.controller
    ctl.watched.keep(**{k: kwargs.get(k) for k in INDICES})
    return ctl


# ---------------------------------------------------------------- kopf's settings and the controller's start
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
    ctl: Controller = memo.controller
    s = ctl.settings
    quiet = QuietWatchHandlers()
    for name in ("kopf.objects", "kopf.activities"):
        if not any(isinstance(f, QuietWatchHandlers) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(quiet)
    settings.posting.level = logging.INFO
    settings.posting.enabled = s.post_events
    settings.watching.server_timeout = s.watch_server_timeout
    settings.watching.client_timeout = s.watch_client_timeout
    # kopf also reconnects a watch that brought no event for 70 s: the quiet ones (studies, CRDs, an idle
    # namespace) then ended every 70 s, not at the configured server timeout. A dead stream is still caught by
    # the client timeout.
    settings.watching.inactivity_timeout = s.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.networking.error_backoffs = PatientBackoffs()
    settings.execution.max_workers = s.workers
    ctl.executor = settings.execution.executor
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.peering.name = s.peering_name
    settings.peering.mandatory = s.peering
    settings.peering.clusterwide = True
    settings.peering.lifetime = s.peering_lifetime
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)
    await ctl.start()
    memo.scheduler = asyncio.create_task(ctl.scheduler())


@kopf.on.cleanup()
async def stop_scheduler(memo, **_):
    task = getattr(memo, "scheduler", None)
    if task is not None:
        task.cancel()


@kopf.on.login()
async def login(memo, **kwargs):
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
        info = await asyncio.to_thread(kopf.login_via_client, memo=memo, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=memo.controller.settings.api_connections, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        priority=info.priority,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
    )


# ---------------------------------------------------------------- indices
@kopf.index("batch", "v1", "jobs", labels=LABELS)
def stage_jobs(namespace, labels, body, **_):
    from .controller import trim_job

    return {(namespace, labels[manifests.LABEL_EXPERIMENT]): trim_job(body)}


@kopf.index("", "v1", "pods", labels=LABELS)
def stage_pods(namespace, labels, body, **_):
    return {(namespace, labels[manifests.LABEL_EXPERIMENT]): podinfo.trim(body)}


@kopf.index("apps", "v1", "deployments", labels=SERVED)
def model_servers(namespace, body, **_):
    return {namespace: servermod.trim_deployment(body)}


@kopf.index("", "v1", "pods", labels=SERVED)
def model_server_pods(namespace, labels, body, **_):
    return {(namespace, labels[servermod.LABEL_SERVER]): servermod.trim_pod(body)}


@kopf.index("", "v1", "services", labels=SERVED)
def model_server_services(namespace, body, **_):
    return {namespace: servermod.trim_service(body)}


@kopf.index("discovery.k8s.io", "v1", "endpointslices", labels=SERVED)
def model_server_slices(namespace, labels, body, **_):
    return {(namespace, labels[servermod.LABEL_SERVER]): servermod.trim_slice(body)}


@kopf.index(API_GROUP, API_VERSION, PLURAL, labels={LABEL_STUDY: kopf.PRESENT})
def study_children(namespace, name, labels, body, **_):
    return {(namespace, labels[LABEL_STUDY]): {"name": name, **trim_child(body)}}


# ---------------------------------------------------------------- experiments
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
async def on_create_or_resume(namespace, name, body, reason, status, memo, **kw):
    ctl = _controller(memo, kw)
    if is_finished(status):
        return  # a restarted operator reads nothing for finished experiments
    ctl.kick(namespace, name, dict(body) if reason == kopf.Reason.CREATE and not status else None)


@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
async def on_update(namespace, name, body, meta, diff, status, memo, **kw):
    ctl = _controller(memo, kw)
    ignored = ignored_changes(diff, status, meta.get("generation"))
    if ignored:
        await asyncio.to_thread(
            ctl.api.event,
            dict(body),
            "Warning",
            "SpecChangeIgnored",
            f"changes to {', '.join(ignored)} after start are ignored (only suspend and scheduling fields apply); "
            f"create a new experiment to change them",
        )
    if not is_finished(status):
        ctl.kick(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=LABELS)
async def on_job_event(namespace, labels, type, body, memo, **kw):
    """Only a finished Job changes a decision; the Jobs the operator just created or patched need no reconcile."""
    ctl = _controller(memo, kw)
    experiment = labels.get(manifests.LABEL_EXPERIMENT)
    if (
        type == "DELETED"
        or job_state(body) not in ("succeeded", "failed")
        or not experiment
        or labels.get(manifests.LABEL_STAGE) not in STAGES
    ):
        return
    ctl.job_finished(namespace, experiment, body)


@kopf.on.event("", "v1", "pods", labels=LABELS)
async def on_pod_event(namespace, labels, type, body, uid, memo, **kw):
    """A stage pod that starts, gets stuck (unschedulable, image pull, a missing Secret), ends or is evicted."""
    _controller(memo, kw).pod_changed(namespace, labels.get(manifests.LABEL_EXPERIMENT), type, body, uid)


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={manifests.LABEL_WORK: kopf.PRESENT})
async def on_claim_event(namespace, labels, type, body, memo, **kw):
    _controller(memo, kw).claim_changed(namespace, labels[manifests.LABEL_WORK], type, body)


def _deletes_artifacts(spec, **_) -> bool:
    return bool(((spec or {}).get("storage") or {}).get("deleteOnFinalize"))


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, when=_deletes_artifacts)
def on_delete(namespace, name, spec, memo, **_):
    """Jobs, Services, the ConfigMap and claims go with the owner (ownerReferences); artifacts only when asked
    (and only those experiments carry the operator's finalizer)."""
    from lrm_safety.store import open_store

    memo.controller.forget((namespace, name))
    storage = (spec or {}).get("storage") or {}
    store = open_store(storage.get("uri", ""), endpoint=storage.get("endpoint"))
    n = store.delete_prefix(f"{name}/")
    log.info("deleted %d artifacts of %s/%s", n, namespace, name)


def _deleted(type, **_) -> bool:
    return type == "DELETED"


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, when=_deleted)
async def on_experiment_deleted(namespace, name, uid, memo, **kw):
    """Runs on a deletion only (kopf logs every run of a handler as succeeded)."""
    ctl = _controller(memo, kw)
    deps = ctl.watched.index("model_servers").get(namespace, [])
    log.info("experiment %s/%s deleted: releasing its use of %d server(s) in the namespace", namespace, name, len(deps))
    if deps:
        await ctl.in_thread(ctl.release_servers, namespace, uid, name)


# ---------------------------------------------------------------- served models: shared vLLM servers
@kopf.on.event("apps", "v1", "deployments", labels=SERVED)
async def on_server_event(namespace, type, body, memo, **kw):
    _controller(memo, kw).server_changed(namespace, type, servermod.trim_deployment(body))


@kopf.on.event("", "v1", "services", labels=SERVED)
async def on_server_service_event(namespace, labels, type, body, uid, memo, **kw):
    """A server's Service made, adopted or gone (deleted by hand, or by the garbage collector): its users look
    again, and the next one makes it again."""
    ctl = _controller(memo, kw)
    owners = tuple(o.get("uid") for o in (body.get("metadata") or {}).get("ownerReferences") or [])
    if ctl.servers.changed(uid, type, ("service", owners)):
        ctl.kick_users(namespace, labels.get(servermod.LABEL_SERVER))


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels=SERVED)
async def on_server_slice_event(namespace, labels, type, body, uid, memo, **kw):
    """A server's ready endpoints came or went: the stages waiting for it decide again."""
    ctl = _controller(memo, kw)
    sl = servermod.trim_slice(body)
    if ctl.servers.changed(uid, type, ("slice", sl["endpoints"] > 0, sl["ready"] > 0)):
        ctl.kick_users(namespace, labels.get(servermod.LABEL_SERVER))


@kopf.on.event("", "v1", "pods", labels=SERVED)
async def on_server_pod_event(namespace, labels, type, body, uid, memo, **kw):
    """A server pod crash-looping, held up or becoming ready: the stages waiting for it decide again."""
    ctl = _controller(memo, kw)
    r = servermod.readiness({"readyReplicas": 0}, [servermod.trim_pod(body)])
    if type != "DELETED" and ctl.servers.changed(uid, type, ("pod", r["reason"], r["crashed"])):
        ctl.kick_users(namespace, labels.get(servermod.LABEL_SERVER))
    elif type == "DELETED":
        ctl.servers.changed(uid, type, ())


# ---------------------------------------------------------------- SafetyStudy: a grid of owned experiments
@kopf.on.create(API_GROUP, API_VERSION, "safetystudies")
@kopf.on.resume(API_GROUP, API_VERSION, "safetystudies")
@kopf.on.update(API_GROUP, API_VERSION, "safetystudies", field="spec")
async def on_study(namespace, name, status, memo, **kw):
    ctl = _controller(memo, kw)
    if not is_study_finished(status):
        await ctl.run_study(namespace, name)


@kopf.on.event(API_GROUP, API_VERSION, "safetystudies", when=_deleted)
async def on_study_deleted(namespace, name, uid, memo, **kw):
    ctl = _controller(memo, kw)
    ctl.studies.due.pop((namespace, name), None)
    deps = ctl.watched.index("model_servers").get(namespace, [])
    log.info(
        "study %s/%s deleted: releasing its ownership of %d server(s) in the namespace", namespace, name, len(deps)
    )
    if deps:
        await ctl.in_thread(ctl.release_servers, namespace, uid, None)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, labels={LABEL_STUDY: kopf.PRESENT})
async def on_child_event(namespace, labels, uid, type, body, memo, **kw):
    """A cell's phase, stage or headline metrics changed (not its progress): the study's table changes."""
    ctl = _controller(memo, kw)
    signals = ctl.studies.child_signals
    if type == "DELETED":
        signals.pop(uid, None)
    else:
        t = trim_child(body)
        signal = (t["phase"], t["stage"], json.dumps(t["metrics"], sort_keys=True), t["suspend"])
        if signals.get(uid) == signal:
            return
        signals[uid] = signal
    await ctl.run_study(namespace, labels[LABEL_STUDY])
