"""The real kopf operator in a thread against the kmock Kubernetes API emulator.

kmock has no Job controller, so the tests play it: they mark Jobs complete or failed and create the
pod whose termination message carries the stage summary.
"""

import json

import pytest
from kubernetes import client

from kube_harness import EmulatedCluster, OperatorThread, wait_for

NS = "default"
G, V, P = "lrmsafety.io", "v1alpha1", "safetyexperiments"


@pytest.fixture
def cluster():
    with EmulatedCluster() as c:
        cfg = client.Configuration()
        cfg.host = c.url
        api = client.ApiClient(cfg)
        c.custom, c.batch, c.core = client.CustomObjectsApi(api), client.BatchV1Api(api), client.CoreV1Api(api)
        yield c


@pytest.fixture
def operator(cluster):
    op = OperatorThread(cluster.url).start()
    yield op
    op.stop()


def create(cluster, name, spec=None, uid=None):
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "SafetyExperiment",
        # kmock assigns no uid/resourceVersion/generation: the test sets them as the API server would.
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid or f"uid-{name}",
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {"evaluate": {"dataRoot": "s3://data"}, **(spec or {})},
    }
    cluster.custom.create_namespaced_custom_object(G, V, NS, P, body)


def get(cluster, name):
    return cluster.custom.get_namespaced_custom_object(G, V, NS, P, name)


def jobs(cluster, name=None):
    out = json.loads(cluster.batch.list_namespaced_job(NS, _preload_content=False).data)["items"]
    return {
        j["metadata"]["name"]: j
        for j in out
        if name is None or j["metadata"]["labels"]["lrmsafety.io/experiment"] == name
    }


def pod_labels(cluster, job):
    """What the Job controller puts on its pods: the template's labels plus job-name."""
    tmpl = jobs(cluster)[job]["spec"]["template"]["metadata"]["labels"]
    return {**tmpl, "job-name": job, "batch.kubernetes.io/job-name": job}


def finish_job(cluster, job, ok=True, summary=None, reason="BackoffLimitExceeded"):
    """Play the Job controller and kubelet: pod with a termination message, then the Job condition."""
    if ok:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{job}-pod", "namespace": NS, "labels": pod_labels(cluster, job)},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {
                "containerStatuses": [
                    {
                        "name": "c",
                        "image": "x",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "message": json.dumps(summary or {})}},
                    }
                ]
            },
        }
        cluster.core.create_namespaced_pod(NS, pod)
    cond = {"type": "Complete" if ok else "Failed", "status": "True", "reason": "Done" if ok else reason}
    cluster.batch.patch_namespaced_job_status(job, NS, {"status": {"conditions": [cond]}})


def printer_columns(obj) -> dict:
    """What `kubectl get sexp` shows: each printer column's JSON path (simple .a.b.c paths) applied to obj."""
    from lrm_safety.spec.crd import crd

    out = {}
    for col in crd()["spec"]["versions"][0]["additionalPrinterColumns"]:
        value = obj
        for key in col["jsonPath"].strip(".").split("."):
            value = value.get(key) if isinstance(value, dict) else None
        out[col["name"]] = value
    return out


def wait_job(cluster, name, job):
    return wait_for(lambda: jobs(cluster, name).get(job), 20, what=f"Job {job}")


def test_full_pipeline_reaches_succeeded_with_metrics(cluster, operator):
    create(cluster, "full")
    cm = wait_for(lambda: cluster.core.read_namespaced_config_map("full-spec", NS), 20, what="spec ConfigMap")
    assert "kind: SafetyExperiment" in cm.data["experiment.yaml"]
    summaries = {
        "distill": {"stage": "distill", "counts": {"accepted": 1000}},
        "evaluate": {"stage": "evaluate", "metrics": {"asr": 0.07, "overRefusal": 0.12, "mathAccuracy": 0.8}},
    }
    for stage in ("distill", "mix", "train", "evaluate"):
        job = wait_job(cluster, "full", f"full-{stage}-1")
        assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-full"
        # kopf patches status after the handler that created the Job returns: wait for it, do not race it.
        wait_for(lambda stage=stage: get(cluster, "full")["status"]["stage"] == stage, 20, what=f"status.stage {stage}")
        finish_job(cluster, f"full-{stage}-1", summary=summaries.get(stage, {"stage": stage}))
    status = wait_for(
        lambda: (s := get(cluster, "full").get("status", {})).get("phase") == "Succeeded" and s, 20, what="Succeeded"
    )
    assert status["metrics"]["asr"] == 0.07 and status["metrics"]["overRefusal"] == 0.12
    assert printer_columns(get(cluster, "full"))["ASR"] == "7.0%"
    assert status["stages"]["distill"]["summary"]["counts"]["accepted"] == 1000
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert sorted(jobs(cluster, "full")) == ["full-distill-1", "full-evaluate-1", "full-mix-1", "full-train-1"]


def test_charts_worker_image_and_pull_secrets_on_every_stage_job(cluster):
    """An experiment naming no image runs the chart's worker.image (from the operator's env), with its pull secrets;
    one that names an image keeps it."""
    from safety_operator.manifests import WorkerDefaults

    env = {
        "LRM_SAFETY_DEFAULT_WORKER_IMAGE": "registry.example/lrm/worker:9",
        "LRM_SAFETY_WORKER_PULL_SECRETS": "regcred",
    }
    op = OperatorThread(cluster.url, worker=WorkerDefaults.from_env(env)).start()
    try:
        create(cluster, "chart-img")
        # Other distill work: identical work would be claimed by one of the two and waited for by the other.
        create(cluster, "own-img", {"images": {"worker": "mine.example/w:1"}, "distill": {"limit": 7}})
        for stage in ("distill", "mix", "train", "evaluate"):
            job = f"chart-img-{stage}-1"
            pod = wait_job(cluster, "chart-img", job)["spec"]["template"]["spec"]
            assert pod["containers"][0]["image"] == "registry.example/lrm/worker:9", stage
            assert pod["imagePullSecrets"] == [{"name": "regcred"}], stage
            wait_for(
                lambda stage=stage: get(cluster, "chart-img")["status"]["stage"] == stage,
                20,
                what=f"status.stage {stage}",
            )
            finish_job(cluster, job, summary={"stage": stage})
        own = wait_job(cluster, "own-img", "own-img-distill-1")["spec"]["template"]["spec"]
        assert own["containers"][0]["image"] == "mine.example/w:1"
        assert own["imagePullSecrets"] == [{"name": "regcred"}]
    finally:
        op.stop()


def test_failed_job_is_retried_then_reported(cluster, operator):
    create(cluster, "flaky", {"resources": {"backoffLimit": 1, "retryBackoffSeconds": 1}})
    wait_job(cluster, "flaky", "flaky-distill-1")
    finish_job(cluster, "flaky-distill-1", ok=False)  # e.g. OOM-killed: transient
    wait_job(cluster, "flaky", "flaky-distill-2")
    wait_for(lambda: get(cluster, "flaky")["status"]["stages"]["distill"]["attempts"] == 2, 20, what="attempts 2")
    finish_job(cluster, "flaky-distill-2", ok=False)
    status = wait_for(lambda: (s := get(cluster, "flaky")["status"]).get("phase") == "Failed" and s, 20, what="Failed")
    assert status["stages"]["distill"]["state"] == "Failed" and "backoffLimit 1" in status["message"]
    assert sorted(jobs(cluster, "flaky")) == ["flaky-distill-1", "flaky-distill-2"]


def test_invalid_spec_fails_with_the_field_path(cluster, operator):
    create(cluster, "bad", {"train": {"learningRate": -1}, "distill": {"shards": 0}})
    status = wait_for(
        lambda: (s := get(cluster, "bad").get("status", {})).get("phase") == "Failed" and s, 20, what="Failed"
    )
    assert "spec.train.learningRate: must be > 0" in status["message"]
    assert "spec.distill.shards: must be >= 1" in status["message"]
    assert jobs(cluster, "bad") == {}, "no Job may start for an invalid spec"
    # Fixed before any Job started: validated again, and it starts.
    cluster.custom.patch_namespaced_custom_object(
        G, V, NS, P, "bad", {"spec": {"train": {"learningRate": 1e-5}, "distill": {"shards": 2}}}
    )
    wait_job(cluster, "bad", "bad-distill-1")
    status = wait_for(lambda: (s := get(cluster, "bad")["status"]).get("phase") == "Running" and s, 20, what="Running")
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["status"] == "False"
    assert not events(cluster, "bad", "SpecChangeIgnored"), "nothing had started: the change is not ignored"


def test_suspend_and_resume(cluster, operator):
    create(cluster, "pause")
    wait_job(cluster, "pause", "pause-distill-1")
    cluster.custom.patch_namespaced_custom_object(G, V, NS, P, "pause", {"spec": {"suspend": True}})
    wait_for(lambda: jobs(cluster, "pause")["pause-distill-1"]["spec"].get("suspend") is True, 20, what="Job suspended")
    wait_for(lambda: get(cluster, "pause")["status"]["phase"] == "Suspended", 20, what="phase Suspended")
    cluster.custom.patch_namespaced_custom_object(G, V, NS, P, "pause", {"spec": {"suspend": False}})
    wait_for(lambda: jobs(cluster, "pause")["pause-distill-1"]["spec"].get("suspend") is False, 20, what="Job resumed")
    wait_for(lambda: get(cluster, "pause")["status"]["phase"] == "Running", 20, what="phase Running")


def test_restart_mid_stage_creates_no_second_job(cluster):
    op = OperatorThread(cluster.url).start()
    create(cluster, "rs")
    wait_job(cluster, "rs", "rs-distill-1")
    finish_job(cluster, "rs-distill-1")
    wait_job(cluster, "rs", "rs-mix-1")
    op.stop()
    creates_before = sum(1 for _ in jobs(cluster, "rs"))
    op2 = OperatorThread(cluster.url).start()
    try:
        # The new operator resumes, reconciles several times, and must adopt rather than duplicate.
        wait_for(lambda: get(cluster, "rs")["status"]["stage"] == "mix", 10, what="resumed")
        import time

        time.sleep(3)
        assert sorted(jobs(cluster, "rs")) == ["rs-distill-1", "rs-mix-1"] and creates_before == 2
        for stage in ("mix", "train", "evaluate"):
            wait_job(cluster, "rs", f"rs-{stage}-1")
            finish_job(cluster, f"rs-{stage}-1")
        wait_for(lambda: get(cluster, "rs")["status"]["phase"] == "Succeeded", 20, what="Succeeded")
    finally:
        op2.stop()


def events(cluster, name, reason=None):
    items = json.loads(cluster.core.list_namespaced_event(NS, _preload_content=False).data)["items"]
    return [e for e in items if e["involvedObject"]["name"] == name and (reason is None or e["reason"] == reason)]


def add_pod(cluster, job, state, name=None, conditions=None):
    """A stage pod as the kubelet reports it (kmock runs none)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"{job}-x", "namespace": NS, "labels": pod_labels(cluster, job)},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {
            "phase": "Pending",
            "conditions": conditions or [],
            "containerStatuses": [
                {"name": "c", "image": "x", "imageID": "", "ready": False, "restartCount": 0, "state": state}
            ]
            if state
            else [],
        },
    }
    cluster.core.create_namespaced_pod(NS, pod)


def test_waiting_pod_shows_its_reason_then_fails_at_the_start_timeout(cluster, operator):
    create(cluster, "stuck", {"resources": {"startTimeoutSeconds": 3}})
    wait_job(cluster, "stuck", "stuck-distill-1")
    add_pod(
        cluster,
        "stuck-distill-1",
        {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "lrm-safety-s3" not found'}},
    )
    status = wait_for(
        lambda: (s := get(cluster, "stuck")["status"])["stages"]["distill"].get("waiting") and s,
        10,
        what="waiting reason in status",
    )
    assert 'secret "lrm-safety-s3" not found' in status["stages"]["distill"]["waiting"]["message"]
    prog = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert prog["status"] == "False" and prog["reason"] == "CreateContainerConfigError"
    wait_for(lambda: events(cluster, "stuck", "CreateContainerConfigError"), 10, what="a Warning event")
    # After the start timeout the attempt fails; a missing Secret is not worth a retry.
    status = wait_for(lambda: (s := get(cluster, "stuck")["status"]).get("phase") == "Failed" and s, 15, what="Failed")
    assert "start timeout 3s" in status["message"] and "not found" in status["message"]
    assert jobs(cluster, "stuck")["stuck-distill-1"]["spec"]["activeDeadlineSeconds"] == 1, "its pods are stopped"
    assert sorted(jobs(cluster, "stuck")) == ["stuck-distill-1"]
    assert len(events(cluster, "stuck", "CreateContainerConfigError")) == 1, "one event per distinct reason"


def test_bad_input_exit_code_fails_at_once_and_exit_1_is_retried(cluster, operator):
    create(cluster, "codes", {"resources": {"backoffLimit": 3, "retryBackoffSeconds": 1}})
    wait_job(cluster, "codes", "codes-distill-1")
    add_pod(
        cluster,
        "codes-distill-1",
        {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "message": json.dumps(
                    {"stage": "distill", "error": "EndpointConnectionError: Could not connect to the endpoint URL"}
                ),
            }
        },
    )
    finish_job(cluster, "codes-distill-1", ok=False)
    wait_job(cluster, "codes", "codes-distill-2")
    st = wait_for(
        lambda: (d := get(cluster, "codes")["status"]["stages"]["distill"]).get("failures") and d,
        10,
        what="the failed attempt in status",
    )
    assert st["failures"][0]["exitCode"] == 1 and "EndpointConnectionError" in st["failures"][0]["reason"]
    add_pod(
        cluster,
        "codes-distill-2",
        {
            "terminated": {
                "exitCode": 3,
                "reason": "Error",
                "message": json.dumps(
                    {"stage": "distill", "error": "s3://data/prompts.jsonl: NoSuchKey", "permanent": True}
                ),
            }
        },
    )
    finish_job(cluster, "codes-distill-2", ok=False, reason="PodFailurePolicy")
    status = wait_for(lambda: (s := get(cluster, "codes")["status"]).get("phase") == "Failed" and s, 15, what="Failed")
    assert "bad input, not retried" in status["message"] and "NoSuchKey" in status["message"]
    assert sorted(jobs(cluster, "codes")) == ["codes-distill-1", "codes-distill-2"]


def test_forbidden_job_create_sets_a_condition_and_an_event(cluster, operator, monkeypatch):
    """kmock has no admission plugins, so the API's 403 (e.g. OwnerReferencesPermissionEnforcement without
    update on safetyexperiments/finalizers) is raised by the client as the real API server's answer would be."""
    from kubernetes.client import BatchV1Api
    from kubernetes.client.rest import ApiException

    def forbidden(self, namespace, body, **kw):
        e = ApiException(status=403, reason="Forbidden")
        e.body = json.dumps(
            {
                "kind": "Status",
                "status": "Failure",
                "reason": "Forbidden",
                "code": 403,
                "message": 'jobs.batch "deny-distill-1" is forbidden: cannot set blockOwnerDeletion if an '
                "ownerReference refers to a resource you can't set finalizers on",
            }
        )
        raise e

    monkeypatch.setattr(BatchV1Api, "create_namespaced_job", forbidden)
    create(cluster, "deny")
    status = wait_for(
        lambda: (
            (s := get(cluster, "deny").get("status", {}))
            and any(c["type"] == "Degraded" and c["status"] == "True" for c in s.get("conditions", []))
            and s
        ),
        20,
        what="Degraded condition",
    )
    cond = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert cond["reason"] == "ReconcileError" and "403 Forbidden" in cond["message"]
    assert "can't set finalizers on" in cond["message"] and "create Job default/deny-distill-1" in cond["message"]
    wait_for(lambda: events(cluster, "deny", "ReconcileError"), 10, what="a Warning event")
    assert jobs(cluster, "deny") == {}
    monkeypatch.undo()  # RBAC fixed: the next try creates the Job and clears the condition
    wait_job(cluster, "deny", "deny-distill-1")
    wait_for(
        lambda: any(
            c["type"] == "Degraded" and c["status"] == "False" for c in get(cluster, "deny")["status"]["conditions"]
        ),
        20,
        what="Degraded cleared",
    )


def test_restart_after_finished_jobs_were_deleted_runs_no_stage_again(cluster, s3_endpoint, bucket):
    """ttlSecondsAfterFinished removed a finished Job while the operator was down: the store says it finished."""
    from lrm_safety.context import StageContext
    from lrm_safety.spec import Experiment, parse_spec

    spec = {
        "storage": {"uri": f"s3://{bucket}/exps", "endpoint": s3_endpoint},
        "resources": {"ttlSecondsAfterFinished": 0},
    }
    op = OperatorThread(cluster.url).start()
    create(cluster, "ttl", spec)
    wait_job(cluster, "ttl", "ttl-distill-1")
    wait_for(lambda: get(cluster, "ttl")["status"]["stage"] == "distill", 20, what="distill running")
    op.stop()
    # While it is down: the pod finishes the stage (its manifest), the Job completes, the TTL controller deletes it.
    full = parse_spec({"evaluate": {"dataRoot": "s3://data"}, **spec})
    ctx = StageContext(Experiment(name="ttl", namespace=NS, spec=full))
    ctx.store.write_manifest(
        "ttl/distill", stage="distill", config_hash=ctx.hash("distill"), counts={"accepted": 16, "prompts": 16}
    )
    cluster.batch.delete_namespaced_job("ttl-distill-1", NS)
    op2 = OperatorThread(cluster.url).start()
    try:
        wait_job(cluster, "ttl", "ttl-mix-1")
        st = get(cluster, "ttl")["status"]["stages"]["distill"]
        assert st["state"] == "Succeeded" and st["summary"]["counts"]["accepted"] == 16 and "store" in st["message"]
        import time

        time.sleep(2)
        assert sorted(jobs(cluster, "ttl")) == ["ttl-mix-1"], "distill is not run again"
    finally:
        op2.stop()


def test_running_stage_progress_reaches_status_and_the_printer_column(cluster, operator, s3_endpoint, bucket):
    """A stage's progress object (lrm_safety/progress.py) is copied into status within the progress interval, one
    status patch per change and none while it does not change; `-` before the first report."""
    from lrm_safety.progress import ProgressReporter
    from lrm_safety.store import open_store

    create(cluster, "prog", {"storage": {"uri": f"s3://{bucket}/exps", "endpoint": s3_endpoint}})
    wait_job(cluster, "prog", "prog-distill-1")
    assert wait_for(lambda: get(cluster, "prog")["status"].get("progress") == "-", 10, what="'-' before any report")
    # Progress is read only once the stage's pods run (not while they wait to be scheduled).
    cluster.core.create_namespaced_pod(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "prog-distill-1-pod",
                "namespace": NS,
                "labels": pod_labels(cluster, "prog-distill-1"),
            },
            "spec": {"containers": [{"name": "distill", "image": "x"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "distill",
                        "image": "x",
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {}},
                    }
                ],
            },
        },
    )
    wait_for(lambda: get(cluster, "prog")["status"]["stages"]["distill"].get("runningSince"), 10, what="running")
    store = open_store(f"s3://{bucket}/exps", endpoint=s3_endpoint)
    clock = iter([0.0, 0.0, 30.0]).__next__  # start, first report, 4 prompts done 30 s later
    reporter = ProgressReporter(store, "prog/distill", 16, "prompts", part=0, clock=clock)
    reporter.update(0, force=True)
    reporter.update(4, force=True, accepted=3)
    status = wait_for(
        lambda: (s := get(cluster, "prog")["status"]).get("progress", "-") != "-" and s, 10, what="progress in status"
    )
    assert status["progress"] == "distill 4/16 (25%) ETA 1m", "12 prompts left at 4 per 30 s"
    assert status["stages"]["distill"]["progress"]["detail"] == {"accepted": 3}
    import time

    before = len([r for r in cluster.emulator._requests if str(r.url.path).endswith("/prog/status")])
    time.sleep(2)  # four progress intervals, nothing changed
    after = len([r for r in cluster.emulator._requests if str(r.url.path).endswith("/prog/status")])
    assert after == before, "an unchanged progress object costs no API request"
    crd = __import__("lrm_safety.spec.crd", fromlist=["crd"]).crd()
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:3] == ["Phase", "Stage", "Progress"]


def test_without_store_credentials_one_warning_and_a_condition(cluster, monkeypatch, caplog):
    """The operator's store Secret missing: one warning at start naming it, StoreReadable=False on experiments, and
    no store look-ups (so no error per look-up in the log)."""
    import logging

    from safety_operator import controller, store_check

    monkeypatch.setattr(controller, "credentials_available", lambda: False)
    looked = []
    monkeypatch.setattr(controller, "finished_in_store", lambda *a: looked.append(a) or (lambda stage: None))
    caplog.set_level(logging.WARNING, logger="lrm-safety-operator")
    op = OperatorThread(cluster.url, store_secret="my-s3").start()
    try:
        create(cluster, "nocreds", {"storage": {"uri": "s3://b/exps"}})
        cond = wait_for(
            lambda: next(
                (
                    c
                    for c in get(cluster, "nocreds").get("status", {}).get("conditions", [])
                    if c["type"] == "StoreReadable"
                ),
                None,
            ),
            20,
            what="StoreReadable condition",
        )
        assert cond["status"] == "False" and "'my-s3'" in cond["message"]
        warnings = [r.getMessage() for r in caplog.records if "no S3 credentials" in r.getMessage()]
        assert len(warnings) == 1 and "'my-s3'" in warnings[0]
        assert looked == [], "no store look-ups without credentials"
        assert store_check.credentials_available() is True, (
            "the test's env has credentials; only the operator's view was patched"
        )
    finally:
        op.stop()


def test_a_keyword_judged_experiment_shows_a_refusal_rate_and_no_asr(cluster, operator):
    """The keyword matcher measures refusals: `kubectl get sexp` shows no ASR for it, the Refusal column instead,
    and describe names the judges."""
    create(cluster, "kw", {"stages": ["evaluate"], "evaluate": {"dataRoot": "s3://data", "judge": {"kind": "refusal"}}})
    job = wait_job(cluster, "kw", "kw-evaluate-1")
    assert job
    judges = {
        "harm": "the keyword refusal matcher on the answer's opening",
        "overRefusal": "the keyword refusal matcher",
    }
    finish_job(
        cluster,
        "kw-evaluate-1",
        summary={
            "stage": "evaluate",
            "metrics": {"asr": None, "refusalRate": 0.6667, "overRefusal": 0.1, "judges": judges},
        },
    )
    body = wait_for(
        lambda: (b := get(cluster, "kw")).get("status", {}).get("phase") == "Succeeded" and b, 20, what="Succeeded"
    )
    cols = printer_columns(body)
    assert cols["ASR"] is None and cols["Refusal"] == "66.7%" and cols["Over-Refusal"] == "10.0%"
    assert body["status"]["metrics"]["judges"] == judges and "asr" not in body["status"]["metrics"]
