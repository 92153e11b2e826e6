"""Served models on a cluster, as pure functions: the server's objects, what its Deployment and pods say, and when an
idle one goes.

One Deployment and one ClusterIP Service per served model (serving.Served, keyed by content) and namespace. Each
experiment whose stage needs it writes an annotation of its own on the Deployment (`users.lrmsafety.io/<name>: the
stages`), so experiments never overwrite each other's use; with no user left for `idleSeconds` it is deleted, and the
next stage that needs it creates it again. The Deployment's owners are the studies or experiments that needed it
(ownerReferences, not controllers): the garbage collector removes it with the last of them. The Service (and the
NetworkPolicy) belong to the Deployment, not to whichever user came first, so they live exactly as long as it does;
a missing Service is made again by the next reconcile of any user.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from lrm_safety.serving.served import PORT, Served, server_command, server_gpus
from lrm_safety.serving.sizing import server_resources
from lrm_safety.spec import API_GROUP, API_VERSION, KIND, SafetyExperimentSpec

from . import manifests

LABEL_SERVER = f"{API_GROUP}/server"
USERS = f"users.{API_GROUP}/"  # + experiment name: the stages of that experiment that need the server now
IDLE_SINCE = f"{API_GROUP}/idle-since"
IDLE_SECONDS = f"{API_GROUP}/idle-seconds"
MODEL = f"{API_GROUP}/model"
STUDY_KIND = "SafetyStudy"
CRASH_REASONS = {"CrashLoopBackOff"}


def owner(body: dict) -> dict:
    """Who a server made for this experiment belongs to: its study (a study's cells share servers), else itself."""
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == STUDY_KIND and ref.get("apiVersion", "").startswith(API_GROUP):
            return {"apiVersion": ref["apiVersion"], "kind": STUDY_KIND, "name": ref["name"], "uid": ref["uid"]}
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": meta.get("name"), "uid": meta.get("uid")}


def _labels(s: Served) -> dict:
    return {
        "app.kubernetes.io/name": "lrm-safety",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "lrm-safety-operator",
        LABEL_SERVER: s.name,
    }


def _meta(s: Served, namespace: str, owner_ref: Optional[dict], extra_annotations: Optional[dict] = None) -> dict:
    meta: dict[str, Any] = {
        "name": s.name,
        "namespace": namespace,
        "labels": _labels(s),
        "annotations": {MODEL: s.model, **(extra_annotations or {})},
    }
    if owner_ref and owner_ref.get("uid"):
        meta["ownerReferences"] = [{"controller": False, "blockOwnerDeletion": False, **owner_ref}]
    return meta


def deployment_owner(dep: dict) -> dict:
    """The Deployment as the owner of its Service and NetworkPolicy: the garbage collector deletes them with it.
    blockOwnerDeletion stays false, so the operator needs no update right on deployments/finalizers."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["name"],
        "uid": dep["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def _env(spec: SafetyExperimentSpec, s: Served) -> list[dict]:
    """What resolving the model needs (the store's credentials for an s3:// model), and the server's API key."""
    env = [
        {"name": "HF_HOME", "value": "/cache/hf"},
        {"name": "LRM_SAFETY_CACHE", "value": "/cache"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    ref = spec.storage.secret_ref
    if ref and s.model.startswith("s3://"):
        env += [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_key}}},
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_key_key}},
            },
        ]
    if spec.storage.endpoint and s.model.startswith("s3://"):
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.storage.endpoint})
    key = s.serve.api_key_secret_ref
    if key:
        env.append(
            {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": key.name, "key": key.access_key_key}}}
        )
    return env


def render_deployment(
    spec: SafetyExperimentSpec,
    namespace: str,
    s: Served,
    owner_ref: Optional[dict] = None,
    users: Optional[dict[str, str]] = None,
) -> dict:
    """vLLM's OpenAI-compatible server: probes on /health (a long startup probe while the model downloads and
    loads), the worker image's non-root user, no ServiceAccount token, Recreate (a rollout never needs twice the
    GPUs)."""
    v, r = s.serve, spec.resources
    gpus = server_gpus(spec, s)
    size = server_resources(spec, s)
    requests: dict[str, Any] = {"cpu": size["cpu"], "memory": size["memory"]}
    limits: dict[str, Any] = {"memory": size["memory"]}
    if gpus:
        requests[r.gpu_resource] = limits[r.gpu_resource] = str(gpus)

    def probe(period: int, failures: int) -> dict:
        return {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 5,
        }

    container = {
        "name": "vllm",
        "image": s.image,
        "imagePullPolicy": spec.images.pull_policy,
        "command": server_command(s),
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": _env(spec, s)
        + ([{"name": "VLLM_CPU_KVCACHE_SPACE", "value": str(size["kvCacheGiB"])}] if size["kvCacheGiB"] else []),
        "resources": {"requests": requests, "limits": limits},
        "startupProbe": probe(10, max(v.startup_seconds // 10, 1)),
        "readinessProbe": probe(10, 3),
        "livenessProbe": probe(30, 5),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "cache", "mountPath": "/cache"}],
    }
    cache = {"persistentVolumeClaim": {"claimName": r.model_cache}} if r.model_cache else {"emptyDir": {}}
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": r.shm_size}},
            {"name": "cache", **cache},
        ],
    }
    selector = v.node_selector or r.node_selector
    if selector:
        pod["nodeSelector"] = dict(selector)
    if r.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in r.tolerations]
    if r.priority_class_name:
        pod["priorityClassName"] = r.priority_class_name
    if spec.images.pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.images.pull_secrets]
    annotations = {IDLE_SECONDS: str(v.idle_seconds), **{USERS + k: val for k, val in (users or {}).items()}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(s, namespace, owner_ref, annotations),
        "spec": {
            "replicas": v.replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {LABEL_SERVER: s.name}},
            "template": {"metadata": {"labels": _labels(s)}, "spec": pod},
        },
    }


def render_service(namespace: str, s: Served, owner_ref: Optional[dict] = None) -> dict:
    """ClusterIP only: reachable inside the cluster, never exposed. Owned by the server's Deployment."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(s, namespace, owner_ref),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_SERVER: s.name},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_network_policy(namespace: str, s: Served, owner_ref: Optional[dict] = None) -> dict:
    """Only this namespace's stage pods reach the server (pods the operator labels with their experiment)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(s, namespace, owner_ref),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_SERVER: s.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchExpressions": [{"key": manifests.LABEL_EXPERIMENT, "operator": "Exists"}]
                            }
                        }
                    ],
                    "ports": [{"port": PORT, "protocol": "TCP"}],
                }
            ],
        },
    }


def render_companions(namespace: str, s: Served, dep: Optional[dict] = None) -> list[dict]:
    """The Service (and NetworkPolicy) of a server, owned by its Deployment once that exists (`dep`, trimmed)."""
    owner_ref = deployment_owner(dep) if dep and dep.get("uid") else None
    objs = [render_service(namespace, s, owner_ref)]
    if s.serve.network_policy:
        objs.insert(0, render_network_policy(namespace, s, owner_ref))
    return objs


def render_server(
    spec: SafetyExperimentSpec,
    namespace: str,
    s: Served,
    owner_ref: Optional[dict] = None,
    users: Optional[dict[str, str]] = None,
) -> list[dict]:
    """Everything one served model needs, in creation order: the Deployment, then what it owns (`lrm-safety render`;
    the operator makes the Service once the Deployment exists, owned by it)."""
    return [render_deployment(spec, namespace, s, owner_ref, users), *render_companions(namespace, s)]


# ---------------------------------------------------------------- what the cluster says
def trim_deployment(body: dict) -> dict:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    ann = meta.get("annotations") or {}
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
        "annotations": {k: v for k, v in ann.items() if k.startswith(USERS) or k in (IDLE_SINCE, IDLE_SECONDS, MODEL)},
        "ownerReferences": [
            {k: o.get(k) for k in ("apiVersion", "kind", "name", "uid")} for o in meta.get("ownerReferences") or []
        ],
        "replicas": spec.get("replicas", 1),
        "readyReplicas": status.get("readyReplicas") or 0,
        "deletionTimestamp": meta.get("deletionTimestamp"),
    }


def trim_service(body: dict) -> dict:
    meta = body.get("metadata") or {}
    return {
        "name": meta.get("name"),
        "owners": [o.get("uid") for o in meta.get("ownerReferences") or []],
        "deletionTimestamp": meta.get("deletionTimestamp"),
    }


SERVICE_NAME = "kubernetes.io/service-name"


def trim_slice(body: dict) -> dict:
    """An EndpointSlice of a server's Service: how many of its endpoints are ready (the controller copies the
    Service's labels onto its slices, so the server label finds them)."""
    meta = body.get("metadata") or {}
    endpoints = body.get("endpoints") or []
    ready = sum(1 for e in endpoints if (e.get("conditions") or {}).get("ready") is not False)
    return {
        "name": meta.get("name"),
        "service": (meta.get("labels") or {}).get(SERVICE_NAME),
        "endpoints": len(endpoints),
        "ready": ready,
    }


def trim_pod(body: dict) -> dict:
    """A server pod: its phase, scheduling and each container's state with the last termination (crash loops)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return {
        "name": meta.get("name"),
        "phase": status.get("phase"),
        "server": (meta.get("labels") or {}).get(LABEL_SERVER),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions") or []
        ],
        "containerStatuses": [
            {
                "name": c.get("name"),
                "state": c.get("state") or {},
                "lastState": c.get("lastState") or {},
                "restartCount": c.get("restartCount", 0),
                "ready": c.get("ready", False),
            }
            for c in status.get("containerStatuses") or []
        ],
    }


def users(dep: dict) -> dict[str, str]:
    return {k[len(USERS) :]: v for k, v in (dep.get("annotations") or {}).items() if k.startswith(USERS) and v}


def readiness(
    dep: Optional[dict],
    pods: list[dict],
    service: Optional[dict] = None,
    slices: Optional[list[dict]] = None,
    need_service: bool = False,
) -> dict:
    """{ready, crashed, reason, message}: ready with a ready replica behind an existing Service (and, where the
    cluster shows EndpointSlices for it, a ready endpoint: what stage pods actually reach); crashed when a container
    crash-loops (with the container's own last termination); otherwise why it is not ready yet."""
    if dep is None:
        return {"ready": False, "crashed": False, "reason": "Creating", "message": "the server is being created"}
    if dep.get("readyReplicas", 0) > 0:
        if need_service and (service is None or service.get("deletionTimestamp")):
            return {
                "ready": False,
                "crashed": False,
                "reason": "NoService",
                "message": f"the Service {dep['name']} is missing: it is being created",
            }
        # Slices that list the server's pods but none ready: wait. Slices listing nothing (a control plane whose
        # pods have no routable IP, or a controller that has not caught up) leave the Deployment's word standing.
        if need_service and any(sl.get("endpoints") for sl in slices or []) and not any(sl["ready"] for sl in slices):
            return {
                "ready": False,
                "crashed": False,
                "reason": "NoEndpoints",
                "message": f"the Service {dep['name']} has no ready endpoint yet",
            }
        return {"ready": True, "crashed": False, "reason": "Ready", "message": ""}
    for pod in pods:
        for cs in pod.get("containerStatuses") or []:
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in CRASH_REASONS:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                why = last.get("message") or last.get("reason") or w.get("message") or w["reason"]
                code = last.get("exitCode")
                return {
                    "ready": False,
                    "crashed": True,
                    "reason": w["reason"],
                    "message": f"pod {pod['name']}: container {cs.get('name')} "
                    f"{'exit ' + str(code) + ': ' if code is not None else ''}{why}".strip()[:500],
                }
        for cs in pod.get("containerStatuses") or []:
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason"):
                return {
                    "ready": False,
                    "crashed": False,
                    "reason": w["reason"],
                    "message": f"pod {pod['name']}: {w.get('message') or w['reason']}"[:500],
                }
            if "running" in (cs.get("state") or {}):
                return {
                    "ready": False,
                    "crashed": False,
                    "reason": "Loading",
                    "message": f"pod {pod['name']}: running, not ready yet (downloading or loading the model)",
                }
        for c in pod.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return {
                    "ready": False,
                    "crashed": False,
                    "reason": c.get("reason") or "Unschedulable",
                    "message": f"pod {pod['name']}: {c.get('message') or c.get('reason')}"[:500],
                }
    return {
        "ready": False,
        "crashed": False,
        "reason": "NoPod" if not pods else "Pending",
        "message": "no server pod yet" if not pods else f"pod {pods[0]['name']}: pending",
    }


def parse_time(text: Optional[str]) -> Optional[dt.datetime]:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def decide_idle(dep: dict, now: dt.datetime) -> tuple[str, Optional[float]]:
    """('keep' | 'mark' | 'unmark' | 'delete', seconds until the next look): a server with no user is marked idle,
    and deleted once it has been idle for its idleSeconds."""
    if dep.get("deletionTimestamp"):
        return "keep", None
    since = parse_time((dep.get("annotations") or {}).get(IDLE_SINCE))
    if users(dep):
        return ("unmark" if since else "keep"), None
    idle = float((dep.get("annotations") or {}).get(IDLE_SECONDS) or 600)
    if since is None:
        return "mark", idle
    left = (since + dt.timedelta(seconds=idle) - now).total_seconds()
    return ("delete", None) if left <= 0 else ("keep", left)
