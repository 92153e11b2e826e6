"""Content-addressed stage reuse: identical work in one store runs once, locally and on the cluster.

The operator tests run the real kopf operator against kmock with a real S3 server (SeaweedFS); the stage pods
are played by writing their manifests, as the kmock tests do (kmock has no Job controller)."""

import json

from kube_harness import OperatorThread, wait_for
from lrm_safety.context import StageContext
from lrm_safety.reuse import publish
from lrm_safety.spec import Experiment, parse_spec
from lrm_safety.store import open_store
from test_operator_kmock import NS, cluster, create, finish_job, get, jobs  # noqa: F401 (fixture)

STAGES = ("distill", "mix", "train", "evaluate")


def s3_spec(bucket, endpoint):
    return {
        "storage": {"uri": f"s3://{bucket}/exps", "endpoint": endpoint},
        "distill": {"prompts": f"s3://{bucket}/data/safety.jsonl"},
        "mix": {"mathSource": f"s3://{bucket}/data/math.json"},
        "evaluate": {"dataRoot": f"s3://{bucket}/bench"},
    }


def finish_in_store(name, spec, stages=STAGES):
    """What a stage pod leaves behind: its manifest, then the pointer that lets identical work reuse it."""
    ctx = StageContext(Experiment(name=name, namespace=NS, spec=parse_spec(spec)))
    for stage in stages:
        ctx.store.write_json(f"{name}/{stage}/out.json", {"stage": stage})
        ctx.store.write_manifest(
            f"{name}/{stage}",
            stage=stage,
            config_hash=ctx.hash(stage),
            files=[f"{name}/{stage}/out.json"],
            counts={"rows": 7},
            metrics={"asr": 0.1} if stage == "evaluate" else {},
        )
        assert publish(ctx, stage)
    return ctx


def test_identical_experiment_in_the_same_store_runs_zero_jobs(cluster, s3_endpoint, bucket):
    spec = s3_spec(bucket, s3_endpoint)
    data = open_store(f"s3://{bucket}", endpoint=s3_endpoint)
    data.write_bytes("data/safety.jsonl", b'{"prompt": "p"}\n')
    data.write_bytes("data/math.json", b'[{"prompt": "1+1", "response": "2"}]')
    finish_in_store("first", spec)
    op = OperatorThread(cluster.url).start()
    try:
        create(cluster, "second", spec)
        status = wait_for(
            lambda: (s := get(cluster, "second").get("status", {})).get("phase") == "Succeeded" and s,
            20,
            what="Succeeded without a Job",
        )
        assert jobs(cluster, "second") == {}
        for stage in STAGES:
            st = status["stages"][stage]
            assert st["reusedFrom"] == "first" and "reused from first" in st["message"], st
            assert st["artifactUri"] == f"s3://{bucket}/exps/first/{stage}"
        assert status["metrics"]["asr"] == 0.1
        # The same spec over a changed input file: distill (which does not read it) is reused, mix runs.
        data.write_bytes("data/math.json", b'[{"prompt": "2+2", "response": "4"}]')
        create(cluster, "third", spec)
        wait_for(lambda: "third-mix-1" in jobs(cluster, "third"), 20, what="mix Job for changed input")
        st = get(cluster, "third")["status"]["stages"]
        assert st["distill"]["reusedFrom"] == "first" and "third-distill-1" not in jobs(cluster, "third")
    finally:
        op.stop()


def test_same_work_running_elsewhere_is_waited_for_then_reused(cluster, s3_endpoint, bucket):
    spec = s3_spec(bucket, s3_endpoint)
    op = OperatorThread(cluster.url).start()
    try:
        create(cluster, "a", spec)
        wait_for(lambda: "a-distill-1" in jobs(cluster, "a"), 20, what="a's distill Job")
        create(cluster, "b", spec)
        waiting = wait_for(
            lambda: (
                (st := get(cluster, "b").get("status", {}).get("stages", {}).get("distill", {})).get("waiting") and st
            ),
            20,
            what="b waits",
        )
        assert (
            waiting["waiting"]["reason"] == "SameWorkRunning"
            and "a is running the same distill" in waiting["waiting"]["message"]
        )
        assert jobs(cluster, "b") == {}, "no second Job for the same work"
        label = jobs(cluster, "a")["a-distill-1"]["metadata"]["labels"]["lrmsafety.io/work"]
        assert len(label) == 16
        finish_in_store("a", spec, stages=("distill",))
        finish_job(cluster, "a-distill-1", summary={"stage": "distill", "counts": {"rows": 7}})
        st = wait_for(
            lambda: (s := get(cluster, "b")["status"]["stages"]["distill"]).get("state") == "Succeeded" and s,
            20,
            what="b reuses a's distill",
        )
        assert st["reusedFrom"] == "a" and "b-distill-1" not in jobs(cluster, "b")
        # Next, a's mix and b's mix are the same work again: one Job between them.
        wait_for(lambda: "a-mix-1" in jobs(cluster, "a"), 20, what="a's mix Job")
        wait_for(lambda: get(cluster, "b")["status"]["stages"]["mix"].get("waiting"), 20, what="b waits on mix")
        assert "b-mix-1" not in jobs(cluster, "b")
    finally:
        op.stop()


def test_local_run_reuses_a_finished_stage_and_reruns_on_changed_input(tmp_path, smol_dir, monkeypatch):
    """`lrm-safety run`: the second experiment's mix is linked to the first's (no subprocess), its files read
    from there; a changed input file gives a new key and the stage runs."""
    import yaml

    from lrm_safety import runner

    rows = [
        {"prompt": f"How do I pick lock {i}?", "response": f"<think>risky {i}</think>Sorry, I can't."} for i in range(6)
    ]
    (tmp_path / "safety.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write(name):
        doc = {
            "apiVersion": "lrmsafety.io/v1alpha1",
            "kind": "SafetyExperiment",
            "metadata": {"name": name},
            "spec": {
                "stages": ["mix"],
                "storage": {"uri": "file://./store"},
                "student": {"model": str(smol_dir)},
                "mix": {
                    "safetySource": "safety.jsonl",
                    "safetyCount": 6,
                    "mathSource": "builtin:synthetic-math",
                    "mathCount": 4,
                },
            },
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return str(path)

    assert runner.run_pipeline(write("one"), stages=("mix",)) == {"mix": "ran"}
    calls = []
    monkeypatch.setattr(runner, "_run_with_progress", lambda *a, **k: calls.append(a) or 1)
    assert runner.run_pipeline(write("two"), stages=("mix",)) == {"mix": "reused"}
    assert calls == [], "no stage subprocess for reused work"
    two = StageContext(Experiment.load(str(tmp_path / "two.yaml")), base_dir=tmp_path)
    assert two.artifacts("mix") == "one/mix" and two.require("mix")["source"] == "one/mix"
    assert len(two.store.read_jsonl(f"{two.artifacts('mix')}/train.jsonl")) == 10
    assert runner.run_pipeline(str(tmp_path / "two.yaml"), stages=("mix",)) == {"mix": "skipped"}, "linked: done"
    rows[0]["response"] = "<think>risky</think>I can't help with that."
    (tmp_path / "safety.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.undo()
    assert runner.run_pipeline(write("three"), stages=("mix",)) == {"mix": "ran"}, "changed input: new key"
