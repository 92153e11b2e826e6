"""`lrm-safety`: run, stage, validate, render, report, crd, operator."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _load(path: str):
    from .spec import Experiment, SpecError

    try:
        return Experiment.load(path)
    except SpecError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        raise SystemExit(1)
    except FileNotFoundError:
        print(f"{path}: no such file", file=sys.stderr)
        raise SystemExit(1)


def cmd_validate(args) -> int:
    exp = _load(args.file)
    print(f"{args.file}: valid SafetyExperiment {exp.name!r}")
    return 0


def cmd_crd(args) -> int:
    from .crd import crd_yaml, spec_docs

    sys.stdout.write(spec_docs() if args.docs else crd_yaml())
    return 0


def cmd_stage(args) -> int:
    from .stages import stage_module
    from .stages.common import StageContext

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
    mod.run(ctx, **kw)
    return 0


def _env_int(name: str):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def cmd_run(args) -> int:
    from .runner import run_pipeline
    from .spec import STAGES

    _load(args.file)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    run_pipeline(args.file, stages=stages, force=args.force)
    return 0


def cmd_report(args) -> int:
    from .stages.evaluate import rerender
    from .store import open_store

    prefix = args.prefix.rstrip("/")
    root, _, rel = prefix.rpartition("/")
    root2, _, exp = root.rpartition("/")
    # PREFIX is <storage uri>/<experiment>/evaluate
    store = open_store(root2, endpoint=args.endpoint)
    print(rerender(store, f"{exp}/{rel}"))
    return 0


def cmd_render(args) -> int:
    import yaml

    from safety_operator.manifests import render_all

    exp = _load(args.file)
    docs = render_all(exp.name, exp.namespace, exp.spec, uid=None)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def cmd_operator(args) -> int:
    from safety_operator.main import main as operator_main

    return operator_main(["--verbose"] if args.verbose else [])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lrm-safety", description="Safety SFT for large reasoning models.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("run", help="run all stages locally, skipping finished ones")
    s.add_argument("file")
    s.add_argument("--stages", help="comma-separated subset, e.g. distill,mix")
    s.add_argument("--force", action="store_true", help="delete these stages' artifacts first")
    s.set_defaults(fn=cmd_run)
    s = sub.add_parser("stage", help="run one stage (what each pod runs)")
    s.add_argument("name", choices=["distill", "mix", "train", "evaluate"])
    s.add_argument("--spec", required=True)
    s.add_argument("--shard", type=int)
    s.add_argument("--num-shards", type=int)
    s.add_argument("--launcher", choices=["auto", "inprocess", "torchrun"], default="auto",
                   help="train: torchrun for several GPUs/nodes (auto decides from the spec)")
    s.set_defaults(fn=cmd_stage)
    s = sub.add_parser("validate", help="check a SafetyExperiment YAML; errors name the field")
    s.add_argument("file")
    s.set_defaults(fn=cmd_validate)
    s = sub.add_parser("render", help="print the Kubernetes objects the operator would create")
    s.add_argument("file")
    s.set_defaults(fn=cmd_render)
    s = sub.add_parser("report", help="re-render report.md and charts from stored records")
    s.add_argument("prefix", help="<storage uri>/<experiment>/evaluate")
    s.add_argument("--endpoint")
    s.set_defaults(fn=cmd_report)
    s = sub.add_parser("crd", help="print the CRD generated from the spec")
    s.add_argument("--docs", action="store_true", help="print the spec reference (docs/spec.md) instead")
    s.set_defaults(fn=cmd_crd)
    s = sub.add_parser("operator", help="start the kopf operator (settings from LRM_SAFETY_* env)")
    s.add_argument("--verbose", action="store_true", help="debug logging")
    s.set_defaults(fn=cmd_operator)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
