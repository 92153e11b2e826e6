"""Stage manifests as pure functions, validated offline against the Kubernetes schema (strict)."""

import json

import kubernetes_validate
import pytest
import yaml

from lrm_safety.spec import parse_spec
from safety_operator import manifests as m

K8S = "1.32.0"


def _spec(**over):
    base = {
        "evaluate": {"dataRoot": "s3://b/data"},
        "storage": {"uri": "s3://b/exp", "secretRef": {"name": "s3-creds"}},
    }
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v}
    return parse_spec(base)


def _valid(obj):
    kubernetes_validate.validate(obj, K8S, strict=True)
    return obj


def _container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("stage", ["distill", "mix", "train", "evaluate"])
def test_every_stage_job_is_valid_and_safe(stage):
    job = _valid(m.render_job("exp1", "research", _spec(), stage, attempt=1, uid="u-1"))
    meta = job["metadata"]
    assert meta["name"] == f"exp1-{stage}-1"
    assert meta["labels"]["lrmsafety.io/experiment"] == "exp1" and meta["labels"]["lrmsafety.io/stage"] == stage
    assert meta["ownerReferences"][0]["uid"] == "u-1" and meta["ownerReferences"][0]["controller"] is True
    c = _container(job)
    assert c["command"][:3] == ["lrm-safety", "stage", stage]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["runAsNonRoot"] is True
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    # Credentials only through secretKeyRef, never as literal values.
    secret_env = {e["name"]: e for e in c["env"] if e["name"].startswith("AWS_")}
    assert secret_env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert "value" not in secret_env["AWS_SECRET_ACCESS_KEY"]
    assert job["spec"]["backoffLimit"] == 0
    assert pod["automountServiceAccountToken"] is False, "stage pods never call the API"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LRM_SAFETY_TERMINATION_LOG"] == "/dev/termination-log" and env["LRM_SAFETY_SCRATCH"] == "/scratch"
    assert {"name": "cache", "emptyDir": {}} in pod["volumes"] and {"name": "scratch", "emptyDir": {}} in pod["volumes"]


def test_pod_failure_policy_fails_at_once_only_on_the_bad_input_exit_code():
    """Exit 3 is the worker's bad input; 1 (any Python exception), 137 (OOM kill) and the rest are retried."""
    from lrm_safety.errors import BAD_INPUT_EXIT

    rules = m.render_job("e", "ns", _spec(), "mix")["spec"]["podFailurePolicy"]["rules"]
    fail_on = rules[0]["onExitCodes"]
    assert (
        rules[0]["action"] == "FailJob" and fail_on["operator"] == "In" and fail_on["values"] == [BAD_INPUT_EXIT] == [3]
    )

    def fails_at_once(code):  # the Job controller's rule matching, for one container's exit code
        return fail_on["operator"] == "In" and code in fail_on["values"]

    assert fails_at_once(3) and not fails_at_once(1) and not fails_at_once(137) and not fails_at_once(2)
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def _gpus(spec):
    return {
        s: _container(m.render_job("e", "ns", spec, s))["resources"]["limits"].get("nvidia.com/gpu")
        for s in ("distill", "mix", "train", "evaluate")
    }


def test_gpu_requests_follow_the_backend():
    assert _gpus(_spec(teacher={"tensorParallel": 4}, train={"gpusPerNode": 8})) == {
        "distill": "4",
        "mix": None,
        "train": "8",
        "evaluate": "1",
    }
    openai = _spec(teacher={"backend": "openai", "endpoint": "http://r1:8000/v1"})
    assert _gpus(openai)["distill"] is None, "an endpoint teacher needs no GPU in the pod"
    assert _gpus(_spec(teacher={"backend": "transformers"}))["distill"] == "1"


def test_cpu_only_and_per_stage_compute():
    assert set(_gpus(_spec(resources={"cpuOnly": True})).values()) == {None}, "a CPU-only cluster can schedule them"
    spec = _spec(
        resources={
            "evaluate": {"gpus": 2, "cpu": "16", "memory": "200Gi"},
            "mix": {"memory": "4Gi"},
            "gpuResource": "amd.com/gpu",
        }
    )
    ev = _container(_valid(m.render_job("e", "ns", spec, "evaluate")))["resources"]
    assert ev == {
        "requests": {"cpu": "16", "memory": "200Gi", "amd.com/gpu": "2"},
        "limits": {"memory": "200Gi", "amd.com/gpu": "2"},
    }
    assert _container(m.render_job("e", "ns", spec, "mix"))["resources"]["requests"] == {"cpu": "8", "memory": "4Gi"}
    assert m.stage_compute(spec, "train") == {"gpus": 1, "cpu": "8", "memory": "64Gi"}


def test_per_stage_gpu_overrides_that_contradict_the_spec_are_rejected():
    from lrm_safety.spec import SpecError

    with pytest.raises(SpecError, match="resources.train.gpus .2. must equal train.gpusPerNode .1."):
        _spec(resources={"train": {"gpus": 2}})
    with pytest.raises(SpecError, match="below teacher.tensorParallel"):
        _spec(resources={"distill": {"gpus": 2}}, teacher={"tensorParallel": 4})


def test_each_stage_gets_only_the_secrets_it_reads():
    spec = _spec(
        teacher={"backend": "openai", "endpoint": "http://r1/v1", "apiKeySecretRef": {"name": "r1-key"}},
        evaluate={
            "judge": {"kind": "llm", "model": "j", "endpoint": "http://judge/v1", "apiKeySecretRef": {"name": "j-key"}},
            "overRefusalJudge": {"endpoint": "http://xs/v1", "apiKeySecretRef": {"name": "xs-key"}},
        },
    )
    secrets = {
        stage: sorted(
            e["valueFrom"]["secretKeyRef"]["name"] + ":" + e["name"]
            for e in _container(m.render_job("e", "ns", spec, stage))["env"]
            if "valueFrom" in e
        )
        for stage in ("distill", "mix", "train", "evaluate")
    }
    storage = ["s3-creds:AWS_ACCESS_KEY_ID", "s3-creds:AWS_SECRET_ACCESS_KEY"]
    assert secrets == {
        "distill": sorted(storage + ["r1-key:OPENAI_API_KEY"]),
        "mix": storage,
        "train": storage,
        "evaluate": sorted(
            storage + ["j-key:LRM_SAFETY_JUDGE_API_KEY", "xs-key:LRM_SAFETY_OVER_REFUSAL_JUDGE_API_KEY"]
        ),
    }


def test_pair_attacker_key_reaches_only_the_evaluate_pod():
    spec = _spec(
        evaluate={
            "benchmarks": [{"name": "advbench-pair"}],
            "pair": {
                "attacker": {
                    "model": "m",
                    "endpoint": "http://a/v1",
                    "apiKeySecretRef": {"name": "att", "accessKeyKey": "k"},
                },
                "judge": {
                    "model": "j",
                    "endpoint": "http://j/v1",
                    "apiKeySecretRef": {"name": "pj", "accessKeyKey": "k"},
                },
            },
        }
    )
    env = {e["name"]: e for e in _container(m.render_job("e", "ns", spec, "evaluate"))["env"]}
    assert env["LRM_SAFETY_PAIR_ATTACKER_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "att", "key": "k"}
    assert env["LRM_SAFETY_PAIR_JUDGE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "pj", "key": "k"}
    assert "LRM_SAFETY_PAIR_ATTACKER_API_KEY" not in {
        e["name"] for e in _container(m.render_job("e", "ns", spec, "train"))["env"]
    }


def test_tracker_credentials_reach_the_train_pod_from_secrets_only():
    spec = _spec(
        train={
            "reportTo": ["tensorboard", "wandb"],
            "reportEnv": [{"name": "WANDB_API_KEY", "secretName": "wandb", "key": "api-key"}],
        }
    )
    env = {e["name"]: e for e in _container(_valid(m.render_job("e", "ns", spec, "train")))["env"]}
    assert env["WANDB_API_KEY"] == {
        "name": "WANDB_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
    }
    assert "WANDB_API_KEY" not in {e["name"] for e in _container(m.render_job("e", "ns", spec, "evaluate"))["env"]}


def test_model_cache_pvc_replaces_the_per_pod_cache():
    job = _valid(m.render_job("e", "ns", _spec(resources={"modelCache": "models-rwx"}), "train"))
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["cache"] == {"name": "cache", "persistentVolumeClaim": {"claimName": "models-rwx"}}
    assert vols["scratch"] == {"name": "scratch", "emptyDir": {}}, "checkpoints stay node-local"


def test_distill_is_an_indexed_job_over_shards():
    job = _valid(m.render_job("e", "ns", _spec(distill={"shards": 8}), "distill"))
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 8
    assert _container(job)["command"][-2:] == ["--num-shards", "8"]


def test_single_node_train_is_one_pod():
    job = m.render_job("e", "ns", _spec(train={"gpusPerNode": 4}), "train")
    assert job["spec"]["completions"] == 1 and "completionMode" not in job["spec"]
    assert [o["kind"] for o in m.render_stage("e", "ns", _spec(), "train")] == ["Job"]


def test_multi_node_train_is_indexed_with_headless_service():
    spec = _spec(train={"nodes": 4, "gpusPerNode": 8})
    svc, job = m.render_stage("e", "ns", spec, "train", attempt=2, uid="u")
    _valid(svc), _valid(job)
    assert svc["kind"] == "Service" and svc["spec"]["clusterIP"] == "None" and svc["metadata"]["name"] == "e-train-2"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "e-train-2"
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert env["MASTER_ADDR"] == "e-train-2-0.e-train-2.ns.svc" and env["NNODES"] == "4"
    assert svc["spec"]["selector"]["lrmsafety.io/attempt"] == "2"
    # One failed worker fails the attempt: no partial NCCL world left hanging.
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"] == {
        "containerName": "train",
        "operator": "NotIn",
        "values": [0],
    }


def test_scheduling_fields_and_queue_label():
    spec = _spec(
        resources={
            "nodeSelector": {"gpu": "h100"},
            "priorityClassName": "research",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "queue": "team-a",
            "ttlSecondsAfterFinished": 3600,
        }
    )
    job = _valid(m.render_job("e", "ns", spec, "train"))
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["priorityClassName"] == "research"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_suspend_renders_suspended_job():
    assert m.render_job("e", "ns", _spec(), "mix")["spec"].get("suspend") is None
    spec = parse_spec({"evaluate": {"dataRoot": "/d"}, "suspend": True})
    assert m.render_job("e", "ns", spec, "mix")["spec"]["suspend"] is True


def test_configmap_carries_a_loadable_spec(tmp_path):
    from lrm_safety.spec import Experiment

    cm = _valid(m.render_configmap("e", "ns", _spec(distill={"style": "short"}), uid="u"))
    (tmp_path / "x.yaml").write_text(cm["data"]["experiment.yaml"])
    exp = Experiment.load(str(tmp_path / "x.yaml"))
    assert exp.name == "e" and exp.spec.distill.style == "short"


def test_render_all_for_the_paper_example():
    from pathlib import Path

    from lrm_safety.spec import Experiment

    exp = Experiment.load(str(Path(__file__).resolve().parent.parent / "examples" / "experiment.yaml"))
    objs = m.render_all(exp.name, exp.namespace, exp.spec, uid="u")
    assert [o["kind"] for o in objs] == ["ConfigMap", "Job", "Job", "Job", "Job"]
    for o in objs:
        _valid(o)
    env = {e["name"]: e for e in _container(objs[1])["env"]}
    # the served teacher: its Service's endpoint, no API key to deploy, no GPU in the distill pod
    from lrm_safety.serving import served as serving

    teacher = serving.served(exp.spec, "distill")[0]
    assert json.loads(env[serving.ENDPOINTS_ENV]["value"]) == {"teacher": teacher.endpoint("research")}
    assert "nvidia.com/gpu" not in _container(objs[1])["resources"]["requests"]


def test_cli_render_prints_valid_yaml():
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrm_safety.cli",
            "render",
            str(Path(__file__).resolve().parent.parent / "examples" / "experiment.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["kind"] for d in docs][:2] == ["ConfigMap", "Job"]
    # Per-stage compute and secrets, in a comment header: an endpoint teacher needs no GPU in its pod.
    assert "#   distill   gpus 0 (nvidia.com/gpu), cpu 8, memory 64Gi; secrets: lrm-safety-s3" in r.stdout
    assert [d["kind"] for d in docs].count("Deployment") == 3, "the served teacher, guard and PAIR attacker"
    assert "# server serve-deepseek-r1-" in r.stdout and "1 x 8 GPU(s), tensorParallel 8" in r.stdout
    assert "#   train     gpus 4 (nvidia.com/gpu)" in r.stdout and "#   mix       gpus 0" in r.stdout
    quick = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrm_safety.cli",
            "render",
            str(Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert quick.returncode == 0 and "gpus 1" not in quick.stdout and "nvidia.com/gpu:" not in quick.stdout


def test_cli_render_uses_the_operators_worker_defaults():
    """`render` shows what the operator would create: the chart's image and pull secrets (same env) when the spec
    names none, else the documented default; a spec's own image always wins."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "experiment.yaml"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LRM_SAFETY_")}

    def jobs(env):
        r = subprocess.run(
            [sys.executable, "-m", "lrm_safety.cli", "render", str(example)],
            capture_output=True,
            text=True,
            env={**base_env, **env},
        )
        assert r.returncode == 0, r.stderr
        return r.stdout, [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Job"]

    out, default = jobs({})
    from lrm_safety.spec import DEFAULT_WORKER_IMAGE

    assert {_container(j)["image"] for j in default} == {DEFAULT_WORKER_IMAGE}
    assert f"worker image {DEFAULT_WORKER_IMAGE} (the default" in out
    out, charted = jobs(
        {"LRM_SAFETY_DEFAULT_WORKER_IMAGE": "registry.example/w:3", "LRM_SAFETY_WORKER_PULL_SECRETS": "regcred"}
    )
    assert len(charted) == 4 and {_container(j)["image"] for j in charted} == {"registry.example/w:3"}
    assert all(j["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}] for j in charted)
    spec = parse_spec({"images": {"worker": "mine:1"}, "evaluate": {"dataRoot": "/d"}})
    own = m.WorkerDefaults(image="registry.example/w:3").apply(spec)
    assert own.images.worker == "mine:1"
