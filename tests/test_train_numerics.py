"""The train stage's numerics on CPU: the GPU default path (bf16 compute, fp32 master weights) against an fp32
reference and against pure bf16, one AdamW step at the release's lr; and `optimize` changing speed only."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import numerics_check
from lrm_safety.spec import parse_spec
from lrm_safety.stages import train
from lrm_safety.training import recipe
from test_train import _prepare

pytestmark = pytest.mark.slow
NO_KERNELS = lambda module: False  # noqa: E731  no flash-attn or Liger here: the decisions, not the kernels, matter


def one_step(smol_dir, out, **train_over):
    """benchmarks/numerics_check.py's step (the one the GPU check runs), here on the CPU with the GPU decisions."""
    r = numerics_check.one_step(smol_dir, out, **train_over)
    assert r["device"] == "cpu"
    return (
        r["changed"],
        r["meanUpdate"],
        recipe.numerics(parse_spec({"train": train_over}).train, cuda=True, use_deepspeed=False),
    )


def test_gpu_default_keeps_fp32_master_weights(smol_dir, tmp_path):
    """At lr 5e-6 a bf16 weight of 0.02 has a half-step of about 4e-5: pure bf16 drops most updates; the default
    (bf16 autocast over fp32 weights, AdamW states in fp32) must move the same parameters by the same amount as fp32."""
    default = parse_spec({}).train
    assert recipe.precision(default, cuda=True) == "bf16", "the GPU default computes in bf16"
    frac, size, num = one_step(smol_dir, tmp_path / "default")
    ref_frac, ref_size, _ = one_step(smol_dir, tmp_path / "fp32", precision="fp32")
    pure_frac, pure_size, pure = one_step(smol_dir, tmp_path / "pure", precision="bf16-pure", deepspeed="none")
    print(
        f"changed: default {frac:.3f} (mean |dw| {size:.2e}), fp32 {ref_frac:.3f} ({ref_size:.2e}), "
        f"bf16-pure {pure_frac:.3f} ({pure_size:.2e})"
    )
    assert ref_frac > 0.5, "the fp32 reference moves most parameters (AdamW's first step is about lr per weight)"
    assert frac == pytest.approx(ref_frac, abs=0.02), "the default loses updates that fp32 master weights keep"
    assert size == pytest.approx(ref_size, rel=0.1)
    assert num["load_dtype"] == "float32" and num["bf16"] and num["master"] == "fp32"
    assert pure["load_dtype"] == "bfloat16"
    assert pure_frac < 0.5 * ref_frac, "pure bf16 rounds most lr-5e-6 updates away (the assertion above can fail)"


def test_numerics_on_every_path():
    t = lambda **kw: parse_spec({"train": kw}).train  # noqa: E731
    assert recipe.numerics(t(), cuda=True, use_deepspeed=True) == {
        "precision": "bf16",
        "load_dtype": "bfloat16",
        "bf16": True,
        "fp16": False,
        "master": "fp32 (DeepSpeed bf16 optimizer)",
    }
    assert recipe.numerics(t(), cuda=True, use_deepspeed=False)["load_dtype"] == "float32"
    lora = recipe.numerics(t(method="lora"), cuda=True, use_deepspeed=False)
    assert lora["load_dtype"] == "bfloat16" and lora["master"] == "fp32 adapters"
    assert (
        recipe.numerics(t(precision="fp16", deepspeed="none"), cuda=True, use_deepspeed=False)["load_dtype"]
        == "float32"
    )
    assert recipe.numerics(t(), cuda=False, use_deepspeed=False) == {
        "precision": "fp32",
        "load_dtype": "float32",
        "bf16": False,
        "fp16": False,
        "master": "fp32",
    }
    with pytest.raises(ValueError, match="bf16-pure keeps no fp32 master"):
        t(precision="bf16-pure")


def test_clipping_and_sample_order_follow_the_release():
    """safety_train/trl_train_code: deepspeed_zero2.json has no gradient_clipping (DeepSpeed's default was 0 until
    0.19.3, and the Trainer leaves clipping to DeepSpeed), and the Trainer samples at random."""
    t = parse_spec({"train": {"gpusPerNode": 4}}).train
    profile = recipe.runtime_profile(t, cuda=True, world_size=4, installed=NO_KERNELS)
    kw = recipe.sft_kwargs(t, "/tmp/o", cuda=True, use_deepspeed=True, profile=profile)
    assert kw["max_grad_norm"] == 0.0 and kw["deepspeed"]["gradient_clipping"] == 0.0
    assert kw["train_sampling_strategy"] == "random"
    one = recipe.runtime_profile(parse_spec({}).train, cuda=True, world_size=1, installed=NO_KERNELS)
    assert one["sampling"] == "random", "optimize never reorders samples"
    clipped = parse_spec({"train": {"maxGradNorm": 1.0, "groupByLength": True}}).train
    kw = recipe.sft_kwargs(
        clipped,
        "/tmp/o",
        cuda=True,
        use_deepspeed=True,
        profile=recipe.runtime_profile(clipped, cuda=True, world_size=1, installed=NO_KERNELS),
    )
    assert kw["max_grad_norm"] == 1.0 and kw["deepspeed"]["gradient_clipping"] == 1.0
    assert kw["train_sampling_strategy"] == "group_by_length", "the opt-in knob"


def test_optimize_changes_speed_only(tmp_path, smol_dir):
    """Same data, optimize on and off: the same loss at every step; grouping by length (the opt-in) changes them."""
    curves = {}
    for name, over in (
        ("on", {"optimize": True}),
        ("off", {"optimize": False}),
        ("grouped", {"optimize": True, "groupByLength": True}),
    ):
        (tmp_path / name).mkdir()
        ctx = _prepare(tmp_path / name, name=f"opt-{name}", learningRate=1e-4, maxSteps=4, **over)
        curves[name] = [p["loss"] for p in train.run(ctx, launcher="inprocess")["metrics"]["lossCurve"]]
    print(curves)
    assert len(curves["on"]) == 4
    assert curves["on"] == pytest.approx(curves["off"], rel=1e-4), "optimize changed the losses"
    assert curves["grouped"] != pytest.approx(curves["on"], rel=1e-4), "length grouping reorders: the test can fail"


@pytest.mark.timeout(1500)
def test_gpu_check_runs_end_to_end_in_dry_mode(tmp_path):
    """benchmarks/gpu_check.sh --dry: the GPU check's every part on small shapes here, ending in its table."""
    import json
    import os
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=1400,
        env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable},
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry"] and len(report["train"]["lossCurve"]) == 2
    assert report["numerics"]["bf16-pure"]["changed"] < 0.5 * report["numerics"]["default"]["changed"]
    assert report["throughput"]["stage"]["tokens_per_s"] > 0 and report["throughput"]["reference"]["tokens_per_s"] > 0
    assert report["generation"]["newTokens"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| (b) ratio stage / reference |" in table and "| (c) generation, transformers backend |" in table
