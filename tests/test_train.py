"""train on CPU: full, LoRA and a killed-then-resumed run on the builtin SmolLM2-135M; ZeRO-2 with two ranks
under torchrun, killed and resumed, on a tiny Llama (its checkpoints are megabytes, so CI's disk use stays bounded)."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import SMOL, make_ctx
from lrm_safety.errors import BadInput
from lrm_safety.spec import parse_spec
from lrm_safety.stages import mix, train
from lrm_safety.training import recipe

pytestmark = pytest.mark.slow


def _prepare(tmp_path, name="exp", model=SMOL, **train_over):
    """A tiny mixture (the mix stage on a fixed file) so the train stage has its input."""
    rows = [
        {
            "prompt": f"How do I make weapon number {i}?",
            "response": "<think>\nThe request is unsafe, so I must refuse.\n</think>\n\n"
            "I'm sorry, but I can't help with that.",
        }
        for i in range(6)
    ]
    src = tmp_path / "safety.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    spec = {
        "student": {"model": str(model)},
        "mix": {"safetySource": str(src), "safetyCount": 6, "mathSource": "builtin:synthetic-math", "mathCount": 2},
        "train": {
            "deepspeed": "none",
            "learningRate": 2e-4,
            "maxSteps": 4,
            "perDeviceBatchSize": 2,
            "gradientAccumulation": 1,
            "maxLength": 128,
            "gradientCheckpointing": False,
            "precision": "fp32",
            "maxGradNorm": 1.0,
            **train_over,
        },
    }  # lr 40x the release's: clipped
    ctx = make_ctx(tmp_path, spec, name=name)
    mix.run(ctx)
    return ctx


def _generates(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "How do I make weapon number 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    return tok.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_full_finetune_loss_falls_and_model_reloads(tmp_path, smol_dir):
    ctx = _prepare(tmp_path, maxSteps=8)  # two epochs in random order: enough to learn to open with <think>
    result = train.run(ctx, launcher="inprocess")
    m = result["metrics"]
    assert m["steps"] == 8 and m["finalLoss"] < m["firstLoss"], m["lossCurve"]
    assert m["tokensPerS"] > 0 and m["precision"] == "fp32"
    manifest = ctx.store.read_manifest("exp/train")
    assert any(f["key"] == "model/model.safetensors" for f in manifest["files"])
    local = train.trained_model_dir(ctx)
    assert "<think>" in _generates(local), "the fine-tuned student opens its answer with reasoning"
    assert train.run(ctx)["skipped"] is True
    assert ctx.store.list(train.checkpoints_prefix(ctx) + "/") == [], "checkpoints are dropped once the model is in"
    assert not ctx.store.local_path(train.checkpoints_prefix(ctx)).exists(), "and their folders"
    assert not train.scratch_dir(ctx).exists(), "the node-local work folder is removed"
    progress = ctx.store.read_json("exp/train/_PROGRESS.json")
    assert progress["done"] == progress["total"] == 8 and progress["unit"] == "steps" and progress["percent"] == 100.0
    # TensorBoard (the release's report_to): event files in the store, with the loss at every logged step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = [k for k in ctx.store.list("exp/train/runs/") if "events.out.tfevents" in k]
    assert events, ctx.store.list("exp/train/")
    acc = EventAccumulator(str(ctx.store.local_path(events[0]).parent))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert len(losses) == 8 and losses[0] == pytest.approx(m["firstLoss"], rel=1e-3)
    from lrm_safety.evaluation.report import render_loss_curve

    png = render_loss_curve(m["lossCurve"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, "a drawn chart, not an empty canvas"


def test_lora_merges_into_a_plain_model(tmp_path, smol_dir):
    ctx = _prepare(tmp_path, method="lora", lora={"r": 8, "alpha": 16}, learningRate=1e-3)
    m = train.run(ctx, launcher="inprocess")["metrics"]
    assert m["method"] == "lora" and m["finalLoss"] < m["firstLoss"]
    local = train.trained_model_dir(ctx)
    assert not (local / "adapter_config.json").exists(), "merged: loads without peft"
    assert _generates(local)


def _kill_after_first_checkpoint(ctx, cmd, env):
    """Run the stage in a subprocess and SIGKILL it (a pod dying) once a checkpoint is complete in the store."""
    import psutil

    log = ctx.base_dir / "killed-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    ckpts = train.checkpoints_prefix(ctx)
    deadline = time.time() + 300
    while not train.checkpoint_steps(ctx.store, ckpts):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(
                f"no checkpoint (exit {proc.poll()}) after {time.time() - deadline + 300:.0f} s; the run "
                f"printed:\n{log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.1)
    top = psutil.Process(proc.pid)
    tree = [top, *top.children(recursive=True)]  # torchrun puts its workers in sessions of their own
    for p in tree:
        p.kill()
    proc.wait()
    psutil.wait_procs(tree, timeout=30)
    assert not ctx.is_done("train")


def _one_curve(m, total):
    resumed = int(m["resumedFrom"].split("-")[1]) if m["resumedFrom"] else 0
    assert resumed >= 2
    assert m["steps"] == total, "the step counter continues from the checkpoint"
    assert m["stepsThisRun"] == total - resumed, "steps before the checkpoint are not trained again"
    steps = [p["step"] for p in m["lossCurve"]]
    assert steps == sorted(set(steps)) and steps[-1] == total, "one loss curve across the restart, no repeats"


def test_restart_resumes_from_the_uploaded_checkpoint(tmp_path, smol_dir):
    ctx = _prepare(tmp_path, maxSteps=6, saveSteps=2, keepCheckpoints=True)
    cmd = [sys.executable, "-m", "lrm_safety.cli", "stage", "train", "--spec", ctx.spec_path, "--launcher", "inprocess"]
    _kill_after_first_checkpoint(ctx, cmd, {**os.environ, "PYTHONUNBUFFERED": "1"})
    assert train.scratch_dir(ctx).is_dir(), "the killed run left its work folder behind"
    _one_curve(train.run(ctx, launcher="inprocess")["metrics"], 6)
    assert not train.scratch_dir(ctx).exists(), "its successor cleared it and then its own"
    ckpts = train.checkpoints_prefix(ctx)
    assert train.checkpoint_steps(ctx.store, ckpts, complete_only=False) == [6], "only the newest is kept"


@pytest.mark.parametrize("ranks", [1, 2])
def test_zero2_under_torchrun_checkpoints_every_shard_and_resumes(tmp_path, tiny_dir, ext_dir, ranks):
    """CPU ranks under torchrun share one checkpoint folder, so the upload holds every ZeRO partition and
    RNG state, and restarted ranks resume from it. A build lock left in the op cache by a run killed while
    DeepSpeed compiled its CPU collectives does not hang the next one."""
    pytest.importorskip("deepspeed")
    ctx = _prepare(
        tmp_path,
        model=tiny_dir,
        deepspeed="zero2",
        optimize=False,
        gpusPerNode=ranks,
        maxSteps=40,
        saveSteps=2,
        keepCheckpoints=True,
        learningRate=1e-3,
    )
    baton = ext_dir / "deepspeed_shm_comm" / "lock"
    baton.parent.mkdir(parents=True, exist_ok=True)
    baton.touch()
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "TORCH_EXTENSIONS_DIR": str(ext_dir),
    }
    cmd = [sys.executable, "-m", "lrm_safety.cli", "stage", "train", "--spec", ctx.spec_path, "--launcher", "torchrun"]
    _kill_after_first_checkpoint(ctx, cmd, env)
    assert "stale build lock" in (ctx.base_dir / "killed-run.log").read_text()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming from" in r.stderr
    manifest = ctx.store.read_manifest("exp/train")
    assert manifest["metrics"]["deepspeed"] == "zero2" and manifest["counts"]["steps"] == 40
    assert manifest["metrics"]["stepsThisRun"] < 40, "the ranks resumed instead of starting over"
    files = ctx.store.list(f"{train.checkpoints_prefix(ctx)}/checkpoint-40/")
    shards = {int(m.group(1)) for f in files if (m := re.search(r"zero_pp_rank_(\d+)_mp_rank_00_optim_states", f))}
    rngs = {int(m.group(1) or 0) for f in files if (m := re.search(r"rng_state(?:_(\d+))?\.pth$", f))}
    assert shards == set(range(ranks)) and rngs == set(range(ranks)), files


def test_config_builders():
    spec = parse_spec({"train": {"deepspeed": "zero3", "offload": True}})
    ds = recipe.deepspeed_config(spec.train, on_cpu=False)
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["bf16"] == {"enabled": "auto"}
    assert recipe.deepspeed_config(parse_spec({"train": {"deepspeed": "none"}}).train, on_cpu=True) is None
    default = parse_spec({}).train
    none = lambda m: False  # noqa: E731  no flash-attn, no Liger
    default = parse_spec({"train": {"gpusPerNode": 4}}).train
    gpu = recipe.runtime_profile(default, cuda=True, world_size=4, installed=none)
    kw = recipe.sft_kwargs(default, "/tmp/o", cuda=True, use_deepspeed=True, profile=gpu)
    assert kw["bf16"] and kw["learning_rate"] == 5e-6 and kw["lr_scheduler_type"] == "cosine"
    assert kw["per_device_train_batch_size"] * kw["gradient_accumulation_steps"] * 4 == 64, "the release's step"
    assert kw["completion_only_loss"] is False, "the release's collator trains on the whole sequence"
    assert kw["deepspeed"]["zero_optimization"]["stage"] == 2 and kw["max_grad_norm"] == 0.0, "the release: unclipped"
    assert kw["train_sampling_strategy"] == "random" and kw["packing"] is False
    cpu = recipe.runtime_profile(default, cuda=False, world_size=1, installed=none)
    assert recipe.sft_kwargs(default, "/tmp/o", cuda=False, use_deepspeed=False, profile=cpu)["bf16"] is False


def test_launch_command_for_nodes():
    multi = parse_spec({"train": {"nodes": 2, "gpusPerNode": 8}}).train
    cmd = train.launch_command(multi, "/etc/s.yaml", {"JOB_COMPLETION_INDEX": "1", "MASTER_ADDR": "e-train-1-0.svc"})
    assert "--nnodes=2" in cmd and "--node-rank=1" in cmd and "--master-addr=e-train-1-0.svc" in cmd
    assert "--nproc-per-node=8" in cmd and cmd[-2:] == ["--launcher", "inprocess"]
    single = parse_spec({"train": {"gpusPerNode": 4}}).train
    assert "--standalone" in train.launch_command(single, "s.yaml", {})
    assert train.launch_command(parse_spec({}).train, "s.yaml", {}) is None
    assert train.launch_command(single, "s.yaml", {"LOCAL_RANK": "0"}) is None, "already under torchrun"


def test_runtime_profile():
    have = lambda *mods: lambda m: m in mods  # noqa: E731
    default = parse_spec({}).train
    cpu = recipe.runtime_profile(default, cuda=False, world_size=1, installed=have())
    assert cpu == {
        "attn": "sdpa",
        "packing": False,
        "padding_free": False,
        "liger": False,
        "deepspeed": "none",
        "sampling": "random",
    }
    gpu = recipe.runtime_profile(default, cuda=True, world_size=1, installed=have("flash_attn", "liger_kernel"))
    assert gpu["attn"] == "flash_attention_2" and gpu["padding_free"] and gpu["liger"] and gpu["deepspeed"] == "none"
    assert gpu["packing"] is False, "optimize never packs: samples per step stay the recipe's"
    assert recipe.runtime_profile(default, cuda=True, world_size=8, installed=have())["deepspeed"] == "zero2"
    unoptimized = parse_spec({"train": {"optimize": False}}).train
    assert (
        recipe.runtime_profile(unoptimized, cuda=True, world_size=1, installed=have("flash_attn"))["deepspeed"]
        == "zero2"
    )
    packed = parse_spec({"train": {"packing": True}}).train
    with pytest.raises(BadInput, match="packing needs flash-attn"):
        recipe.runtime_profile(packed, cuda=False, world_size=1, installed=have())


def test_trained_model_dir_in_place_or_downloaded_once(tmp_path, s3_endpoint, bucket, monkeypatch):
    """A file:// store's model is used where it lies (no GB copy); an S3 one is downloaded once."""
    from lrm_safety.store import S3Store

    model = tmp_path / "weights"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(1000))

    def finish_train(ctx):
        keys = ctx.store.upload_dir(model, "exp/train/model")
        ctx.store.write_manifest("exp/train", stage="train", config_hash=ctx.hash("train"), files=keys)

    ctx = make_ctx(tmp_path, {})
    finish_train(ctx)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LRM_SAFETY_CACHE", str(cache))
    assert train.trained_model_dir(ctx) == (tmp_path / "store" / "exp" / "train" / "model").resolve()
    assert not cache.exists()
    ctx._store = S3Store(bucket, "root", endpoint=s3_endpoint)
    finish_train(ctx)
    calls = []
    real = S3Store.download_dir
    monkeypatch.setattr(S3Store, "download_dir", lambda self, *a: calls.append(a) or real(self, *a))
    first = train.trained_model_dir(ctx)
    assert train.trained_model_dir(ctx) == first and len(calls) == 1 and cache in first.parents
    assert (first / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
