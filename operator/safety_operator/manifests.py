"""spec -> Kubernetes objects, as pure functions: testable without a cluster, validated offline.

Names are deterministic (experiment, stage, attempt), so a restarted operator that renders the
same object gets 409 Conflict and adopts the existing one instead of creating a twin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import yaml

from lrm_safety.serving.served import API_KEY_ENV, endpoints_env, served_roles
from lrm_safety.spec import API_GROUP, API_VERSION, DEFAULT_WORKER_IMAGE, KIND, SafetyExperimentSpec, spec_dict

LABEL_EXPERIMENT = f"{API_GROUP}/experiment"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_ATTEMPT = f"{API_GROUP}/attempt"
LABEL_WORK = f"{API_GROUP}/work"  # reuse.work_id: one Job at a time per identical stage work in a store
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SPEC_MOUNT = "/etc/lrm-safety"
SPEC_FILE = "experiment.yaml"
# The worker's exit code for bad input (lrm_safety.errors.BAD_INPUT_EXIT): the Job fails at once on it, and the
# operator does not retry. Every other exit (1 for any Python exception, 137 for an OOM kill) is retried.
from lrm_safety.errors import BAD_INPUT_EXIT  # noqa: E402

TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class WorkerDefaults:
    """The operator's defaults for stage pods (the chart's `worker.*` values), for what a spec leaves unset: the
    image a user's registry serves, its pull secrets, the pods' ServiceAccount and whether its token is mounted."""

    image: str = DEFAULT_WORKER_IMAGE
    pull_secrets: tuple[str, ...] = ()
    service_account: str = ""
    automount_token: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "WorkerDefaults":
        return cls(
            image=env.get("LRM_SAFETY_DEFAULT_WORKER_IMAGE") or DEFAULT_WORKER_IMAGE,
            pull_secrets=tuple(
                s.strip() for s in env.get("LRM_SAFETY_WORKER_PULL_SECRETS", "").split(",") if s.strip()
            ),
            service_account=env.get("LRM_SAFETY_WORKER_SERVICE_ACCOUNT", ""),
            automount_token=env.get("LRM_SAFETY_WORKER_AUTOMOUNT_TOKEN", "").lower() in ("1", "true", "yes"),
        )

    def apply(self, spec: SafetyExperimentSpec) -> SafetyExperimentSpec:
        """A copy of `spec` with these defaults where it names nothing; pull secrets: the union, the chart's first."""
        images = spec.images.model_copy(
            update={
                "worker": spec.images.worker or self.image,
                "pull_secrets": list(dict.fromkeys([*self.pull_secrets, *spec.images.pull_secrets])),
            }
        )
        r = spec.resources
        resources = r.model_copy(
            update={
                "service_account_name": r.service_account_name or self.service_account or None,
                "automount_service_account_token": self.automount_token
                if r.automount_service_account_token is None
                else r.automount_service_account_token,
            }
        )
        return spec.model_copy(update={"images": images, "resources": resources})


def job_name(experiment: str, stage: str, attempt: int = 1) -> str:
    return f"{experiment}-{stage}-{attempt}"


def configmap_name(experiment: str) -> str:
    return f"{experiment}-spec"


def service_name(experiment: str, attempt: int = 1) -> str:
    return f"{experiment}-train-{attempt}"


def owner_reference(name: str, uid: Optional[str]) -> list[dict]:
    if not uid:
        return []
    return [
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _meta(
    name: str,
    namespace: str,
    experiment: str,
    uid: Optional[str],
    stage: Optional[str] = None,
    extra: Optional[dict] = None,
) -> dict:
    labels = {
        "app.kubernetes.io/name": "lrm-safety",
        "app.kubernetes.io/managed-by": "lrm-safety-operator",
        LABEL_EXPERIMENT: experiment,
    }
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
    doc = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": experiment, "namespace": namespace},
        "spec": spec_dict(spec),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(configmap_name(experiment), namespace, experiment, uid),
        "data": {SPEC_FILE: yaml.safe_dump(doc, sort_keys=False)},
    }


def stage_gpus(spec: SafetyExperimentSpec, stage: str) -> int:
    """GPUs one pod of the stage requests: the override, else what the stage's backend uses."""
    r = spec.resources
    override = getattr(r, stage).gpus
    if override is not None:
        return override
    if r.cpu_only:
        return 0
    if stage == "distill":
        if spec.teacher.serve is not None:
            return 0  # the teacher runs in its server's pods
        return {"vllm": spec.teacher.tensor_parallel, "transformers": 1}.get(spec.teacher.backend, 0)
    if stage == "train":
        return spec.train.gpus_per_node or 1
    if stage == "evaluate":
        return 1
    return 0


def stage_compute(spec: SafetyExperimentSpec, stage: str) -> dict[str, Any]:
    """{gpus, cpu, memory} of one pod of the stage (what `lrm-safety render` shows)."""
    own = getattr(spec.resources, stage)
    return {
        "gpus": stage_gpus(spec, stage),
        "cpu": own.cpu or spec.resources.cpu,
        "memory": own.memory or spec.resources.memory,
    }


def _secret_env(name: str, ref, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}}


def stage_secrets(spec: SafetyExperimentSpec, stage: str) -> list[dict]:
    """Only the secrets this stage reads: storage for all; the teacher's key for distill; the judge's for evaluate."""
    env = []
    ref = spec.storage.secret_ref
    if ref:
        env += [
            _secret_env("AWS_ACCESS_KEY_ID", ref, ref.access_key_key),
            _secret_env("AWS_SECRET_ACCESS_KEY", ref, ref.secret_key_key),
        ]
    key = spec.teacher.api_key_secret_ref
    if stage == "distill" and key and spec.teacher.backend == "openai":
        env.append(_secret_env("OPENAI_API_KEY", key, key.access_key_key))
    jkey = spec.evaluate.judge.api_key_secret_ref
    if stage == "evaluate" and jkey and spec.evaluate.judge.kind == "llm":
        env.append(_secret_env("LRM_SAFETY_JUDGE_API_KEY", jkey, jkey.access_key_key))
    over = spec.evaluate.over_refusal_judge
    if stage == "evaluate" and over is not None and over.kind == "llm" and over.api_key_secret_ref:
        env.append(
            _secret_env(
                "LRM_SAFETY_OVER_REFUSAL_JUDGE_API_KEY", over.api_key_secret_ref, over.api_key_secret_ref.access_key_key
            )
        )
    for s in served_roles(spec, stage):
        if s.serve.api_key_secret_ref:
            env.append(
                _secret_env(
                    API_KEY_ENV + s.role.upper(), s.serve.api_key_secret_ref, s.serve.api_key_secret_ref.access_key_key
                )
            )
    if stage == "train":
        env += [
            {"name": e.name, "valueFrom": {"secretKeyRef": {"name": e.secret_name, "key": e.key}}}
            for e in spec.train.report_env
        ]
    pair = spec.evaluate.pair
    pairing = any(b.name == "advbench-pair" for b in spec.evaluate.benchmarks)
    for role, ref in (("ATTACKER", pair.attacker), ("JUDGE", pair.judge)):
        if stage == "evaluate" and pairing and ref is not None and ref.api_key_secret_ref:
            env.append(
                _secret_env(
                    f"LRM_SAFETY_PAIR_{role}_API_KEY", ref.api_key_secret_ref, ref.api_key_secret_ref.access_key_key
                )
            )
    return env


def _env(spec: SafetyExperimentSpec, stage: str) -> list[dict]:
    # Models live in /cache (shared by pods when resources.modelCache names a PVC); train's checkpoints and
    # compiled ops in the pod's own /scratch, never on a cache that other nodes share.
    env = [
        {"name": "LRM_SAFETY_CACHE", "value": "/cache"},
        {"name": "HF_HOME", "value": "/cache/hf"},
        {"name": "LRM_SAFETY_SCRATCH", "value": "/scratch"},
        {"name": "TORCH_EXTENSIONS_DIR", "value": "/scratch/torch_extensions"},
        {"name": "LRM_SAFETY_TERMINATION_LOG", "value": TERMINATION_LOG},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env += stage_secrets(spec, stage)
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.storage.endpoint})
    if spec.storage.region:
        env.append({"name": "AWS_REGION", "value": spec.storage.region})
    return env


def _pod_spec(
    experiment: str,
    spec: SafetyExperimentSpec,
    stage: str,
    command: list[str],
    extra_env: list[dict],
    subdomain: Optional[str] = None,
) -> dict:
    r = spec.resources
    compute = stage_compute(spec, stage)
    requests: dict[str, Any] = {"cpu": compute["cpu"], "memory": compute["memory"]}
    limits: dict[str, Any] = {"memory": compute["memory"]}
    if compute["gpus"]:
        requests[r.gpu_resource] = str(compute["gpus"])  # quantities are strings in the API
        limits[r.gpu_resource] = str(compute["gpus"])
    container = {
        "name": stage,
        "image": spec.images.worker or DEFAULT_WORKER_IMAGE,
        "imagePullPolicy": spec.images.pull_policy,
        "command": command,
        "env": _env(spec, stage) + extra_env,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    }
    cache = {"persistentVolumeClaim": {"claimName": r.model_cache}} if r.model_cache else {"emptyDir": {}}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        # stage pods never call the Kubernetes API: no token unless the spec or the chart asks for one
        "automountServiceAccountToken": bool(r.automount_service_account_token),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "spec", "configMap": {"name": configmap_name(experiment)}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": r.shm_size}},
            {"name": "cache", **cache},
            {"name": "scratch", "emptyDir": {}},
        ],
    }
    if r.service_account_name:
        pod["serviceAccountName"] = r.service_account_name
    if spec.images.pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.images.pull_secrets]
    if r.node_selector:
        pod["nodeSelector"] = dict(r.node_selector)
    if r.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in r.tolerations]
    if r.priority_class_name:
        pod["priorityClassName"] = r.priority_class_name
    if subdomain:
        pod["subdomain"] = subdomain
    return pod


def render_job(
    experiment: str,
    namespace: str,
    spec: SafetyExperimentSpec,
    stage: str,
    attempt: int = 1,
    uid: Optional[str] = None,
    suspend: bool = False,
) -> dict:
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
    # Served models: the stage reaches each at its Service (serving.reachable turns them into endpoints).
    extra_env += [
        {"name": k, "value": v} for k, v in endpoints_env(spec, stage, lambda s: s.endpoint(namespace)).items()
    ]
    labels = {LABEL_ATTEMPT: str(attempt), LABEL_WORK: stage_work_id(experiment, spec, stage)}
    if spec.resources.queue:
        labels[QUEUE_LABEL] = spec.resources.queue
    pod_labels = {
        "app.kubernetes.io/name": "lrm-safety",
        LABEL_EXPERIMENT: experiment,
        LABEL_STAGE: stage,
        LABEL_ATTEMPT: str(attempt),
    }
    multi_node = stage == "train" and spec.train.nodes > 1
    # Bad input (exit 3) fails the Job at once; for multi-node train any failed worker does, since the others
    # would hang in NCCL (the operator then reads the exit codes to tell bad input from bad luck). Evictions
    # do not count as failures.
    fail_on = {"operator": "NotIn", "values": [0]} if multi_node else {"operator": "In", "values": [BAD_INPUT_EXIT]}
    job_spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": completions,
        # Retries are the operator's (a new attempt, a new Job), so it can tell bad input from bad luck.
        "backoffLimit": 0,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": stage, **fail_on}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": _pod_spec(experiment, spec, stage, cmd, extra_env, subdomain),
        },
    }
    if indexed:
        job_spec["completionMode"] = "Indexed"
    if spec.resources.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.resources.ttl_seconds_after_finished
    if suspend or spec.suspend:
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name, namespace, experiment, uid, stage, labels),
        "spec": job_spec,
    }


def render_service(experiment: str, namespace: str, attempt: int = 1, uid: Optional[str] = None) -> dict:
    """Headless Service that gives multi-node train pods stable DNS names for rendezvous."""
    name = service_name(experiment, attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, experiment, uid, "train"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_EXPERIMENT: experiment, LABEL_STAGE: "train", LABEL_ATTEMPT: str(attempt)},
            "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500}],
        },
    }


def stage_work_id(experiment: str, spec: SafetyExperimentSpec, stage: str) -> str:
    from lrm_safety.context import StageContext
    from lrm_safety.reuse import work_id
    from lrm_safety.spec import Experiment

    return work_id(StageContext(Experiment(name=experiment, spec=spec)), stage)


def render_stage(
    experiment: str, namespace: str, spec: SafetyExperimentSpec, stage: str, attempt: int = 1, uid: Optional[str] = None
) -> list[dict]:
    """Everything one stage attempt needs, in creation order."""
    objs = []
    if stage == "train" and spec.train.nodes > 1:
        objs.append(render_service(experiment, namespace, attempt, uid))
    objs.append(render_job(experiment, namespace, spec, stage, attempt, uid))
    return objs


def render_all(experiment: str, namespace: str, spec: SafetyExperimentSpec, uid: Optional[str] = None) -> list[dict]:
    out = [render_configmap(experiment, namespace, spec, uid)]
    for stage in spec.stages:
        out += render_stage(experiment, namespace, spec, stage, 1, uid)
    return out
