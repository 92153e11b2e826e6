import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrm_safety.spec import Experiment, SafetyExperimentSpec, SpecError, config_hash, parse_spec

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_the_study_recipe():
    s = SafetyExperimentSpec()
    assert (s.mix.safety_count, s.mix.math_count) == (1000, 4000)
    t = s.train
    assert (t.learning_rate, t.lr_scheduler, t.warmup_ratio, t.epochs, t.max_length) == (5e-6, "cosine", 0.0, 1.0, 4096)
    assert (t.deepspeed, t.per_device_batch_size, t.global_batch_size, t.gradient_checkpointing) == (
        "zero2",
        2,
        64,
        True,
    )
    assert t.precision == "auto" and t.loss == "all" and t.rendering == "prompt-completion" and not t.packing
    assert [b.name for b in s.evaluate.benchmarks] == ["advbench", "xstest", "math500"]
    assert s.distill.style == "improved"
    assert s.mix.math_source.endswith("sft_train_math.json") and not s.mix.dedupe and s.mix.overlength == "truncate"
    improved = s.distill.rectify.resolved("improved")
    assert improved.safety_awareness and improved.consistency_filter and improved.max_reasoning_tokens is None
    naive = s.distill.rectify.resolved("default")
    assert not naive.safety_awareness and not naive.consistency_filter, "the study's unrectified baseline"
    assert (
        s.distill.rectify.resolved("template").safety_awareness
        and not s.distill.rectify.resolved("short").consistency_filter
    )
    assert s.distill.template_labeller == "oneshot"


def test_camel_case_round_trip():
    s = parse_spec({"train": {"learningRate": 1e-5, "gradientAccumulation": 4}, "distill": {"style": "short"}})
    assert s.train.learning_rate == 1e-5 and s.train.gradient_accumulation == 4 and s.distill.style == "short"
    dumped = s.model_dump(mode="json", by_alias=True)
    assert dumped["train"]["learningRate"] == 1e-5


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"train": {"learningRate": -1}}, "spec.train.learningRate: must be > 0"),
        ({"train": {"nodes": 2}}, "spec.train: Value error" if False else "nodes > 1 needs gpusPerNode"),
        ({"train": {"lora": {"r": 8}}}, "lora options are only valid with method: lora"),
        ({"evaluate": {"dataRoot": "/d", "backend": "openai"}}, "backend openai cannot evaluate"),
        ({"distill": {"shards": 0}}, "spec.distill.shards: must be >= 1"),
        ({"distill": {"style": "verbose"}}, "spec.distill.style: Input should be"),
        ({"distill": {"stlye": "short"}}, "spec.distill.stlye: unknown field"),
        ({"teacher": {"backend": "openai"}}, "backend openai needs endpoint"),
        ({"mix": {"mathSource": None}}, "mathCount > 0 needs mathSource"),
        ({"evaluate": {"benchmarks": [{"name": "advbench"}]}}, "set evaluate.dataRoot or benchmarks[0].path"),
        (
            {"evaluate": {"dataRoot": "/d", "judge": {"kind": "llm", "endpoint": "http://j/v1"}}},
            "kind llm needs endpoint and model",
        ),
        (
            {"evaluate": {"dataRoot": "/d", "overRefusalJudge": {"model": "gpt-4o"}}},
            "overRefusalJudge: kind llm needs endpoint",
        ),
        ({"storage": {"uri": "gs://b"}}, "uri must start with file:// or s3://"),
    ],
)
def test_errors_name_the_field(spec, expected):
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert any(expected in line for line in e.value.lines), e.value.lines
    assert all(line.startswith("spec") for line in e.value.lines)


def test_every_error_is_reported():
    with pytest.raises(SpecError) as e:
        parse_spec({"train": {"learningRate": 0, "epochs": -1}, "distill": {"shards": 0}})
    paths = {line.split(":")[0] for line in e.value.lines}
    assert paths == {"spec.train.learningRate", "spec.train.epochs", "spec.distill.shards"}


def test_lora_defaults_filled_for_lora_method():
    s = parse_spec({"train": {"method": "lora"}})
    assert s.train.lora.r == 16 and s.train.lora.merge


def test_config_hash_tracks_changes():
    a, b = parse_spec({}), parse_spec({"train": {"learningRate": 1e-5}})
    assert config_hash(a.train) != config_hash(b.train)
    assert config_hash(a.mix) == config_hash(b.mix)


def test_manifest_checks_header_and_name():
    with pytest.raises(SpecError) as e:
        Experiment.from_manifest({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}, "spec": {}})
    text = "\n".join(e.value.lines)
    assert "apiVersion: must be lrmsafety.io/v1alpha1" in text and "kind: must be SafetyExperiment" in text
    assert "metadata.name" in text


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lrm_safety.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("example", ["experiment.yaml", "quickstart.yaml"])
def test_validate_examples(example):
    r = _cli("validate", str(REPO / "examples" / example))
    assert r.returncode == 0, r.stderr


def test_validate_broken_copy(tmp_path):
    doc = yaml.safe_load((REPO / "examples" / "experiment.yaml").read_text())
    doc["spec"]["train"]["learningRate"] = -0.1
    doc["spec"]["train"]["nodes"] = 0
    doc["spec"]["distill"]["style"] = "fancy"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    r = _cli("validate", str(broken))
    assert r.returncode == 3, "bad input has its own exit code"
    lines = r.stderr.strip().splitlines()
    assert f"{broken}: spec.train.learningRate: must be > 0 (got -0.1)" in lines
    assert f"{broken}: spec.train.nodes: must be >= 1 (got 0)" in lines
    assert any(line.startswith(f"{broken}: spec.distill.style: ") for line in lines)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("gpus,accumulation", [(1, 32), (4, 8), (8, 4)])
def test_global_batch_of_64_on_1_4_and_8_gpus(gpus, accumulation):
    """The release's 64 samples per optimizer step (4 GPUs x 2 x 8), whatever the GPU count."""
    t = parse_spec({"train": {"gpusPerNode": gpus}}).train
    assert t.accumulation == accumulation
    assert t.per_device_batch_size * t.accumulation * t.world_size == 64
    two_nodes = parse_spec({"train": {"nodes": 2, "gpusPerNode": 4}}).train
    assert two_nodes.accumulation == 4 and two_nodes.world_size == 8


def test_global_batch_that_does_not_divide_is_a_field_error():
    with pytest.raises(SpecError, match=r"spec.train: .*globalBatchSize 64 is not a multiple of .* = 6"):
        parse_spec({"train": {"gpusPerNode": 3}})
    with pytest.raises(SpecError, match="gradientAccumulation 4 x 8 samples per micro-step is not globalBatchSize 64"):
        parse_spec({"train": {"gpusPerNode": 4, "gradientAccumulation": 4, "globalBatchSize": 64}})
    assert parse_spec({"train": {"gradientAccumulation": 3}}).train.accumulation == 3, (
        "an explicit accumulation decides"
    )


@pytest.mark.parametrize(
    "q", ["8", "500m", "64Gi", "1.5", "0.5Gi", "1e3", "1E3", "2Ti", "100M", "12k", "3.5e-2", ".5", "7Ki", "1Pi", "2E"]
)
def test_quantities_read_as_the_kubernetes_client_reads_them(q):
    from kubernetes.utils.quantity import parse_quantity

    from lrm_safety.spec import quantity_value

    assert quantity_value(q) == pytest.approx(float(parse_quantity(q)))


@pytest.mark.parametrize("q", ["lots", "8 cores", "-4Gi", "1 GB", "64GB", "1.2.3", "", "Gi"])
def test_what_is_not_a_quantity_is_refused_as_the_api_server_would(q):
    from kubernetes.utils.quantity import parse_quantity

    from lrm_safety.spec import parse_spec, quantity_value

    with pytest.raises(ValueError):
        quantity_value(q)
    with pytest.raises(SpecError, match="must be a Kubernetes quantity"):
        parse_spec({"resources": {"memory": q}})
    if q.startswith("-"):
        return  # a valid quantity, but never a request
    with pytest.raises(ValueError):
        parse_quantity(q)
