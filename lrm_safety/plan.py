"""What a study (or an experiment) would run, with and without reuse: `lrm-safety render FILE --plan`.

A unit of work is a stage with its config in a store (reuse.work_id): children of a study that share one run it
once. Without reuse means the same cells written as separate experiments, each evaluating its own base model.
"""

from __future__ import annotations

from pathlib import Path

from lrm_safety.context import StageContext
from lrm_safety.reuse import work_id
from lrm_safety.spec import Experiment, SafetyExperimentSpec


def units(children: list[tuple[str, SafetyExperimentSpec]], base_dir: Path, check_store: bool = False) -> list[dict]:
    """One entry per distinct unit in first-use order: stage, work id, the experiments sharing it, and (with
    check_store) whether the store already holds its output (then no Job runs at all)."""
    out: dict[str, dict] = {}
    for name, spec in children:
        ctx = StageContext(Experiment(name=name, spec=spec), base_dir=base_dir)
        for stage in spec.stages:
            wid = work_id(ctx, stage)
            unit = out.setdefault(wid, {"stage": stage, "work": wid, "experiments": [], "ctx": ctx})
            unit["experiments"].append(name)
            if stage == "distill" and spec.distill.math_prompts:  # inside distill Jobs, shared across styles
                mid = math_work_id(spec)
                unit = out.setdefault(mid, {"stage": "distill-math", "work": mid, "experiments": [], "ctx": None})
                unit["experiments"].append(name)
    for unit in out.values():
        ctx = unit.pop("ctx")
        unit["finished"] = bool(check_store and ctx is not None and ctx.is_done(unit["stage"]))
    return list(out.values())


def math_work_id(spec: SafetyExperimentSpec) -> str:
    """distill.math_unit without the input digest: the same teacher, math prompts and sampling."""
    from lrm_safety.spec import config_hash

    d = spec.distill
    return config_hash(
        "distill-math",
        spec.storage.uri,
        spec.teacher,
        d.math_prompts,
        d.limit,
        d.sampling,
        d.rectify.resolved(d.style).max_attempts,
        d.shards,
    )


def study_plan(study, base_dir: Path, check_store: bool = False) -> dict:
    cells = [c for c in study.cells if c.role == "cell"]
    base = [c for c in study.cells if c.role == "base"]
    us = units([(c.name, c.spec) for c in study.cells], base_dir, check_store)
    base_names = {c.name for c in base}
    without_evals = sum(
        ("train" in c.spec.stages) + (c.spec.evaluate.compare_base or bool(base))
        for c in cells
        if "evaluate" in c.spec.stages
    )
    to_run = [u for u in us if not u["finished"] and u["stage"] != "distill-math"]
    return {
        "units": us,
        "without": {
            "jobs": sum(len(c.spec.stages) for c in cells),
            "mathDistillations": sum(bool(c.spec.distill.math_prompts) and "distill" in c.spec.stages for c in cells),
            "baseEvaluations": sum(
                "evaluate" in c.spec.stages and (c.spec.evaluate.compare_base or bool(base)) for c in cells
            ),
            "modelEvaluations": without_evals,
        },
        "with": {
            "jobs": len(to_run),
            "mathDistillations": sum(u["stage"] == "distill-math" for u in us),
            "baseEvaluations": sum(u["stage"] == "evaluate" and set(u["experiments"]) <= base_names for u in to_run),
            "modelEvaluations": sum(
                len(study_child(study, u["experiments"][0]).spec.evaluate.models)
                + ("train" in study_child(study, u["experiments"][0]).spec.stages)
                + study_child(study, u["experiments"][0]).spec.evaluate.compare_base
                for u in to_run
                if u["stage"] == "evaluate"
            ),
        },
    }


def study_child(study, name: str):
    return next(c for c in study.cells if c.name == name)


def _unit_lines(us: list[dict], stages_order=("distill", "distill-math", "mix", "train", "evaluate")) -> list[str]:
    lines = [f"# {'stage':12s} {'work':16s} {'runs':7s} shared by"]
    for u in sorted(us, key=lambda u: stages_order.index(u["stage"])):
        runs = "done" if u["finished"] else "once" if u["stage"] == "distill-math" else "1 Job"
        lines.append(f"  {u['stage']:12s} {u['work']:16s} {runs:7s} {', '.join(u['experiments'])}")
    return lines


def _times(n: int) -> str:
    return "never" if n == 0 else "once" if n == 1 else f"{n} times"


def render_study(title: str, plan: dict) -> str:
    w, r = plan["without"], plan["with"]
    lines = [
        f"# plan: {title}",
        *_unit_lines(plan["units"]),
        f"# without reuse (one experiment per cell): {w['jobs']} Jobs, {w['modelEvaluations']} model "
        f"evaluations (the base model {_times(w['baseEvaluations'])}), math distilled "
        f"{_times(w['mathDistillations'])}",
        f"# with reuse: {r['jobs']} Jobs, {r['modelEvaluations']} model evaluations (the base model "
        f"{_times(r['baseEvaluations'])}), math distilled {_times(r['mathDistillations'])}"
        + (" (inside the first distill Job that needs it: the distill-math rows)" if r["mathDistillations"] else ""),
    ]
    saved = [
        f"{w[k] - r[k]} {what}"
        for k, what in (
            ("modelEvaluations", "model evaluations"),
            ("mathDistillations", "math distillations"),
            ("jobs", "Jobs"),
        )
        if w[k] > r[k]
    ]
    lines.append(
        f"# reuse saves {', '.join(saved)}" if saved else "# reuse saves nothing here: no two cells share work"
    )
    if r["jobs"] > w["jobs"]:
        lines.append(
            f"#   and adds {r['jobs'] - w['jobs']} Job: the base model is evaluated in a Job of its own, once, "
            f"instead of inside every cell's evaluate Job"
        )
    return "\n".join(lines) + "\n"


def render_experiment(exp: Experiment, base_dir: Path) -> str:
    """An experiment's stages against the store as it is now: a finished (or reusable) stage runs no Job."""
    us = units([(exp.name, exp.spec)], base_dir, check_store=True)
    run, done = sum(not u["finished"] for u in us), sum(u["finished"] for u in us)
    where = f"in {exp.spec.storage.uri} for this config"
    summary = (
        f"# all {len(us)} stages would run a Job: none is finished {where}"
        if not done
        else f"# no stage would run a Job: all {len(us)} are finished {where} (here or by another experiment)"
        if not run
        else f"# {run} of {len(us)} stages would run a Job; the other {done} finished {where} (here or by another "
        f"experiment)"
    )
    return "\n".join([f"# plan: {exp.name}", *_unit_lines(us), summary]) + "\n"
