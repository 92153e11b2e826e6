"""The operator's decision function: status transitions, retries by exit code, waiting pods, start timeouts,
finished stages whose Jobs are gone, suspend, conditions, events. Pure: no cluster, time passed in."""

import datetime as dt
import json

import pytest

from safety_operator.pods import combine_summaries, failure, parse_termination_message, waiting_reason
from safety_operator.status import Observed, decide, job_state, retry_delay

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _body(status=None, **spec):
    """No retry backoff unless a test sets one."""
    resources = {"retryBackoffSeconds": 0, **spec.pop("resources", {})}
    return {
        "metadata": {"name": "e", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": {"evaluate": {"dataRoot": "/d"}, "resources": resources, **spec},
        "status": status or {},
    }


def _obs(body, jobs=None, pods=None, at=0, store=None):
    return Observed(
        body=body,
        jobs=jobs or {},
        pods=pods or {},
        now=T0 + dt.timedelta(seconds=at),
        finished_in_store=(store or {}).get,
    )


def _done(job, reason=None, ok=True, message=None):
    cond = {"type": "Complete" if ok else "Failed", "status": "True"}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return {**job, "status": {"conditions": [cond]}}


def _pod(name, exit_code=None, message=None, waiting=None, unschedulable=None, running=False, reason="Error"):
    state = {}
    if exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else reason,
                "message": message or "",
            }
        }
    elif waiting:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    elif running:
        state = {"running": {"startedAt": "x"}}
    conds = (
        [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}]
        if unschedulable
        else []
    )
    return {
        "metadata": {"name": name, "labels": {}},
        "status": {
            "phase": "Running" if running else ("Failed" if exit_code else "Pending"),
            "conditions": conds,
            "containerStatuses": [{"name": "c", "state": state}] if state else [],
        },
    }


def _names(objs, kind="Job"):
    return [o["metadata"]["name"] for o in objs if o["kind"] == kind]


def _cond(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def _step(body, obs_kw=None, **kw):
    """decide once and fold its status into the body, as the API server would."""
    acts = decide(_obs(body, **(obs_kw or {}), **kw))
    if acts.status:
        body["status"] = dict(acts.status.items())
        for st in body["status"]["stages"].values():  # a merge patch deletes nulls
            for key in [k for k, v in st.items() if v is None and k != "message"]:
                del st[key]
    return acts


def test_first_reconcile_creates_configmap_and_first_job():
    acts = decide(_obs(_body()))
    assert [o["kind"] for o in acts.create] == ["ConfigMap", "Job"]
    assert _names(acts.create) == ["e-distill-1"]
    s = acts.status
    assert s["phase"] == "Running" and s["stage"] == "distill" and s["observedGeneration"] == 3
    d = s["stages"]["distill"]
    assert (d["state"], d["attempts"], d["jobName"]) == ("Running", 1, "e-distill-1")
    assert d["startedAt"] == d["attemptStartedAt"] == "2026-01-01T00:00:00Z"
    assert _cond(s, "Progressing")["status"] == "True" and _cond(s, "Ready")["status"] == "False"
    # One event for the first steps (acceptance and the first Job): a request less per experiment.
    assert acts.events == [
        (
            "Normal",
            "StageStarted",
            "spec valid; stages: distill, mix, train, evaluate. distill: created Job e-distill-1 (attempt 1)",
        )
    ]
    assert [(c.stage, c.resource_version) for c in acts.claims] == [("distill", None)]
    # Nothing else to do until an event, except the start deadline: decide asks to look again then.
    assert acts.requeue_after is None or acts.requeue_after > 0


def test_running_job_changes_nothing():
    body = _body()
    first = _step(body)
    again = decide(_obs(body, {"e-distill-1": first.create[1]}, {"e-distill-1": [_pod("p", running=True)]}))
    assert again.create == [] and again.events == []
    assert again.status == {} or again.status["stages"]["distill"]["runningSince"]


def test_success_moves_to_next_stage_and_copies_summary():
    body = _body()
    first = _step(body)
    job = _done(first.create[1])
    msg = json.dumps({"stage": "distill", "counts": {"accepted": 9}, "complete": True})
    acts = decide(_obs(body, {"e-distill-1": job}, {"e-distill-1": [_pod("p", 0, "log line\n" + msg)]}))
    s = acts.status
    assert s["stages"]["distill"]["state"] == "Succeeded" and s["stages"]["distill"]["summary"]["counts"] == {
        "accepted": 9
    }
    assert s["stages"]["distill"]["artifactUri"] == "file://./artifacts/e/distill"
    assert _names(acts.create) == ["e-mix-1"] and s["stage"] == "mix"
    assert not [o for o in acts.create if o["kind"] == "ConfigMap"], "the spec ConfigMap is created once, first"
    done = s["stages"]["distill"]["progress"]
    assert done["percent"] == 100.0 and done["durationSeconds"] == 0 and s["progress"] == "-", "mix has not reported"


def test_shard_summaries_come_from_the_finished_manifest_or_add_up():
    def shard(i, n):
        return _pod(
            f"p{i}",
            0,
            json.dumps(
                {
                    "stage": "distill",
                    "shard": i,
                    "complete": False,
                    "counts": {"prompts": n, "accepted": n - 1},
                }
            ),
        )

    final = _pod("p9", 0, json.dumps({"stage": "distill", "complete": True, "counts": {"prompts": 16, "accepted": 14}}))
    assert combine_summaries([shard(0, 8), final])["counts"] == {"prompts": 16, "accepted": 14}
    assert combine_summaries([final, shard(0, 8)])["counts"] == {"prompts": 16, "accepted": 14}
    assert combine_summaries([shard(0, 8), shard(1, 8)])["counts"] == {"prompts": 16, "accepted": 14}


def test_full_pipeline_ends_succeeded_with_metrics():
    body, jobs, pods = _body(), {}, {}
    summaries = {
        "evaluate": {
            "stage": "evaluate",
            "metrics": {
                "asr": 0.06,
                "overRefusal": 0.1,
                "mathAccuracy": 0.5,
                "codeAccuracy": 0.25,
                "benchmarks": {"advbench": {"base": 0.8}},
            },
        }
    }
    for stage in ("distill", "mix", "train", "evaluate"):
        acts = _step(body, jobs=jobs, pods=pods)
        job = next(o for o in acts.create if o["kind"] == "Job")
        name = job["metadata"]["name"]
        jobs[name] = _done(job)
        pods[name] = [_pod(name + "-p", 0, json.dumps(summaries.get(stage, {"stage": stage})))]
        _step(body, jobs=jobs, pods=pods)
    s = body["status"]
    assert s["phase"] == "Succeeded" and s["stage"] is None
    assert s["metrics"]["asr"] == 0.06 and s["metrics"]["overRefusal"] == 0.1 and s["metrics"]["codeAccuracy"] == 0.25
    assert _cond(s, "Ready")["status"] == "True" and _cond(s, "Failed")["status"] == "False"
    assert decide(_obs(body, jobs, pods)).status == {}, "a finished experiment is left alone"


@pytest.mark.parametrize("code,why", [(1, "EndpointConnectionError: Could not connect"), (137, "OOMKilled")])
def test_exit_1_and_137_are_retried_after_a_backoff(code, why):
    body = _body(resources={"backoffLimit": 1, "retryBackoffSeconds": 30})
    acts = _step(body)
    job = _done(acts.create[1], reason="BackoffLimitExceeded", ok=False)
    msg = json.dumps({"stage": "distill", "error": why}) if code == 1 else ""
    pod = _pod("p", code, msg, reason="OOMKilled" if code == 137 else "Error")
    retry = _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [pod]}, at=100)
    st = body["status"]["stages"]["distill"]
    assert retry.create == [], "the retry waits for its backoff"
    assert st["attempts"] == 2 and st["nextRetryAt"] == "2026-01-01T00:02:10Z" and retry.requeue_after == 30
    assert st["failures"][0]["exitCode"] == code and why in st["failures"][0]["reason"]
    assert any(e[1] == "StageRetry" and "retrying in 30s" in e[2] for e in retry.events)
    assert _cond(body["status"], "Progressing")["reason"] == "RetryScheduled"
    early = decide(_obs(body, {"e-distill-1": job}, {"e-distill-1": [pod]}, at=110))
    assert early.create == [] and early.requeue_after == 20
    due = _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [pod]}, at=131)
    assert _names(due.create) == ["e-distill-2"]
    assert body["status"]["stages"]["distill"]["jobName"] == "e-distill-2"


def test_retries_exhausted_fail_with_every_attempts_reason():
    body = _body(resources={"backoffLimit": 1, "retryBackoffSeconds": 0})
    acts = _step(body)
    j1 = _done(acts.create[1], reason="BackoffLimitExceeded", ok=False)
    p1 = [_pod("p1", 1, json.dumps({"error": "ConnectTimeoutError: s3 down"}))]
    retry = _step(body, jobs={"e-distill-1": j1}, pods={"e-distill-1": p1})
    assert _names(retry.create) == ["e-distill-2"], "no backoff configured: the retry starts at once"
    j2 = _done(retry.create[0], reason="BackoffLimitExceeded", ok=False)
    p2 = [_pod("p2", 137, "", reason="OOMKilled")]
    final = _step(body, jobs={"e-distill-1": j1, "e-distill-2": j2}, pods={"e-distill-1": p1, "e-distill-2": p2})
    s = body["status"]
    assert final.create == [] and s["phase"] == "Failed" and s["stages"]["distill"]["state"] == "Failed"
    msg = s["stages"]["distill"]["message"]
    assert "attempt 1: exit 1: ConnectTimeoutError: s3 down" in msg and "attempt 2: exit 137: OOMKilled" in msg
    assert [f["attempt"] for f in s["stages"]["distill"]["failures"]] == [1, 2]
    assert _cond(s, "Failed")["reason"] == "StageFailed" and "backoffLimit 1" in s["message"]


def test_bad_input_exit_3_fails_at_once():
    body = _body(resources={"backoffLimit": 5})
    acts = _step(body)
    failed = _done(acts.create[1], reason="PodFailurePolicy", ok=False)
    pod = _pod("p", 3, json.dumps({"stage": "distill", "error": "s3://b/p.jsonl: no such file", "permanent": True}))
    final = _step(body, jobs={"e-distill-1": failed}, pods={"e-distill-1": [pod]})
    assert final.create == [] and body["status"]["phase"] == "Failed"
    assert "bad input, not retried" in body["status"]["message"] and "no such file" in body["status"]["message"]


def test_failure_without_pods_reads_the_exit_code_from_the_job_condition():
    job = _done(
        {},
        reason="PodFailurePolicy",
        ok=False,
        message="Container train for pod ns/e-train-1-0-x failed with exit code 3 matching FailJob rule at index 0",
    )
    assert failure(job, [])["permanent"] is True and failure(job, [])["exitCode"] == 3
    job = _done(
        {},
        reason="PodFailurePolicy",
        ok=False,
        message="Container train for pod ns/e-train-1-1-x failed with exit code 1 matching FailJob rule at index 0",
    )
    assert failure(job, [])["permanent"] is False, "multi-node: any worker's failure fails the Job; exit 1 is transient"


def test_waiting_pod_is_reported_then_fails_the_attempt_at_the_start_timeout():
    body = _body(
        resources={"startTimeoutSeconds": 600, "backoffLimit": 3},
        storage={"uri": "s3://b/p", "secretRef": {"name": "s3"}},
    )
    acts = _step(body)
    job = acts.create[1]
    stuck = _pod("p", waiting=("CreateContainerConfigError", 'secret "s3" not found'))
    seen = _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [stuck]}, at=60)
    st = body["status"]["stages"]["distill"]
    assert (
        st["waiting"]["reason"] == "CreateContainerConfigError" and 'secret "s3" not found' in st["waiting"]["message"]
    )
    prog = _cond(body["status"], "Progressing")
    assert prog["status"] == "False" and prog["reason"] == "CreateContainerConfigError"
    assert [e[1] for e in seen.events] == ["CreateContainerConfigError"]
    assert seen.requeue_after == 540, "look again at the start deadline"
    again = _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [stuck]}, at=120)
    assert again.events == [], "one event per distinct reason"
    late = _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [stuck]}, at=601)
    assert late.patch_jobs == [("e-distill-1", {"spec": {"activeDeadlineSeconds": 1}})], "the held-up pod is stopped"
    assert body["status"]["phase"] == "Failed", "a missing Secret is permanent"
    assert 'secret "s3" not found' in body["status"]["message"] and "start timeout 600s" in body["status"]["message"]


@pytest.mark.parametrize(
    "pod",
    [
        _pod("p", waiting=("ErrImagePull", "pull access denied")),
        _pod("p", unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    ],
)
def test_other_start_failures_are_retried(pod):
    body = _body(resources={"startTimeoutSeconds": 60, "backoffLimit": 2})
    acts = _step(body)
    job = acts.create[1]
    _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [pod]}, at=10)
    reason = body["status"]["stages"]["distill"]["waiting"]["reason"]
    assert reason in ("ErrImagePull", "Unschedulable")
    late = _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [pod]}, at=61)
    assert _names(late.create) == ["e-distill-2"] and body["status"]["phase"] == "Running"
    assert reason in body["status"]["stages"]["distill"]["failures"][0]["reason"]


def test_a_started_pod_stops_the_start_clock():
    body = _body(resources={"startTimeoutSeconds": 60})
    job = _step(body).create[1]
    _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [_pod("p", running=True)]}, at=30)
    acts = _step(body, jobs={"e-distill-1": job}, pods={"e-distill-1": [_pod("p", running=True)]}, at=3600)
    assert acts.create == [] and acts.patch_jobs == [] and body["status"]["phase"] == "Running"


def test_a_suspended_job_has_no_start_clock():
    body = _body(resources={"startTimeoutSeconds": 60, "queue": "q"})
    job = _step(body).create[1]
    queued = {**job, "spec": {**job["spec"], "suspend": True}}  # Kueue holds it
    acts = _step(body, jobs={"e-distill-1": queued}, at=3600)
    assert acts.patch_jobs == [] and body["status"]["phase"] == "Running"
    assert not body["status"]["stages"]["distill"].get("attemptStartedAt")


def test_finished_stage_whose_job_is_gone_is_not_run_again():
    """A stage's Job deleted by ttlSecondsAfterFinished while the operator was down: the store says it finished."""
    body = _body()
    _step(body)
    store = {"distill": {"stage": "distill", "counts": {"accepted": 12}, "complete": True}}
    acts = _step(body, store=store)
    assert _names(acts.create) == ["e-mix-1"], "no second distill Job"
    st = body["status"]["stages"]["distill"]
    assert st["state"] == "Succeeded" and st["summary"]["counts"] == {"accepted": 12} and "store" in st["message"]


def test_a_stage_already_in_the_store_runs_no_job():
    store = {"distill": {"stage": "distill", "counts": {}}, "mix": {"stage": "mix", "counts": {}}}
    acts = decide(_obs(_body(), store=store))
    assert _names(acts.create) == ["e-train-1"]
    assert acts.status["stages"]["mix"]["state"] == "Succeeded"


def test_lost_unfinished_job_is_recreated_with_the_same_name():
    body = _body()
    _step(body)
    acts = decide(_obs(body))
    assert _names(acts.create) == ["e-distill-1"], "same deterministic name: the API answers 409 if it exists"


def test_invalid_spec_fails_with_field_path_and_a_fix_is_picked_up():
    body = _body(train={"learningRate": -1})
    acts = _step(body)
    assert acts.create == [] and body["status"]["phase"] == "Failed"
    assert "spec.train.learningRate: must be > 0" in body["status"]["message"]
    assert _cond(body["status"], "Failed")["reason"] == "InvalidSpec"
    assert decide(_obs(body)).status == {}, "the same invalid spec: nothing new to say"
    body["spec"]["train"] = {"learningRate": 1e-5}
    fixed = _step(body)
    assert _names(fixed.create) == ["e-distill-1"] and body["status"]["phase"] == "Running"
    assert _cond(body["status"], "Failed")["status"] == "False"


def test_a_failed_experiment_that_ran_stays_failed():
    body = _body()
    acts = _step(body)
    failed = _done(acts.create[1], ok=False)
    _step(body, jobs={"e-distill-1": failed}, pods={"e-distill-1": [_pod("p", 3, '{"permanent": true}')]})
    body["spec"]["train"] = {"learningRate": 1e-5}
    assert decide(_obs(body)).status == {} and decide(_obs(body)).create == []


def test_suspend_and_resume():
    body = _body()
    acts = _step(body)
    job = acts.create[1]
    body["spec"]["suspend"] = True
    s = _step(body, jobs={"e-distill-1": job})
    assert s.patch_jobs == [("e-distill-1", {"spec": {"suspend": True}})]
    assert body["status"]["phase"] == "Suspended" and _cond(body["status"], "Suspended")["status"] == "True"
    job = {**job, "spec": {**job["spec"], "suspend": True}}
    body["spec"]["suspend"] = False
    r = _step(body, jobs={"e-distill-1": job})
    assert r.patch_jobs == [("e-distill-1", {"spec": {"suspend": False}})]
    assert body["status"]["phase"] == "Running" and _cond(body["status"], "Suspended")["status"] == "False"
    assert any(e[1] == "Resumed" for e in r.events)


def test_kueue_owns_unsuspend():
    body = _body(resources={"queue": "q"})
    acts = _step(body)
    job = {**acts.create[1], "spec": {**acts.create[1]["spec"], "suspend": True}}
    assert decide(_obs(body, {"e-distill-1": job})).patch_jobs == []


def test_job_state_termination_message_and_waiting_reasons():
    assert job_state(None) == "missing"
    assert job_state({"spec": {"suspend": True}}) == "suspended"
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "succeeded"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) == "running"
    assert parse_termination_message('noise\n{"a": 1}\n') == {"a": 1}
    assert parse_termination_message("not json") == {}
    assert waiting_reason([_pod("p", waiting=("ContainerCreating", ""))]) is None, "a normal step, not a problem"
    assert waiting_reason([_pod("p", waiting=("ImagePullBackOff", "back-off"))])[0] == "ImagePullBackOff"


def test_retry_delay_doubles_and_is_capped():
    assert [retry_delay(30, n) for n in (1, 2, 3, 6)] == [30, 60, 120, 600]
    assert retry_delay(0, 4) == 0


def test_operator_worker_defaults_apply_only_where_the_spec_names_none():
    from safety_operator.manifests import WorkerDefaults

    chart = WorkerDefaults(image="registry.local/worker:7", pull_secrets=("regcred",), service_account="stage-pods")
    acts = decide(_obs(_body()), chart)
    jobs = [o for o in acts.create if o["kind"] == "Job"]
    assert jobs
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == "registry.local/worker:7"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["serviceAccountName"] == "stage-pods"
        assert pod["automountServiceAccountToken"] is False, "no token unless asked"
    cm = next(o for o in acts.create if o["kind"] == "ConfigMap")
    assert "registry.local/worker:7" in next(iter(cm["data"].values())), "the pod's spec file names the same image"
    own = decide(
        _obs(
            _body(
                images={"worker": "mine:1", "pullSecrets": ["mine"]},
                resources={"serviceAccountName": "own", "automountServiceAccountToken": True},
            )
        ),
        chart,
    )
    pod = next(o for o in own.create if o["kind"] == "Job")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "mine:1"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mine"}], "the chart's first, then the spec's"
    assert pod["serviceAccountName"] == "own" and pod["automountServiceAccountToken"] is True
    bare = next(o for o in decide(_obs(_body())).create if o["kind"] == "Job")["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in bare and "serviceAccountName" not in bare


def test_worker_defaults_from_the_charts_env():
    from lrm_safety.spec import DEFAULT_WORKER_IMAGE
    from safety_operator.manifests import WorkerDefaults

    assert WorkerDefaults.from_env({}).image == DEFAULT_WORKER_IMAGE
    d = WorkerDefaults.from_env(
        {
            "LRM_SAFETY_DEFAULT_WORKER_IMAGE": "r.io/w:1",
            "LRM_SAFETY_WORKER_PULL_SECRETS": "a, b",
            "LRM_SAFETY_WORKER_SERVICE_ACCOUNT": "sa",
            "LRM_SAFETY_WORKER_AUTOMOUNT_TOKEN": "true",
        }
    )
    assert d == WorkerDefaults(image="r.io/w:1", pull_secrets=("a", "b"), service_account="sa", automount_token=True)


def test_spec_changes_are_ignored_only_after_the_spec_was_frozen():
    from safety_operator.status import ignored_changes

    diff = [
        ("change", ("spec", "train", "learningRate"), 1e-6, 1e-5),
        ("change", ("spec", "suspend"), False, True),
        ("change", ("spec", "resources", "queue"), None, "q"),
    ]
    never = {"phase": "Failed", "stages": {}}
    assert ignored_changes(diff, never, 2) == [], "an invalid spec that never ran is validated again"
    started = {"phase": "Running", "specGeneration": 2, "stages": {"distill": {"attempts": 1}}}
    assert ignored_changes(diff, started, 2) == [], "the change that started it, seen again"
    assert ignored_changes(diff, started, 3) == ["spec.train.learningRate"], "suspend and scheduling apply"
    body = _body()
    assert decide(_obs(body)).status["specGeneration"] == 3, "the generation frozen into the ConfigMap"


# ---------------------------------------------------------------- claims on identical work (safety_operator/claims.py)
def _claim(holder, stuck_since=None, rv="7"):
    return {"holder": holder, "stage": "distill", "stuckSince": stuck_since, "resourceVersion": rv, "uid": "lu"}


def _claims_obs(body, claim, at=0, grace=60.0, **kw):
    return Observed(body=body, now=T0 + dt.timedelta(seconds=at), claims=lambda work: claim, claim_grace=grace, **kw)


def test_work_another_holds_is_waited_for_naming_the_current_holder():
    body = _body()
    acts = decide(_claims_obs(body, _claim("a")))
    st = acts.status["stages"]["distill"]
    assert acts.create == [] and acts.claims == [], "no Job and no claim while another moves"
    assert st["waiting"]["reason"] == "SameWorkRunning" and st["waiting"]["message"].startswith("a is running")
    body["status"] = acts.status
    moved = decide(_claims_obs(body, _claim("b"), at=30))
    assert moved.status["stages"]["distill"]["waiting"]["message"].startswith("b is running"), "the new holder"
    assert moved.status["stages"]["distill"]["waiting"]["since"] == "2026-01-01T00:00:00Z", "waiting since the start"
    assert [e[1] for e in moved.events] == ["SameWorkRunning"]


def test_a_stuck_holder_is_taken_over_after_the_grace_only():
    body = _body()
    within = decide(_claims_obs(body, _claim("a", "2026-01-01T00:00:10Z"), at=40))
    w = within.status["stages"]["distill"]["waiting"]
    assert within.create == [] and "taken over at 2026-01-01T00:01:10Z unless they start" in w["message"]
    assert within.requeue_after == 30, "look again when the grace ends"
    after = decide(_claims_obs(body, _claim("a", "2026-01-01T00:00:10Z"), at=71))
    assert [(c.stage, c.resource_version) for c in after.claims] == [("distill", "7")], "an update at its version"
    assert _names(after.create) == ["e-distill-1"]
    assert any(e[1] == "WorkTakenOver" for e in after.events)


def test_the_holder_marks_its_claim_while_held_up_and_releases_it_when_the_stage_ends():
    body = _body()
    job = _step(body).create[1]
    mine = _claim("e")
    held = _pod("p", waiting=("ErrImagePull", "pull failed"))
    acts = decide(_claims_obs(body, mine, at=5, jobs={"e-distill-1": job}, pods={"e-distill-1": [held]}))
    ((work, since),) = acts.marks
    assert since == "2026-01-01T00:00:05Z"
    body["status"] = acts.status
    started = decide(
        _claims_obs(
            body,
            {**mine, "stuckSince": since},
            at=9,
            jobs={"e-distill-1": job},
            pods={"e-distill-1": [_pod("p", running=True)]},
        )
    )
    assert started.marks == [(work, None)], "moving again: unmarked"
    done = decide(
        _claims_obs(
            body,
            mine,
            at=20,
            jobs={"e-distill-1": _done(job)},
            pods={"e-distill-1": [_pod("p", exit_code=0, message='{"stage": "distill"}')]},
        )
    )
    assert work in done.releases, "the stage ended: the claim goes"
    assert done.status["progress"] == "-", "the next stage starts with no report of the previous one"


def test_a_finished_stage_reads_done_and_a_failed_experiment_shows_no_progress():
    body = _body(resources={"backoffLimit": 0})
    job = _step(body).create[1]
    body["status"]["stages"]["distill"]["progress"] = {"done": 6, "total": 8, "percent": 75.0}
    body["status"]["progress"] = "distill 6/8 (75%)"
    ok = decide(_obs(body, jobs={"e-distill-1": _done(job)}, at=30))
    assert (
        ok.status["stages"]["distill"]["progress"]["done"] == 8
        and ok.status["stages"]["distill"]["progress"]["percent"] == 100.0
    )
    bad = decide(
        _obs(body, jobs={"e-distill-1": _done(job, ok=False)}, pods={"e-distill-1": [_pod("p", exit_code=1)]}, at=30)
    )
    assert bad.status["phase"] == "Failed" and bad.status["progress"] == "-"
