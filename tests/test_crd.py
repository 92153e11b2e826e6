import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrm_safety.spec.crd import crd, crd_yaml

REPO = Path(__file__).resolve().parent.parent


def test_committed_crd_is_fresh():
    committed = (REPO / "crds" / "safetyexperiment.yaml").read_text()
    assert committed == crd_yaml(), "crds/safetyexperiment.yaml is stale: run `make crd`"
    assert (REPO / "crds" / "safetystudy.yaml").read_text() == crd_yaml(study=True), "safetystudy.yaml is stale"


@pytest.mark.parametrize("name", ["safetyexperiment.yaml", "safetystudy.yaml"])
def test_crd_validates_strict(name):
    r = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(REPO / "crds" / name)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed" in r.stdout


def test_study_crd_shape():
    from lrm_safety.spec.crd import study_crd

    c = study_crd()
    v = c["spec"]["versions"][0]
    assert c["spec"]["names"]["shortNames"] == ["sstudy"] and c["spec"]["names"]["plural"] == "safetystudies"
    assert [p["name"] for p in v["additionalPrinterColumns"]] == ["Phase", "Done", "Best-ASR", "Best-Refusal", "Age"]
    spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["maxParallel"]["minimum"] == 1 and "axes" in spec["required"]


def test_crd_shape():
    c = crd()
    v = c["spec"]["versions"][0]
    assert c["spec"]["group"] == "lrmsafety.io" and v["name"] == "v1alpha1"
    assert c["spec"]["names"]["shortNames"] == ["sexp"]
    assert v["subresources"] == {"status": {}}
    assert [p["name"] for p in v["additionalPrinterColumns"]] == [
        "Phase",
        "Stage",
        "Progress",
        "ASR",
        "Refusal",
        "Over-Refusal",
        "Age",
    ]
    assert v["additionalPrinterColumns"][0]["jsonPath"] == ".status.phase"
    spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    style = spec["properties"]["distill"]["properties"]["style"]
    assert style["enum"] == ["default", "realsafe", "improved", "short", "template", "nocot"]
    assert style["default"] == "improved" and style["description"]
    lr = spec["properties"]["train"]["properties"]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True and lr["default"] == 5e-6


def _no_refs(node):
    if isinstance(node, dict):
        assert "$ref" not in node and "anyOf" not in node
        for v in node.values():
            _no_refs(v)
    elif isinstance(node, list):
        for v in node:
            _no_refs(v)


def test_schema_is_structural():
    _no_refs(crd())
    assert yaml.safe_load(crd_yaml())["kind"] == "CustomResourceDefinition"


def test_spec_docs_are_fresh_and_complete():
    from lrm_safety.spec.crd import spec_docs

    text = (REPO / "docs" / "spec.md").read_text()
    assert text == spec_docs(), "docs/spec.md is stale: run `make crd`"
    for field in (
        "spec.train.learningRate",
        "spec.distill.rectify.maxReasoningTokens",
        "spec.evaluate.benchmarks[].name",
        "spec.resources.queue",
        "spec.storage.secretRef.name",
    ):
        assert f"`{field}`" in text
