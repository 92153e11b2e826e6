"""`kubectl sexp` against kmock (the API) and SeaweedFS (the store), found by the real kubectl as a plugin."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kube_harness import EmulatedCluster

G, V, P, NS = "lrmsafety.io", "v1alpha1", "safetyexperiments", "research"
BIN = Path(sys.executable).parent


@pytest.fixture
def cluster(tmp_path):
    from kubernetes import client

    with EmulatedCluster() as c:
        cfg = client.Configuration()
        cfg.host = c.url
        api = client.ApiClient(cfg)
        c.custom, c.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        c.kubeconfig = tmp_path / "kubeconfig"
        c.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "lab",
                    "clusters": [{"name": "kmock", "cluster": {"server": c.url}}],
                    "users": [{"name": "me", "user": {"token": "t"}}],
                    "contexts": [{"name": "lab", "context": {"cluster": "kmock", "user": "me", "namespace": NS}}],
                }
            )
        )
        yield c


def sexp(cluster, *args):
    import os

    return subprocess.run(
        [str(BIN / "kubectl-sexp"), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def _experiment(cluster, status, spec=None):
    cluster.custom.create_namespaced_custom_object(
        G,
        V,
        NS,
        P,
        {
            "apiVersion": f"{G}/{V}",
            "kind": "SafetyExperiment",
            "metadata": {"name": "exp", "namespace": NS},
            "spec": spec or {"evaluate": {"dataRoot": "s3://d"}},
        },
    )
    cluster.custom.patch_namespaced_custom_object_status(G, V, NS, P, "exp", {"status": status})


RUNNING = {
    "phase": "Running",
    "stage": "train",
    "progress": "train 120/312 (38%) ETA 41m",
    "stages": {
        "distill": {"state": "Succeeded", "attempts": 1, "jobName": "exp-distill-1", "progress": {"percent": 100.0}},
        "train": {
            "state": "Running",
            "attempts": 2,
            "jobName": "exp-train-2",
            "progress": {"percent": 38.5},
            "failures": [{"attempt": 1, "reason": "exit 137: OOMKilled", "exitCode": 137}],
        },
    },
}


def test_kubectl_discovers_the_plugin():
    kubectl = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl missing: make install puts it in .venv/bin")
    r = subprocess.run(
        [kubectl, "plugin", "list"],
        capture_output=True,
        text=True,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert str(BIN / "kubectl-sexp") in r.stdout, r.stdout + r.stderr


def test_status_uses_the_contexts_namespace_and_prints_stages(cluster):
    _experiment(cluster, RUNNING)
    r = sexp(cluster, "status", "exp")
    assert r.returncode == 0, r.stderr
    assert "Running, stage train — train 120/312 (38%) ETA 41m" in r.stdout
    assert "exit 137: OOMKilled" in r.stdout and "exp-train-2" in r.stdout and "38%" in r.stdout
    as_json = json.loads(sexp(cluster, "status", "exp", "-o", "json").stdout)
    assert as_json["stages"]["train"]["attempts"] == 2
    missing = sexp(cluster, "-n", "other", "status", "exp")
    assert missing.returncode == 1 and "not found in namespace 'other'" in missing.stderr


def test_status_lists_the_served_models(cluster):
    servers = {
        "serve-llama-guard-3-8b-abc": {
            "model": "meta-llama/Llama-Guard-3-8B",
            "roles": ["judge"],
            "replicas": 1,
            "readyReplicas": 0,
            "state": "Loading",
            "stages": ["evaluate"],
            "inUseBy": "evaluate",
            "endpoint": "http://serve-llama-guard-3-8b-abc.lab.svc:8000/v1",
        }
    }
    _experiment(cluster, {**RUNNING, "servers": servers})
    r = sexp(cluster, "status", "exp")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "serve-llama-guard-3-8b-abc" in line)
    assert "Llama-Guard-3-8B" in row and "0/1" in row and "Loading" in row and "evaluate" in row


def test_status_names_the_judges_and_whose_words_they_read(cluster):
    judges = {
        "harm": "a guard model (meta-llama/Llama-Guard-3-8B) on the whole output",
        "overRefusal": "an LLM judge (gpt-4o), two classes",
        "words": "the release's words from s3://d/release-texts.json (imported from thu-coai/AISafetyLab@00b582d): "
        "xstest.rubric 96dfc5e9e5a6",
    }
    _experiment(cluster, {**RUNNING, "metrics": {"asr": 0.1, "judges": judges}})
    r = sexp(cluster, "status", "exp")
    assert r.returncode == 0, r.stderr
    assert "harm judged by a guard model" in r.stdout and "over-refusal judged by an LLM judge" in r.stdout
    assert "words (PAIR, the XSTest judge): the release's words from s3://d/release-texts.json" in r.stdout
    assert "over-refusal judged by the release's" not in r.stdout


def test_logs_of_the_current_pod_of_a_stage(cluster):
    _experiment(cluster, RUNNING)
    cluster.core.create_namespaced_pod(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "exp-train-2-abc", "namespace": NS, "labels": {"job-name": "exp-train-2"}},
            "spec": {"containers": [{"name": "train", "image": "x"}]},
        },
    )
    cluster.emulator[f"get /api/v1/namespaces/{NS}/pods/exp-train-2-abc/log"] << b"step 120/312 loss 0.41\n"
    r = sexp(cluster, "logs", "exp")
    assert r.returncode == 0 and r.stdout == "step 120/312 loss 0.41\n", r.stderr
    none = sexp(cluster, "logs", "exp", "--stage", "mix")
    assert none.returncode == 1 and "no Job for stage 'mix'" in none.stderr


def test_report_from_the_experiments_store(cluster, tmp_path, s3_endpoint, bucket):
    from lrm_safety.evaluation.report import compute, write_report
    from lrm_safety.store import open_store

    store = open_store(f"s3://{bucket}/exps", endpoint=s3_endpoint)
    metrics = compute(
        {
            "base": {"advbench": [{"unsafe": True}] * 3 + [{"unsafe": False}]},
            "trained": {"advbench": [{"unsafe": False}] * 4},
        },
        {"advbench": "harmful"},
    )
    judges = {"harm": "a guard model (g) on the whole output", "overRefusal": "the keyword refusal matcher"}
    files = write_report(store, "exp/evaluate", metrics, "t", judges=judges)
    store.write_manifest(
        "exp/evaluate", stage="evaluate", config_hash="h", files=files, extra={"judges": judges, "records": "r"}
    )
    _experiment(
        cluster,
        {"phase": "Succeeded"},
        spec={"storage": {"uri": f"s3://{bucket}/exps", "endpoint": s3_endpoint}, "evaluate": {"dataRoot": "s3://d"}},
    )
    r = sexp(cluster, "report", "exp", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "advbench" in r.stdout and "75.0%" in r.stdout and "0.0%" in r.stdout
    assert (tmp_path / "out" / "report.md").read_text().startswith("# t")
    assert (tmp_path / "out" / "chart-asr.png").read_bytes()[:4] == b"\x89PNG"


def test_studies_lists_and_shows_the_cells(cluster):
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "SafetyStudy",
        "metadata": {"name": "grid", "namespace": NS},
        "spec": {"base": {}, "axes": [{"path": "distill.style", "name": "style", "values": ["short", "nocot"]}]},
    }
    cluster.custom.create_namespaced_custom_object(G, V, NS, "safetystudies", body)
    cluster.custom.patch_namespaced_custom_object_status(
        G,
        V,
        NS,
        "safetystudies",
        "grid",
        {
            "status": {
                "phase": "Running",
                "done": "2/3",
                "bestAsr": 0.05,
                "message": "2/3 cells done",
                "cells": [
                    {"name": "grid-base", "role": "base", "phase": "Succeeded", "asr": 0.4},
                    {
                        "name": "grid-short",
                        "role": "cell",
                        "cell": {"style": "short"},
                        "phase": "Succeeded",
                        "asr": 0.05,
                        "overRefusal": 0.12,
                        "codeAccuracy": 0.375,
                    },
                    {
                        "name": "grid-nocot",
                        "role": "cell",
                        "cell": {"style": "nocot"},
                        "phase": "Running",
                        "stage": "train",
                    },
                ],
            }
        },
    )
    r = sexp(cluster, "studies")
    assert r.returncode == 0, r.stderr
    assert "grid" in r.stdout and "2/3" in r.stdout and "5.0%" in r.stdout
    r = sexp(cluster, "studies", "grid")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    short = next(line for line in lines if "grid-short" in line)
    assert "short" in short and "5.0%" in short and "12.0%" in short and "37.5%" in short
    assert "train" in next(line for line in lines if "grid-nocot" in line)
    assert "base" in next(line for line in lines if "grid-base" in line)
    r = sexp(cluster, "studies", "nope")
    assert r.returncode == 1 and "safetystudy 'nope' not found" in r.stderr


def test_connection_flags_before_or_after_the_subcommand():
    """`kubectl sexp status NAME -n NS` (the README's form) and `kubectl sexp -n NS status NAME` read the same."""
    from lrm_safety.kubectl_plugin import build_parser

    for argv in (
        ["status", "e", "-n", "research", "--context", "c", "--kubeconfig", "k"],
        ["-n", "research", "--context", "c", "--kubeconfig", "k", "status", "e"],
        ["-n", "research", "logs", "e", "--context", "c", "--kubeconfig", "k"],
    ):
        a = build_parser().parse_args(argv)
        assert (a.namespace, a.context, a.kubeconfig) == ("research", "c", "k"), argv
    for cmd in (["report", "e"], ["studies"]):
        a = build_parser().parse_args(cmd + ["-n", "x"])
        assert a.namespace == "x" and a.context is None
