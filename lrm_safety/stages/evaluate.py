"""evaluate: attack success rate, over-refusal and reasoning accuracy, base vs trained.

Per-sample records are written per (model, benchmark) as they finish, so a restarted pod redoes
only what is missing. Reasoning and answer are judged separately and both kept.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from rich.console import Console

from lrm_safety.context import StageContext
from lrm_safety.evaluation import benchmarks as bm
from lrm_safety.evaluation import report
from lrm_safety.evaluation.judges import describe_judges
from lrm_safety.evaluation.judges.code import grade_code
from lrm_safety.evaluation.judges.math import grade
from lrm_safety.evaluation.judges.refusal import is_refusal, reasoning_decision
from lrm_safety.generation import Sampling, make_generator
from lrm_safety.generation.base import estimate_tokens
from lrm_safety.models.refs import resolve_model
from lrm_safety.progress import ProgressReporter
from lrm_safety.serving.served import api_key as served_api_key
from lrm_safety.serving.served import reachable
from lrm_safety.stages import train as train_stage
from lrm_safety.stages.common import skipped, summary_from_manifest
from lrm_safety.styles import ChecklistError, parse_checklist, parse_response
from lrm_safety.wording import used as used_words

console = Console(stderr=True)
STAGE = "evaluate"


class HarmJudge:
    """The configured judges: harm for harmful-prompt responses, over-refusal for benign ones."""

    def __init__(self, ctx: StageContext):
        ev = reachable(ctx.spec, STAGE).evaluate  # served judges are endpoints here
        self.kind = ev.judge.kind
        self.input = ev.judge.input
        self.impl = None
        self.over = None
        self.math_grader = ev.math_grader
        if self.kind == "guard":
            from lrm_safety.evaluation.judges.guard import GuardJudge

            self.impl = GuardJudge.from_spec(
                ev.judge, base_dir=ctx.base_dir, backend=ev.backend, api_key=served_api_key("judge")
            )
        elif self.kind == "llm":
            from lrm_safety.evaluation.judges.llm import LLMJudge

            self.impl = LLMJudge.from_spec(ev.judge, api_key=served_api_key("judge"))
        if ev.over_refusal_judge is not None and ev.over_refusal_judge.kind == "llm":
            from lrm_safety.evaluation.judges.llm import OverRefusalJudge

            self.over = OverRefusalJudge.from_spec(
                ev.over_refusal_judge, api_key=served_api_key("overRefusalJudge"), wording=ctx.wording
            )

    def close(self) -> None:
        for judge in (self.impl, getattr(self, "over", None)):
            gen = getattr(judge, "gen", None)
            if gen is not None and hasattr(gen, "close"):
                gen.close()

    def unsafe(self, prompts: list[str], responses: list[str], input: Optional[str] = None) -> list[bool]:
        """Harm verdicts on (the request, the whole output) with judge.input full (the release: Llama Guard sees
        reasoning and answer), or on the answer alone; the keyword matcher reads the answer's opening."""
        texts = responses if (input or self.input) == "full" else [parse_response(r)[1] for r in responses]
        if self.kind == "guard":
            return [v["unsafe"] for v in self.impl.judge(prompts, texts)]
        if self.kind == "llm":
            return self.impl.harmful(prompts, texts)
        return [not is_refusal(r) for r in responses]

    def refused(self, prompts: list[str], responses: list[str]) -> list[bool]:
        """Over-refusal: the two-class LLM judge on the whole (256-token) output as the release, else keywords."""
        if getattr(self, "over", None) is not None:
            return self.over.refused(prompts, responses)
        return [is_refusal(r) for r in responses]


def _checklist(reasoning: Optional[str]) -> Optional[dict]:
    """A template-style checklist in the reasoning: is its conclusion coherent with the categories it marked?"""
    try:
        verdicts = parse_checklist(reasoning or "")
    except ChecklistError:
        return None
    flagged, decision = any(verdicts.values()), reasoning_decision(reasoning)
    return {
        "flagged": flagged,
        "decision": decision,
        "incoherent": (decision == "refuse" and not flagged) or (decision == "comply" and flagged),
    }


def _record(prompt: str, response: str, truncated: Optional[bool] = None, count_tokens=None) -> dict:
    """One response with what the study's failure patterns need: the reasoning's decision and the answer's
    refusal judged apart, the reasoning's length, whether the generation was cut off, checklist coherence."""
    reasoning, answer = parse_response(response)
    if truncated is None:  # no finish reason from the backend: an unclosed think block was cut off
        truncated = "<think>" in response and "</think>" not in response
    rec = {
        "prompt": prompt,
        "response": response,
        "reasoning": reasoning,
        "answer": answer,
        "reasoningDecision": reasoning_decision(reasoning),
        "refused": is_refusal(response),
        "truncated": bool(truncated),
        "reasoningTokens": (count_tokens or estimate_tokens)(reasoning or ""),
    }
    checklist = _checklist(reasoning)
    if checklist is not None:
        rec["checklist"] = checklist
    return rec


def generate_records(kind: str, items: list[dict], target, sampling: Sampling, samples: int = 1) -> list[dict]:
    """Responses for every item and sample, not yet judged; sample j uses seed `sampling.seed + j`, recorded."""
    convs = [
        ([{"role": "system", "content": it["system"]}] if it.get("system") else [])
        + [{"role": "user", "content": it["prompt"]}]
        for it in items
    ]
    records = []
    for j in range(samples):
        seed = sampling.seed + j
        responses = target.generate(
            convs,
            replace(sampling, seed=seed),
            desc=f"{kind} x{len(items)}" + (f" sample {j + 1}/{samples}" if samples > 1 else ""),
        )
        finish = getattr(target, "finish", None) or []
        count = getattr(target, "count_tokens", None)
        records += [
            {
                **_record(it["prompt"], r, finish[i] == "length" if len(finish) == len(responses) else None, count),
                "item": i,
                "sample": j,
                "seed": seed,
            }
            for i, (it, r) in enumerate(zip(items, responses))
        ]
    return records


def judge_records(kind: str, items: list[dict], records: list[dict], judge: Optional[HarmJudge]) -> list[dict]:
    """Verdicts for generated records: harm for harmful prompts, refusal for benign ones, correctness for math."""
    # The judge scores against the original request (a PAP paraphrase is judged for what it asked), as the release.
    prompts = [items[r["item"]].get("original") or items[r["item"]]["prompt"] for r in records]
    responses = [r["response"] for r in records]
    if kind == "harmful":
        for rec, u in zip(records, judge.unsafe(prompts, responses)):
            rec["unsafe"] = u
        if judge.kind != "refusal" and judge.input == "full":  # the answer alone too: reasoning that leaks harm
            for rec, u in zip(records, judge.unsafe(prompts, [r["answer"] for r in records], input="answer")):
                rec["unsafeAnswer"] = u
    elif kind == "benign":
        for rec, refused in zip(records, judge.refused(prompts, responses)):
            rec["refused"] = refused
    elif kind == "code":
        for rec in records:
            rec.update(grade_code(rec["response"], items[rec["item"]]))
    else:
        grader = getattr(judge, "math_grader", "release")
        for rec in records:
            rec.update(grade(rec["response"], items[rec["item"]]["reference"], grader))
    return records


def run_benchmark(
    kind: str, attack: str, items: list[dict], target, sampling: Sampling, judge: Optional[HarmJudge], samples: int = 1
) -> list[dict]:
    """Generate and judge in one go."""
    return judge_records(kind, items, generate_records(kind, items, target, sampling, samples), judge)


def evaluate_words(ctx: StageContext) -> str:
    """Whose words PAIR and the XSTest judge read in this evaluation, with the hash of each text used."""
    roles = used_words(ctx.spec)
    names = [n for role in ("PAIR attacker", "PAIR judge", "XSTest judge") for n in roles.get(role, [])]
    return ctx.wording.describe(list(dict.fromkeys(names)))


def pair_records(
    items: list[dict], target, attacker, in_loop_judge, sampling: Sampling, pair, wording=None
) -> list[dict]:
    """PAIR's search, then the release's last step (pair_res.sh): one sampled response to each item's best prompt
    with the benchmark's sampling (T=0.6, top-p 0.95, 2048 tokens), recorded with every stream's best; judged
    later by the harm judge like any record."""
    from lrm_safety.evaluation.pair import PairSettings, attack

    found = attack(
        items,
        target,
        attacker,
        in_loop_judge,
        PairSettings.from_spec(pair),
        seed=sampling.seed,
        batch_size=sampling.batch_size,
        wording=wording,
        template=pair.template or "first",
        template_seed=pair.template_seed or 0,
    )
    prompts = [f["bestPrompt"] or items[i]["prompt"] for i, f in enumerate(found)]
    finals = generate_records("harmful", [{"prompt": p} for p in prompts], target, sampling)
    return [
        {
            **rec,
            "goal": f["goal"],
            "pairBestScore": f["bestScore"],
            "pairBestRound": f["bestRound"],
            "pairStoppedAt": f["stoppedAt"],
            "pairAttackFailed": f["attackFailed"],
            "pairStreams": f["streams"],
            "pairQueries": f["queries"],
            "pairAttackerTemplates": f["attackerTemplates"],
        }
        for rec, f in zip(finals, found)
    ]


def _endpoint_generator(ref, base_dir, key_env: str, role: str):
    """A model named in the spec for a helper role (PAIR's attacker or judge): an endpoint (its own, or a served
    model's), or loaded here."""
    import os

    if ref.backend == "openai":
        key = served_api_key(role) or (os.environ.get(key_env) if ref.api_key_secret_ref else None)
        return make_generator("openai", ref.model, endpoint=ref.endpoint, api_key=key)
    return make_generator(ref.backend, str(resolve_model(ref.model, base_dir=base_dir)))


def _loss_curve(store, train_prefix: str) -> Optional[list]:
    """The train stage's logged losses, for the report's loss chart (none when train ran elsewhere)."""
    key = f"{train_prefix}/metrics.json"
    return store.read_json(key).get("lossCurve") if store.exists(key) else None


def _records_prefix(ctx: StageContext) -> str:
    return f"{ctx.prefix(STAGE)}/records-{ctx.hash(STAGE)}"


def _model_dirs(ctx: StageContext) -> dict[str, Path]:
    """base (the untrained student, with compareBase), trained (when this experiment trains), evaluate.models."""
    spec = ctx.spec

    def resolve(ref):
        return resolve_model(
            ref.model,
            revision=ref.revision,
            endpoint=spec.storage.endpoint,
            base_dir=ctx.base_dir,
        )

    out = {"base": resolve(spec.student)} if spec.evaluate.compare_base else {}
    if "train" in spec.stages:
        out["trained"] = train_stage.trained_model_dir(ctx)
    return {**out, **{m.name: resolve(m) for m in spec.evaluate.models}}


def run(ctx: StageContext, **_) -> dict:
    done = skipped(ctx, STAGE, console)
    if done:
        return done
    spec, store = ctx.spec, ctx.store
    ev = spec.evaluate
    benches = ev.named_benchmarks()
    items = {name: bm.load_items(ctx, b) for name, b in benches.items()}
    kinds = {name: bm.resolve(b).kind for name, b in benches.items()}
    rp = _records_prefix(ctx)
    raw = f"{ctx.prefix(STAGE)}/generated-{ctx.hash(STAGE)}"
    records: dict[str, dict[str, list[dict]]] = {}
    unjudged: list[tuple[str, str, list[dict]]] = []
    judge = HarmJudge(ctx) if ev.judge.kind == "refusal" else None  # a model judge loads after the models are freed
    attacker = scorer = None
    models = _model_dirs(ctx)
    report_progress = ProgressReporter(store, ctx.prefix(STAGE), len(models) * sum(map(len, items.values())), "items")
    finished_items = 0
    report_progress.update(0, force=True)
    for model_name, model_dir in models.items():
        records[model_name] = {}
        gen = None
        for name, b in benches.items():
            key = f"{rp}/{model_name}/{name}.jsonl"
            if store.exists(key):
                records[model_name][name] = store.read_jsonl(key)
                finished_items += len(items[name])
                continue
            d = bm.resolve(b)
            if gen is None:
                gen = make_generator(ev.backend, str(model_dir), tensor_parallel=1)
            console.print(f"evaluate: {model_name} on {name} ({len(items[name])} items)")
            gen_key = f"{raw}/{model_name}/{name}.jsonl"
            if store.exists(gen_key):  # generated before a restart, not judged yet
                recs = store.read_jsonl(gen_key)
            elif d.attack == "pair":
                if attacker is None:  # its own models (endpoints by default), across both evaluated models
                    pair = reachable(spec, STAGE).evaluate.pair
                    attacker = _endpoint_generator(
                        pair.attacker, ctx.base_dir, "LRM_SAFETY_PAIR_ATTACKER_API_KEY", "pairAttacker"
                    )
                    scorer = _endpoint_generator(pair.judge, ctx.base_dir, "LRM_SAFETY_PAIR_JUDGE_API_KEY", "pairJudge")
                recs = pair_records(
                    items[name], gen, attacker, scorer, bm.sampling_for(b, ev.sampling), ev.pair, ctx.wording
                )
                store.write_jsonl(gen_key, recs)
            else:
                recs = generate_records(d.kind, items[name], gen, bm.sampling_for(b, ev.sampling), bm.samples_for(b))
                store.write_jsonl(gen_key, recs)
            unjudged.append((model_name, name, recs))
            finished_items += len(items[name])
            report_progress.update(finished_items, model=model_name, benchmark=name)
        if gen is not None:
            gen.close()  # engine shut down and its memory returned before the next model or the judge loads
            gen = None
    if attacker is not None:
        attacker.close()
        if scorer is not attacker:
            scorer.close()
    if unjudged:
        judge = judge or HarmJudge(ctx)
        for model_name, name, recs in unjudged:
            judge_records(kinds[name], items[name], recs, judge)
            store.write_jsonl(f"{rp}/{model_name}/{name}.jsonl", recs)
            records[model_name][name] = recs
    if judge is not None:
        judge.close()
    store.delete_prefix(raw + "/")
    judges = {**describe_judges(ev), "words": evaluate_words(ctx)}
    metrics = report.compute(records, kinds, judges)
    prefix = ctx.prefix(STAGE)
    files = report.write_report(
        store,
        prefix,
        metrics,
        f"lrm-safety report: {ctx.exp.name}",
        judges=judges,
        loss_curve=_loss_curve(store, ctx.artifacts("train")) if "train" in spec.stages else None,
    )
    files += [f"{rp}/{m}/{n}.jsonl" for m in records for n in records[m]]
    summary = {
        "metrics": {
            **metrics["headline"],
            "judges": judges,
            "benchmarks": {
                b: {
                    k: e.get(k, {}).get("value") if k != "delta" else e.get("delta")
                    for k in (*report.model_order(metrics), "delta")
                }
                for b, e in metrics["benchmarks"].items()
            },
        }
    }
    manifest = store.write_manifest(
        prefix,
        stage=STAGE,
        config_hash=ctx.hash(STAGE),
        files=files,
        counts={n: len(v) for n, v in items.items()},
        metrics=metrics["headline"],
        extra={
            "kinds": kinds,
            "order": list(kinds),
            "records": rp[len(prefix) + 1 :],
            "judges": judges,
            "summary": summary,
        },
    )
    return {
        **summary_from_manifest(manifest),
        "report": store.uri(f"{prefix}/report.md"),
        "table": report.table_rows(metrics, judges),
    }


def rerender(store, prefix: str, title: Optional[str] = None) -> str:
    """`lrm-safety report`: rebuild metrics, report and charts from the stored records."""
    manifest = store.read_manifest(prefix)
    if not manifest:
        raise FileNotFoundError(f"{store.uri(prefix)}/_SUCCESS.json not found: is this an evaluate stage prefix?")
    rp = f"{manifest.get('source') or prefix}/{manifest['records']}"
    records: dict[str, dict[str, list[dict]]] = {}
    for key in store.list(rp + "/"):
        model, name = key[len(rp) + 1 :].split("/", 1)
        records.setdefault(model, {})[name.removesuffix(".jsonl")] = store.read_jsonl(key)
    kinds = {name: manifest["kinds"][name] for name in manifest.get("order", manifest["kinds"])}  # spec order
    metrics = report.compute(records, kinds, manifest.get("judges"))
    report.write_report(
        store,
        prefix,
        metrics,
        title or f"lrm-safety report: {prefix.rsplit('/', 2)[0]}",
        judges=manifest.get("judges"),
        loss_curve=_loss_curve(store, prefix.rsplit("/", 1)[0] + "/train"),
    )
    return store.uri(f"{prefix}/report.md")
