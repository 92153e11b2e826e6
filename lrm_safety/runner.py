"""Local runner: the four stages in order, each in a subprocess, with the same entry the pods run.

A subprocess per stage gives each stage a fresh interpreter (memory returns to the OS between a
training run and an evaluation), exactly as separate pods do on a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from lrm_safety.context import StageContext
from lrm_safety.serving.local import LocalServers
from lrm_safety.spec import STAGES, Experiment
from lrm_safety.stages.common import TERMINATION_LOG_ENV

console = Console()


def _stage_cmd(spec_path: str, stage: str, shard: Optional[int] = None, num_shards: Optional[int] = None) -> list[str]:
    cmd = [sys.executable, "-m", "lrm_safety.cli", "stage", stage, "--spec", spec_path]
    if shard is not None:
        cmd += ["--shard", str(shard), "--num-shards", str(num_shards)]
    return cmd


def run_pipeline(
    spec_path: str,
    stages: tuple[str, ...] = STAGES,
    force: bool = False,
    base_dir: Optional[Path] = None,
    servers: Optional[LocalServers] = None,
) -> dict:
    """base_dir: where the spec's relative paths start (a study's cell specs are written elsewhere). servers: the
    served models already running (a study's cells share them); by default this run starts and stops its own."""
    if servers is None:
        exp = Experiment.load(spec_path)
        with LocalServers(
            base_dir or Path(spec_path).resolve().parent,
            log_dir=_server_logs(exp, base_dir or Path(spec_path).resolve().parent),
        ) as own:
            return run_pipeline(spec_path, stages, force, base_dir, own)
    exp = Experiment.load(spec_path)
    ctx = StageContext(exp, base_dir=base_dir or Path(spec_path).resolve().parent)
    if force:
        for stage in stages:
            ctx.store.delete_prefix(ctx.prefix(stage) + "/")
    console.rule(f"[bold]lrm-safety run: {exp.name}")
    console.print(f"artifacts: {ctx.store.uri(exp.name)}")
    outcome = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LRM_SAFETY_BASE_DIR": str(ctx.base_dir)}
    env.pop(TERMINATION_LOG_ENV, None)  # pods report through it; a local run never writes the host's file
    for n, stage in enumerate(stages, 1):
        found = ctx.resolve(stage)
        if found is not None and found[0] != ctx.prefix(stage) and not found[1].get("linkedAt"):
            from lrm_safety.reuse import link

            link(ctx, stage, found)  # the same work finished elsewhere in this store: no subprocess at all
            console.print(
                f"[green]✓ [{n}/{len(stages)}] {stage}: reused {found[1].get('reusedFrom')}'s output "
                f"(same config and inputs)"
            )
            outcome[stage] = "reused"
            continue
        if found is not None:
            console.print(f"[green]✓ [{n}/{len(stages)}] {stage}: already done for this spec, skipped")
            outcome[stage] = "skipped"
            continue
        console.print(f"[bold cyan]▶ [{n}/{len(stages)}] {stage}")
        t0 = time.perf_counter()
        if stage == "distill" and exp.spec.distill.shards > 1:
            cmds = [_stage_cmd(spec_path, stage, s, exp.spec.distill.shards) for s in range(exp.spec.distill.shards)]
        else:
            cmds = [_stage_cmd(spec_path, stage)]
        stage_env = {**env, **servers.env(exp.spec, stage)}  # starts the served models this stage needs
        for cmd in cmds:
            rc = _run_with_progress(cmd, stage_env, ctx, stage)
            if rc != 0:
                console.print(f"[bold red]✗ {stage} failed (exit {rc}); fix the cause and rerun: finished work is kept")
                raise SystemExit(rc)
        ctx._resolved.pop(stage, None)
        if not ctx.is_done(stage):
            raise SystemExit(f"{stage} exited 0 but wrote no matching manifest")
        console.print(f"[green]✓ {stage} done in {time.perf_counter() - t0:.0f}s")
        outcome[stage] = "ran"
    if "evaluate" in stages:
        show_results(ctx)
    return outcome


def _server_logs(exp: Experiment, base_dir: Path) -> Path:
    """Server logs beside the artifacts when they are local files, else in the spec's folder."""
    uri = exp.spec.storage.uri
    if uri.startswith("file://"):
        root = Path(uri.removeprefix("file://"))
        return (root if root.is_absolute() else base_dir / root) / exp.name / "servers"
    return base_dir / f".lrm-safety-servers-{exp.name}"


def stage_progress(ctx: StageContext, stage: str) -> Optional[dict]:
    """The stage's progress objects (progress.py), combined: the numbers the operator puts in status."""
    from lrm_safety.progress import PROGRESS, combine

    keys = [k for k in ctx.store.list(f"{ctx.prefix(stage)}/{PROGRESS}") if k.endswith(".json")]
    try:
        return combine([ctx.store.read_json(k) for k in keys])
    except (OSError, ValueError):
        return None


def _run_with_progress(cmd: list[str], env: dict, ctx: StageContext, stage: str, every_s: float = 2.0) -> int:
    """Run one stage subprocess, showing its progress line (the same text as the Progress column) while it runs."""
    from lrm_safety.progress import column

    proc = subprocess.Popen(cmd, env=env)
    with console.status(f"{stage} -") as line:
        while proc.poll() is None:
            line.update(column(stage, stage_progress(ctx, stage)))
            try:
                proc.wait(every_s)
            except subprocess.TimeoutExpired:
                pass
    last = stage_progress(ctx, stage)
    if last:
        console.print(f"  {column(stage, last)}")
    return proc.returncode


def show_results(ctx: StageContext) -> None:
    from lrm_safety.evaluation import report

    prefix = ctx.artifacts("evaluate")
    if not ctx.store.exists(f"{prefix}/metrics.json"):
        return
    metrics = ctx.store.read_json(f"{prefix}/metrics.json")
    table = Table(title=f"{ctx.exp.name}: base vs trained (95% Wilson intervals)")
    for h in report.header(metrics):
        table.add_column(h, no_wrap=h in ("benchmark", "delta"))
    judges = (ctx.store.read_manifest(prefix) or {}).get("judges")
    for row in report.table_rows(metrics, judges):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {ctx.store.uri(prefix + '/report.md')}")
    for key in ctx.store.list(prefix + "/chart-"):
        console.print(f"chart:  {ctx.store.uri(key)}")


def run_study(path: str, force: bool = False) -> dict:
    """Every child of the study in grid order (base evaluations first), each as `run_pipeline`, sharing finished
    stages through the store (reuse.py); then the study's report. Cell specs go to a scratch folder; their
    relative paths still start at the study file's folder."""
    import tempfile

    import yaml
    from rich.markup import escape

    from lrm_safety.evaluation import study_report
    from lrm_safety.spec.study import Study, child_manifest

    study = Study.load(path)
    base_dir = Path(path).resolve().parent
    outcomes: dict[str, dict] = {}
    logs = _server_logs(Experiment(name=study.name, spec=study_report.first_cell(study).spec), base_dir)
    with (
        tempfile.TemporaryDirectory(prefix=f"lrm-safety-{study.name}-") as tmp,
        LocalServers(base_dir, log_dir=logs) as servers,
    ):  # one server per served model for every cell
        for i, cell in enumerate(study.cells, 1):
            table = Table(title=f"study {study.name}: {i}/{len(study.cells)}")
            for col in ("experiment", "cell", "stages"):
                table.add_column(col)
            for c in study.cells:
                state = outcomes.get(c.name)
                text = (
                    "running" if c is cell else ", ".join(f"{k} {v}" for k, v in state.items()) if state else "waiting"
                )
                table.add_row(c.name, escape(c.where), text)
            console.print(table)
            spec_path = Path(tmp) / f"{cell.name}.yaml"
            spec_path.write_text(yaml.safe_dump(child_manifest(study.name, study.namespace, cell), sort_keys=False))
            outcomes[cell.name] = run_pipeline(
                str(spec_path), stages=tuple(cell.spec.stages), force=force, base_dir=base_dir, servers=servers
            )
    store = StageContext(Experiment(name=study.name, spec=study_report.first_cell(study).spec), base_dir=base_dir).store
    uri = study_report.write(study, store, base_dir)
    console.print(f"study report: {uri}")
    return outcomes
