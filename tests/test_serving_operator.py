"""Served models in the real kopf operator against kmock: one server for a study's cells, their Jobs pointed at it,
the server gone after the last stage that needs it plus its idle time, deleted with the study, and a crash-looping
server failing its stage with the container's reason. kmock runs no Deployment controller or kubelet: the tests set
readiness and server pods as they would."""

import json

from kubernetes import client

from kube_harness import wait_for
from test_operator_kmock import NS, cluster, create, finish_job, get, jobs, operator  # noqa: F401 (fixtures)
from test_study_operator import children, study  # noqa: F401

G, V = "lrmsafety.io", "v1alpha1"
TEACHER = {"model": "deepseek-ai/DeepSeek-R1", "serve": {"tensorParallel": 8, "idleSeconds": 2}}


def deployments(cluster):
    apps = client.AppsV1Api(cluster.custom.api_client)
    items = json.loads(apps.list_namespaced_deployment(NS, _preload_content=False).data)["items"]
    return {d["metadata"]["name"]: d for d in items}


def services(cluster):
    return {s.metadata.name for s in cluster.core.list_namespaced_service(NS).items}


def set_ready(cluster, name, ready=1):
    apps = client.AppsV1Api(cluster.custom.api_client)
    apps.patch_namespaced_deployment_status(name, NS, {"status": {"replicas": ready, "readyReplicas": ready}})


def served_study(cluster, name, styles):
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "SafetyStudy",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1", "generation": 1},
        "spec": {
            "base": {
                "stages": ["distill", "mix"],
                "teacher": TEACHER,
                "mix": {"mathCount": 0},
                "evaluate": {"dataRoot": "s3://data"},
                "resources": {"backoffLimit": 0},
            },
            "baseline": False,
            "maxParallel": 3,
            "axes": [{"path": "distill.style", "name": "style", "values": styles}],
        },
    }
    cluster.custom.create_namespaced_custom_object(G, V, NS, "safetystudies", body)


def test_a_study_shares_one_server_which_goes_after_its_last_stage_and_idle_time(cluster, operator):
    served_study(cluster, "sv", ["improved", "short", "realsafe"])
    deps = wait_for(lambda: (d := deployments(cluster)) and len(children(cluster)) == 3 and d, 20, what="server")
    assert len(deps) == 1, "three cells, one served teacher: one Deployment"
    ((name, dep),) = deps.items()
    wait_for(lambda: name in services(cluster), 20, what="the server's Service")
    svc = cluster.core.read_namespaced_service(name, NS)
    assert [(o.kind, o.name) for o in svc.metadata.owner_references] == [("Deployment", name)], "the Deployment's"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "SafetyStudy"
    cells = sorted(children(cluster))
    wait_for(
        lambda: all(
            (get(cluster, c).get("status", {}).get("stages", {}).get("distill", {}).get("waiting") or {}).get("reason")
            == "ServerNotReady"
            for c in cells
        ),
        20,
        what="cells waiting for the server",
    )
    assert not jobs(cluster), "no distill Job before the server is ready"
    users = wait_for(
        lambda: (
            (u := {k for k in deployments(cluster)[name]["metadata"].get("annotations", {}) if k.startswith("users.")})
            and len(u) == 3
            and u
        ),
        20,
        what="three users",
    )
    assert users == {f"users.lrmsafety.io/{c}" for c in cells}
    set_ready(cluster, name)
    for c in cells:
        job = wait_for(lambda c=c: jobs(cluster, c).get(f"{c}-distill-1"), 20, what=f"{c}'s distill Job")
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert json.loads(env["LRM_SAFETY_SERVED_ENDPOINTS"]) == {"teacher": f"http://{name}.{NS}.svc:8000/v1"}
        res = job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        assert "nvidia.com/gpu" not in res, "the teacher's GPUs are the server's"
    status = get(cluster, cells[0])["status"]["servers"][name]
    assert status["readyReplicas"] == 1 and status["stages"] == ["distill"] and status["inUseBy"] == "distill"
    for c in cells[:2]:
        finish_job(cluster, f"{c}-distill-1", summary={"stage": "distill"})
    wait_for(lambda: all(f"{c}-mix-1" in jobs(cluster, c) for c in cells[:2]), 20, what="two mix Jobs")
    assert name in deployments(cluster), "one cell still distills: the server stays"
    finish_job(cluster, f"{cells[2]}-distill-1", summary={"stage": "distill"})
    wait_for(lambda: name not in deployments(cluster), 20, what="the idle server deleted")
    wait_for(lambda: name not in services(cluster), 10, what="its Service deleted after it (kmock has no GC)")


def test_deleting_the_study_removes_its_server(cluster, operator):
    served_study(cluster, "gone", ["improved", "short"])
    name = wait_for(lambda: next(iter(deployments(cluster)), None), 20, what="server")
    cells = wait_for(lambda: (c := children(cluster)) and len(c) == 2 and c, 20, what="cells")
    cluster.custom.delete_namespaced_custom_object(G, V, NS, "safetystudies", "gone")
    for cell in cells:  # the garbage collector's part (kmock has none): the study's cells go with it
        cluster.custom.delete_namespaced_custom_object(G, V, NS, "safetyexperiments", cell)
    wait_for(lambda: name not in deployments(cluster), 20, what="server deleted with the study")
    # The Service belongs to the Deployment: a real garbage collector takes it with it (tests/test_operator_faults.py);
    # kmock has none, so a Service left here must at least be the deleted Deployment's.
    for svc in cluster.core.list_namespaced_service(NS).items:
        assert [(o.kind, o.name) for o in svc.metadata.owner_references] == [("Deployment", name)]


def test_a_crash_looping_server_fails_the_stage_with_its_reason(cluster, operator):
    create(
        cluster,
        "crash",
        {"stages": ["distill", "mix"], "teacher": TEACHER, "mix": {"mathCount": 0}, "resources": {"backoffLimit": 0}},
    )
    name = wait_for(lambda: next(iter(deployments(cluster)), None), 20, what="server")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-abc",
            "namespace": NS,
            "labels": {"lrmsafety.io/server": name, "app.kubernetes.io/name": "lrm-safety"},
        },
        "spec": {"containers": [{"name": "vllm", "image": "x"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "vllm",
                    "image": "x",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": "torch.OutOfMemoryError: CUDA out of memory",
                        }
                    },
                }
            ],
        },
    }
    cluster.core.create_namespaced_pod(NS, pod)
    status = wait_for(
        lambda: (s := get(cluster, "crash").get("status", {})).get("phase") == "Failed" and s,
        20,
        what="the stage failed",
    )
    reason = status["stages"]["distill"]["failures"][0]["reason"]
    assert "CrashLoopBackOff" in reason and "CUDA out of memory" in reason and "timeout" not in reason
    assert not jobs(cluster, "crash"), "no Job was started against a crash-looping server"


def test_the_log_says_a_deletion_only_when_one_happens(cluster, operator, caplog):
    """kopf logged "Handler 'on_experiment_deleted' succeeded" for every experiment event; the handler now runs on
    deletions only, kopf's routine per-event lines are quiet, and the operator says what the deletion did."""
    import logging

    caplog.set_level(logging.INFO)
    create(cluster, "logged", {"stages": ["mix"], "mix": {"safetySource": "s3://d/s.jsonl", "mathCount": 0}})
    wait_for(lambda: "logged-mix-1" in jobs(cluster), 20, what="the mix Job")
    cluster.custom.patch_namespaced_custom_object(G, V, NS, "safetyexperiments", "logged", {"spec": {"suspend": True}})
    wait_for(lambda: jobs(cluster)["logged-mix-1"]["spec"].get("suspend"), 20, what="the Job suspended")
    before = caplog.text
    assert "on_experiment_deleted" not in before and "deleted: releasing" not in before, before[-3000:]
    assert not any(
        "Handler 'on_job_event' succeeded" in r.getMessage() or "Indexer 'stage_jobs' succeeded" in r.getMessage()
        for r in caplog.records
    ), "routine per-event lines are quiet"
    cluster.custom.delete_namespaced_custom_object(G, V, NS, "safetyexperiments", "logged")
    wait_for(lambda: "experiment default/logged deleted: releasing" in caplog.text, 20, what="the deletion logged")
