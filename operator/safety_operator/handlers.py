"""kopf handlers: thin wrappers that gather inputs, call `status.decide`, and apply its actions.

Triggers: the experiment's create/resume/update, a periodic timer (a safety net for missed
events), and events on the stage Jobs it owns. Every trigger runs the same idempotent reconcile.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict

import kopf

from lrm_safety.spec import API_GROUP, API_VERSION, PLURAL, STAGES

from . import kube, manifests
from .settings import Settings
from .status import decide

log = logging.getLogger("lrm-safety-operator")
_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
SETTINGS = Settings.from_env()
HONOURED = {("spec", "suspend"), ("spec", "resources", "nodeSelector"), ("spec", "resources", "tolerations"),
            ("spec", "resources", "priorityClassName"), ("spec", "resources", "queue")}


def reconcile(namespace: str, name: str) -> dict:
    """Fetch, decide, act. Serialised per experiment so a timer and a Job event never race; always reads the
    current object rather than the triggering event's copy, which may be stale."""
    with _locks[(namespace, name)]:
        api = kube.Api.get()
        body = api.get_experiment(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return {}
        jobs = api.list_jobs(namespace, name)
        finished = {n for n, j in jobs.items() if _done(j)}
        messages = {n: api.termination_message(namespace, n) for n in finished}
        acts = decide(body, jobs, messages, SETTINGS.default_worker_image)
        for obj in acts.create:
            api.create_or_adopt(obj)
        for job, patch in acts.patch_jobs:
            api.patch_job(namespace, job, patch)
        if acts.status:
            api.patch_status(namespace, name, acts.status)
        for type_, reason, message in acts.events:
            api.event(body, type_, reason, message)
        return acts.status


def _done(job: dict) -> bool:
    return any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
               for c in (job.get("status") or {}).get("conditions") or [])


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
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
def on_create_or_resume(namespace, name, **_):
    reconcile(namespace, name)


@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
def on_update(namespace, name, body, diff, **_):
    ignored = sorted({".".join(path) for _, path, _, _ in diff
                      if path and path[0] == "spec" and tuple(path[:3]) not in HONOURED and tuple(path[:2]) not in HONOURED})
    if ignored and (body.get("status") or {}).get("phase") not in (None, "Pending"):
        kopf.warn(body, reason="SpecChangeIgnored",
                  message=f"changes to {', '.join(ignored)} after start are ignored (only suspend and scheduling "
                          f"fields apply); create a new experiment to change them")
    reconcile(namespace, name)


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds,
            idle=None)
def resync(namespace, name, body, **_):
    if (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return
    reconcile(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={manifests.LABEL_EXPERIMENT: kopf.PRESENT})
def on_job_event(namespace, labels, type, body, **_):
    # Only a finished Job changes a decision; the Jobs the operator just created or patched need no reconcile.
    if type == "DELETED" or not _done(body):
        return
    experiment = labels.get(manifests.LABEL_EXPERIMENT)
    if experiment and labels.get(manifests.LABEL_STAGE) in STAGES:
        reconcile(namespace, experiment)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, optional=True)
def on_delete(namespace, name, spec, **_):
    """Jobs, Services and the ConfigMap go with the owner (ownerReferences); artifacts stay unless asked."""
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
