"""The Helm chart rendered by a real helm binary, validated strictly; RBAC is least privilege."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "lrm-safety-operator"
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
pytestmark = pytest.mark.skipif(not HELM, reason="helm missing: make install puts it in .venv/bin")


def helm(*args, ok=True):
    r = subprocess.run([HELM, *args], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def render(*sets):
    args = ["template", "rel", str(CHART), "-n", "ops"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def test_lint():
    r = helm("lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in r.stdout


@pytest.mark.parametrize(
    "sets",
    [
        (),
        (
            "watch.allNamespaces=false",
            "watch.namespaces={research,team-b}",
            "replicas=2",
            "image.tag=1.2.3",
            "nodeSelector.pool=system",
        ),
    ],
)
def test_rendered_objects_validate_strict(sets):
    docs = render(*sets)
    for d in docs:
        if d["apiVersion"] != "kopf.dev/v1":  # kopf's own kind: its CRD is checked below
            kubernetes_validate.validate(d, "1.32.0", strict=True)
    kinds = sorted(d["kind"] for d in docs)
    assert "Deployment" in kinds and "ServiceAccount" in kinds


def test_default_values_cluster_scope():
    docs = render()
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        c["securityContext"]["readOnlyRootFilesystem"] is True
        and c["securityContext"]["allowPrivilegeEscalation"] is False
    )
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LRM_SAFETY_NAMESPACES"] == "" and env["LRM_SAFETY_PEERING"] == "false"
    assert not any(d["kind"] == "ClusterKopfPeering" for d in docs)
    # Manifest reads (finished stages are never run again) with optional credentials: no Secret, no crash.
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert env["LRM_SAFETY_READ_STORE"] == "true"
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": "lrm-safety-s3", "key": "AWS_ACCESS_KEY_ID", "optional": True}


def test_namespaced_scope_and_leader_election():
    docs = render("watch.allNamespaces=false", "watch.namespaces={research,team-b}", "replicas=2")
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["research", "team-b"]
    cluster = next(d for d in docs if d["kind"] == "ClusterRole")
    assert not any("jobs" in r["resources"] for r in cluster["rules"]), "namespaced mode grants Jobs per namespace only"
    env = {
        e["name"]: e.get("value")
        for e in next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["LRM_SAFETY_NAMESPACES"] == "research,team-b" and env["LRM_SAFETY_PEERING"] == "true"
    assert any(d["kind"] == "ClusterKopfPeering" for d in docs)


def test_rbac_is_least_privilege():
    docs = render() + render("watch.allNamespaces=false", "watch.namespaces={a}")
    allowed = {
        "safetyexperiments",
        "safetyexperiments/status",
        "safetyexperiments/finalizers",
        "safetystudies",
        "safetystudies/status",
        "safetystudies/finalizers",
        "jobs",
        "pods",
        "pods/status",
        "services",
        "configmaps",
        "events",
        "kopfpeerings",
        "clusterkopfpeerings",
        "customresourcedefinitions",
        "namespaces",
        "leases",
        "deployments",
        "networkpolicies",
        "endpointslices",
    }
    write_verbs = {"create", "patch", "update", "delete", "deletecollection"}
    for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"] not in PEOPLES):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert set(rule["resources"]) <= allowed, rule
            if set(rule["resources"]) & {
                "pods",
                "pods/status",
                "customresourcedefinitions",
                "namespaces",
                "endpointslices",
            }:
                assert not set(rule["verbs"]) & write_verbs, f"read-only: {rule}"
            if "events" in rule["resources"]:
                assert rule["verbs"] == ["create"]
            if "leases" in rule["resources"]:  # claims on identical work: released by their holder
                assert rule["resources"] == ["leases"] and rule["apiGroups"] == ["coordination.k8s.io"]
            elif "delete" in rule["verbs"]:  # served models: an idle server is deleted before its owners are
                assert set(rule["resources"]) <= {"deployments", "services", "networkpolicies"}, rule
            if set(rule["resources"]) & {"jobs", "configmaps", "safetyexperiments", "safetystudies"}:
                assert "delete" not in rule["verbs"], "deletion cascades through ownerReferences"
            if "safetyexperiments/finalizers" in rule["resources"]:
                assert rule["verbs"] == ["update"] and rule["resources"] == [
                    "safetyexperiments/finalizers",
                    "safetystudies/finalizers",
                ]
            if "safetystudies" in rule["resources"]:  # the study creates experiments; itself it only patches
                assert "create" not in rule["verbs"] and "patch" in rule["verbs"]


PEOPLES = {"rel-lrm-safety-operator-view", "rel-lrm-safety-operator-edit"}


def test_roles_for_people_are_aggregated_and_bound_to_no_one():
    """`kubectl sexp` for whoever holds view (edit, admin) in a namespace: the chart's view and edit ClusterRoles
    aggregate into the built-in roles; the chart binds them to no subject itself."""
    docs = render()
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    view, edit = roles["rel-lrm-safety-operator-view"], roles["rel-lrm-safety-operator-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["rules"] == [
        {
            "apiGroups": ["lrmsafety.io"],
            "resources": ["safetyexperiments", "safetystudies"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")}
    assert not bound & PEOPLES


@pytest.mark.parametrize("sets", [(), ("watch.allNamespaces=false", "watch.namespaces={research}")])
def test_rbac_allows_owner_references_under_owner_reference_enforcement(sets):
    """OwnerReferencesPermissionEnforcement: blockOwnerDeletion needs update on the owner's finalizers."""
    roles = [d for d in render(*sets) if d["kind"] in ("ClusterRole", "Role")]
    grants = [
        r
        for role in roles
        for r in role["rules"]
        if "safetyexperiments/finalizers" in r["resources"] and "lrmsafety.io" in r["apiGroups"]
    ]
    assert grants and all("update" in r["verbs"] for r in grants)


def test_bad_values_fail_at_install():
    r = helm("template", "rel", str(CHART), "--set", "replicas=0", ok=False)
    assert r.returncode != 0 and "replicas" in r.stderr
    r = helm("template", "rel", str(CHART), "--set", "operator.logLevel=loud", ok=False)
    assert r.returncode != 0 and "logLevel" in r.stderr
    r = helm("template", "rel", str(CHART), "--set", "watch.allNamespaces=false", ok=False)
    assert r.returncode != 0 and "watch.namespaces must list" in r.stderr


def test_chart_crds_match_the_generated_crd():
    for name in ("safetyexperiment.yaml", "safetystudy.yaml"):
        assert (CHART / "crds" / name).read_text() == (REPO / "crds" / name).read_text(), (
            "run `make crd` to copy the generated CRDs into the chart"
        )
    for doc in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()):
        kubernetes_validate.validate(doc, "1.32.0", strict=True)


def test_worker_values_reach_the_operator_and_its_stage_jobs(monkeypatch):
    """`--set worker.image=...` is what every stage Job of an experiment naming no image runs (the CRD no longer
    defaults spec.images.worker, which made the chart's value dead), with the chart's pull secrets."""
    from lrm_safety.spec import Experiment
    from safety_operator.manifests import WorkerDefaults, render_all

    docs = render(
        "worker.image=registry.example/lrm/worker:9",
        "worker.imagePullSecrets={regcred}",
        "worker.serviceAccountName=stage-pods",
    )
    c = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LRM_SAFETY_DEFAULT_WORKER_IMAGE"] == "registry.example/lrm/worker:9"
    assert env["LRM_SAFETY_WORKER_PULL_SECRETS"] == "regcred"
    assert env["LRM_SAFETY_WORKER_AUTOMOUNT_TOKEN"] == "false"
    exp = Experiment.load(str(REPO / "examples" / "experiment.yaml"))
    assert exp.spec.images.worker is None, "the paper example must not hard-code a registry"
    jobs = [
        d
        for d in render_all(exp.name, exp.namespace, WorkerDefaults.from_env(env).apply(exp.spec))
        if d["kind"] == "Job"
    ]
    assert {j["metadata"]["labels"]["lrmsafety.io/stage"] for j in jobs} == {"distill", "mix", "train", "evaluate"}
    for j in jobs:
        pod = j["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == "registry.example/lrm/worker:9"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["serviceAccountName"] == "stage-pods"
        assert pod["automountServiceAccountToken"] is False


def test_app_version_is_the_image_tags():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert chart["appVersion"] == values["image"]["tag"] == version
    assert values["worker"]["image"].endswith(":" + chart["appVersion"])


PULL_SECRET_FORMS = {
    "set-name": ["--set", "worker.imagePullSecrets[0].name=regcred", "--set", "imagePullSecrets[0].name=regcred"],
    "set-list": ["--set", "worker.imagePullSecrets={regcred}", "--set", "imagePullSecrets={regcred}"],
    "set-json": [
        "--set-json",
        'worker.imagePullSecrets=[{"name":"regcred"}]',
        "--set-json",
        'imagePullSecrets=[{"name":"regcred"}]',
    ],
    "values-file": "values",
}


@pytest.mark.parametrize("form", list(PULL_SECRET_FORMS))
def test_pull_secrets_in_every_form_people_type_reach_every_pod(form, tmp_path):
    """`[regcred]` and `[{name: regcred}]` both name the Secret regcred, on the operator's pod and on every stage
    pod (helm's --set of a map used to render as the string `map[name:regcred]`)."""
    from lrm_safety.spec import Experiment
    from safety_operator.manifests import WorkerDefaults, render_all

    args = PULL_SECRET_FORMS[form]
    if args == "values":
        f = tmp_path / "values.yaml"
        f.write_text("imagePullSecrets: [regcred]\nworker:\n  imagePullSecrets:\n    - name: regcred\n")
        args = ["-f", str(f)]
    docs = [d for d in yaml.safe_load_all(helm("template", "rel", str(CHART), "-n", "ops", *args).stdout) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["LRM_SAFETY_WORKER_PULL_SECRETS"] == "regcred"
    exp = Experiment.load(str(REPO / "examples" / "experiment.yaml"))
    jobs = [
        d
        for d in render_all(exp.name, exp.namespace, WorkerDefaults.from_env(env).apply(exp.spec))
        if d["kind"] == "Job"
    ]
    assert len(jobs) == 4
    assert all(j["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}] for j in jobs)


@pytest.mark.parametrize(
    "value",
    [
        "worker.imagePullSecrets[0].nam=regcred",
        "worker.imagePullSecrets[0]=Reg_Cred",
        "imagePullSecrets[0].name=Bad_Name",
        "worker.imagePulSecrets[0]=regcred",
    ],
)
def test_malformed_pull_secrets_fail_lint_and_install(value):
    """helm's own schema message, naming the value, at `helm lint` and at `helm install` (template runs the same
    check)."""
    key = value.split("[")[0]
    for cmd in (["lint", str(CHART), "--strict", "--set", value], ["template", "rel", str(CHART), "--set", value]):
        r = helm(*cmd, ok=False)
        assert r.returncode != 0, (cmd, r.stdout)
        assert key.split(".")[-1] in r.stdout + r.stderr, r.stdout + r.stderr
