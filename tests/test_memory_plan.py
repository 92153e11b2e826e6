"""The train memory plan for the study's 7B student, from its config alone, against DeepSpeed's own estimators."""

import subprocess
import sys
from pathlib import Path

import pytest

from lrm_safety.models import shapes
from lrm_safety.spec import Experiment, parse_spec
from lrm_safety.training import memory_plan as mp

REPO = Path(__file__).resolve().parent.parent
R1_7B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


@pytest.fixture(scope="module")
def shape():
    s = shapes.model_shape(R1_7B)  # no weights, no network: the known table when the hub cache lacks it
    assert s is not None
    return s


def _spec(gpus, zero, **train):
    return parse_spec(
        {
            "student": {"model": R1_7B},
            "resources": {"nodeSelector": H100},
            "train": {
                "gpusPerNode": gpus,
                "deepspeed": zero,
                "globalBatchSize": None,
                "gradientAccumulation": 8,
                **train,
            },
        }
    )


def test_the_7b_shape_is_qwen2_7b(shape):
    assert 7.6e9 < shape.params < 7.65e9, shape.params  # Qwen2.5-7B: 7.62B with untied embeddings
    assert shape.largest_layer == 152064 * 3584, "the embedding (or lm_head) is the largest module"
    assert (shape.hidden, shape.layers, shape.vocab) == (3584, 28, 152064)


@pytest.mark.parametrize(
    "gpus,zero,fits",
    [
        (1, "zero2", False),
        (4, "zero2", True),
        (8, "zero2", True),
        (1, "zero3", False),
        (4, "zero3", True),
        (8, "zero3", True),
    ],
)
def test_7b_full_finetune_per_gpu(shape, gpus, zero, fits):
    plan = mp.train_plan(_spec(gpus, zero), shape=shape)
    if gpus == 1 and zero == "zero2":
        # optimize drops ZeRO-2 on one process: fp32 weights + grads + two AdamW moments, 16 bytes a parameter
        assert plan["deepspeed"] == "none" and plan["modelStatesGB"] == round(16 * shape.params / 1e9, 1)
    elif zero == "zero2":
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        assert plan["modelStatesGB"] == round(
            estimate_zero2_model_states_mem_needs(shape.params, gpus, 1, cpu_offload=False)[1] / 1e9, 1
        )
        assert plan["modelStatesFrom"] == "DeepSpeed's ZeRO-2 estimator"
    else:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        assert plan["modelStatesGB"] == round(
            estimate_zero3_model_states_mem_needs(
                shape.params, shape.largest_layer, gpus, 1, cpu_offload=False, cpu_offload_params=False
            )[1]
            / 1e9,
            1,
        )
    assert plan["gpuMemoryGB"] == 80.0 and "gpu.product" in plan["gpuMemoryFrom"]
    assert ("warning" not in plan) == fits, plan
    if not fits:
        assert "train.gpusPerNode" in plan["warning"] and "lora" in plan["warning"]


def test_more_gpus_need_less_per_gpu(shape):
    per = [mp.train_plan(_spec(g, "zero2"), shape=shape)["modelStatesGB"] for g in (2, 4, 8)]
    assert per[0] > per[1] > per[2]


def test_lora_and_offload_fit_one_gpu(shape):
    lora = mp.train_plan(
        _spec(1, "none", method="lora", lora={"r": 16}),
        shape=shapes.model_shape(R1_7B, lora=parse_spec({"train": {"method": "lora", "lora": {"r": 16}}}).train.lora),
    )
    assert lora["modelStatesGB"] < 20 and "warning" not in lora
    off = mp.train_plan(_spec(1, "zero3", offload=True), shape=shape)
    assert off["modelStatesGB"] < 5 and "warning" not in off


def test_gpu_memory_from_hint_or_product():
    hint = parse_spec({"resources": {"train": {"gpuMemory": "40Gi"}}})
    assert mp.gpu_memory_gb(hint)[0] == pytest.approx(42.95, abs=0.01)
    for product, gb in (("NVIDIA-A100-SXM4-40GB", 40), ("NVIDIA-H200", 141), ("NVIDIA-L40S", 48)):
        assert mp.gpu_memory_gb(parse_spec({"resources": {"nodeSelector": {shapes.PRODUCT_LABEL: product}}}))[0] == gb
    assert mp.gpu_memory_gb(parse_spec({}))[0] is None
    with pytest.raises(ValueError, match="gpuMemory"):
        parse_spec({"resources": {"train": {"gpuMemory": "lots"}}})


def test_render_and_validate_print_the_plan_for_the_paper_example():
    example = REPO / "examples" / "experiment.yaml"
    exp = Experiment.load(str(example))
    assert exp.spec.train.gpus_per_node == 4 and exp.spec.train.deepspeed == "zero2"
    for cmd in ("render", "validate"):
        r = subprocess.run([sys.executable, "-m", "lrm_safety.cli", cmd, str(example)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert f"# train memory plan: {R1_7B}, full, 4 GPU(s) x 1 node(s)" in r.stdout
        assert "DeepSpeed zero2, bf16, fp32 (DeepSpeed bf16 optimizer) master weights" in r.stdout
        assert "(DeepSpeed's ZeRO-2 estimator)" in r.stdout and "GPU memory 80 GB" in r.stdout
        assert "WARNING" not in r.stdout


def test_the_known_shapes_are_the_meta_device_counts_of_their_configs():
    """validate and render read known models' parameter counts from a table (no transformers import, no model
    conversion); the table must be what transformers counts from each config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lrm_safety.models.shapes import KNOWN_MODELS, KNOWN_SHAPES, model_shape

    assert set(KNOWN_SHAPES) == set(KNOWN_MODELS)
    for ref, cfg in KNOWN_MODELS.items():
        cfg = dict(cfg)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
        params = sum(p.numel() for p in model.parameters())
        largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
        assert KNOWN_SHAPES[ref] == (params, largest), ref
        assert model_shape(ref).params == params


def test_the_builtin_model_is_planned_without_converting_it(tmp_path, monkeypatch):
    """validate on the quickstart: the builtin model's config from the table, never its GGUF converted (51 s)."""
    import lrm_safety.models.refs as models
    from lrm_safety.models.shapes import KNOWN_MODELS, model_shape

    monkeypatch.setenv("LRM_SAFETY_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "convert_gguf", lambda *a, **k: (_ for _ in ()).throw(AssertionError("converted")))
    shape = model_shape("builtin:smollm2-135m-instruct")
    assert (
        shape.params == 134_515_008
        and shape.layers == KNOWN_MODELS["builtin:smollm2-135m-instruct"]["num_hidden_layers"]
    )
    lora = type("L", (), {"target_modules": ["all-linear"], "r": 8})()
    assert model_shape("builtin:smollm2-135m-instruct", lora=lora).lora_params > 0, (
        "LoRA: the meta model, no conversion"
    )


def test_the_builtin_models_table_entry_is_its_gguf_config():
    from transformers import AutoConfig

    from lrm_safety.models.refs import builtin_gguf
    from lrm_safety.models.shapes import KNOWN_MODELS

    gguf = builtin_gguf("smollm2-135m-instruct")
    cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for key, value in KNOWN_MODELS["builtin:smollm2-135m-instruct"].items():
        assert getattr(cfg, key) == value, key
