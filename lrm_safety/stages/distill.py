"""distill: the teacher writes safety reasoning in the chosen style, with the study's failure patterns rectified.

Shard i of N takes the prompts whose id hashes to i. Results are written in small atomic part files under a
directory keyed by the config hash, so a restarted shard skips what it already wrote, a changed
config never mixes with old parts, and no shard writes another's files.
"""

from __future__ import annotations

import hashlib
from typing import Optional

from rich.console import Console
from tqdm.auto import tqdm

from lrm_safety import styles
from lrm_safety.context import StageContext
from lrm_safety.errors import BadInput
from lrm_safety.evaluation.judges.math import answers_match, extract_boxed
from lrm_safety.evaluation.judges.refusal import judge_consistency
from lrm_safety.generation import Sampling, make_generator
from lrm_safety.models.refs import resolve_model
from lrm_safety.progress import ProgressReporter
from lrm_safety.serving.served import api_key as served_api_key
from lrm_safety.serving.served import reachable
from lrm_safety.stages.common import length_stats, skipped, summary_from_manifest, token_counter
from lrm_safety.wording import used as used_words

console = Console(stderr=True)
STAGE = "distill"
MATH_SYSTEM = (
    "You are a helpful assistant. Reason step by step between <think> and </think>, then give the final "
    "answer after </think> with the result in \\boxed{}."
)


def load_prompts(ctx: StageContext) -> list[dict]:
    """Safety prompts then math prompts, each with a stable id (a hash of the text)."""
    d = ctx.spec.distill
    out = []
    for source, kind in ((d.prompts, "safety"), (d.math_prompts, "math")):
        if not source:
            continue
        rows = ctx.read_rows(source)
        if d.limit:
            rows = rows[: d.limit]
        for n, row in enumerate(rows):
            field = d.prompt_field if d.prompt_field and kind == "safety" else None
            text = row.get(field) if field else (row.get("prompt") or row.get("query") or row.get("problem"))
            if not text:
                raise BadInput(
                    f"{source} row {n}: no {field or 'prompt/query/problem'} field "
                    f"(set distill.promptField to the field that holds the prompt)"
                )
            rec = {"id": f"{kind[0]}{hashlib.sha256(text.encode()).hexdigest()[:12]}", "kind": kind, "prompt": text}
            for key in ("categories", "label", "answer"):
                if key in row:
                    rec[key] = row[key]
            out.append(rec)
    seen, unique = set(), []
    for rec in out:
        if rec["id"] not in seen:
            seen.add(rec["id"])
            unique.append(rec)
    return unique


def _harmful(rec: dict) -> Optional[bool]:
    if "label" in rec:
        return str(rec["label"]).lower() in ("harmful", "unsafe", "true", "1")
    if "categories" in rec:
        return bool(rec["categories"])
    return None


class TeacherText(str):
    """A teacher's text, and why its generation ended: "stop" (it ended its turn) or "length" (cut off at the cap)."""

    finish = "stop"

    @classmethod
    def of(cls, text: str, finish: str = "stop") -> "TeacherText":
        out = cls(text)
        out.finish = finish
        return out


class Distiller:
    """Builds one sample per prompt, regenerating rejected ones up to maxAttempts."""

    def __init__(self, ctx: StageContext, generator, count_tokens):
        self.ctx = ctx
        self.d = ctx.spec.distill
        self.r = self.d.rectify.resolved(self.d.style)
        self.refusal = ctx.distill_in_force().rectify.refusal_text
        self.custom = self._custom_instruction()
        self.gen = generator
        self.count = count_tokens
        self.base_sampling = Sampling.from_spec(self.d.sampling)
        self.cut: set[str] = set()  # ids whose response holds teacher text cut off at max_tokens, this attempt

    def _sampling(self, attempt: int) -> Sampling:
        s = self.base_sampling
        # A retry of a greedy config would reproduce the same text: sample instead.
        temp = s.temperature if s.temperature > 0 or attempt == 0 else 0.7
        return Sampling(
            temperature=temp,
            top_p=s.top_p if s.temperature > 0 else 0.95,
            max_tokens=s.max_tokens,
            seed=s.seed + 1000 * attempt,
            batch_size=s.batch_size,
        )

    def _ask(self, messages: list[list[dict]], attempt: int, desc: str, max_tokens: Optional[int] = None) -> list[str]:
        if not messages:
            return []
        s = self._sampling(attempt)
        if max_tokens:
            s = Sampling(s.temperature, s.top_p, max_tokens, s.seed, s.batch_size)
        texts = self.gen.generate(messages, s, desc=desc)
        finish = list(getattr(self.gen, "finish", None) or [])
        return [TeacherText.of(t, finish[i] if i < len(finish) else "stop") for i, t in enumerate(texts)]

    def _use(self, rec: dict, text):
        """`text` goes into rec's response: remember whether the teacher was cut off writing it."""
        if getattr(text, "finish", "stop") == "length":
            self.cut.add(rec["id"])
        return text

    def _custom_instruction(self) -> Optional[tuple[str, str]]:
        """distill.instruction when given, else the style's words in force (the release's by import, or the
        project's), placed where the release places them."""
        ins = self.d.instruction
        if ins is not None:
            text = ins.text if ins.text is not None else self.ctx.read_text(ins.path)
            return text, ins.placement
        text, placement = self.ctx.wording.instruction(self.d.style, self.r.safety_awareness)
        return (text, placement) if text else None

    def _template_verdicts(self, recs: list[dict], attempt: int) -> list[Optional[dict]]:
        """Checklist verdicts per record for a code-built template; None where the labeller left categories out."""
        how = self.d.template_labeller
        if how == "labels":
            return [styles.verdicts_from_labels(r.get("categories", [])) for r in recs]
        if how == "teacher":
            # The whole sampling budget: a reasoning teacher thinks before it lists, and only its answer is read.
            texts = self._ask(
                [[{"role": "user", "content": styles.CHECKLIST_PROMPT.format(prompt=r["prompt"])}] for r in recs],
                attempt,
                "checklist",
            )
            out = []
            for t in texts:
                try:
                    out.append(styles.parse_checklist(styles.answer_only(t)))
                except styles.ChecklistError:
                    out.append(None)
            return out
        from lrm_safety.evaluation.judges.guard import GuardJudge

        guard = GuardJudge.from_spec(reachable(self.ctx.spec, STAGE).evaluate.judge, base_dir=self.ctx.base_dir)
        return [guard.categories(r["prompt"]) for r in recs]

    def _template(self, safety: list[dict], attempt: int, out: dict) -> None:
        if self.d.template_labeller == "oneshot":  # the release's way: the teacher fills the one-shot template
            texts = self._ask(
                [styles.teacher_messages("template", r["prompt"], custom=self.custom) for r in safety],
                attempt,
                "template",
            )
            for r, t in zip(safety, texts):
                self._use(r, t)
                try:
                    reasoning, answer, verdicts = styles.split_template_response(t)
                except styles.ChecklistError:
                    out[r["id"]] = None  # regenerated: a missing category is never read as "no"
                    continue
                out[r["id"]] = styles.format_response(reasoning, answer)
                r["_verdict_unsafe"] = any(verdicts.values())
            return
        verdicts = self._template_verdicts(safety, attempt)
        labelled = [(r, v) for r, v in zip(safety, verdicts) if v is not None]
        for r, v in zip(safety, verdicts):
            if v is None:
                out[r["id"]] = None
        unsafe = [(r, v) for r, v in labelled if any(v.values())]
        safe = [(r, v) for r, v in labelled if not any(v.values())]
        # Safe prompts: the teacher's plain answer, its own reasoning dropped, so no think tags nest.
        answers = self._ask([[{"role": "user", "content": r["prompt"]}] for r, _ in safe], attempt, "answer")
        for (r, v), a in zip(safe, answers):
            out[r["id"]] = styles.format_response(
                styles.template_reasoning(v, r["prompt"]), styles.answer_only(self._use(r, a))
            )
        if self.d.template_refusal == "teacher":
            refusals = [
                TeacherText.of(styles.answer_only(t), t.finish)
                for t in self._ask(
                    [[{"role": "user", "content": styles.REFUSE_PROMPT.format(prompt=r["prompt"])}] for r, _ in unsafe],
                    attempt,
                    "refusal",
                )
            ]
        else:
            refusals = [self.refusal] * len(unsafe)
        for (r, v), a in zip(unsafe, refusals):
            out[r["id"]] = styles.format_response(styles.template_reasoning(v, r["prompt"]), self._use(r, a))
            r["_verdict_unsafe"] = True

    def _responses(self, recs: list[dict], attempt: int) -> list[Optional[str]]:
        """One candidate response per record, in the style's format (None: the labeller failed; regenerate)."""
        style = self.d.style
        math = [r for r in recs if r["kind"] == "math"]
        safety = [r for r in recs if r["kind"] == "safety"]
        out: dict[str, Optional[str]] = {}
        self.cut = set()
        for r, text in zip(
            math,
            self._ask(
                [[{"role": "system", "content": MATH_SYSTEM}, {"role": "user", "content": r["prompt"]}] for r in math],
                attempt,
                "math",
            ),
        ):
            out[r["id"]] = self._use(r, text)
        if style == "template":
            self._template(safety, attempt, out)
        elif style == "nocot":
            # As the release's sft_train_nocot.json: one fixed refusal after an empty think block; a prompt labelled
            # safe gets the teacher's answer instead.
            benign = [r for r in safety if _harmful(r) is False]
            for r, a in zip(
                benign, self._ask([[{"role": "user", "content": r["prompt"]}] for r in benign], attempt, "answer")
            ):
                out[r["id"]] = styles.nocot_response(styles.answer_only(self._use(r, a)))
            for r in safety:
                out.setdefault(r["id"], styles.nocot_response(self.refusal))
        else:
            texts = self._ask(
                [styles.teacher_messages(style, r["prompt"], self.r.safety_awareness, self.custom) for r in safety],
                attempt,
                style,
            )
            for r, t in zip(safety, texts):
                out[r["id"]] = self._use(r, t)
        return [out[r["id"]] for r in recs]

    def _check(self, rec: dict, response: Optional[str]) -> tuple[bool, Optional[str], str, dict, bool]:
        """(accepted, reason, response, verdicts, retry): apply the rectification filters to one candidate."""
        verdicts: dict = {}
        if response is None:
            return False, "missing_category", "", verdicts, True
        if rec.get("id") in self.cut:
            if not self.r.keep_truncated:  # a sample the student learns from ends where the teacher ended it
                return False, "truncated", response, verdicts, True
            verdicts["cutOff"] = True
        reasoning, answer = styles.parse_response(response)
        if rec["kind"] == "math":
            if reasoning is None:
                return False, "missing_reasoning", response, verdicts, True
            if "answer" in rec:
                got = extract_boxed(answer) or extract_boxed(reasoning)
                verdicts["correct"] = bool(got) and answers_match(got, str(rec["answer"]))
                if not verdicts["correct"]:
                    return False, "wrong_answer", response, verdicts, True
            return True, None, response, verdicts, False
        if self.d.style != "nocot" and reasoning is None:
            return False, "missing_reasoning", response, verdicts, True
        limit = self.r.max_reasoning_tokens
        if limit and reasoning and self.count(reasoning) > limit:
            if self.r.overlong == "truncate":
                words = reasoning.split()
                while words and self.count(" ".join(words)) > limit:
                    words = words[: int(len(words) * 0.9)]
                response = styles.format_response(" ".join(words), answer)
                verdicts["truncated"] = True
            else:
                return False, "overthinking", response, verdicts, self.r.overlong == "regenerate"
        if self.r.consistency_filter:
            ok, reason, v = judge_consistency(response, _harmful(rec))
            verdicts.update(v)
            if not ok:
                return False, reason, response, verdicts, True
        return True, None, response, verdicts, False

    def run(self, recs: list[dict]) -> tuple[list[dict], dict]:
        """Distil a batch of records; returns (results, rejection counts by reason)."""
        reasons: dict[str, int] = {}
        results: dict[str, dict] = {}
        pending = list(recs)
        for attempt in range(self.r.max_attempts):
            if not pending:
                break
            retry = []
            for rec, response in zip(pending, self._responses(pending, attempt)):
                ok, reason, response, verdicts, again = self._check(rec, response)
                reasoning, answer = styles.parse_response(response)
                results[rec["id"]] = {
                    **{k: v for k, v in rec.items() if not k.startswith("_")},
                    "style": self.d.style,
                    "reasoning": reasoning or "",
                    "answer": answer,
                    "response": response,
                    "attempts": attempt + 1,
                    "accepted": ok,
                    "reason": reason,
                    "verdicts": verdicts,
                    "finish": "length" if rec["id"] in self.cut else "stop",
                }
                if not ok:
                    reasons[reason] = reasons.get(reason, 0) + 1
                    if again:
                        retry.append(rec)
            pending = retry
        return [results[r["id"]] for r in recs], reasons


def _parts_prefix(ctx: StageContext, shard: int) -> str:
    return f"{ctx.prefix(STAGE)}/parts-{ctx.hash(STAGE)}-v2/shard-{shard:05d}"


def shard_key(ctx: StageContext, shard: int) -> str:
    return f"{ctx.prefix(STAGE)}/shard-{shard:05d}.jsonl"


def shard_of(rec: dict, num_shards: int) -> int:
    """By the prompt's id, not its position: a shard's share of the math prompts does not depend on how many
    safety prompts there are, so the math share is the same work for every style (see math_unit)."""
    return int(rec["id"][1:], 16) % num_shards


def math_unit(ctx: StageContext, shard: int, num_shards: int) -> Optional[str]:
    """The cache key of one shard's math distillation: it depends on the teacher, the math prompts and the
    sampling, not on the style, so the cells of a study distil their math once per teacher."""
    from lrm_safety.reuse import CannotDigest, digest
    from lrm_safety.spec import config_hash

    d = ctx.spec.distill
    if not d.math_prompts:
        return None
    try:
        data = digest(d.math_prompts, ctx, ctx.local_inputs) if not d.math_prompts.startswith("builtin:") else ""
    except CannotDigest:
        return None
    return config_hash(
        "distill-math",
        ctx.spec.teacher,
        d.math_prompts,
        data,
        d.limit,
        d.sampling,
        d.rectify.resolved(d.style).max_attempts,
        num_shards,
        shard,
    )


def _math_source(ctx: StageContext, key: str) -> Optional[dict]:
    from lrm_safety.reuse import pointer

    ptr = pointer("distill-math", key)
    if not ctx.store.exists(ptr):
        return None
    entry = ctx.store.read_json(ptr)
    return entry if ctx.store.exists(entry.get("shardFile", "")) else None


class _Work:
    """The teacher, loaded on first use (a shard whose work is all done or reused loads nothing)."""

    def __init__(self, ctx: StageContext):
        self.ctx, self.distiller, self.gen = ctx, None, None

    def get(self) -> "Distiller":
        if self.distiller is None:
            t = reachable(self.ctx.spec, STAGE).teacher  # a served teacher is an endpoint here
            model = (
                t.model
                if t.backend == "openai"
                else str(resolve_model(t.model, endpoint=self.ctx.spec.storage.endpoint, base_dir=self.ctx.base_dir))
            )
            count, _ = token_counter(None if t.backend == "openai" else model)
            key = served_api_key("teacher") if self.ctx.spec.teacher.serve is not None else None
            self.gen = make_generator(
                t.backend,
                model,
                endpoint=t.endpoint,
                tensor_parallel=t.tensor_parallel,
                api_key=key,
                max_model_len=t.max_model_len,
                gpu_memory_utilization=t.gpu_memory_utilization,
                max_concurrency=t.max_concurrency,
                seed=self.ctx.spec.distill.sampling.seed,
            )
            self.distiller = Distiller(self.ctx, self.gen, count)
        return self.distiller

    def close(self) -> None:
        if self.gen is not None:
            self.gen.close()


def run_shard(ctx: StageContext, shard: int = 0, num_shards: Optional[int] = None) -> dict:
    """The shard's safety prompts, then its math prompts: reused when a finished distill of the same teacher,
    math prompts and sampling published them, else distilled under a store lease so concurrent cells of a study
    do it once (the others wait, then reuse)."""
    from lrm_safety.reuse import pointer
    from lrm_safety.stages.lease import StoreLease

    num_shards = num_shards or ctx.spec.distill.shards
    if not 0 <= shard < num_shards:
        raise BadInput(f"--shard {shard} is outside 0..{num_shards - 1}")
    store, parts = ctx.store, _parts_prefix(ctx, shard)
    done_key = f"{parts}/_DONE.json"
    if store.exists(done_key):
        console.print(f"[green]distill shard {shard}: already complete, skipping")
        return store.read_json(done_key)
    mine = [r for r in load_prompts(ctx) if shard_of(r, num_shards) == shard]
    part_keys = [k for k in store.list(parts + "/") if k.endswith(".jsonl")]
    done_ids = {row["id"] for k in part_keys for row in store.read_jsonl(k)}
    safety = [r for r in mine if r["kind"] == "safety" and r["id"] not in done_ids]
    math = [r for r in mine if r["kind"] == "math" and r["id"] not in done_ids]
    console.print(f"distill shard {shard}/{num_shards}: {len(mine)} prompts, {len(done_ids)} already done")
    reasons: dict[str, int] = {}
    work = _Work(ctx)
    report = ProgressReporter(store, ctx.prefix(STAGE), len(mine), "prompts", part=shard)
    state = {"done": len(mine) - len(safety) - len(math), "accepted": 0, "part": len(part_keys)}
    report.update(state["done"], force=True)

    def save(rows: list[dict], bar=None) -> None:
        store.write_jsonl(f"{parts}/part-{state['part']:05d}.jsonl", rows)  # atomic: resume point
        state["part"] += 1
        state["done"] += len(rows)
        state["accepted"] += sum(r["accepted"] for r in rows)
        if bar is not None:
            bar.update(len(rows))
        report.update(
            state["done"],
            force=state["done"] == len(mine),
            accepted=state["accepted"],
            rejections=sum(reasons.values()),
        )

    def distil(recs: list[dict], what: str, renew=lambda: None) -> None:
        if not recs:
            return
        step = 4 * max(ctx.spec.distill.sampling.batch_size, 1)  # several batches a part: rejects batch well too
        with tqdm(total=len(recs), desc=f"distill shard {shard} {what}", unit="prompt") as bar:
            for start in range(0, len(recs), step):
                rows, rej = work.get().run(recs[start : start + step])
                for k, v in rej.items():
                    reasons[k] = reasons.get(k, 0) + v
                save(rows, bar)
                renew()

    distil(safety, "safety")
    key = math_unit(ctx, shard, num_shards) if math else None
    math_from, lease = None, None
    if math and key is None:
        distil(math, "math")
    elif math:
        lease = StoreLease(store, pointer("distill-math", key).replace(".json", ".lease"))

        def waiting(holder):
            return console.print(f"distill shard {shard}: {holder} is distilling the same math; waiting to reuse it")

        if lease.acquire(lambda: _math_source(ctx, key) is not None, on_wait=waiting):
            try:
                source = _math_source(ctx, key)  # finished while this one claimed the lease
                if source is None:
                    distil(math, "math", renew=lease.renew)
            except BaseException:
                lease.release()
                raise
        source = _math_source(ctx, key)
        if source is not None:
            wanted = {r["id"] for r in math}
            reused = [row for row in store.read_jsonl(source["shardFile"]) if row["id"] in wanted]
            math_from = source["experiment"]
            console.print(f"distill shard {shard}: {len(reused)} math samples reused from {math_from}")
            save(reused)
    work.close()
    rows = [
        row for k in sorted(k for k in store.list(parts + "/") if k.endswith(".jsonl")) for row in store.read_jsonl(k)
    ]
    order = {r["id"]: i for i, r in enumerate(mine)}
    rows.sort(key=lambda r: order.get(r["id"], 1 << 30))
    store.write_jsonl(shard_key(ctx, shard), rows)
    if key is not None and math_from is None and math:  # computed here: others with the same math reuse it
        store.write_json(pointer("distill-math", key), {"experiment": ctx.exp.name, "shardFile": shard_key(ctx, shard)})
    if lease is not None:
        lease.release()
    summary = {
        "shard": shard,
        "prompts": len(mine),
        "accepted": sum(r["accepted"] for r in rows),
        "rejected": sum(not r["accepted"] for r in rows),
        "regenerations": sum(r["attempts"] - 1 for r in rows),
        "truncated": reasons.get("truncated", 0),
        "rejectionReasons": reasons,
        **({"mathFrom": math_from} if math_from else {}),
    }
    store.write_json(done_key, summary)
    return summary


def finalize(ctx: StageContext) -> Optional[dict]:
    """Write the stage manifest once every shard is complete (any shard, or the runner, may call this)."""
    store, n = ctx.store, ctx.spec.distill.shards
    summaries = []
    for shard in range(n):
        key = f"{_parts_prefix(ctx, shard)}/_DONE.json"
        if not store.exists(key):
            return None
        summaries.append(store.read_json(key))
    rows = [row for s in range(n) for row in store.read_jsonl(shard_key(ctx, s))]
    reasons: dict[str, int] = {}  # every rejected attempt, by reason
    for s in summaries:
        for k, v in s.get("rejectionReasons", {}).items():
            reasons[k] = reasons.get(k, 0) + v
    count, _ = token_counter(None)  # the finalizing process may not hold the teacher's tokenizer: an estimate
    counts = {
        "prompts": len(rows),
        "accepted": sum(r["accepted"] for r in rows),
        "rejected": sum(not r["accepted"] for r in rows),
        "acceptedSafety": sum(r["accepted"] and r["kind"] == "safety" for r in rows),
        "acceptedMath": sum(r["accepted"] and r["kind"] == "math" for r in rows),
        "regenerations": sum(r["attempts"] - 1 for r in rows),
        "truncated": reasons.get("truncated", 0),  # teacher texts cut off at distill.sampling.maxTokens
        "rejectionReasons": reasons,
    }
    accepted = [r for r in rows if r["accepted"]]
    metrics = {
        "reasoningTokens": length_stats([count(r["reasoning"]) for r in accepted]),
        "answerTokens": length_stats([count(r["answer"]) for r in accepted]),
    }
    manifest = store.write_manifest(
        ctx.prefix(STAGE),
        stage=STAGE,
        config_hash=ctx.hash(STAGE),
        files=[shard_key(ctx, s) for s in range(n)],
        counts=counts,
        metrics=metrics,
        extra={"style": ctx.spec.distill.style, "shards": n, "words": distill_words(ctx)},
    )
    return manifest


def distill_words(ctx: StageContext) -> str:
    """Whose words the teacher read in this distillation (and the fixed refusal it wrote), with each text's hash."""
    own = "; distill.instruction is the user's" if ctx.spec.distill.instruction is not None else ""
    return ctx.wording.describe(used_words(ctx.spec).get("teacher", [])) + own


def run(ctx: StageContext, shard: Optional[int] = None, num_shards: Optional[int] = None) -> dict:
    done = skipped(ctx, STAGE, console)
    if done:
        return done
    shards = [shard] if shard is not None else list(range(ctx.spec.distill.shards))
    results = [run_shard(ctx, s, num_shards) for s in shards]
    manifest = finalize(ctx)
    if manifest:  # this pod finished the last shard: the counts cover every shard
        return summary_from_manifest(manifest)
    # Other shards are still running: report this shard's own counts; the operator adds them up.
    own = {k: sum(r[k] for r in results) for k in ("prompts", "accepted", "rejected", "regenerations")}
    return {"stage": STAGE, "shard": shard, "complete": False, "counts": own}


def accepted_rows(ctx: StageContext, kind: str) -> list[dict]:
    manifest = ctx.require(STAGE)
    src = ctx.artifacts(STAGE)
    rows = [row for s in range(manifest.get("shards", 1)) for row in ctx.store.read_jsonl(f"{src}/shard-{s:05d}.jsonl")]
    return [r for r in rows if r["accepted"] and r["kind"] == kind]
