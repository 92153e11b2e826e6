"""The operator on a real control plane (tests/real_kube.py): the chart's RBAC and admission, the Job, GC and TTL
controllers, and claims on identical work arbitrated by the API server. Stage pods are local processes run by
podrunner: real `lrm-safety stage` commands against SeaweedFS, or (`instant`) exit 0 at once.

Skipped with one line where ../shared/kube or etcd is missing."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from real_kube import start_operator, stop_operator, unavailable, wait_until

pytestmark = [pytest.mark.realkube, pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")]
G, V, P = "lrmsafety.io", "v1alpha1", "safetyexperiments"


@pytest.fixture
def operator(real, tmp_path):
    """The operator as the chart's ServiceAccount, in its own process."""
    log = tmp_path / "operator.log"
    op = start_operator(
        real.sa_config,
        log,
        LRM_SAFETY_CLAIM_GRACE_SECONDS="4",
        LRM_SAFETY_PROGRESS_SECONDS="2",
        LRM_SAFETY_READ_STORE="true",
    )
    op.log = log
    time.sleep(3)  # its watches start
    yield op
    stop_operator(op)


def experiment(name: str, namespace: str, spec: dict) -> dict:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "SafetyExperiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def status(real, namespace, name) -> dict:
    return real.custom.get_namespaced_custom_object(G, V, namespace, P, name).get("status") or {}


def jobs(real, namespace) -> dict:
    items = json.loads(real.batch.list_namespaced_job(namespace, _preload_content=False).data)["items"]
    return {j["metadata"]["name"]: j for j in items}


def denials(real, since: int, user_fragment: str) -> list[str]:
    return [
        f"{e['verb']} {e['requestURI']}: {e.get('responseStatus', {}).get('message', '')}"
        for e in real.audit(since)
        if user_fragment in e["user"]["username"] and e.get("responseStatus", {}).get("code") == 403
    ]


def instant_spec(**extra) -> dict:
    return {"evaluate": {"dataRoot": "s3://data"}, **extra}


def test_chart_identity_runs_every_stage_and_the_controllers_clean_up(real, operator):
    """As the chart's ServiceAccount under OwnerReferencesPermissionEnforcement: four stage Jobs, Succeeded, no
    403; the TTL controller deletes the finished Jobs and nothing runs again; deleting the experiment lets the
    garbage collector take its ConfigMap."""
    ns = "rbac"
    real.namespace(ns)
    real.switch("instant", f"0.2 {ns}")
    mark = real.audit_mark()
    real.custom.create_namespaced_custom_object(
        G, V, ns, P, experiment("full", ns, instant_spec(resources={"ttlSecondsAfterFinished": 8}))
    )
    st = wait_until(
        lambda: (s := status(real, ns, "full")).get("phase") in ("Succeeded", "Failed") and s,
        120,
        "the experiment to finish",
    )
    assert st["phase"] == "Succeeded", st
    assert [st["stages"][s]["state"] for s in ("distill", "mix", "train", "evaluate")] == ["Succeeded"] * 4
    assert st["progress"] == "done"
    assert not denials(real, mark, real.sa), denials(real, mark, real.sa)
    wait_until(lambda: not jobs(real, ns), 60, "the TTL controller to delete the finished Jobs")
    time.sleep(3)
    assert not jobs(real, ns) and status(real, ns, "full")["phase"] == "Succeeded", "nothing runs again"
    leases = real.coordination.list_namespaced_lease(ns).items
    assert not [le.metadata.name for le in leases if le.metadata.name.startswith("lrm-work-")], "claims released"
    real.custom.delete_namespaced_custom_object(G, V, ns, P, "full")
    wait_until(
        lambda: not real.core.list_namespaced_config_map(ns, label_selector="lrmsafety.io/experiment=full").items,
        60,
        "garbage collection of the spec ConfigMap",
    )


def test_identical_work_started_in_one_burst_runs_one_job(real, operator, s3_endpoint, bucket):
    """Five experiments with the same mix work, created at once: exactly one Job runs it (a real `lrm-safety stage
    mix` against SeaweedFS), the other four wait for its claim and reuse its output; all five Succeeded."""
    from lrm_safety.store import open_store

    ns = "burst"
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
    data = open_store(f"s3://{bucket}", endpoint=s3_endpoint)
    data.write_bytes(
        "data/safety.jsonl",
        b"".join(
            json.dumps({"prompt": f"p{i}", "response": f"<think>t{i}</think> r{i}"}).encode() + b"\n" for i in range(6)
        ),
    )
    spec = {
        "stages": ["mix"],
        "storage": {"uri": f"s3://{bucket}/exps", "endpoint": s3_endpoint, "secretRef": {"name": "s3"}},
        "mix": {"safetySource": f"s3://{bucket}/data/safety.jsonl", "safetyCount": 6, "mathCount": 0},
        "evaluate": {"dataRoot": f"s3://{bucket}/bench"},
    }
    names = [f"cell-{i}" for i in range(5)]
    with ThreadPoolExecutor(5) as pool:
        list(
            pool.map(lambda n: real.custom.create_namespaced_custom_object(G, V, ns, P, experiment(n, ns, spec)), names)
        )
    done = wait_until(
        lambda: (
            all(status(real, ns, n).get("phase") in ("Succeeded", "Failed") for n in names)
            and {n: status(real, ns, n) for n in names}
        ),
        180,
        "all five to finish",
    )
    assert {n: s["phase"] for n, s in done.items()} == dict.fromkeys(names, "Succeeded"), {
        n: s.get("message") for n, s in done.items()
    }
    made = list(jobs(real, ns))
    assert len(made) == 1, f"one Job for the shared work, not {made}"
    holder = made[0].rsplit("-mix-", 1)[0]
    for n in names:
        mix = done[n]["stages"]["mix"]
        if n == holder:
            assert "succeeded" in mix["message"], mix
        else:
            assert mix.get("reusedFrom") == holder, mix


def test_stuck_holder_is_taken_over_and_waiting_stays_in_its_namespace(real, operator):
    """A holder whose pods cannot start (a missing Secret) blocks identical work only for the claim grace (4 s
    here): the waiter's message names it, then the waiter takes the work over and succeeds while the holder is
    still held up. The same work in another namespace never waits."""
    a, c = "stuck-a", "stuck-c"
    for ns in (a, c):
        real.namespace(ns)
        real.kubectl(
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            "s3",
            "--from-literal=AWS_ACCESS_KEY_ID=x",
            "--from-literal=AWS_SECRET_ACCESS_KEY=y",
            check=False,
        )
    real.switch("instant", f"0.2 {a},{c}")
    base = {
        "stages": ["mix"],
        "mix": {"safetySource": "s3://data/safety.jsonl", "mathCount": 0},
        "evaluate": {"dataRoot": "s3://data"},
    }
    real.custom.create_namespaced_custom_object(
        G,
        V,
        a,
        P,
        experiment(
            "holder", a, {**base, "storage": {"uri": "s3://shared/exps", "secretRef": {"name": "no-such-secret"}}}
        ),
    )
    wait_until(
        lambda: (
            (status(real, a, "holder").get("stages", {}).get("mix", {}).get("waiting") or {}).get("reason")
            == "CreateContainerConfigError"
        ),
        60,
        "the holder's pods to be held up",
    )
    ok = {**base, "storage": {"uri": "s3://shared/exps", "secretRef": {"name": "s3"}}}
    real.custom.create_namespaced_custom_object(G, V, a, P, experiment("waiter", a, ok))
    real.custom.create_namespaced_custom_object(G, V, c, P, experiment("elsewhere", c, ok))
    seen = wait_until(
        lambda: (
            (w := status(real, a, "waiter").get("stages", {}).get("mix", {}).get("waiting") or {}).get("reason")
            == "SameWorkRunning"
            and w
        ),
        30,
        "the waiter to wait",
    )
    assert seen["message"].startswith("holder is running the same mix work") and "held up since" in seen["message"]
    st = wait_until(
        lambda: (s := status(real, a, "waiter")).get("phase") in ("Succeeded", "Failed") and s,
        60,
        "the waiter to take over and finish",
    )
    assert st["phase"] == "Succeeded" and "waiter-mix-1" in jobs(real, a), st
    assert status(real, a, "holder")["phase"] == "Running", "the holder is still held up"
    other = wait_until(
        lambda: (s := status(real, c, "elsewhere")).get("phase") == "Succeeded" and s,
        60,
        "the other namespace's experiment",
    )
    assert not other["stages"]["mix"].get("failures") and "elsewhere-mix-1" in jobs(real, c)
    events = real.core.list_namespaced_event(a, field_selector="involvedObject.name=waiter").items
    assert any(e.reason == "WorkTakenOver" for e in events), [e.reason for e in events]


def test_killed_operator_restarts_without_a_second_job_or_409s(real, tmp_path):
    """SIGKILL twice while a stage's pods are held Pending, then let them run: one Job per stage, Succeeded, and the
    restarted operator's resume re-creates nothing (no 409 from it: it knows the Jobs from its index)."""
    import signal

    ns = "restart"
    real.namespace(ns)
    real.switch("hold", ns)
    env = dict(LRM_SAFETY_READ_STORE="false")
    op = start_operator(real.sa_config, tmp_path / "op1.log", **env)
    try:
        time.sleep(3)
        real.custom.create_namespaced_custom_object(G, V, ns, P, experiment("r", ns, instant_spec()))
        wait_until(lambda: "r-distill-1" in jobs(real, ns), 60, "the first Job")
        for i in (2, 3):  # two kills mid-stage, each followed by a restart
            op.send_signal(signal.SIGKILL)
            op.wait()
            mark = real.audit_mark()
            op = start_operator(real.sa_config, tmp_path / f"op{i}.log", **env)
            time.sleep(6)  # the restarted operator lists, resumes every experiment, reconciles
            conflicts = [
                e["requestURI"]
                for e in real.audit(mark)
                if real.sa in e["user"]["username"] and e.get("responseStatus", {}).get("code") == 409
            ]
            assert conflicts == [], conflicts
        assert list(jobs(real, ns)) == ["r-distill-1"]
        real.unswitch("hold")
        real.switch("instant", f"0.2 {ns}")
        st = wait_until(lambda: (s := status(real, ns, "r")).get("phase") == "Succeeded" and s, 120, "Succeeded")
        per_stage = sorted(jobs(real, ns))
        assert per_stage == ["r-distill-1", "r-evaluate-1", "r-mix-1", "r-train-1"], per_stage
        assert all(st["stages"][s]["attempts"] == 1 for s in ("distill", "mix", "train", "evaluate"))
    finally:
        stop_operator(op)


def test_kubectl_sexp_says_what_rbac_refused_and_the_charts_view_role_grants_it(real, tmp_path):
    """A user with no role in the namespace: one line naming the user, verb, resource, namespace and the binding that
    grants it, in seconds. Bound to the built-in `view` role (which the chart's view ClusterRole aggregates into),
    the same command works."""
    import subprocess
    import sys
    from pathlib import Path

    ns = "readers"
    real.namespace(ns)
    real.kubectl("-n", ns, "create", "serviceaccount", "alice")
    real.custom.create_namespaced_custom_object(G, V, ns, P, experiment("seen", ns, instant_spec()))
    config = real.sa_kubeconfig("alice", ns)
    plugin = [str(Path(sys.executable).parent / "kubectl-sexp"), "--kubeconfig", str(config)]
    start = time.monotonic()
    r = subprocess.run([*plugin, "status", "seen", "-n", ns], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and time.monotonic() - start < 10, r.stderr
    assert r.stderr.strip() == (
        f"error: forbidden: RBAC does not let system:serviceaccount:{ns}:alice get safetyexperiments in namespace "
        f"'{ns}'; the chart's ClusterRoles <release>-lrm-safety-operator-view and -edit, aggregated into the built-in "
        f"view and edit roles, grant it: kubectl create rolebinding lrm-safety-view -n {ns} --clusterrole=view "
        f"--serviceaccount={ns}:alice"
    ), r.stderr
    real.kubectl(
        "-n", ns, "create", "rolebinding", "lrm-safety-view", "--clusterrole=view", f"--serviceaccount={ns}:alice"
    )
    ok = wait_until(
        lambda: (
            (
                p := subprocess.run([*plugin, "status", "seen", "-n", ns], capture_output=True, text=True, timeout=60)
            ).returncode
            == 0
            and p
        ),
        30,
        "the aggregated view role to take effect",
    )
    assert "seen" in ok.stdout
