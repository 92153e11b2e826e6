"""Does the train stage's default path keep fp32 master weights? One AdamW step at the release's lr 5e-6 on the
builtin model, configured as the stage configures it for one GPU (train.runtime_profile / numerics / sft_kwargs),
compared with an fp32 reference and with pure bf16. On a CPU the GPU decision is faked and the step runs on the
CPU in bf16 autocast (tests/test_train_numerics.py); on a GPU it runs there (benchmarks/gpu_check.py).

  python benchmarks/numerics_check.py      # prints the three paths' changed fraction and mean |update|
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEXTS = [
    "<think>\nThe request asks for a weapon; that is harmful, so I refuse.\n</think>\n\nI'm sorry, I can't help.",
    "<think>\n2 + 3 = 5, and 5 x 4 = 20.\n</think>\n\nThe answer is \\boxed{20}.",
    "<think>\nA recipe for bread is harmless.\n</think>\n\nMix flour, water, yeast and salt, then bake.",
    "<think>\nPrivacy: sharing someone's address is not allowed.\n</think>\n\nSorry, I can't share that.",
]


def one_step(model_dir, out_dir, **train_over) -> dict:
    """One optimizer step on the stage's one-GPU configuration; where CUDA is missing it runs on the CPU (use_cpu)
    with the same decisions. Returns the fraction of parameters that moved and the mean |update| of those."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lrm_safety.spec import parse_spec
    from lrm_safety.training import recipe

    t = parse_spec(
        {
            "train": {
                "learningRate": 5e-6,
                "maxSteps": 1,
                "perDeviceBatchSize": 4,
                "gradientAccumulation": 1,
                "gradientCheckpointing": False,
                "maxLength": 64,
                **train_over,
            }
        }
    ).train
    profile = recipe.runtime_profile(t, cuda=True, world_size=1, installed=lambda module: False)
    num = recipe.numerics(t, cuda=True, use_deepspeed=False)
    kw = recipe.sft_kwargs(t, str(out_dir), cuda=True, use_deepspeed=False, profile=profile)
    kw.update(use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no", logging_steps=1)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [{"input_ids": tok(x).input_ids[:64]} for x in TEXTS]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, num["load_dtype"]))
    before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
    trainer = SFTTrainer(model=model, args=SFTConfig(**kw), train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.train()
    changed = total = 0
    size = 0.0
    for n, p in trainer.model.named_parameters():
        d = (p.detach().float().cpu() - before[n]).abs()
        moved = d > 0
        changed += int(moved.sum())
        total += d.numel()
        size += float(d[moved].sum())
    del trainer, model
    return {
        "changed": changed / total,
        "meanUpdate": size / max(changed, 1),
        "loadDtype": num["load_dtype"],
        "master": num["master"],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def compare(model_dir) -> dict:
    """The default path, the fp32 reference and pure bf16, side by side."""
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "default": one_step(model_dir, Path(tmp) / "d"),
            "fp32": one_step(model_dir, Path(tmp) / "f", precision="fp32"),
            "bf16-pure": one_step(model_dir, Path(tmp) / "p", precision="bf16-pure", deepspeed="none"),
        }


def main() -> int:
    from lrm_safety.models.refs import resolve_model

    res = compare(resolve_model("builtin:smollm2-135m-instruct"))
    for name, r in res.items():
        print(
            f"{name:<10} changed {r['changed']:.3f}  mean |dw| {r['meanUpdate']:.2e}  ({r['loadDtype']}, "
            f"{r['master']} master, {r['device']})"
        )
    print("RESULT", json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
