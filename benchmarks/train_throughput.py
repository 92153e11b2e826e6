"""Train-stage throughput against the study's recipe, side by side in one process on the same data.

reference: the recipe of ../shared/bench/sft_reference.py (padded batches of 2 x grad-accum 8, gradient
           checkpointing, DeepSpeed ZeRO-2 on GPU, bf16 on GPU).
stage:     what `lrm-safety stage train` runs for the default spec on this machine (`runtime_profile` and
           `numerics`: no ZeRO partitioning on one process, fp32 master weights under bf16 autocast, random
           sample order, and on a GPU with flash-attn and Liger installed padding-free micro-batches and fused
           linear cross-entropy). Same effective batch of 16 sequences per optimizer step, same loss.

  python benchmarks/train_throughput.py --shape 1.5b --steps 12            # on a GPU (the issue's figure)
  python benchmarks/train_throughput.py --shape tiny --steps 6 --max-len 512  # CPU smoke run

Prints one RESULT line per mode and the stage/reference tokens-per-second ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REFERENCE = REPO.parent / "shared" / "bench" / "sft_reference.py"

SHAPES = {
    "tiny": dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=512
    ),
    "0.5b": dict(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864
    ),
    "1.5b": dict(
        hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960
    ),
}
VOCAB = 151936
ZERO2 = {
    "zero_optimization": {
        "stage": 2,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 5e8,
        "allgather_bucket_size": 5e8,
    },
    "bf16": {"enabled": True},
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_clipping": "auto",
}


def _reference_module():
    """The shared reference script's helpers (tokenizer), when ../shared is beside the checkout."""
    if not REFERENCE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("sft_reference", REFERENCE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    ref = _reference_module()
    if ref is not None:
        return ref.tokenizer()
    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t1")


def data(n: int, min_len: int, max_len: int, seed: int = 0):
    """Random token sequences with lengths spread over [min_len, max_len], as the reference does."""
    from datasets import Dataset

    rng = random.Random(seed)
    return Dataset.from_list(
        [{"input_ids": [rng.randrange(2, VOCAB) for _ in range(rng.randint(min_len, max_len))]} for _ in range(n)]
    )


def run(shape: str, mode: str, steps: int, warm: int, min_len: int, max_len: int) -> dict:
    from transformers import AutoModelForCausalLM, Qwen2Config, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lrm_safety.spec import parse_spec
    from lrm_safety.training.recipe import numerics, runtime_profile, sft_kwargs

    cuda = torch.cuda.is_available()
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(29500 + random.randint(0, 999)),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
    )
    cfg = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=max(4096, max_len), **SHAPES[shape])
    ds = data(16 * steps, min_len, max_len)
    tokens = sum(len(r) for r in ds["input_ids"])
    out = f"/tmp/bench-{shape}-{mode}"
    common = dict(
        output_dir=out,
        max_steps=steps,
        learning_rate=5e-6,
        lr_scheduler_type="cosine",
        max_length=max_len,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=42,
        dataloader_num_workers=0,
    )
    if mode == "reference":
        kw = dict(
            common,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=8,
            bf16=cuda,
            gradient_checkpointing=True,
            use_cpu=not cuda,
        )
        if cuda:
            kw["deepspeed"] = ZERO2
        attn = "sdpa"
    else:
        # The reference's 16 samples per step (its 2 x 8 on one GPU), not the 4-GPU recipe's 64.
        spec = parse_spec({"train": {"maxLength": max_len, "maxSteps": steps, "gradientAccumulation": 8}}).train
        profile = runtime_profile(spec, cuda, world_size=1)
        kw = sft_kwargs(spec, out, cuda, use_deepspeed=profile["deepspeed"] != "none" and cuda, profile=profile)
        kw.update({k: v for k, v in common.items() if k in ("save_strategy", "report_to", "logging_steps")})
        attn = profile["attn"]
    # The reference loads bf16 weights under DeepSpeed (fp32 masters in its optimizer); the stage loads as its
    # numerics say (fp32 weights under bf16 autocast on one GPU without DeepSpeed).
    dtype = (
        (torch.bfloat16 if cuda else torch.float32)
        if mode == "reference"
        else getattr(torch, numerics(spec, cuda, use_deepspeed=bool(kw.get("deepspeed")))["load_dtype"])
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
    nparams = sum(p.numel() for p in model.parameters())

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer = SFTTrainer(
        model=model, args=SFTConfig(**kw), train_dataset=ds, processing_class=tokenizer(), callbacks=[Clock()]
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    dt = stamps[-1] - stamps[warm - 1]
    tok_s = tokens * (steps - warm) / steps / dt
    mean_len = tokens / len(ds)
    flops_tok = 6 * nparams + 12 * cfg.num_hidden_layers * cfg.hidden_size * mean_len
    import resource

    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = dict(
        shape=shape,
        mode=mode,
        device="cuda" if cuda else "cpu",
        params=nparams,
        steps=steps,
        tokens_per_s=round(tok_s, 1),
        step_s=round(dt / (steps - warm), 3),
        peak_gib=round(peak / 2**30, 2),
        mfu_vs_989=round(flops_tok * tok_s / 989e12, 4) if cuda else None,
        wall_s=round(wall, 1),
        settings={
            k: kw.get(k)
            for k in (
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "gradient_checkpointing",
                "packing",
                "use_liger_kernel",
                "train_sampling_strategy",
            )
        }
        | {"deepspeed": bool(kw.get("deepspeed")), "attn": attn},
    )
    print("RESULT", json.dumps(res), flush=True)
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="1.5b" if torch.cuda.is_available() else "tiny", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warm", type=int, default=2)
    p.add_argument("--min-len", type=int, default=256)
    p.add_argument("--max-len", type=int, default=4096)
    args = p.parse_args(argv)
    results = {m: run(args.shape, m, args.steps, args.warm, args.min_len, args.max_len) for m in ("reference", "stage")}
    ratio = results["stage"]["tokens_per_s"] / results["reference"]["tokens_per_s"]
    print(f"\n{'mode':<10} {'tokens/s':>10} {'step s':>8} {'peak GiB':>9} {'MFU':>7}")
    for m, r in results.items():
        mfu = f"{r['mfu_vs_989']:.1%}" if r["mfu_vs_989"] is not None else "-"
        print(f"{m:<10} {r['tokens_per_s']:>10} {r['step_s']:>8} {r['peak_gib']:>9} {mfu:>7}")
    print(f"ratio stage/reference: {ratio:.2f}x ({args.shape}, {results['stage']['device']})")
    out = os.environ.get("OUT")
    if out:
        Path(out, "train_throughput.json").write_text(json.dumps({"results": results, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
