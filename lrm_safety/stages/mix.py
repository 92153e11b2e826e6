"""mix: safety samples + math reasoning samples -> chat conversations for SFT.

Mixing math in is what keeps over-refusal down in the study (1k or 400 safety + 4k math).
"""

from __future__ import annotations

import random
from typing import Optional

from rich.console import Console

from lrm_safety.context import StageContext
from lrm_safety.data.synthetic import synthetic_math
from lrm_safety.errors import BadInput
from lrm_safety.generation.base import estimate_tokens
from lrm_safety.models.refs import resolve_tokenizer
from lrm_safety.stages import distill
from lrm_safety.stages.common import length_stats, skipped
from lrm_safety.training.text import Renderer

console = Console(stderr=True)
STAGE = "mix"


def _as_pair(row: dict) -> tuple[str, str]:
    """(prompt, response) from distill records, prompt/response JSONL, or messages JSONL."""
    if "messages" in row:
        user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        assistant = next(m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant")
        return user, assistant
    prompt = row.get("prompt") or row.get("query") or row.get("problem")
    response = row.get("response") or row.get("solution")
    if not prompt or not response:
        raise BadInput("a sample needs prompt and response fields (or messages)")
    return prompt, response


def student_renderer(ctx: StageContext, max_length: Optional[int] = None) -> Renderer:
    """The student's training-text renderer (its tokenizer and chat template), as train uses it."""
    from transformers import AutoTokenizer

    student = ctx.spec.student
    path, source = resolve_tokenizer(
        student.model, revision=student.revision, endpoint=ctx.spec.storage.endpoint, base_dir=ctx.base_dir
    )
    renderer = Renderer(AutoTokenizer.from_pretrained(path), mode=ctx.spec.train.rendering, max_length=max_length)
    renderer.source = source
    return renderer


def _math_rows(ctx: StageContext) -> list[dict]:
    m = ctx.spec.mix
    if m.math_count == 0:
        return []
    if not m.math_source:
        raise BadInput(
            "spec.mix.mathSource: no math source; set it (distill, a JSONL path, or builtin:synthetic-math) "
            "or set mathCount: 0"
        )
    if m.math_source == "builtin:synthetic-math":
        return synthetic_math(m.math_count, seed=m.seed)
    if m.math_source == "distill":
        rows = distill.accepted_rows(ctx, "math")
        if not rows:
            raise BadInput(
                "spec.mix.mathSource is distill but the distill stage produced no math samples "
                "(set distill.mathPrompts)"
            )
        return rows
    return ctx.read_rows(m.math_source)


def release_sample(rows: list, k: int, seed) -> list:
    """`random.seed(seed); random.sample(rows, k)`, the release's dataset/proc.py, without touching global state."""
    return random.Random(seed).sample(list(rows), k)


def _dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    seen: set[str] = set()
    out = []
    for row in rows:
        key = " ".join(_as_pair(row)[0].lower().split())
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out, len(rows) - len(out)


def build(ctx: StageContext, renderer) -> tuple[dict[str, list[dict]], dict, dict]:
    """({split: conversations}, counts, metrics). `renderer(messages) -> Rendered`: the training text, as train
    renders it, so lengths are the tokens the student is really trained on (None: a word-count estimate)."""
    m, spec = ctx.spec.mix, ctx.spec
    safety_src = ctx.read_rows(m.safety_source) if m.safety_source else distill.accepted_rows(ctx, "safety")
    math_src = _math_rows(ctx)
    counts = {"safetyAvailable": len(safety_src), "mathAvailable": len(math_src), "duplicatesDropped": 0}
    if m.dedupe:
        safety_src, d1 = _dedupe(safety_src)
        math_src, d2 = _dedupe(math_src)
        counts["duplicatesDropped"] = d1 + d2
    if len(safety_src) < m.safety_count:
        if not m.allow_shortfall:
            raise BadInput(
                f"spec.mix.safetyCount is {m.safety_count} but only {len(safety_src)} safety samples are "
                f"available (distill accepted fewer): lower safetyCount, distil more prompts, or set "
                f"mix.allowShortfall: true to train on what there is"
            )
        counts["safetyShortfall"] = m.safety_count - len(safety_src)
    # Math: all of it when there is no more than asked (the release keeps all 4,000), else a sample of its own.
    math = list(math_src) if len(math_src) <= m.math_count else release_sample(math_src, m.math_count, f"{m.seed}-math")
    safety = release_sample(safety_src, min(m.safety_count, len(safety_src)), m.seed)
    system = ctx.wording.system_prompt(spec.distill.style) if m.system_prompt else None
    samples = []
    for kind, rows in (("math", math), ("safety", safety)):  # the release's order: math, then safety
        for row in rows:
            prompt, response = _as_pair(row)
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            sample = {"kind": kind, "messages": msgs}
            if row.get("finish") == "length":  # kept by distill.rectify.keepTruncated: no end of turn trained
                sample["endOfTurn"] = False
            samples.append(sample)
        counts[kind] = len(rows)
    max_len = spec.train.max_length
    kept, lengths, over = [], [], 0
    for s in samples:
        n = (
            len(renderer(s["messages"], s.get("endOfTurn", True)))
            if renderer
            else estimate_tokens(" ".join(x["content"] for x in s["messages"]))
        )
        if n > max_len:
            over += 1
            if m.overlength == "drop":
                continue
        s["tokens"] = min(n, max_len)
        lengths.append(s["tokens"])
        kept.append(s)
    counts["overLength"] = over
    counts["overLengthPolicy"] = m.overlength
    n_held = int(round(len(kept) * m.heldout_fraction))
    held = set(random.Random(f"{m.seed}-heldout").sample(range(len(kept)), n_held)) if n_held else set()
    splits = {
        "train": [s for i, s in enumerate(kept) if i not in held],
        "heldout": [s for i, s in enumerate(kept) if i in held],
    }
    counts["train"], counts["heldout"] = len(splits["train"]), len(splits["heldout"])
    metrics = {"tokens": length_stats(lengths), "totalTokens": sum(lengths)}
    return splits, counts, metrics


def run(ctx: StageContext, **_) -> dict:
    done = skipped(ctx, STAGE, console)
    if done:
        return done
    splits, counts, metrics = build(ctx, student_renderer(ctx))
    if not splits["train"]:
        raise BadInput("mix produced no training samples: distill accepted none and no math was mixed in")
    prefix = ctx.prefix(STAGE)
    files = []
    for name, rows in splits.items():
        key = f"{prefix}/{name}.jsonl"
        ctx.store.write_jsonl(key, rows)
        files.append(key)
    ctx.store.write_manifest(
        prefix, stage=STAGE, config_hash=ctx.hash(STAGE), files=files, counts=counts, metrics=metrics
    )
    console.print(
        f"mix: {counts['train']} train / {counts['heldout']} held out "
        f"({counts.get('safety', 0)} safety + {counts.get('math', 0)} math)"
    )
    return {"stage": STAGE, "counts": counts, "metrics": metrics, "complete": True}
