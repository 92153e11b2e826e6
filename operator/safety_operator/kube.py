"""The operator's Kubernetes I/O over the official client: create-or-adopt, status patches, events."""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lrm_safety.spec import API_GROUP, API_VERSION, KIND, PLURAL

from . import manifests

log = logging.getLogger("lrm-safety-operator")


def _api_client(workers: int) -> client.ApiClient:
    server = os.environ.get("LRM_SAFETY_KUBE_SERVER")  # tests and out-of-cluster development
    if server:
        cfg = client.Configuration()
        cfg.host = server
        cfg.verify_ssl = False
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        cfg = client.Configuration.get_default_copy()
    # One kept-alive connection per reconcile thread: urllib3's default pool of 4 would open (and TLS-handshake)
    # a new connection for every request beyond the fourth concurrent one, and throw it away.
    cfg.connection_pool_maxsize = workers + 4
    return client.ApiClient(cfg)


def _raw(response) -> dict:
    """Raw JSON (camelCase keys, unknown fields kept) rather than the client's typed models."""
    return json.loads(response.data or b"{}")


class Api:
    """Every call asks for the raw response (`_preload_content=False`): the typed models' deserialisation cost more
    CPU than the rest of a reconcile, and the operator reads raw JSON anyway."""

    def __init__(self, api_client: client.ApiClient, post_events: bool = True):
        self.post_events = post_events
        self.client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)

    @classmethod
    def connect(cls, settings) -> "Api":
        """A client for the cluster the operator runs in (or $LRM_SAFETY_KUBE_SERVER), sized for its workers."""
        return cls(_api_client(settings.workers), post_events=settings.post_events)

    def get_experiment(self, namespace: str, name: str) -> Optional[dict]:
        try:
            return self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def get_study(self, namespace: str, name: str) -> Optional[dict]:
        from lrm_safety.spec.study import STUDY_PLURAL

        try:
            return self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, STUDY_PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_study_status(self, namespace: str, name: str, status: dict) -> None:
        from lrm_safety.spec.study import STUDY_KIND, STUDY_PLURAL

        try:
            self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, STUDY_PLURAL, name, {"status": status}, _preload_content=False
            )
        except ApiException as e:
            e._where = f"patch {STUDY_KIND} {namespace}/{name} status: "
            raise

    def patch_experiment(self, namespace: str, name: str, patch: dict) -> None:
        try:
            self.custom.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name, patch, _preload_content=False
            )
        except ApiException as e:
            if e.status == 404:
                return
            e._where = f"patch {KIND} {namespace}/{name}: "
            raise

    def list_jobs(self, namespace: str, experiment: str) -> dict[str, dict]:
        data = _raw(
            self.batch.list_namespaced_job(
                namespace, label_selector=f"{manifests.LABEL_EXPERIMENT}={experiment}", _preload_content=False
            )
        )
        items = (data or {}).get("items") or []
        # Filter here too: a label selector the server ignores must not leak other experiments' Jobs.
        return {
            j["metadata"]["name"]: j
            for j in items
            if (j.get("metadata", {}).get("labels") or {}).get(manifests.LABEL_EXPERIMENT) == experiment
        }

    def job_pods(self, namespace: str, job: str) -> list[dict]:
        """One LIST, for a finished Job whose pods' final state the watch has not delivered yet."""
        data = _raw(self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}", _preload_content=False))
        return [
            p
            for p in (data or {}).get("items") or []
            if (p.get("metadata", {}).get("labels") or {}).get("job-name") == job
        ]

    def create_or_adopt(self, obj: dict) -> None:
        kind, meta = obj["kind"], obj["metadata"]
        ns = meta["namespace"]
        try:
            if kind == "Job":
                self.batch.create_namespaced_job(ns, obj, _preload_content=False)
            elif kind == "Service":
                self.core.create_namespaced_service(ns, obj, _preload_content=False)
            elif kind == "ConfigMap":
                self.core.create_namespaced_config_map(ns, obj, _preload_content=False)
            elif kind == "Deployment":
                self.apps.create_namespaced_deployment(ns, obj, _preload_content=False)
            elif kind == "NetworkPolicy":
                self.networking.create_namespaced_network_policy(ns, obj, _preload_content=False)
            elif kind == KIND:
                self.custom.create_namespaced_custom_object(
                    API_GROUP, API_VERSION, ns, PLURAL, obj, _preload_content=False
                )
            else:
                raise ValueError(f"cannot create {kind}")
            log.info("created %s %s/%s", kind, ns, meta["name"])
        except ApiException as e:
            if e.status != 409:
                e._where = f"create {kind} {ns}/{meta['name']}: "
                raise
            log.info("%s %s/%s exists: adopting it", kind, ns, meta["name"])

    def claim(self, lease: dict) -> tuple[bool, Optional[dict]]:
        """Make a claim (create; with metadata.resourceVersion, replace a stuck one). (won, the Lease as it is now):
        a 409 is an answer, not an error: the Lease someone else holds is read once and returned."""
        meta = lease["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            if meta.get("resourceVersion"):
                out = self.coordination.replace_namespaced_lease(name, ns, lease, _preload_content=False)
            else:
                out = self.coordination.create_namespaced_lease(ns, lease, _preload_content=False)
            return True, _raw(out)
        except ApiException as e:
            if e.status not in (404, 409):
                e._where = f"claim Lease {ns}/{name}: "
                raise
            if e.status == 404:  # released between the read and the take-over: claim it afresh
                return self.claim({**lease, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}})
        try:
            current = _raw(self.coordination.read_namespaced_lease(name, ns, _preload_content=False))
        except ApiException as e:
            if e.status != 404:
                raise
            return self.claim(lease)  # released meanwhile
        holder = (current.get("spec") or {}).get("holderIdentity")
        return holder == lease["spec"]["holderIdentity"], current

    def mark_claim(self, namespace: str, name: str, annotation: str, value: Optional[str]) -> None:
        try:
            self.coordination.patch_namespaced_lease(
                name, namespace, {"metadata": {"annotations": {annotation: value}}}, _preload_content=False
            )
        except ApiException as e:
            if e.status != 404:
                e._where = f"patch Lease {namespace}/{name}: "
                raise

    def release_claim(self, namespace: str, name: str, uid: Optional[str] = None) -> None:
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)) if uid else None
        try:
            self.coordination.delete_namespaced_lease(name, namespace, body=body, _preload_content=False)
        except ApiException as e:
            if e.status not in (404, 409):  # gone already, or another's now (taken over)
                e._where = f"delete Lease {namespace}/{name}: "
                raise

    def patch_deployment(self, namespace: str, name: str, patch: dict) -> None:
        try:
            self.apps.patch_namespaced_deployment(name, namespace, patch, _preload_content=False)
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile (idle): the next stage that needs it creates it again
                return
            e._where = f"patch Deployment {namespace}/{name}: "
            raise

    def patch_service(self, namespace: str, name: str, patch: dict) -> None:
        try:
            self.core.patch_namespaced_service(name, namespace, patch, _preload_content=False)
        except ApiException as e:
            if e.status != 404:
                e._where = f"patch Service {namespace}/{name}: "
                raise

    def delete_server(self, namespace: str, name: str, resource_version: Optional[str] = None) -> bool:
        """A served model's Deployment (only if unchanged since it was judged idle: a user that just arrived keeps
        it), then its Service and NetworkPolicy. False when the Deployment changed meanwhile."""
        pre = (
            client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=resource_version))
            if resource_version
            else None
        )
        try:
            self.apps.delete_namespaced_deployment(name, namespace, body=pre, _preload_content=False)
        except ApiException as e:
            if e.status == 409:
                return False
            if e.status != 404:
                e._where = f"delete Deployment {namespace}/{name}: "
                raise
        for delete in (self.core.delete_namespaced_service, self.networking.delete_namespaced_network_policy):
            try:
                delete(name, namespace, _preload_content=False)
            except ApiException as e:
                if e.status != 404:
                    e._where = f"delete {namespace}/{name}: "
                    raise
        return True

    def patch_job(self, namespace: str, name: str, patch: dict) -> None:
        try:
            self.batch.patch_namespaced_job(name, namespace, patch, _preload_content=False)
        except ApiException as e:
            if e.status == 404:  # gone meanwhile (ttlSecondsAfterFinished): nothing to stop or resume
                return
            e._where = f"patch Job {namespace}/{name}: "
            raise

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}, _preload_content=False
            )
        except ApiException as e:
            e._where = f"patch {KIND} {namespace}/{name} status: "
            raise

    def event(self, body: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the experiment, named as client-go names them (`<object>.<unique hex>`)."""
        meta = body.get("metadata") or {}
        log.log(
            logging.WARNING if type_ == "Warning" else logging.INFO,
            "[%s/%s] %s %s: %s",
            meta.get("namespace"),
            meta.get("name"),
            type_,
            reason,
            message,
        )
        if not self.post_events:
            return
        import datetime as dt
        import uuid

        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        ns = meta.get("namespace") or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": ns},
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": body.get("kind") or KIND,
                "name": meta.get("name"),
                "namespace": ns,
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason[:128],
            "message": message[:1024],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "lrm-safety-operator"},
            "reportingComponent": "lrm-safety-operator",
        }
        try:
            self.core.create_namespaced_event(ns, event, _preload_content=False)
        except ApiException as e:  # events are best effort: never fail a reconcile over one
            log.info("event %s not posted: %s", reason, describe_api_error(e))


def describe_api_error(e: ApiException) -> str:
    """`POST .../jobs: 403 Forbidden: <the API server's message>` from an ApiException."""
    detail = ""
    try:
        detail = json.loads(e.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        detail = (e.body or "")[:300] if isinstance(e.body, str) else ""
    where = getattr(e, "_where", "")
    return f"{where}{e.status} {e.reason}: {detail}".strip()
