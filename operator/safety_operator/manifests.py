"""spec -> Kubernetes objects, as pure functions: testable without a cluster, validated offline.

Names are deterministic (experiment, stage, attempt), so a restarted operator that renders the
same object gets 409 Conflict and adopts the existing one instead of creating a twin.
"""
from __future__ import annotations

from typing import Any, Optional

import yaml

from lrm_safety.spec import API_GROUP, API_VERSION, KIND, SafetyExperimentSpec, spec_dict

LABEL_EXPERIMENT = f"{API_GROUP}/experiment"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_ATTEMPT = f"{API_GROUP}/attempt"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SPEC_MOUNT = "/etc/lrm-safety"
SPEC_FILE = "experiment.yaml"
GPU = "nvidia.com/gpu"
# Exit codes our own code uses for bad input; the Job fails at once instead of retrying them.
PERMANENT_EXIT_CODES = list(range(1, 128))


def job_name(experiment: str, stage: str, attempt: int = 1) -> str:
    return f"{experiment}-{stage}-{attempt}"


def configmap_name(experiment: str) -> str:
    return f"{experiment}-spec"


def service_name(experiment: str, attempt: int = 1) -> str:
    return f"{experiment}-train-{attempt}"


def owner_reference(name: str, uid: Optional[str]) -> list[dict]:
    if not uid:
        return []
    return [{"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": name, "uid": uid,
             "controller": True, "blockOwnerDeletion": True}]


def _meta(name: str, namespace: str, experiment: str, uid: Optional[str], stage: Optional[str] = None,
          extra: Optional[dict] = None) -> dict:
    labels = {"app.kubernetes.io/name": "lrm-safety", "app.kubernetes.io/managed-by": "lrm-safety-operator",
              LABEL_EXPERIMENT: experiment}
    if stage:
        labels[LABEL_STAGE] = stage
    labels.update(extra or {})
    meta = {"name": name, "namespace": namespace, "labels": labels}
    owners = owner_reference(experiment, uid)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def render_configmap(experiment: str, namespace: str, spec: SafetyExperimentSpec, uid: Optional[str] = None) -> dict:
    """The spec every stage pod reads: frozen at start, so a later spec edit cannot change a running study."""
    doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
           "metadata": {"name": experiment, "namespace": namespace}, "spec": spec_dict(spec)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(configmap_name(experiment), namespace, experiment, uid),
            "data": {SPEC_FILE: yaml.safe_dump(doc, sort_keys=False)}}


def stage_gpus(spec: SafetyExperimentSpec, stage: str) -> int:
    if stage == "distill":
        return spec.teacher.tensor_parallel if spec.teacher.backend != "openai" else 0
    if stage == "train":
        return spec.train.gpus_per_node or 1
    if stage == "evaluate":
        return spec.evaluate.gpus
    return 0


def _env(spec: SafetyExperimentSpec) -> list[dict]:
    # Model downloads and train's checkpoints go to the pod's /cache volume, not the container's root layer.
    env = [{"name": "LRM_SAFETY_CACHE", "value": "/cache"}, {"name": "HF_HOME", "value": "/cache/hf"},
           {"name": "LRM_SAFETY_SCRATCH", "value": "/cache/scratch"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    ref = spec.storage.secret_ref
    if ref:
        env += [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_key}}},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_key_key}}},
        ]
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.storage.endpoint})
    if spec.storage.region:
        env.append({"name": "AWS_REGION", "value": spec.storage.region})
    key = spec.teacher.api_key_secret_ref
    if key:
        env.append({"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": key.name, "key": key.access_key_key}}})
    jkey = spec.evaluate.judge.api_key_secret_ref
    if jkey:
        env.append({"name": "LRM_SAFETY_JUDGE_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": jkey.name, "key": jkey.access_key_key}}})
    return env


def _pod_spec(experiment: str, spec: SafetyExperimentSpec, stage: str, command: list[str], extra_env: list[dict],
              subdomain: Optional[str] = None) -> dict:
    r = spec.resources
    gpus = stage_gpus(spec, stage)
    requests: dict[str, Any] = {"cpu": r.cpu, "memory": r.memory}
    limits: dict[str, Any] = {"memory": r.memory}
    if gpus:
        requests[GPU] = str(gpus)  # quantities are strings in the API
        limits[GPU] = str(gpus)
    container = {
        "name": stage,
        "image": spec.images.worker,
        "imagePullPolicy": spec.images.pull_policy,
        "command": command,
        "env": _env(spec) + extra_env,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
                            "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"}, {"name": "cache", "mountPath": "/cache"}],
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {"name": "spec", "configMap": {"name": configmap_name(experiment)}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": r.shm_size}},
            {"name": "cache", "emptyDir": {}},
        ],
    }
    if r.node_selector:
        pod["nodeSelector"] = dict(r.node_selector)
    if r.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in r.tolerations]
    if r.priority_class_name:
        pod["priorityClassName"] = r.priority_class_name
    if subdomain:
        pod["subdomain"] = subdomain
    return pod


def render_job(experiment: str, namespace: str, spec: SafetyExperimentSpec, stage: str, attempt: int = 1,
               uid: Optional[str] = None, suspend: bool = False) -> dict:
    """One stage's Job. distill: Indexed (one index per shard); train: Indexed over nodes when nodes > 1."""
    name = job_name(experiment, stage, attempt)
    cmd = ["lrm-safety", "stage", stage, "--spec", f"{SPEC_MOUNT}/{SPEC_FILE}"]
    extra_env: list[dict] = []
    completions = 1
    indexed = False
    subdomain = None
    if stage == "distill":
        completions, indexed = spec.distill.shards, spec.distill.shards > 1
        cmd += ["--num-shards", str(spec.distill.shards)]  # the shard comes from JOB_COMPLETION_INDEX
    elif stage == "train":
        t = spec.train
        if t.nodes > 1:
            completions, indexed = t.nodes, True
            subdomain = service_name(experiment, attempt)
            extra_env += [
                {"name": "MASTER_ADDR", "value": f"{name}-0.{subdomain}.{namespace}.svc"},
                {"name": "MASTER_PORT", "value": "29500"},
                {"name": "NNODES", "value": str(t.nodes)},
                {"name": "NCCL_ASYNC_ERROR_HANDLING", "value": "1"},
            ]
    labels = {LABEL_ATTEMPT: str(attempt)}
    if spec.resources.queue:
        labels[QUEUE_LABEL] = spec.resources.queue
    pod_labels = {"app.kubernetes.io/name": "lrm-safety", LABEL_EXPERIMENT: experiment, LABEL_STAGE: stage,
                  LABEL_ATTEMPT: str(attempt)}
    multi_node = stage == "train" and spec.train.nodes > 1
    # Bad input (our exit codes 1-127) fails the Job at once; for multi-node train any failed worker does,
    # since the others would hang in NCCL. Evictions do not count as failures.
    fail_on = ({"operator": "NotIn", "values": [0]} if multi_node else
               {"operator": "In", "values": PERMANENT_EXIT_CODES})
    job_spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": completions,
        # Retries are the operator's (a new attempt, a new Job), so it can tell bad input from bad luck.
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": stage, **fail_on}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": pod_labels}, "spec": _pod_spec(experiment, spec, stage, cmd, extra_env, subdomain)},
    }
    if indexed:
        job_spec["completionMode"] = "Indexed"
    if spec.resources.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.resources.ttl_seconds_after_finished
    if suspend or spec.suspend:
        job_spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(name, namespace, experiment, uid, stage, labels),
            "spec": job_spec}


def render_service(experiment: str, namespace: str, attempt: int = 1, uid: Optional[str] = None) -> dict:
    """Headless Service that gives multi-node train pods stable DNS names for rendezvous."""
    name = service_name(experiment, attempt)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace, experiment, uid, "train"),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {LABEL_EXPERIMENT: experiment, LABEL_STAGE: "train", LABEL_ATTEMPT: str(attempt)},
                     "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500}]}}


def render_stage(experiment: str, namespace: str, spec: SafetyExperimentSpec, stage: str, attempt: int = 1,
                 uid: Optional[str] = None) -> list[dict]:
    """Everything one stage attempt needs, in creation order."""
    objs = []
    if stage == "train" and spec.train.nodes > 1:
        objs.append(render_service(experiment, namespace, attempt, uid))
    objs.append(render_job(experiment, namespace, spec, stage, attempt, uid))
    return objs


def render_all(experiment: str, namespace: str, spec: SafetyExperimentSpec, uid: Optional[str] = None) -> list[dict]:
    from lrm_safety.spec import STAGES

    out = [render_configmap(experiment, namespace, spec, uid)]
    for stage in STAGES:
        out += render_stage(experiment, namespace, spec, stage, 1, uid)
    return out
