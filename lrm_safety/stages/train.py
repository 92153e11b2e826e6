"""train: supervised fine-tuning with TRL SFTTrainer, full or LoRA, optionally under DeepSpeed ZeRO-2/3.

Conversations are tokenised here (training_text.py: the student's generation prompt, then the response with
its reasoning) and handed to TRL as input ids with a completion mask: the loss covers the whole sequence, as
the release's TRL 0.16 collator did, or the completion only (`train.loss`). Checkpoints are
uploaded as they are saved (each node uploads its own ZeRO shards); a restarted pod downloads the
newest complete one and resumes. The store keeps only that newest one, and none once the model is
written unless `train.keepCheckpoints`: with optimizer state each is about 3x the model.
Several GPUs or nodes: the stage re-execs itself under torchrun with rendezvous from the
environment the operator sets (MASTER_ADDR, JOB_COMPLETION_INDEX).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from rich.console import Console

from lrm_safety.context import StageContext
from lrm_safety.models.refs import cached_dir, resolve_model
from lrm_safety.stages.common import skipped, summary_from_manifest
from lrm_safety.training.extension_cache import extension_cache
from lrm_safety.training.recipe import numerics, runtime_profile, sft_kwargs
from lrm_safety.training.text import Renderer

console = Console(stderr=True)
STAGE = "train"
COMPLETE = "_COMPLETE"


def tokenized_rows(rows: list[dict], renderer) -> list[dict]:
    """mix's conversations -> {input_ids, completion_mask}: the exact tokens train sees (training_text.py)."""
    out = []
    for row in rows:
        r = renderer(row["messages"], row.get("endOfTurn", True))
        out.append({"input_ids": r.input_ids, "completion_mask": r.completion_mask})
    return out


def launch_command(train_spec, spec_path: str, env: dict, force: bool = False) -> Optional[list[str]]:
    """torchrun argv when this pod must run several processes (or is one node of several, or `force`); else None."""
    nproc = train_spec.gpus_per_node or 1
    if env.get("LOCAL_RANK") is not None or (nproc == 1 and train_spec.nodes == 1 and not force):
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={train_spec.nodes}"]
    if train_spec.nodes > 1:
        cmd += [
            f"--node-rank={env.get('JOB_COMPLETION_INDEX', '0')}",
            f"--master-addr={env.get('MASTER_ADDR', '127.0.0.1')}",
            f"--master-port={env.get('MASTER_PORT', '29500')}",
        ]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "lrm_safety.cli", "stage", "train", "--spec", spec_path, "--launcher", "inprocess"]


# ---------------------------------------------------------------- checkpoints in the store
def checkpoints_prefix(ctx: StageContext) -> str:
    """Keyed by config hash: a run with another config never resumes from these."""
    return f"{ctx.prefix(STAGE)}/checkpoints-{ctx.hash(STAGE)}"


def newest_checkpoint(store, prefix: str) -> Optional[str]:
    """The highest-step checkpoint whose upload completed."""
    steps = checkpoint_steps(store, prefix)
    return f"{prefix}/checkpoint-{steps[-1]}" if steps else None


def _step_of(name: str) -> Optional[int]:
    """N for a `checkpoint-N` folder name, else None."""
    head, _, tail = name.partition("-")
    return int(tail) if head == "checkpoint" and tail.isdigit() else None


def checkpoint_steps(store, prefix: str, complete_only: bool = True) -> list[int]:
    """Steps of the checkpoints under `prefix`; complete ones only (their marker is written last) by default."""
    steps = set()
    for key in store.list(f"{prefix}/"):
        parts = key[len(prefix) + 1 :].split("/")
        step = _step_of(parts[0])
        if step is not None and (parts[-1] == COMPLETE or not complete_only):
            steps.add(step)
    return sorted(steps)


def prune_checkpoints(store, prefix: str, keep_from: Optional[int] = None) -> int:
    """Delete checkpoints below step `keep_from` (all when None), marker first so none is ever half-resumable."""
    removed = 0
    for step in checkpoint_steps(store, prefix, complete_only=False):
        if keep_from is None or step < keep_from:
            key = f"{prefix}/checkpoint-{step}"
            store.delete_prefix(f"{key}/{COMPLETE}")
            removed += store.delete_prefix(f"{key}/")
    return removed


def scratch_dir(ctx: StageContext) -> Path:
    """Node-local work folder, the same for every rank of the node and for every restart of the same run.

    Shared by the ranks so that DeepSpeed writes all of a node's shards into one checkpoint folder; stable
    across restarts so that what a killed pod left behind is cleared by its successor instead of leaking.
    """
    import hashlib

    root = Path(os.environ.get("LRM_SAFETY_SCRATCH") or tempfile.gettempdir())
    where = hashlib.sha256(ctx.store.uri(ctx.prefix(STAGE)).encode()).hexdigest()[:8]
    return root / f"lrm-train-{ctx.exp.name}-{ctx.hash(STAGE)}-{where}"


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _is_local_main() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _curves_uploader(store, runs: Path, prefix: str, every_s: float = 30.0):
    """Rank 0 copies TensorBoard's event files to the store while training runs (at most every `every_s`, and at
    the end), so `tensorboard --logdir s3://.../train/runs` shows the curves during the run."""
    from transformers import TrainerCallback

    class Upload(TrainerCallback):
        last = 0.0

        def _push(self):
            if runs.is_dir():
                store.upload_dir(runs, prefix)
            Upload.last = time.monotonic()

        def on_log(self, args, state, control, **kw):
            if state.is_world_process_zero and time.monotonic() - Upload.last >= every_s:
                self._push()

        def on_train_end(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self._push()

    return Upload()


def _progress(store, prefix: str):
    """Rank 0 reports step/total, loss and tokens/s to the stage's progress object (progress.py)."""
    from transformers import TrainerCallback

    from lrm_safety.progress import ProgressReporter

    class Report(TrainerCallback):
        reporter = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                Report.reporter = ProgressReporter(store, prefix, state.max_steps, "steps")
                Report.reporter.update(state.global_step, force=True)

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and Report.reporter is not None:
                logs = logs or {}
                Report.reporter.update(state.global_step, loss=logs.get("loss"), learningRate=logs.get("learning_rate"))

        def on_train_end(self, args, state, control, **kw):
            if state.is_world_process_zero and Report.reporter is not None:
                Report.reporter.update(state.global_step, force=True)

    return Report()


def _uploader(store, prefix: str):
    from transformers import TrainerCallback

    class Upload(TrainerCallback):
        """Each node uploads its checkpoint files (ZeRO shards are per rank), then rank 0 writes the marker.

        The marker is written after every node's upload and before older checkpoints are pruned, so the store
        always holds one complete checkpoint and never resumes from a half-uploaded one.
        """

        def on_save(self, args, state, control, **kw):
            step = state.global_step
            local = Path(args.output_dir) / f"checkpoint-{step}"
            key = f"{prefix}/checkpoint-{step}"
            _barrier()  # every rank has written its files (RNG state, ZeRO partition) before any node uploads
            if _is_local_main() and local.is_dir():
                store.upload_dir(local, key)
                for old in local.parent.glob("checkpoint-*"):
                    old_step = _step_of(old.name)
                    if old_step is not None and old_step < step:
                        shutil.rmtree(old, ignore_errors=True)  # the store has it; local disk is bounded
            _barrier()
            if _is_main():
                store.write_json(f"{key}/{COMPLETE}", {"step": step})
                prune_checkpoints(store, prefix, keep_from=step)

    return Upload()


class _Clock:
    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class CB(TrainerCallback):
            def on_step_begin(self, *a, **k):
                if clock.start is None:
                    clock.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                clock.steps += 1
                clock.end = time.perf_counter()

        self.start = None
        self.end = None
        self.steps = 0
        self.callback = CB()


# ---------------------------------------------------------------- the stage
def run(ctx: StageContext, launcher: str = "auto", spec_path: Optional[str] = None, **_) -> dict:
    done = skipped(ctx, STAGE, console)
    if done:
        return done
    if os.environ.get("LOCAL_RANK") is not None:
        return _train(ctx)  # a rank under torchrun: the launcher holds the extension cache
    ctx.require("mix")  # bad input is found here, where its exit code survives (torchrun reports any failure as 1)
    cmd = None
    if launcher == "torchrun" or (launcher == "auto" and spec_path):
        cmd = launch_command(ctx.spec.train, spec_path, dict(os.environ), force=launcher == "torchrun")
    with extension_cache() as (_, stale):
        if stale:
            console.print(f"train: removed {len(stale)} stale build lock(s) left by a killed run: {stale[0]}")
        if not cmd:
            return _train(ctx)
        console.print(f"train: launching {' '.join(cmd[2:6])} ...")
        rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(rc)
    return summary_from_manifest(ctx.require(STAGE))


def _train(ctx: StageContext) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    spec, t, store = ctx.spec, ctx.spec.train, ctx.store
    ctx.require("mix")
    cuda = torch.cuda.is_available()
    profile = runtime_profile(t, cuda, int(os.environ.get("WORLD_SIZE", "1")))
    use_ds = (
        profile["deepspeed"] != "none"
        and (cuda or os.environ.get("DS_ACCELERATOR") == "cpu")
        and ("LOCAL_RANK" in os.environ)
    )
    rows = store.read_jsonl(f"{ctx.artifacts('mix')}/train.jsonl")
    model_dir = resolve_model(
        spec.student.model, revision=spec.student.revision, endpoint=spec.storage.endpoint, base_dir=ctx.base_dir
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = Dataset.from_list(tokenized_rows(rows, Renderer(tokenizer, mode=t.rendering, max_length=t.max_length)))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    num = numerics(t, cuda, use_ds)
    dtype = getattr(torch, num["load_dtype"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=profile["attn"])
    peft_config = None
    if t.method == "lora":
        from peft import LoraConfig

        lo = t.lora
        tm = lo.target_modules
        peft_config = LoraConfig(
            r=lo.r,
            lora_alpha=lo.alpha,
            lora_dropout=lo.dropout,
            task_type="CAUSAL_LM",
            target_modules=tm[0] if tm == ["all-linear"] else tm,
        )
    work = scratch_dir(ctx)
    ckpt_prefix = checkpoints_prefix(ctx)
    clock = _Clock()
    cfg = SFTConfig(**sft_kwargs(t, str(work / "out"), cuda, use_ds, profile))
    _ = cfg.device  # sets up the process group under torchrun, so a node's ranks can wait for its download
    with _workspace(store, ckpt_prefix, work) as resume:
        callbacks = [_uploader(store, ckpt_prefix), clock.callback, _progress(store, ctx.prefix(STAGE))]
        if "tensorboard" in t.report_to:
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "runs")
            callbacks.append(_curves_uploader(store, work / "runs", f"{ctx.prefix(STAGE)}/runs"))
        trainer = SFTTrainer(
            model=model,
            args=cfg,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        return _fit(ctx, trainer, rows, resume, work, clock, profile, use_ds, num)


@contextmanager
def _workspace(store, ckpt_prefix: str, work: Path):
    """Clear the node's scratch folder, fetch the newest complete checkpoint into it, yield its path; clean up."""
    ckpt = newest_checkpoint(store, ckpt_prefix)
    resume = str(work / "out" / ckpt.rsplit("/", 1)[1]) if ckpt else None
    if _is_local_main():
        shutil.rmtree(work, ignore_errors=True)  # what a killed predecessor left
        if ckpt:
            store.download_dir(ckpt, resume)
            (Path(resume) / COMPLETE).unlink(missing_ok=True)
            console.print(f"train: resuming from {store.uri(ckpt)}")
    _barrier()
    try:
        yield resume
    finally:
        if _is_local_main():
            shutil.rmtree(work, ignore_errors=True)


def _fit(
    ctx: StageContext,
    trainer,
    rows: list[dict],
    resume: Optional[str],
    work: Path,
    clock: "_Clock",
    profile: dict,
    use_ds: bool,
    num: dict,
) -> dict:
    import torch

    t, store, prefix = ctx.spec.train, ctx.store, ctx.prefix(STAGE)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train(resume_from_checkpoint=resume)
    history = [h for h in trainer.state.log_history if "loss" in h]
    loss_curve = [{"step": h["step"], "loss": round(h["loss"], 5)} for h in history]
    tokens = sum(r.get("tokens", 0) for r in rows)
    epochs_done = trainer.state.epoch or 1.0
    elapsed = (clock.end - clock.start) if clock.start and clock.end else result.metrics.get("train_runtime", 0)
    metrics = {
        "steps": trainer.state.global_step,
        "stepsThisRun": clock.steps,
        "resumedFrom": resume and Path(resume).name,
        "lossCurve": loss_curve,
        "finalLoss": loss_curve[-1]["loss"] if loss_curve else None,
        "firstLoss": loss_curve[0]["loss"] if loss_curve else None,
        "trainRuntimeS": round(result.metrics.get("train_runtime", 0.0), 2),
        "tokensPerS": round(tokens * epochs_done / elapsed, 1) if elapsed else None,
        "peakMemoryGiB": round((torch.cuda.max_memory_allocated() if cuda else _rss()) / 2**30, 2),
        "precision": num["precision"],
        "masterWeights": num["master"],
        "deepspeed": profile["deepspeed"] if use_ds else "none",
        "method": t.method,
        "attention": profile["attn"],
        "packing": profile["packing"],
        "paddingFree": profile["padding_free"],
        "liger": profile["liger"],
        "loss": t.loss,
        "rendering": t.rendering,
        "samplesPerStep": t.per_device_batch_size * t.accumulation * int(os.environ.get("WORLD_SIZE", "1")),
    }
    final = work / "model"
    trainer.save_model(str(final))  # collective under ZeRO-3: every rank calls it
    if _is_main():
        if t.method == "lora" and t.lora.merge:
            from peft import AutoPeftModelForCausalLM

            merged = AutoPeftModelForCausalLM.from_pretrained(
                str(final), dtype=getattr(torch, num["load_dtype"])
            ).merge_and_unload()
            shutil.rmtree(final)
            merged.save_pretrained(str(final), safe_serialization=True)
        trainer.processing_class.save_pretrained(str(final))
        keys = store.upload_dir(final, f"{prefix}/model")
        store.write_json(f"{prefix}/metrics.json", metrics)
        store.write_manifest(
            prefix,
            stage=STAGE,
            config_hash=ctx.hash(STAGE),
            files=keys + [f"{prefix}/metrics.json"],
            counts={"samples": len(rows), "steps": metrics["steps"]},
            metrics={k: v for k, v in metrics.items() if k != "lossCurve"},
            extra={
                "model": store.uri(f"{prefix}/model"),
                "summary": {
                    "counts": {"steps": metrics["steps"]},
                    "metrics": {k: metrics[k] for k in ("finalLoss", "tokensPerS")},
                },
            },
        )
        if not t.keep_checkpoints:
            prune_checkpoints(store, checkpoints_prefix(ctx))  # after the manifest: a crash before it still resumes
        console.print(
            f"train: {metrics['steps']} steps, loss {metrics['firstLoss']} -> {metrics['finalLoss']}, "
            f"model at {store.uri(prefix + '/model')}"
        )
    return {"stage": STAGE, "metrics": metrics}


def _rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def trained_model_dir(ctx: StageContext) -> Path:
    """The trained model as a local folder: in place on a file:// store, else downloaded once into the cache."""
    ctx.require(STAGE)
    in_place = ctx.store.local_path(f"{ctx.artifacts(STAGE)}/model")
    if in_place is not None:
        return in_place

    def download(out: Path) -> Path:
        tmp = out.with_name(out.name + ".partial")
        ctx.store.download_dir(f"{ctx.artifacts(STAGE)}/model", tmp)
        tmp.rename(out)
        return out

    return cached_dir(f"trained:{ctx.store.uri(ctx.artifacts(STAGE))}:{ctx.hash(STAGE)}", download)
