"""The operator's decision function: status transitions, retries, suspend, conditions, events."""
import json

from safety_operator.status import decide, job_state, parse_termination_message


def _body(status=None, **spec):
    return {"metadata": {"name": "e", "namespace": "ns", "uid": "u", "generation": 3},
            "spec": {"evaluate": {"dataRoot": "/d"}, **spec}, "status": status or {}}


def _done(job, reason=None, ok=True):
    cond = {"type": "Complete" if ok else "Failed", "status": "True"}
    if reason:
        cond["reason"] = reason
    return {**job, "status": {"conditions": [cond]}}


def _names(objs, kind="Job"):
    return [o["metadata"]["name"] for o in objs if o["kind"] == kind]


def _cond(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_first_reconcile_creates_configmap_and_first_job():
    acts = decide(_body(), {}, {})
    assert [o["kind"] for o in acts.create] == ["ConfigMap", "Job"]
    assert _names(acts.create) == ["e-distill-1"]
    s = acts.status
    assert s["phase"] == "Running" and s["stage"] == "distill" and s["observedGeneration"] == 3
    assert s["stages"]["distill"] == {"state": "Running", "attempts": 1, "jobName": "e-distill-1",
                                      "startedAt": s["stages"]["distill"]["startedAt"], "message": None}
    assert _cond(s, "Progressing")["status"] == "True" and _cond(s, "Ready")["status"] == "False"
    assert ("Normal", "StageStarted", "distill: created Job e-distill-1 (attempt 1)") in acts.events


def test_running_job_changes_nothing():
    first = decide(_body(), {}, {})
    again = decide(_body(first.status), {"e-distill-1": first.create[1]}, {})
    assert again.create == [] and again.status == {} and again.events == []


def test_success_moves_to_next_stage_and_copies_summary():
    first = decide(_body(), {}, {})
    job = _done(first.create[1])
    msg = json.dumps({"stage": "distill", "counts": {"accepted": 9}})
    acts = decide(_body(first.status), {"e-distill-1": job}, {"e-distill-1": "log line\n" + msg})
    s = acts.status
    assert s["stages"]["distill"]["state"] == "Succeeded" and s["stages"]["distill"]["summary"]["counts"] == {"accepted": 9}
    assert s["stages"]["distill"]["artifactUri"] == "file://./artifacts/e/distill"
    assert _names(acts.create) == ["e-mix-1"] and s["stage"] == "mix"


def test_full_pipeline_ends_succeeded_with_metrics():
    body, jobs = _body(), {}
    summaries = {"evaluate": {"stage": "evaluate", "metrics": {"asr": 0.06, "overRefusal": 0.1, "mathAccuracy": 0.5,
                                                              "benchmarks": {"advbench": {"base": 0.8}}}}}
    for stage in ("distill", "mix", "train", "evaluate"):
        acts = decide(body, jobs, {})
        body["status"] = acts.status or body["status"]
        job = next(o for o in acts.create if o["kind"] == "Job")
        jobs[job["metadata"]["name"]] = _done(job)
        msgs = {job["metadata"]["name"]: json.dumps(summaries.get(stage, {"stage": stage}))}
        final = decide(body, jobs, msgs)
        body["status"] = final.status or body["status"]
    s = body["status"]
    assert s["phase"] == "Succeeded" and s["stage"] is None
    assert s["metrics"]["asr"] == 0.06 and s["metrics"]["overRefusal"] == 0.1
    assert _cond(s, "Ready")["status"] == "True" and _cond(s, "Failed")["status"] == "False"
    assert decide(body, jobs, {}).status == {}, "a finished experiment is left alone"


def test_transient_failure_retries_then_fails():
    body = _body(resources={"backoffLimit": 1})
    acts = decide(body, {}, {})
    body["status"] = acts.status
    failed = _done(acts.create[1], reason="BackoffLimitExceeded", ok=False)
    retry = decide(body, {"e-distill-1": failed}, {})
    assert _names(retry.create) == ["e-distill-2"] and retry.status["stages"]["distill"]["attempts"] == 2
    assert any(e[1] == "StageRetry" for e in retry.events)
    body["status"] = retry.status
    failed2 = _done(retry.create[0], reason="BackoffLimitExceeded", ok=False)
    final = decide(body, {"e-distill-1": failed, "e-distill-2": failed2}, {})
    assert final.create == [] and final.status["phase"] == "Failed"
    assert final.status["stages"]["distill"]["state"] == "Failed"
    assert _cond(final.status, "Failed")["reason"] == "StageFailed"
    assert "backoffLimit 1" in final.status["message"]


def test_permanent_failure_is_not_retried():
    body = _body()
    acts = decide(body, {}, {})
    body["status"] = acts.status
    failed = _done(acts.create[1], reason="PodFailurePolicy", ok=False)
    final = decide(body, {"e-distill-1": failed}, {})
    assert final.create == [] and final.status["phase"] == "Failed"
    assert "permanent failure" in final.status["message"]


def test_invalid_spec_fails_with_field_path():
    acts = decide(_body(train={"learningRate": -1}), {}, {})
    assert acts.create == [] and acts.status["phase"] == "Failed"
    assert "spec.train.learningRate: must be > 0" in acts.status["message"]
    assert _cond(acts.status, "Failed")["reason"] == "InvalidSpec"


def test_suspend_and_resume():
    body = _body()
    acts = decide(body, {}, {})
    body["status"] = acts.status
    job = acts.create[1]
    body["spec"]["suspend"] = True
    s = decide(body, {"e-distill-1": job}, {})
    assert s.patch_jobs == [("e-distill-1", {"spec": {"suspend": True}})]
    assert s.status["phase"] == "Suspended" and _cond(s.status, "Suspended")["status"] == "True"
    body["status"] = s.status
    job = {**job, "spec": {**job["spec"], "suspend": True}}
    body["spec"]["suspend"] = False
    r = decide(body, {"e-distill-1": job}, {})
    assert r.patch_jobs == [("e-distill-1", {"spec": {"suspend": False}})]
    assert r.status["phase"] == "Running" and _cond(r.status, "Suspended")["status"] == "False"
    assert any(e[1] == "Resumed" for e in r.events)


def test_kueue_owns_unsuspend():
    body = _body(resources={"queue": "q"})
    acts = decide(body, {}, {})
    body["status"] = acts.status
    job = {**acts.create[1], "spec": {**acts.create[1]["spec"], "suspend": True}}
    assert decide(body, {"e-distill-1": job}, {}).patch_jobs == []


def test_lost_job_is_recreated_with_the_same_name():
    body = _body()
    body["status"] = decide(body, {}, {}).status
    acts = decide(body, {}, {})
    assert _names(acts.create) == ["e-distill-1"], "same deterministic name: the API answers 409 if it exists"


def test_job_state_and_termination_message():
    assert job_state(None) == "missing"
    assert job_state({"spec": {"suspend": True}}) == "suspended"
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "succeeded"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) == "running"
    assert parse_termination_message('noise\n{"a": 1}\n') == {"a": 1}
    assert parse_termination_message("not json") == {}


def test_operator_default_worker_image_applies_only_when_spec_names_none():
    acts = decide(_body(), {}, {}, default_image="registry.local/worker:7")
    assert acts.create[1]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/worker:7"
    own = decide(_body(images={"worker": "mine:1"}), {}, {}, default_image="registry.local/worker:7")
    assert own.create[1]["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:1"
