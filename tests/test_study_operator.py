"""SafetyStudy in the real kopf operator against kmock: cells as owned experiments, maxParallel, a failing
cell, suspend/resume, a restart. kmock has no Job controller or garbage collector: the tests finish Jobs."""

from kube_harness import OperatorThread, wait_for
from test_operator_kmock import NS, cluster, finish_job, get, jobs, operator  # noqa: F401 (fixtures)

G, V = "lrmsafety.io", "v1alpha1"


def create_study(cluster, name, students, **spec):
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "SafetyStudy",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1", "generation": 1},
        "spec": {
            "base": {"stages": ["evaluate"], "evaluate": {"dataRoot": "s3://data"}, "resources": {"backoffLimit": 0}},
            "axes": [{"path": "student.model", "name": "student", "values": students}],
            **spec,
        },
    }
    cluster.custom.create_namespaced_custom_object(G, V, NS, "safetystudies", body)


def study(cluster, name):
    return cluster.custom.get_namespaced_custom_object(G, V, NS, "safetystudies", name)


def children(cluster):
    items = cluster.custom.list_namespaced_custom_object(G, V, NS, "safetyexperiments")["items"]
    return {c["metadata"]["name"]: c for c in items}


def evaluate_done(cluster, cell, asr):
    job = f"{cell}-evaluate-1"
    wait_for(lambda: job in jobs(cluster, cell), 20, what=f"Job {job}")
    finish_job(cluster, job, summary={"stage": "evaluate", "metrics": {"asr": asr, "overRefusal": 0.1}})


def test_three_cells_to_succeeded_with_the_table(cluster, operator):
    create_study(cluster, "grid", ["org/a", "org/b", "org/c"], maxParallel=2)
    wait_for(lambda: len(children(cluster)) == 2, 20, what="two cells")
    kids = children(cluster)
    assert sorted(kids) == ["grid-a", "grid-b"], "grid order, maxParallel 2"
    owner = kids["grid-a"]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "SafetyStudy" and owner["uid"] == "uid-grid" and owner["controller"] is True
    assert kids["grid-a"]["spec"]["student"]["model"] == "org/a"
    evaluate_done(cluster, "grid-a", 0.30)
    wait_for(lambda: "grid-c" in children(cluster), 20, what="the third cell once one finished")
    evaluate_done(cluster, "grid-b", 0.10)
    evaluate_done(cluster, "grid-c", 0.20)
    s = wait_for(
        lambda: (s := study(cluster, "grid").get("status", {})).get("phase") == "Succeeded" and s,
        30,
        what="study Succeeded",
    )
    assert s["done"] == "3/3" and s["bestAsr"] == 0.10 and s["counts"]["Succeeded"] == 3
    assert s["display"] == {"bestAsr": "10.0%"} and s.get("bestRefusalRate") is None, "the Best-ASR column"
    rows = {r["name"]: r for r in s["cells"]}
    assert rows["grid-b"]["asr"] == 0.10 and rows["grid-b"]["cell"] == {"student": "org/b"}
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"


def test_max_parallel_one_and_a_failing_cell(cluster, operator):
    create_study(cluster, "one", ["org/a", "org/b"], maxParallel=1)
    wait_for(lambda: "one-a" in children(cluster), 20, what="first cell")
    wait_for(lambda: "one-a-evaluate-1" in jobs(cluster, "one-a"), 20, what="first cell's Job")
    assert "one-b" not in children(cluster), "maxParallel 1: the second waits"
    finish_job(cluster, "one-a-evaluate-1", ok=False)  # backoffLimit 0: the cell fails
    wait_for(lambda: get(cluster, "one-a").get("status", {}).get("phase") == "Failed", 20, what="cell failed")
    evaluate_done(cluster, "one-b", 0.2)
    s = wait_for(
        lambda: (s := study(cluster, "one").get("status", {})).get("phase") == "Failed" and s,
        30,
        what="study finished with a failure",
    )
    assert "1 of 2 cells failed: one-a" in s["message"] and s["counts"]["Succeeded"] == 1
    assert {r["name"]: r["phase"] for r in s["cells"]} == {"one-a": "Failed", "one-b": "Succeeded"}


def test_suspend_and_resume_reach_the_cells(cluster, operator):
    create_study(cluster, "pause", ["org/a", "org/b", "org/c"], maxParallel=2)
    wait_for(lambda: len(jobs(cluster)) == 2, 20, what="two cells' Jobs")
    cluster.custom.patch_namespaced_custom_object(G, V, NS, "safetystudies", "pause", {"spec": {"suspend": True}})
    wait_for(lambda: all(c["spec"].get("suspend") for c in children(cluster).values()), 20, what="cells suspended")
    wait_for(lambda: all(j["spec"].get("suspend") for j in jobs(cluster).values()), 20, what="their Jobs suspended")
    wait_for(lambda: study(cluster, "pause")["status"]["phase"] == "Suspended", 20, what="study Suspended")
    assert len(children(cluster)) == 2, "no new cell while suspended"
    cluster.custom.patch_namespaced_custom_object(G, V, NS, "safetystudies", "pause", {"spec": {"suspend": False}})
    wait_for(lambda: not any(j["spec"].get("suspend") for j in jobs(cluster).values()), 20, what="Jobs resumed")
    wait_for(lambda: study(cluster, "pause")["status"]["phase"] == "Running", 20, what="study Running")


def test_restart_makes_no_duplicate_cell_or_job(cluster):
    op = OperatorThread(cluster.url).start()
    create_study(cluster, "rs", ["org/a", "org/b"], maxParallel=2)
    wait_for(lambda: len(jobs(cluster)) == 2, 20, what="both cells' Jobs")
    op.stop()
    op = OperatorThread(cluster.url).start()
    try:
        evaluate_done(cluster, "rs-a", 0.5)
        evaluate_done(cluster, "rs-b", 0.4)
        wait_for(lambda: study(cluster, "rs").get("status", {}).get("phase") == "Succeeded", 30, what="Succeeded")
        assert sorted(children(cluster)) == ["rs-a", "rs-b"]
        assert sorted(jobs(cluster)) == ["rs-a-evaluate-1", "rs-b-evaluate-1"]
    finally:
        op.stop()


def test_invalid_cell_fails_the_study_before_any_child(cluster, operator):
    create_study(cluster, "bad", ["org/a"], axes=[{"path": "mix.safetyCount", "values": [-1]}])
    s = wait_for(
        lambda: (s := study(cluster, "bad").get("status", {})).get("phase") == "Failed" and s, 20, what="Failed"
    )
    assert "cells[safetyCount=-1].spec.mix.safetyCount: must be >= 0" in s["message"]
    assert children(cluster) == {}
