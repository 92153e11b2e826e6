"""`lrm-safety`: run, stage, validate, render, report, crd, operator.

A user error (a bad file, field or path) is one line per problem naming the file, position or field and the
fix, and exit code 3 (BAD_INPUT_EXIT); a traceback only with --debug. Anything else is a bug or bad luck.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lrm_safety.errors import BAD_INPUT_EXIT, BadInput, one_line, quiet_broken_pipe
from lrm_safety.spec import STAGES


class UserError(Exception):
    """Problems the user can fix, one line each."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


def _load(path: str, study_ok: bool = False):
    """The SafetyExperiment (or, where the command takes one, SafetyStudy) in `path`; errors name the file."""
    from lrm_safety.spec import Experiment, SpecError
    from lrm_safety.spec.study import STUDY_KIND, Study, document_kind

    try:
        if study_ok and document_kind(path) == STUDY_KIND:
            return Study.load(path)
        return Experiment.load(path)
    except SpecError as e:
        raise UserError([line if line.startswith(path) else f"{path}: {line}" for line in e.lines]) from None


def cmd_validate(args) -> int:
    from lrm_safety.spec.study import Study

    doc = _load(args.file, study_ok=True)
    base_dir = Path(args.file).resolve().parent
    notes = _preflight(args.file, doc, base_dir)
    if isinstance(doc, Study):
        print(
            f"{args.file}: valid SafetyStudy {doc.name!r}: {len(doc.cells)} experiments "
            f"({sum(c.role == 'base' for c in doc.cells)} base evaluations)"
        )
        for note in notes:
            print(f"# note: {note}")
    else:
        print(f"{args.file}: valid SafetyExperiment {doc.name!r}")
        for line in (
            [f"# note: {n}" for n in notes]
            + _rendering_warnings(doc, base_dir)
            + _judge_lines(doc)
            + _prompts_lines(doc, base_dir, read_store=args.check_store)
            + _server_lines([(doc.name, doc.spec)], base_dir)
            + _train_plan_lines(doc, base_dir)
        ):
            print(line)
    return 0


def _preflight(path: str, doc, base_dir: Path) -> list[str]:
    """What the stages would fail on that this machine can see (preflight.py), as a UserError naming the file (and
    for a study the cells, unless every cell shares the problem); else the notes."""
    from lrm_safety.preflight import check
    from lrm_safety.spec import Experiment
    from lrm_safety.spec.study import Study

    if not isinstance(doc, Study):
        found = check(doc, base_dir)
        if found.errors:
            raise UserError([f"{path}: {e}" for e in found.errors])
        return found.notes
    errors: dict[str, list[str]] = {}
    notes: dict[str, None] = {}
    for cell in doc.cells:
        found = check(Experiment(name=cell.name, namespace=doc.namespace, spec=cell.spec), base_dir)
        for e in found.errors:
            errors.setdefault(e, []).append(cell.name)
        notes.update(dict.fromkeys(found.notes))
    if errors:
        raise UserError(
            [
                f"{path}: {e}" if len(cells) == len(doc.cells) else f"{path}: cells {', '.join(cells)}: {e}"
                for e, cells in errors.items()
            ]
        )
    return list(notes)


def _local_tokenizer(ref: str, base_dir: Path):
    """The student's tokenizer when this machine has it (local, builtin, hub cache, a packaged copy), else None."""
    try:
        from transformers import AutoTokenizer

        from lrm_safety.models.refs import resolve_tokenizer

        return AutoTokenizer.from_pretrained(resolve_tokenizer(ref, base_dir=base_dir, download=False)[0])
    except (ImportError, OSError, ValueError):  # no worker extra; ModelResolutionError is a ValueError (BadInput)
        return None


def _rendering_warnings(exp, base_dir: Path) -> list[str]:
    """A warning (not an error) when train.rendering would train no reasoning through the student's chat template."""
    t = exp.spec.train
    if "train" not in exp.spec.stages or t.rendering != "conversation":
        return []
    from lrm_safety.training.text import reasoning_in, render

    tok = _local_tokenizer(exp.spec.student.model, base_dir)
    if tok is None:
        return [
            f"warning: spec.train.rendering: conversation renders through {exp.spec.student.model}'s chat "
            "template, which may drop the reasoning (R1-Distill templates do); its tokenizer is not on this "
            "machine to check: run `lrm-safety inspect` where it is"
        ]
    row = [
        {"role": "user", "content": "Can you help me?"},
        {"role": "assistant", "content": "<think>\nweighing the request\n</think>\n\nSorry, I can't."},
    ]
    if reasoning_in(render(tok, row, mode="conversation")):
        return []
    return [
        f"warning: spec.train.rendering: conversation trains no reasoning for {exp.spec.student.model}: its chat "
        "template drops the text before </think> from assistant turns (as the release's code path did); "
        "rendering: prompt-completion (the default) keeps it"
    ]


def _judge_lines(exp) -> list[str]:
    """The judges the evaluate stage will use (render, validate); nothing without an evaluate stage."""
    if "evaluate" not in exp.spec.stages:
        return []
    from lrm_safety.evaluation.judges import judge_lines

    return judge_lines(exp.spec.evaluate)


def _prompts_lines(exp, base_dir: Path, read_store: bool = False) -> list[str]:
    """Whose words each reader of the spec will read, with each text's hash (validate, render). An s3:// file is
    read only with --check-store: validate and render need no network."""
    from lrm_safety.context import StageContext
    from lrm_safety.wording import describe_use, locate, used

    roles = used(exp.spec)
    if not roles:
        return []
    uri, _ = locate(exp.spec)
    if uri and uri.startswith("s3://") and not read_store:
        return [
            f"# prompts ({exp.spec.prompts}): the release's words from {uri} if it is there when the stages run, "
            "else the project's own (--check-store reads it now)"
        ]
    try:
        words = StageContext(exp, base_dir=base_dir).wording
    except Exception as e:  # a store that cannot be read: the stages would fail, not change their words
        if isinstance(e, BadInput):
            raise
        return [f"# prompts ({exp.spec.prompts}): cannot read {uri} now ({one_line(e)})"]
    return [f"# prompts ({exp.spec.prompts}): {line}" for line in describe_use(words, roles)]


def _train_plan_lines(exp, base_dir: Path) -> list[str]:
    """The train stage's GPU memory plan (memory_plan.py), for render and validate; nothing without a train stage."""
    if "train" not in exp.spec.stages:
        return []
    from lrm_safety.training.memory_plan import render_plan, train_plan

    try:
        return render_plan(train_plan(exp.spec, base_dir))
    except Exception as e:  # a plan is advice: a model whose config cannot be built never fails render/validate
        return [f"# train memory plan: not estimated ({type(e).__name__}: {e})"]


def _server_lines(specs: list[tuple[str, object]], base_dir: Path) -> list[str]:
    """The served models of these experiments, once each with the experiments sharing it, their GPUs and a memory
    estimate; a tensorParallel that cannot shard the model is refused here, before any pod asks for GPUs."""
    from lrm_safety.serving.served import served
    from lrm_safety.serving.sizing import plan_lines

    users: dict[str, list[str]] = {}
    first: dict[str, object] = {}
    for name, spec in specs:
        for s in served(spec):
            users.setdefault(s.key, []).append(name)
            first.setdefault(s.key, spec)
    if not users:
        return []
    lines, errors = (
        [
            f"# served models: {len(users)} server(s), each shared by every stage that needs it, created "
            f"when the first is due and deleted after serve.idleSeconds unused"
        ],
        [],
    )
    for spec in {id(spec): spec for spec in first.values()}.values():
        more, errs = plan_lines(spec, base_dir)
        lines += more
        errors += errs
    lines = list(dict.fromkeys(lines))  # a server two specs share is listed once
    for key, names in users.items():
        lines.append(f"#   {next(s.name for s in served(first[key]) if s.key == key)} used by: {', '.join(names)}")
    if errors:
        raise UserError(sorted(set(errors)))
    return lines


def cmd_inspect(args) -> int:
    from lrm_safety.context import StageContext
    from lrm_safety.data_inspect import inspect
    from lrm_safety.spec import Experiment
    from lrm_safety.spec.study import Study

    doc = _load(args.file, study_ok=True)
    if isinstance(doc, Study):
        cells = {c.name: c for c in doc.cells if "mix" in c.spec.stages or "train" in c.spec.stages}
        if args.cell not in cells:
            raise UserError(
                [
                    f"{args.file}: a SafetyStudy trains {len(cells)} experiments; inspect one with --cell NAME"
                    f" ({', '.join(cells)})"
                    if args.cell is None
                    else f"{args.file}: no trained cell {args.cell!r}; the cells are {', '.join(cells)}"
                ]
            )
        doc = Experiment(name=args.cell, namespace=doc.namespace, spec=cells[args.cell].spec)
    elif args.cell is not None:
        raise UserError([f"{args.file}: --cell picks a cell of a SafetyStudy; this is a SafetyExperiment"])
    inspect(StageContext(doc, base_dir=Path(args.file).resolve().parent), rows=args.rows, order=args.order)
    return 0


def cmd_data_push(args) -> int:
    from lrm_safety.evaluation.benchmark_data import push
    from lrm_safety.evaluation.benchmarks import REGISTRY
    from lrm_safety.store import open_store

    if args.source and not Path(args.source).is_dir():
        raise UserError([f"--from {args.source}: no such directory"])
    names = args.benchmarks.split(",") if args.benchmarks else list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise UserError([f"--benchmarks: unknown {', '.join(unknown)}; choose from {', '.join(REGISTRY)}"])
    dest = open_store(args.dest, endpoint=args.endpoint)
    report = push(dest, names, Path(args.source) if args.source else None, online=args.online)
    missing = [f"{name}: {what}" for name, what in report.items() if what.startswith("missing")]
    for name, what in report.items():
        if not what.startswith("missing"):
            print(f"{name}: {what}")
    if missing:
        raise UserError(missing)
    return 0


def cmd_release_import(args) -> int:
    from lrm_safety.store import open_store
    from lrm_safety.wording import digest
    from lrm_safety.wording import release as rel

    dirs = {"RELEASE_DIR": args.release, "--aisafetylab": args.aisafetylab, "--fastchat": args.fastchat}
    bad = [f"{flag} {d}: no such directory" for flag, d in dirs.items() if d and not Path(d).is_dir()]
    if bad:
        raise UserError(bad)
    release = rel.Checkout.of(rel.RELEASE, Path(args.release))
    lab = rel.Checkout.of(rel.AISAFETYLAB, Path(args.aisafetylab))
    fastchat = rel.Checkout.of(rel.FASTCHAT, Path(args.fastchat)) if args.fastchat else rel.installed_fastchat()
    got = rel.import_texts(release, lab, fastchat)
    if got.problems:
        raise UserError([*got.problems, f"nothing written to {rel.destination(args.dest)}"])
    for line in [*rel.commit_notes(release, lab), *got.changed]:
        print(f"# note: {line}", file=sys.stderr)
    dest = open_store(args.dest, endpoint=args.endpoint)
    dest.write_json(rel.FILE, got.document())
    for name, t in got.document()["texts"].items():
        print(f"{name}: {t['repo']} {t['path']} ({t['where']}), sha256 {digest(t['text'])[:12]}")
    print(f"wrote {rel.destination(args.dest)}: experiments whose evaluate.dataRoot is {args.dest} now use these texts")
    return 0


def cmd_crd(args) -> int:
    from lrm_safety.spec.crd import crd_yaml, spec_docs

    sys.stdout.write(spec_docs() if args.docs else crd_yaml(study=args.study))
    return 0


def cmd_stage(args) -> int:
    from lrm_safety.context import StageContext
    from lrm_safety.stages import stage_module
    from lrm_safety.stages.common import write_termination_summary

    report = os.environ.get("LOCAL_RANK") is None  # under torchrun the launcher process reports, not each rank
    try:
        exp = _load(args.spec)
        base = Path(os.environ.get("LRM_SAFETY_BASE_DIR") or Path(args.spec).resolve().parent)
        ctx = StageContext(exp, base_dir=base)
        mod = stage_module(args.name)
        kw = {}
        if args.name == "distill":
            shard = args.shard if args.shard is not None else _env_int("JOB_COMPLETION_INDEX")
            kw = {"shard": shard, "num_shards": args.num_shards}
        elif args.name == "train":
            kw = {"launcher": args.launcher, "spec_path": args.spec}
        summary = mod.run(ctx, **kw)
        if report and summary.get("complete", True) and not summary.get("skipped"):
            from lrm_safety.reuse import publish

            try:
                publish(ctx, args.name)  # identical work elsewhere in this store reuses this output
            except Exception as e:  # best effort: the stage itself has finished
                print(f"{args.name}: output not published for reuse ({one_line(e)})", file=sys.stderr)
    except (UserError, BadInput) as e:
        if report:
            write_termination_summary(
                {"stage": args.name, "error": "; ".join(getattr(e, "lines", None) or [one_line(e)]), "permanent": True}
            )
        raise
    except BaseException as e:  # transient: the operator retries; the reason goes to status
        code = e.code if isinstance(e, SystemExit) else 1
        if report and code not in (0, None):
            write_termination_summary(
                {
                    "stage": args.name,
                    "error": one_line(e) if code == 1 else f"exit {code}",
                    "permanent": code == BAD_INPUT_EXIT,
                }
            )
        raise
    if report:
        write_termination_summary(summary)
    return 0


def _env_int(name: str):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def cmd_run(args) -> int:
    from lrm_safety.runner import run_pipeline, run_study
    from lrm_safety.spec.study import Study

    exp = _load(args.file, study_ok=True)
    if isinstance(exp, Study):
        if args.stages:
            raise UserError(["--stages applies to one experiment; a study runs each cell's spec.stages"])
        _preflight(args.file, exp, Path(args.file).resolve().parent)
        run_study(args.file, force=args.force)
        return 0
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else tuple(exp.spec.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise UserError(
            [
                f"--stages: unknown stage {', '.join(map(repr, unknown)) or '(none named)'}; choose from "
                f"{', '.join(STAGES)} (comma-separated, e.g. --stages mix,train)"
            ]
        )
    _preflight(args.file, exp, Path(args.file).resolve().parent)
    run_pipeline(args.file, stages=stages, force=args.force)
    return 0


def cmd_report(args) -> int:
    from lrm_safety.spec.study import STUDY_KIND, document_kind
    from lrm_safety.stages.evaluate import rerender
    from lrm_safety.store import open_store

    if os.path.isfile(args.prefix) and document_kind(args.prefix) == STUDY_KIND:
        from lrm_safety.context import StageContext
        from lrm_safety.evaluation import study_report
        from lrm_safety.spec import Experiment

        study = _load(args.prefix, study_ok=True)
        base_dir = Path(args.prefix).resolve().parent
        store = StageContext(
            Experiment(name=study.name, spec=study_report.first_cell(study).spec), base_dir=base_dir
        ).store
        print(study_report.write(study, store, base_dir))
        return 0

    if args.prefix.endswith((".yaml", ".yml")):
        if not os.path.exists(args.prefix):
            raise UserError([f"{args.prefix}: no such file"])
        if os.path.isfile(args.prefix):
            raise UserError(
                [
                    f"{args.prefix}: kind: must be SafetyStudy (got {document_kind(args.prefix)!r}); report "
                    f"takes a study's YAML, or <storage uri>/<experiment>/evaluate for an experiment"
                ]
            )
    prefix = args.prefix.rstrip("/")
    root, _, rel = prefix.rpartition("/")
    root2, _, exp = root.rpartition("/")
    if rel != "evaluate" or not exp or not (root2.startswith(("s3://", "file://")) or "://" not in root2):
        raise UserError(
            [
                f"{args.prefix}: not an evaluate stage prefix; pass <storage uri>/<experiment>/evaluate, "
                "e.g. file://./artifacts/quickstart/evaluate"
            ]
        )
    store = open_store(root2, endpoint=args.endpoint)
    manifest = store.read_manifest(f"{exp}/{rel}")
    if manifest is None:
        raise UserError(
            [
                f"{args.prefix}: no _SUCCESS.json here: the evaluate stage of {exp!r} has not finished "
                f"(run `lrm-safety run` or check the storage uri and experiment name)"
            ]
        )
    if manifest.get("stage") != "evaluate" or "records" not in manifest:
        raise UserError([f"{args.prefix}: the manifest here is a {manifest.get('stage')!r} stage's, not evaluate's"])
    print(rerender(store, f"{exp}/{rel}"))
    return 0


def cmd_render(args) -> int:
    import yaml

    from lrm_safety import plan
    from lrm_safety.spec.study import Study, child_manifest
    from safety_operator.manifests import WorkerDefaults, render_all, stage_compute, stage_secrets

    exp = _load(args.file, study_ok=True)
    base_dir = Path(args.file).resolve().parent
    if isinstance(exp, Study):
        if not args.plan:
            docs = [child_manifest(exp.name, exp.namespace, c) for c in exp.cells]
            sys.stdout.write(
                f"# {exp.name}: the SafetyExperiments the study creates ({len(docs)})\n"
                + yaml.safe_dump_all(docs, sort_keys=False)
            )
            return 0
        servers = _server_lines([(c.name, c.spec) for c in exp.cells], base_dir)
        sys.stdout.write(plan.render_study(exp.name, plan.study_plan(exp, base_dir, check_store=args.check_store)))
        sys.stdout.write("\n".join(servers) + "\n" if servers else "")
        cell = next((c for c in exp.cells if "evaluate" in c.spec.stages), None)
        if cell is not None:
            from lrm_safety.evaluation.judges import judge_lines

            sys.stdout.write("\n".join(judge_lines(cell.spec.evaluate)) + "\n")
        return 0
    servers = _server_lines([(exp.name, exp.spec)], base_dir)
    if args.plan:
        sys.stdout.write(plan.render_experiment(exp, base_dir))
        sys.stdout.write("\n".join(servers) + "\n" if servers else "")
        judges = _judge_lines(exp) + _prompts_lines(exp, base_dir, read_store=args.check_store)
        sys.stdout.write("\n".join(judges) + "\n" if judges else "")
        return 0
    # As the operator does: what the spec leaves unset comes from the chart's worker values (here, the same env).
    spec = WorkerDefaults.from_env().apply(exp.spec)
    docs = render_all(exp.name, exp.namespace, spec, uid=None)
    origin = (
        "the spec"
        if exp.spec.images.worker
        else (
            "$LRM_SAFETY_DEFAULT_WORKER_IMAGE"
            if os.environ.get("LRM_SAFETY_DEFAULT_WORKER_IMAGE")
            else "the default; the operator uses its chart's worker.image"
        )
    )
    lines = [
        f"# {exp.name}: worker image {spec.images.worker} ({origin})",
        f"# {exp.name}: one pod per stage (distill: one per shard; train: one per node) requests",
    ]
    for stage in spec.stages:
        c = stage_compute(spec, stage)
        secrets = sorted({e["valueFrom"]["secretKeyRef"]["name"] for e in stage_secrets(spec, stage)})
        lines.append(
            f"#   {stage:9s} gpus {c['gpus']} ({exp.spec.resources.gpu_resource}), cpu {c['cpu']}, "
            f"memory {c['memory']}; secrets: {', '.join(secrets) or 'none'}"
        )
    if spec.images.pull_secrets:
        lines.append(f"#   image pull secrets: {', '.join(spec.images.pull_secrets)}")
    lines += [ln if ln.startswith("#") else f"# {ln}" for ln in _judge_lines(exp)]  # stays valid YAML
    lines += _prompts_lines(exp, base_dir, read_store=args.check_store)
    lines += servers
    lines += _train_plan_lines(exp, base_dir)
    from lrm_safety.serving.served import served
    from safety_operator.servers import render_server

    for s in served(spec):  # what the first stage that needs each creates (owned by the experiment, or its study)
        docs += render_server(spec, exp.namespace, s)
    sys.stdout.write("\n".join(lines) + "\n" + yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def cmd_serve_model(args) -> int:
    from lrm_safety.serving.served import exec_vllm

    flags = [f for f in args.flags if f != "--"]
    exec_vllm(args.model, args.revision, flags)
    return 0


def cmd_operator(args) -> int:
    from safety_operator.main import main as operator_main

    return operator_main(["--verbose"] if args.verbose else [])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lrm-safety", description="Safety SFT for large reasoning models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    # --debug after the subcommand too (`lrm-safety run x.yaml --debug`): the copy defaults to SUPPRESS, so it never
    # overwrites a --debug given before the subcommand.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for user errors too"
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(subparsers, name: str, **kw) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, parents=[debug], **kw)

    s = command(sub, "run", help="run all stages locally, skipping finished ones")
    s.add_argument("file")
    s.add_argument("--stages", help="comma-separated subset, e.g. distill,mix")
    s.add_argument("--force", action="store_true", help="delete these stages' artifacts first")
    s.set_defaults(fn=cmd_run)
    s = command(sub, "stage", help="run one stage (what each pod runs)")
    s.add_argument("name", choices=["distill", "mix", "train", "evaluate"])
    s.add_argument("--spec", required=True)
    s.add_argument("--shard", type=int)
    s.add_argument("--num-shards", type=int)
    s.add_argument(
        "--launcher",
        choices=["auto", "inprocess", "torchrun"],
        default="auto",
        help="train: torchrun for several GPUs/nodes (auto decides from the spec)",
    )
    s.set_defaults(fn=cmd_stage)
    s = command(sub, "validate", help="check a SafetyExperiment YAML; errors name the field")
    s.add_argument("file")
    s.add_argument(
        "--check-store", action="store_true", help="also read the imported prompts file when it is on S3 (spec.prompts)"
    )
    s.set_defaults(fn=cmd_validate)
    s = command(sub, "inspect", help="print the exact training text (masked and trained parts) before training")
    s.add_argument("file")
    s.add_argument("--rows", type=int, default=3, help="how many training rows to show")
    s.add_argument(
        "--order",
        choices=["interleaved", "mixture"],
        default="interleaved",
        help="interleaved (default): safety and math rows alternate; mixture: the training file's order "
        "(math first, as the release)",
    )
    s.add_argument("--cell", help="a SafetyStudy's cell to inspect (the study's file lists them when omitted)")
    s.set_defaults(fn=cmd_inspect)
    s = command(sub, "render", help="print the Kubernetes objects the operator would create")
    s.add_argument("file")
    s.add_argument(
        "--plan",
        action="store_true",
        help="list the stage work that would run, with and without reuse (an experiment: against its store)",
    )
    s.add_argument(
        "--check-store",
        action="store_true",
        help="study --plan: also look up finished work in the store; every render: read an s3:// prompts file",
    )
    s.set_defaults(fn=cmd_render)
    s = command(sub, "report", help="re-render report.md and charts from stored records")
    s.add_argument("prefix", help="<storage uri>/<experiment>/evaluate, or a SafetyStudy YAML (the study's report)")
    s.add_argument("--endpoint")
    s.set_defaults(fn=cmd_report)
    s = command(sub, "data", help="benchmark data: `data push DEST` stages every benchmark file for evaluate.dataRoot")
    dsub = s.add_subparsers(dest="data_cmd", required=True)
    d = command(dsub, "push", help="copy benchmark files (from --from DIR, or the hub with --online) to DEST")
    d.add_argument("dest", help="s3://bucket/prefix or a directory: what evaluate.dataRoot will name")
    d.add_argument("--from", dest="source", help="a directory holding the files under their registry names")
    d.add_argument("--benchmarks", help="comma-separated subset (default: all)")
    d.add_argument("--online", action="store_true", help="fetch what --from lacks from the Hugging Face hub")
    d.add_argument("--endpoint", help="S3 endpoint URL")
    d.set_defaults(fn=cmd_data_push)
    s = command(sub, "release", help="the study's release: `release import` its exact prompts from your checkouts")
    rsub = s.add_subparsers(dest="release_cmd", required=True)
    r = command(
        rsub,
        "import",
        help="read every text the study's models read from your checkouts (never fetched) and write "
        "DEST/release-texts.json, which the stages then use (spec.prompts)",
    )
    r.add_argument("release", metavar="RELEASE_DIR", help="a checkout of thu-coai/LRM-Safety-Study")
    r.add_argument("dest", help="s3://bucket/prefix or a directory: the evaluate.dataRoot the experiments name")
    r.add_argument(
        "--aisafetylab", required=True, metavar="DIR", help="a checkout of thu-coai/AISafetyLab (the study ran 00b582d)"
    )
    r.add_argument(
        "--fastchat",
        metavar="DIR",
        help="a checkout of lm-sys/FastChat (its chatgpt template's system message); default: the installed fschat",
    )
    r.add_argument("--endpoint", help="S3 endpoint URL")
    r.set_defaults(fn=cmd_release_import)
    s = command(sub, "crd", help="print the CRD generated from the spec")
    s.add_argument("--docs", action="store_true", help="print the spec reference (docs/spec.md) instead")
    s.add_argument("--study", action="store_true", help="print the SafetyStudy CRD")
    s.set_defaults(fn=cmd_crd)
    s = command(
        sub, "serve-model", help="resolve a model reference, then exec `vllm serve` on it (a served model's container)"
    )
    s.add_argument("model")
    s.add_argument("--revision")
    s.add_argument("flags", nargs=argparse.REMAINDER, help="-- then `vllm serve` flags")
    s.set_defaults(fn=cmd_serve_model)
    s = command(sub, "operator", help="start the kopf operator (settings from LRM_SAFETY_* env)")
    s.add_argument("--verbose", action="store_true", help="debug logging")
    s.set_defaults(fn=cmd_operator)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except BrokenPipeError:  # `lrm-safety validate x.yaml | head -1`
        return quiet_broken_pipe()
    except (UserError, BadInput) as e:
        if args.debug:
            raise
        for line in getattr(e, "lines", None) or [one_line(e)]:
            print(line, file=sys.stderr)
        return BAD_INPUT_EXIT
    except Exception as e:
        from lrm_safety.store import store_problem

        line = store_problem(e)  # credentials, bucket, endpoint: one line with the fix
        if line is None or args.debug:
            raise
        print(f"error: {line}", file=sys.stderr)
        # A person's command exits as for bad input. A stage (what a pod runs) exits 1: to the operator 3 means
        # "never retry", and a store that is down or refusing now may be back for the next attempt.
        return 1 if args.cmd == "stage" else BAD_INPUT_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
