"""`kubectl sexp`: status, logs and reports of SafetyExperiments from the cluster a user's kubeconfig reaches.

Installed as the console script `kubectl-sexp`, so kubectl finds it as a plugin. It uses the kubeconfig's current
context and namespace as kubectl does (`-n`, `--context`, `--kubeconfig`), reads experiments through the official
client, and fetches reports from the experiment's own storage (the user's S3 credentials, as the AWS tools find
them). `-o json` for scripts.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from .report import pct as _pct
from .spec import API_GROUP, API_VERSION, PLURAL

console = Console()


class PluginError(Exception):
    pass


def _clients(args):
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    except Exception as e:  # no kubeconfig, unknown context
        raise PluginError(f"cannot load the kubeconfig ({e}); set KUBECONFIG or pass --kubeconfig/--context") from None
    namespace = args.namespace
    if not namespace:
        try:
            _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
            if args.context:
                active = next(c for c in config.list_kube_config_contexts(config_file=args.kubeconfig)[0]
                              if c["name"] == args.context)
            namespace = (active.get("context") or {}).get("namespace") or "default"
        except Exception:
            namespace = "default"
    return client.CustomObjectsApi(), client.CoreV1Api(), namespace


def _get(custom, namespace: str, name: str) -> dict:
    from kubernetes.client.rest import ApiException

    try:
        return custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            raise PluginError(f"safetyexperiment {name!r} not found in namespace {namespace!r}") from None
        raise


def cmd_status(args) -> int:
    custom, _, ns = _clients(args)
    body = _get(custom, ns, args.name)
    status = body.get("status") or {}
    if args.output == "json":
        print(json.dumps(status, indent=1, sort_keys=True))
        return 0
    console.print(f"[bold]{args.name}[/] ({ns}): {status.get('phase', 'Pending')}"
                  + (f", stage {status['stage']}" if status.get("stage") else "")
                  + (f" — {status['progress']}" if status.get("progress") not in (None, "-") else ""))
    table = Table("stage", "state", "attempts", "progress", "last failure", "job")
    for stage, st in (status.get("stages") or {}).items():
        prog = st.get("progress") or {}
        pct = f"{prog['percent']:.0f}%" if prog.get("percent") is not None else "-"
        fails = st.get("failures") or []
        table.add_row(stage, st.get("state", "-"), str(st.get("attempts", 0)), pct,
                      (fails[-1]["reason"] if fails else (st.get("waiting") or {}).get("reason", "")) or "",
                      st.get("jobName") or "")
    console.print(table)
    metrics = status.get("metrics") or {}
    shown = dict(metrics.get("display") or {}) or \
        {k: v for k, v in metrics.items() if k not in ("benchmarks", "judges", "display") and v is not None}
    if shown:
        console.print("metrics: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    for role, how in (metrics.get("judges") or {}).items():
        console.print(f"{'harm' if role == 'harm' else 'over-refusal'} judged by {how}")
    servers = status.get("servers") or {}
    if servers:
        table = Table("server", "model", "roles", "ready", "state", "stages", "in use by", "endpoint")
        for name, sv in servers.items():
            table.add_row(name, sv.get("model", ""), ", ".join(sv.get("roles") or []),
                          f"{sv.get('readyReplicas', 0)}/{sv.get('replicas', 1)}", sv.get("state", ""),
                          ", ".join(sv.get("stages") or []), sv.get("inUseBy") or "-", sv.get("endpoint", ""))
        console.print(table)
    if status.get("message"):
        console.print(f"message: {status['message']}")
    return 0


def _current_pods(core, ns: str, job: str) -> list:
    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items
    return [p for p in pods if (p.metadata.labels or {}).get("job-name") == job]


def cmd_logs(args) -> int:
    custom, core, ns = _clients(args)
    status = _get(custom, ns, args.name).get("status") or {}
    stage = args.stage or status.get("stage") or next(reversed(list((status.get("stages") or {}).keys())), None)
    st = (status.get("stages") or {}).get(stage or "") or {}
    job = st.get("jobName")
    if not job:
        raise PluginError(f"{args.name}: no Job for stage {stage!r} yet")
    pods = _current_pods(core, ns, job)
    if not pods:
        raise PluginError(f"{args.name}: Job {job} has no pod (deleted with the Job, or not scheduled yet: see "
                          f"`kubectl sexp status {args.name}`)")
    for pod in pods:
        name = pod.metadata.name
        if args.follow:
            stream = core.read_namespaced_pod_log(name, ns, follow=True, _preload_content=False)
            for chunk in stream.stream():
                sys.stdout.write(chunk.decode(errors="replace"))
        else:  # raw bytes: the log is text, whatever content type the server names
            sys.stdout.write(core.read_namespaced_pod_log(name, ns, _preload_content=False).data.decode(errors="replace"))
    return 0


def cmd_report(args) -> int:
    from . import report as rep
    from .spec import parse_spec
    from .store import open_store

    custom, _, ns = _clients(args)
    body = _get(custom, ns, args.name)
    spec = parse_spec(body.get("spec") or {})
    store = open_store(spec.storage.uri, endpoint=spec.storage.endpoint, region=spec.storage.region)
    prefix = f"{args.name}/evaluate"
    manifest = store.read_manifest(prefix)
    if manifest is None:
        raise PluginError(f"{args.name}: no evaluate report yet in {store.uri(prefix)}")
    metrics = store.read_json(f"{manifest.get('source') or prefix}/metrics.json")  # a reused stage: its source
    if args.output == "json":
        print(json.dumps(metrics, indent=1, sort_keys=True))
    else:
        table = Table(*rep.header(metrics), title=f"{args.name}: base vs trained")
        for row in rep.table_rows(metrics, manifest.get("judges")):
            table.add_row(*row)
        console.print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        src = manifest.get("source") or prefix
        for key in [f"{src}/report.md", *store.list(f"{src}/chart-")]:
            store.download_file(key, out / key.rsplit("/", 1)[1])
        console.print(f"report and charts in {out}")
    return 0


def cmd_studies(args) -> int:
    """Without a name: every study in the namespace; with one: its cells side by side."""
    from kubernetes.client.rest import ApiException

    from .study import STUDY_PLURAL

    custom, _, ns = _clients(args)
    if not args.name:
        items = custom.list_namespaced_custom_object(API_GROUP, API_VERSION, ns, STUDY_PLURAL)["items"]
        if args.output == "json":
            print(json.dumps([{"name": i["metadata"]["name"], **(i.get("status") or {})} for i in items], indent=1))
            return 0
        table = Table("name", "phase", "done", "best ASR", "best refusal (keyword)", "message",
                      title=f"SafetyStudies in {ns}")
        for i in items:
            st = i.get("status") or {}
            table.add_row(i["metadata"]["name"], st.get("phase") or "-", st.get("done") or "-", _pct(st.get("bestAsr")),
                          _pct(st.get("bestRefusalRate")), (st.get("message") or "")[:80])
        console.print(table)
        return 0
    try:
        body = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, STUDY_PLURAL, args.name)
    except ApiException as e:
        if e.status == 404:
            raise PluginError(f"safetystudy {args.name!r} not found in namespace {ns!r}") from None
        raise
    st = body.get("status") or {}
    if args.output == "json":
        print(json.dumps(st, indent=1, sort_keys=True))
        return 0
    axes = list(dict.fromkeys(k for r in st.get("cells") or [] for k in (r.get("cell") or {})))
    table = Table("experiment", *axes, "phase", "stage", "ASR", "refusal (keyword)", "over-refusal", "math", "code",
                  title=f"{args.name}: {st.get('phase', 'Pending')}, {st.get('done', '-')} done")
    for r in st.get("cells") or []:
        cell = r.get("cell") or {}
        table.add_row(r["name"], *[str(cell.get(a, "base" if r.get("role") == "base" else "-")) for a in axes],
                      r.get("phase") or "-", r.get("stage") or "-", _pct(r.get("asr")), _pct(r.get("refusalRate")),
                      _pct(r.get("overRefusal")),
                      _pct(r.get("mathAccuracy")), _pct(r.get("codeAccuracy")))
    console.print(table)
    if st.get("message"):
        console.print(st["message"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    def connection(parser, default):
        parser.add_argument("-n", "--namespace", default=default)
        parser.add_argument("--context", default=default)
        parser.add_argument("--kubeconfig", default=default)

    # kubectl's flags before or after the subcommand (`kubectl sexp status NAME -n NS`, the README's form): the
    # subcommands' copies default to SUPPRESS, so they never overwrite a value given before the subcommand.
    p = argparse.ArgumentParser(prog="kubectl sexp", description="SafetyExperiment status, logs and reports.")
    connection(p, None)
    flags = argparse.ArgumentParser(add_help=False)
    connection(flags, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, helptext in (("status", cmd_status, "stages, progress, attempts, last failure, metrics"),
                               ("logs", cmd_logs, "the current pod of a stage"),
                               ("report", cmd_report, "the results table; --out DIR fetches report.md and charts")):
        s = sub.add_parser(name, help=helptext, parents=[flags])
        s.add_argument("name")
        s.set_defaults(fn=fn)
        if name != "logs":
            s.add_argument("-o", "--output", choices=["table", "json"], default="table")
        if name == "logs":
            s.add_argument("--stage")
            s.add_argument("-f", "--follow", action="store_true")
        if name == "report":
            s.add_argument("--out")
    s = sub.add_parser("studies", help="SafetyStudies; with a name, the study's cells side by side", parents=[flags])
    s.add_argument("name", nargs="?")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    s.set_defaults(fn=cmd_studies)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
