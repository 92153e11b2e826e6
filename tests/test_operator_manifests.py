"""Stage manifests as pure functions, validated offline against the Kubernetes schema (strict)."""
import kubernetes_validate
import pytest
import yaml

from lrm_safety.spec import parse_spec
from safety_operator import manifests as m

K8S = "1.32.0"


def _spec(**over):
    base = {"evaluate": {"dataRoot": "s3://b/data"}, "storage": {"uri": "s3://b/exp", "secretRef": {"name": "s3-creds"}}}
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
    assert secret_env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    assert "value" not in secret_env["AWS_SECRET_ACCESS_KEY"]
    assert job["spec"]["backoffLimit"] == 0
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == list(range(1, 128))


def test_gpu_requests_follow_the_spec():
    spec = _spec(teacher={"tensorParallel": 4}, train={"gpusPerNode": 8}, evaluate={"gpus": 2})
    gpus = {s: _container(m.render_job("e", "ns", spec, s))["resources"]["limits"].get("nvidia.com/gpu")
            for s in ("distill", "mix", "train", "evaluate")}
    assert gpus == {"distill": "4", "mix": None, "train": "8", "evaluate": "2"}
    openai = _spec(teacher={"backend": "openai", "endpoint": "http://r1:8000/v1"})
    assert "nvidia.com/gpu" not in _container(m.render_job("e", "ns", openai, "distill"))["resources"]["limits"]


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
        "containerName": "train", "operator": "NotIn", "values": [0]}


def test_scheduling_fields_and_queue_label():
    spec = _spec(resources={"nodeSelector": {"gpu": "h100"}, "priorityClassName": "research",
                            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                            "queue": "team-a", "ttlSecondsAfterFinished": 3600})
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
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "r1-api-key", "key": "api-key"}


def test_cli_render_prints_valid_yaml():
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([sys.executable, "-m", "lrm_safety.cli", "render",
                        str(Path(__file__).resolve().parent.parent / "examples" / "experiment.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["kind"] for d in docs][:2] == ["ConfigMap", "Job"]
