"""mix: safety samples + math reasoning samples -> chat conversations for SFT.

Mixing math in is what keeps over-refusal down in the study (1k or 400 safety + 4k math).
"""
from __future__ import annotations

import random

from rich.console import Console

from .. import styles
from ..errors import BadInput
from ..mathgen import synthetic_math
from ..models import resolve_model
from . import distill
from .common import StageContext, length_stats, skipped, token_counter

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


def _math_rows(ctx: StageContext) -> list[dict]:
    m = ctx.spec.mix
    if m.math_count == 0:
        return []
    if not m.math_source:
        raise BadInput("spec.mix.mathSource: no math source; set it (distill, a JSONL path, or builtin:synthetic-math) "
                         "or set mathCount: 0")
    if m.math_source == "builtin:synthetic-math":
        return synthetic_math(m.math_count, seed=m.seed)
    if m.math_source == "distill":
        rows = distill.accepted_rows(ctx, "math")
        if not rows:
            raise BadInput("spec.mix.mathSource is distill but the distill stage produced no math samples "
                             "(set distill.mathPrompts)")
        return rows
    return ctx.read_rows(m.math_source)


def _sample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    rows = list(rows)
    rng.shuffle(rows)
    return rows[:n]


def build(ctx: StageContext, count_tokens, tokenizer) -> tuple[dict[str, list[dict]], dict, dict]:
    """Pure-ish core: returns ({split: conversations}, counts, metrics)."""
    m, spec = ctx.spec.mix, ctx.spec
    rng = random.Random(m.seed)
    safety_src = ctx.read_rows(m.safety_source) if m.safety_source else distill.accepted_rows(ctx, "safety")
    math_src = _math_rows(ctx)
    counts = {"safetyAvailable": len(safety_src), "mathAvailable": len(math_src)}
    system = styles.system_prompt(spec.distill.style) if m.system_prompt else None
    seen: set[str] = set()
    dupes = 0
    samples = []
    for kind, rows, want in (("safety", safety_src, m.safety_count), ("math", math_src, m.math_count)):
        taken = 0
        for row in _sample(rows, len(rows), rng):
            if taken >= want:
                break
            prompt, response = _as_pair(row)
            key = " ".join(prompt.lower().split())
            if key in seen:
                dupes += 1
                continue
            seen.add(key)
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            samples.append({"kind": kind, "messages": msgs})
            taken += 1
        counts[kind] = taken
        if taken < want:
            counts[f"{kind}Shortfall"] = want - taken
    counts["duplicatesDropped"] = dupes
    max_len = m.max_length or spec.train.max_length
    def render(messages) -> str:
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(x["content"] for x in messages)

    kept, lengths, over = [], [], 0
    for s in samples:
        n = count_tokens(render(s["messages"]))
        if n > max_len:
            over += 1
            if m.overlength == "drop":
                continue
            # Truncate the assistant turn: the longest prefix whose conversation fits (binary search).
            resp = s["messages"][-1]["content"]
            lo, hi = 0, len(resp)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                s["messages"][-1]["content"] = resp[:mid]
                if count_tokens(render(s["messages"])) <= max_len:
                    lo = mid
                else:
                    hi = mid - 1
            s["messages"][-1]["content"] = resp[:lo]
            n = count_tokens(render(s["messages"]))
        s["tokens"] = n
        lengths.append(n)
        kept.append(s)
    counts["overLength"] = over
    counts["overLengthPolicy"] = m.overlength
    rng.shuffle(kept)
    n_held = int(round(len(kept) * m.heldout_fraction))
    splits = {"train": kept[n_held:], "heldout": kept[:n_held]}
    counts["train"], counts["heldout"] = len(splits["train"]), len(splits["heldout"])
    metrics = {"tokens": length_stats(lengths), "totalTokens": sum(lengths)}
    return splits, counts, metrics


def run(ctx: StageContext, **_) -> dict:
    done = skipped(ctx, STAGE, console)
    if done:
        return done
    student = ctx.spec.student
    count, tok = token_counter(resolve_model(student.model, revision=student.revision,
                                             endpoint=ctx.spec.storage.endpoint, base_dir=ctx.base_dir))
    splits, counts, metrics = build(ctx, count, tok)
    if not splits["train"]:
        raise BadInput("mix produced no training samples: distill accepted none and no math was mixed in")
    prefix = ctx.prefix(STAGE)
    files = []
    for name, rows in splits.items():
        key = f"{prefix}/{name}.jsonl"
        ctx.store.write_jsonl(key, rows)
        files.append(key)
    ctx.store.write_manifest(prefix, stage=STAGE, config_hash=ctx.hash(STAGE), files=files, counts=counts,
                             metrics=metrics)
    console.print(f"mix: {counts['train']} train / {counts['heldout']} held out "
                  f"({counts.get('safety', 0)} safety + {counts.get('math', 0)} math)")
    return {"stage": STAGE, "counts": counts, "metrics": metrics, "complete": True}
