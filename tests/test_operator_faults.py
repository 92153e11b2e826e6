"""Faults on a real control plane (tests/real_kube.py), each scenario asserting no duplicate Job, no lost status, the
right end for the experiment and what the operator's own log saw:

- a served model shared by three experiments: its Service belongs to its Deployment, so deleting users (while they
  wait, while one runs) never takes it from the others; deleted by hand, it comes back; with the last user it goes;
- the API server killed and restarted mid-stage (watches drop and relist; a Job that finished meanwhile is seen);
- etcd killed and restarted mid-stage;
- a stage pod evicted (DisruptionTarget: retried by its Job, not counted against backoffLimit) and one deleted (a
  failed attempt the operator retries, with the reason in status);
- the store refusing writes mid-stage (SeaweedFS restarted with read-only credentials): a one-line transient
  failure, retried, nothing lost or written twice.

The operator runs as the chart's ServiceAccount in a process of its own; stage pods are podrunner's processes
(`instant`: they exit 0 after a few seconds; or real `lrm-safety stage mix` against SeaweedFS)."""

import json
import time

import pytest

from real_kube import start_operator, stop_operator, unavailable, wait_until
from test_operator_real import G, P, V, experiment, jobs, status

pytestmark = [pytest.mark.realkube, pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")]


@pytest.fixture
def operator(real, tmp_path):
    log = tmp_path / "operator.log"
    op = start_operator(real.sa_config, log, LRM_SAFETY_READ_STORE="false")
    op.log = log
    time.sleep(3)  # its watches start
    yield op
    stop_operator(op)


def served_spec(model_dir, seed: int) -> dict:
    """distill only, with the teacher served: distinct work per seed (no claim shared), one server for all."""
    return {
        "stages": ["distill"],
        "resources": {"cpuOnly": True, "retryBackoffSeconds": 2},
        "teacher": {"model": str(model_dir), "serve": {"idleSeconds": 3600}},
        "distill": {"sampling": {"seed": seed}},
        "evaluate": {"dataRoot": "s3://d"},
    }


def deployments(real, ns) -> dict:
    from kubernetes import client

    apps = client.AppsV1Api(real.custom.api_client)
    return {d.metadata.name: d for d in apps.list_namespaced_deployment(ns).items}


def services(real, ns) -> dict:
    return {s.metadata.name: s for s in real.core.list_namespaced_service(ns).items}


def _owners(obj) -> list[tuple[str, str]]:
    return [(o.kind, o.name) for o in obj.metadata.owner_references or []]


def test_a_shared_servers_service_outlives_any_one_of_its_users(real, operator, tmp_path):
    ns = "served"
    real.namespace(ns)
    real.switch("hold", ns)  # no pod runs: the server is not ready, its users wait
    model = tmp_path / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    # user-a makes the server, then two more join it: deleting the first user is the case that lost the Service
    real.custom.create_namespaced_custom_object(G, V, ns, P, experiment("user-a", ns, served_spec(model, 0)))
    server = wait_until(lambda: next(iter(deployments(real, ns)), None), 60, "the server's Deployment")
    for i, name in enumerate(("user-b", "user-c"), start=1):
        real.custom.create_namespaced_custom_object(G, V, ns, P, experiment(name, ns, served_spec(model, i)))
    wait_until(
        lambda: len(deployments(real, ns)[server].metadata.owner_references or []) == 3,
        60,
        "three owners of the Deployment",
    )
    svc = wait_until(lambda: services(real, ns).get(server), 60, "the server's Service")
    assert _owners(svc) == [("Deployment", server)], "the Service belongs to the Deployment, not to a user"
    for name in ("user-a", "user-b", "user-c"):
        wait_until(
            lambda name=name: (
                (status(real, ns, name).get("stages", {}).get("distill", {}).get("waiting") or {}).get("reason")
                == "ServerNotReady"
            ),
            60,
            f"{name} waiting for its server",
        )

    real.custom.delete_namespaced_custom_object(G, V, ns, P, "user-a")  # a user goes while the others wait
    wait_until(
        lambda: _owners(deployments(real, ns)[server]) and len(_owners(deployments(real, ns)[server])) == 2,
        60,
        "user-a's ownership gone from the Deployment",
    )
    time.sleep(4)  # the garbage collector's turn: nothing of the server may go with user-a
    assert server in deployments(real, ns) and server in services(real, ns), "the server outlives user-a"

    old_uid = services(real, ns)[server].metadata.uid
    real.core.delete_namespaced_service(server, ns)  # deleted by hand: the next reconcile of a user makes it again
    back = wait_until(
        lambda: (s := services(real, ns).get(server)) and s.metadata.uid != old_uid and s, 60, "the Service made again"
    )
    assert _owners(back) == [("Deployment", server)]

    real.unswitch("hold")
    real.switch("instant", f"6 {ns}")  # stage pods run 6 s; the server pod runs the stand-in vllm
    made = {}
    for name in ("user-b", "user-c"):
        job = wait_until(lambda name=name: jobs(real, ns).get(f"{name}-distill-1"), 90, f"{name}'s distill Job")
        made[name] = (job, set(services(real, ns)))
    for name, (job, svcs) in made.items():
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        endpoint = json.loads(env["LRM_SAFETY_SERVED_ENDPOINTS"])["teacher"]
        assert endpoint == f"http://{server}.{ns}.svc:8000/v1" and server in svcs, (name, endpoint, svcs)
    real.custom.delete_namespaced_custom_object(G, V, ns, P, "user-c")  # a user goes while another's stage runs
    st = wait_until(
        lambda: (s := status(real, ns, "user-b")).get("phase") in ("Succeeded", "Failed") and s, 90, "user-b to finish"
    )
    assert st["phase"] == "Succeeded", st.get("message")
    assert server in services(real, ns) and server in deployments(real, ns), "still there for a later stage"
    assert list(jobs(real, ns)) == ["user-b-distill-1"], "nothing ran twice"

    real.custom.delete_namespaced_custom_object(G, V, ns, P, "user-b")  # the last user: the server goes
    wait_until(
        lambda: server not in deployments(real, ns) and server not in services(real, ns),
        60,
        "the Deployment and its Service gone with their last user",
    )
    text = operator.log.read_text()
    assert f"experiment {ns}/user-a deleted" in text and f"server {ns}/{server}: its last owner" in text, text[-3000:]
    assert "Handler 'on_experiment_deleted' succeeded" not in text


def quick_spec(**resources) -> dict:
    return {"resources": {"cpuOnly": True, "retryBackoffSeconds": 1, **resources}, "evaluate": {"dataRoot": "s3://d"}}


def running_pod(real, ns, job):
    pods = real.core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items
    return next(
        (p.metadata.name for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp), None
    )


def finished(real, ns, name, timeout):
    return wait_until(
        lambda: (s := status(real, ns, name)).get("phase") in ("Succeeded", "Failed") and s,
        timeout,
        f"{name} to finish",
    )


def one_job_per_stage(real, ns, name) -> None:
    made = sorted(jobs(real, ns))
    assert made == sorted(f"{name}-{s}-1" for s in ("distill", "mix", "train", "evaluate")), made


def operator_relisted(real, since: int) -> list[str]:
    """The operator's LISTs (not watches) after `since`: what it does to start a watch afresh."""
    return [e["requestURI"] for e in real.audit(since) if real.sa in e["user"]["username"] and e["verb"] == "list"]


@pytest.mark.parametrize("component", ["apiserver", "etcd"])
def test_a_control_plane_restart_mid_stage_loses_nothing_and_runs_nothing_twice(real, operator, component):
    """The API server (or etcd) killed while distill's pod runs, etcd's history compacted meanwhile (the operator's
    watches come back to 410 Gone and list afresh), the pod finishing while the API is down; restarted. The Job that
    finished meanwhile is seen, each stage runs once, status keeps every stage."""
    ns = f"restart-{component}"
    real.namespace(ns)
    real.switch("instant", f"5 {ns}")
    real.custom.create_namespaced_custom_object(G, V, ns, P, experiment("r", ns, quick_spec()))
    wait_until(lambda: running_pod(real, ns, "r-distill-1"), 60, "distill's pod running")
    mark = real.audit_mark()
    started = time.monotonic()
    real.kill(component)
    if component == "apiserver":
        real.compact_etcd()
    time.sleep(7)  # the pod ends while the API is gone: podrunner posts its end once it is back
    real.restart_missing()
    st = finished(real, ns, "r", 300)
    took = time.monotonic() - started
    assert st["phase"] == "Succeeded", st.get("message")
    one_job_per_stage(real, ns, "r")
    assert all(
        st["stages"][s]["attempts"] == 1 and not st["stages"][s].get("failures")
        for s in ("distill", "mix", "train", "evaluate")
    ), st["stages"]
    text = operator.log.read_text()
    assert f"[{ns}/r] Normal StageStarted: distill: Job r-distill-1 succeeded" in text, "it saw the Job finish"
    if component == "apiserver":  # its watches failed to connect, retried, then listed afresh (410 Gone)
        assert "Request attempt" in text and "failed; will retry" in text, "the operator's log shows the outage"
        relisted = operator_relisted(real, mark)
        assert any("safetyexperiments" in u for u in relisted) and any("/jobs" in u for u in relisted), relisted
    else:  # the API server keeps the watches open and answers from its cache: nothing failed to report
        assert "ReconcileError" not in text and "Traceback" not in text
    print(f"{component} restart: Succeeded {took:.0f} s after the kill")


def test_an_evicted_pod_is_retried_by_its_job_and_a_deleted_one_by_the_operator(real, operator):
    """Eviction (the API server marks the pod DisruptionTarget): the Job's podFailurePolicy ignores it and runs
    another pod, the attempt goes on, status records the disruption. A pod deleted outright (SIGTERM, exit 143):
    the attempt fails, is retried under backoffLimit, and status says why."""
    ns = "disrupt"
    real.namespace(ns)
    real.switch("instant", f"6 {ns}")
    real.custom.create_namespaced_custom_object(G, V, ns, P, experiment("d", ns, quick_spec(backoffLimit=2)))
    pod = wait_until(lambda: running_pod(real, ns, "d-distill-1"), 60, "distill's pod running")
    real.evict(ns, pod)
    seen = wait_until(
        lambda: status(real, ns, "d").get("stages", {}).get("distill", {}).get("disruptions"),
        30,
        "the eviction in status",
    )
    assert seen[0]["pod"] == pod and seen[0]["reason"] == "EvictionByEvictionAPI", seen
    pod = wait_until(lambda: running_pod(real, ns, "d-mix-1"), 90, "mix's pod running")
    real.core.delete_namespaced_pod(pod, ns)
    st = finished(real, ns, "d", 180)
    assert st["phase"] == "Succeeded", st.get("message")
    distill, mix = st["stages"]["distill"], st["stages"]["mix"]
    assert distill["attempts"] == 1 and not distill.get("failures"), distill
    assert mix["attempts"] == 2 and len(mix["failures"]) == 1, mix
    assert mix["failures"][0]["exitCode"] == 143 and "SIGTERM" in mix["failures"][0]["reason"], mix["failures"]
    assert sorted(jobs(real, ns)) == ["d-distill-1", "d-evaluate-1", "d-mix-1", "d-mix-2", "d-train-1"]
    events = real.core.list_namespaced_event(ns, field_selector="involvedObject.name=d").items
    assert any(e.reason == "PodDisrupted" for e in events), [e.reason for e in events]
    assert f"stage pod {seen[0]['pod']} EvictionByEvictionAPI" in operator.log.read_text()


FULL = {
    "identities": [
        {
            "name": "lab",
            "credentials": [{"accessKey": "test", "secretKey": "test"}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
}
READ_ONLY = {
    "identities": [
        {"name": "lab", "credentials": [{"accessKey": "test", "secretKey": "test"}], "actions": ["Read", "List"]}
    ]
}


def test_a_store_that_refuses_writes_mid_stage_fails_transient_and_loses_nothing(real, operator, tmp_path):
    """SeaweedFS restarted with read-only credentials (a full bucket or a quota, as the stage sees it): a real
    `lrm-safety stage mix` reads its input, then its first write is refused. The attempt fails with a one-line
    reason, is retried as transient, and once writes are allowed again the retry writes the mixture once."""
    import boto3

    from conftest import Seaweed
    from lrm_safety.store import open_store

    config = tmp_path / "s3.json"
    config.write_text(json.dumps(FULL))
    (tmp_path / "weed").mkdir()
    weed = Seaweed(tmp_path / "weed", s3_config=config).start()
    try:
        s3 = boto3.client("s3", endpoint_url=weed.endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="quota")
        rows = [{"prompt": f"p{i}", "response": f"<think>t{i}</think> r{i}"} for i in range(6)]
        s3.put_object(Bucket="quota", Key="data/safety.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows))
        weed.stop()
        config.write_text(json.dumps(READ_ONLY))
        weed.start()
        ns = "full-store"
        real.namespace(ns)
        real.unswitch("instant")
        real.kubectl(
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            "s3",
            "--from-literal=AWS_ACCESS_KEY_ID=test",
            "--from-literal=AWS_SECRET_ACCESS_KEY=test",
            check=False,
        )
        spec = {
            "stages": ["mix"],
            "storage": {"uri": "s3://quota/exps", "endpoint": weed.endpoint, "secretRef": {"name": "s3"}},
            "mix": {"safetySource": "s3://quota/data/safety.jsonl", "safetyCount": 6, "mathCount": 0},
            "resources": {"cpuOnly": True, "retryBackoffSeconds": 15, "backoffLimit": 2},
            "evaluate": {"dataRoot": "s3://quota/bench"},
        }
        real.custom.create_namespaced_custom_object(G, V, ns, P, experiment("q", ns, spec))
        failed = wait_until(
            lambda: (f := status(real, ns, "q").get("stages", {}).get("mix", {}).get("failures")) and f,
            120,
            "the refused write to fail the attempt",
        )
        reason = failed[0]["reason"]
        assert "AccessDenied" in reason and "\n" not in reason and not failed[0]["permanent"], failed
        weed.stop()
        config.write_text(json.dumps(FULL))
        weed.start()
        st = finished(real, ns, "q", 180)
        assert st["phase"] == "Succeeded" and st["stages"]["mix"]["attempts"] == 2, st
        assert sorted(jobs(real, ns)) == ["q-mix-1", "q-mix-2"]
        store = open_store("s3://quota/exps", endpoint=weed.endpoint)
        mixture = [json.loads(line) for line in store.read_bytes("q/mix/train.jsonl").decode().splitlines()]
        assert len(mixture) == 6 and len({json.dumps(r, sort_keys=True) for r in mixture}) == 6, "each row once"
        assert store.read_manifest("q/mix") is not None
        leftovers = [k for k in store.list("q/") if k.endswith((".tmp", ".partial")) or "/tmp" in k]
        assert not leftovers, leftovers
    finally:
        if weed.proc.poll() is None:
            weed.stop()
