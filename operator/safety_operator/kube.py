"""The operator's Kubernetes I/O over the official client: create-or-adopt, status patches, events."""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import Optional

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lrm_safety.spec import API_GROUP, API_VERSION, PLURAL

from . import manifests

log = logging.getLogger("lrm-safety-operator")


def _api_client() -> client.ApiClient:
    server = os.environ.get("LRM_SAFETY_KUBE_SERVER")  # tests and out-of-cluster development
    if server:
        cfg = client.Configuration()
        cfg.host = server
        cfg.verify_ssl = False
        return client.ApiClient(cfg)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _raw(response) -> dict:
    """Raw JSON (camelCase keys, unknown fields kept) rather than the client's typed models."""
    return json.loads(response.data or b"{}")


class Api:
    _instance: Optional["Api"] = None
    _lock = threading.Lock()

    def __init__(self, api_client: client.ApiClient):
        self.client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def get(cls) -> "Api":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(_api_client())
            return cls._instance

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._instance = None

    def get_experiment(self, namespace: str, name: str) -> Optional[dict]:
        try:
            return self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_jobs(self, namespace: str, experiment: str) -> dict[str, dict]:
        data = _raw(self.batch.list_namespaced_job(
            namespace, label_selector=f"{manifests.LABEL_EXPERIMENT}={experiment}", _preload_content=False))
        items = (data or {}).get("items") or []
        # Filter here too: a label selector the server ignores must not leak other experiments' Jobs.
        return {j["metadata"]["name"]: j for j in items
                if (j.get("metadata", {}).get("labels") or {}).get(manifests.LABEL_EXPERIMENT) == experiment}

    def termination_message(self, namespace: str, job: str) -> str:
        """The summary JSON a finished stage pod left in its termination message (index 0 for Indexed Jobs)."""
        data = _raw(self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}", _preload_content=False))
        best = ""
        for pod in (data or {}).get("items") or []:
            labels = pod.get("metadata", {}).get("labels") or {}
            if labels.get("job-name") != job and labels.get("batch.kubernetes.io/job-name") != job:
                continue
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated") or {}
                if term.get("exitCode") == 0 and term.get("message"):
                    best = term["message"]
        return best

    def create_or_adopt(self, obj: dict) -> None:
        kind, meta = obj["kind"], obj["metadata"]
        ns = meta["namespace"]
        try:
            if kind == "Job":
                self.batch.create_namespaced_job(ns, obj)
            elif kind == "Service":
                self.core.create_namespaced_service(ns, obj)
            elif kind == "ConfigMap":
                self.core.create_namespaced_config_map(ns, obj)
            else:
                raise ValueError(f"cannot create {kind}")
            log.info("created %s %s/%s", kind, ns, meta["name"])
        except ApiException as e:
            if e.status != 409:
                raise
            log.info("%s %s/%s exists: adopting it", kind, ns, meta["name"])

    def patch_job(self, namespace: str, name: str, patch: dict) -> None:
        self.batch.patch_namespaced_job(name, namespace, patch)

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(API_GROUP, API_VERSION, namespace, PLURAL, name,
                                                          {"status": status})

    def event(self, body: dict, type_: str, reason: str, message: str) -> None:
        import kopf

        try:
            kopf.event(body, type=type_, reason=reason, message=message)
        except Exception:  # outside a kopf context (e.g. a unit test): log instead
            log.info("event %s %s: %s", type_, reason, message)
