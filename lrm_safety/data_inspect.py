"""`lrm-safety inspect`: the exact text the student will be trained on, before any GPU hour is spent.

Each row is rendered by the same code train uses (training_text.py): the part the loss ignores is dimmed, the
trained part is bold, the boundary is the student's generation prompt, and a row whose trained part holds no
reasoning is flagged (the DeepSeek-R1-Distill template with `train.rendering: conversation` does that to
every row).
"""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from lrm_safety.context import StageContext
from lrm_safety.stages import distill, mix
from lrm_safety.training.text import reasoning_in


def training_rows(ctx: StageContext) -> tuple[list[dict], str]:
    """mix's output when it has run for this spec, else the mixture built from the spec's data now, else (no data
    yet, or a store this machine cannot read) example rows in the spec's style: the rendering can be checked
    before anything has run."""
    from lrm_safety.store import store_problem

    try:
        if ctx.is_done("mix"):
            return ctx.store.read_jsonl(f"{ctx.artifacts('mix')}/train.jsonl"), "the mix stage's output"
        if ctx.spec.mix.safety_source or ctx.is_done(distill.STAGE):
            splits, _, _ = mix.build(ctx, None)
            return splits["train"], "built from the spec's data (mix has not run)"
        why = "no distill output yet"
    except Exception as e:
        why = store_problem(e)
        if why is None:
            raise
    return preview_rows(ctx), f"EXAMPLE rows in the {ctx.spec.distill.style} style, not your data: {why}"


def preview_rows(ctx: StageContext) -> list[dict]:
    """One safety row in the spec's style and one math row, shaped as distill and mix write them."""
    from lrm_safety import styles
    from lrm_safety.data.synthetic import synthetic_math

    rec = next(r for r in ctx.read_rows("builtin:demo-safety") if r.get("label") == "harmful")
    refusal = ctx.spec.distill.rectify.refusal_text or styles.NOCOT_REFUSAL  # a preview: no store read
    style = ctx.spec.distill.style
    if style == "template":
        response = styles.format_response(
            styles.template_reasoning(styles.verdicts_from_labels(rec["categories"]), rec["prompt"]), refusal
        )
    elif style == "nocot":
        response = styles.nocot_response(refusal)
    else:
        response = styles.format_response(
            "The user asks how to build an explosive to destroy a car. That is illegal "
            "and dangerous, so I must refuse without giving any detail.",
            refusal,
        )
    math = synthetic_math(1)[0]
    system = styles.system_prompt(style) if ctx.spec.mix.system_prompt else None
    head = [{"role": "system", "content": system}] if system else []
    return [
        {
            "kind": "safety",
            "messages": head + [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": response}],
        },
        {
            "kind": "math",
            "messages": head
            + [{"role": "user", "content": math["prompt"]}, {"role": "assistant", "content": math["response"]}],
        },
    ]


def interleaved(data: list[dict]) -> list[dict]:
    """Safety, math, safety, math...: the mixture puts math first (the release's order), so its first rows would
    all be math and a user would see no safety row at the default --rows."""
    safety = [r for r in data if r.get("kind") == "safety"]
    other = [r for r in data if r.get("kind") != "safety"]
    out = []
    for i in range(max(len(safety), len(other))):
        out += ([safety[i]] if i < len(safety) else []) + ([other[i]] if i < len(other) else [])
    return out


def inspect(ctx: StageContext, rows: int = 3, console: Console | None = None, order: str = "interleaved") -> list[dict]:
    """Print `rows` training examples (safety and math interleaved, or `order="mixture"`: the training file's
    order); return what was shown (token counts, reasoning present)."""
    console = console or Console()
    data, source = training_rows(ctx)
    if order == "interleaved":
        data = interleaved(data)
    t = ctx.spec.train
    renderer = mix.student_renderer(ctx, max_length=t.max_length)
    tok = renderer.tokenizer
    masked_prompt = t.loss == "completion"
    console.print(
        f"[bold]{ctx.exp.name}[/]: {len(data)} training rows ({source}); student {ctx.spec.student.model} "
        f"(tokenizer from {getattr(renderer, 'source', 'the model')}); rendering {t.rendering}; loss on "
        f"{'the completion only' if masked_prompt else 'the whole sequence'}"
    )
    shown = []
    for n, row in enumerate(data[:rows]):
        r = renderer(row["messages"], row.get("endOfTurn", True))
        prompt_text = tok.decode(r.input_ids[: r.completion_start])
        completion_text = tok.decode(r.input_ids[r.completion_start :])
        body = Text()
        body.append(prompt_text, style="dim strike" if masked_prompt else "dim")
        body.append(completion_text, style="bold")
        has_reasoning = reasoning_in(r)
        trained = len(r.input_ids) - (r.completion_start if masked_prompt else 0)
        title = (
            f"row {n} ({row.get('kind', '?')}): {len(r.input_ids)} tokens = {r.completion_start} prompt + "
            f"{len(r.input_ids) - r.completion_start} completion; {trained} trained"
            + ("; TRUNCATED to train.maxLength" if r.truncated else "")
        )
        console.print(Panel(body, title=title, title_align="left"))
        if not has_reasoning:
            console.print(
                f"[bold red]warning:[/] row {n}: the trained part holds no reasoning (no text before "
                f"</think>): the student would learn answers without their reasoning"
                + (
                    " — the chat template drops it in rendering: conversation; use prompt-completion"
                    if t.rendering == "conversation"
                    else ""
                )
            )
        shown.append(
            {
                "tokens": len(r.input_ids),
                "promptTokens": r.completion_start,
                "trainedTokens": trained,
                "reasoning": has_reasoning,
                "truncated": r.truncated,
            }
        )
    console.print("[dim]dim: the generation prompt (struck through: no loss on it); bold: the trained response[/]")
    return shown
