"""`kubectl sexp`: status, logs and reports of SafetyExperiments from the cluster a user's kubeconfig reaches.

Installed as the console script `kubectl-sexp`, so kubectl finds it as a plugin. It uses the kubeconfig's current
context and namespace as kubectl does (`-n`, `--context`, `--kubeconfig`), reads experiments through the official
client, and fetches reports from the experiment's own storage (the user's S3 credentials, as the AWS tools find
them). `-o json` for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from lrm_safety.evaluation.report import pct as _pct
from lrm_safety.spec import API_GROUP, API_VERSION, PLURAL, STAGES

console = Console()


class PluginError(Exception):
    """One line for the user; exit 1."""


CONNECT_TIMEOUT = 5.0  # seconds to open a connection: an unreachable server is one line in seconds, not a retry storm
READ_TIMEOUT = 60.0
USER_ROLES = (
    "the chart's ClusterRoles <release>-lrm-safety-operator-view and -edit, aggregated into the built-in "
    "view and edit roles"
)


def _kubeconfig_paths(explicit: Optional[str]) -> list[str]:
    if explicit:
        return [explicit]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [os.path.expanduser("~/.kube/config")]


class Cluster:
    """The API server a user's kubeconfig reaches, and every call's failure as one line naming what was refused."""

    def __init__(self, args):
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        paths = _kubeconfig_paths(args.kubeconfig)
        found = [p for p in paths if os.path.exists(p)]
        cfg = client.Configuration()
        if args.kubeconfig and not found:
            raise PluginError(f"kubeconfig {args.kubeconfig}: no such file")
        if not found:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):  # in a pod: its ServiceAccount
                config.load_incluster_config(client_configuration=cfg)
            else:
                raise PluginError(
                    f"no kubeconfig: {' nor '.join(paths)} exists; set KUBECONFIG or pass --kubeconfig FILE"
                )
        else:
            try:
                config.load_kube_config(
                    config_file=os.pathsep.join(found) if len(found) > 1 else found[0],
                    context=args.context,
                    client_configuration=cfg,
                )
            except (ConfigException, ValueError, TypeError, OSError) as e:
                raise PluginError(
                    f"kubeconfig {os.pathsep.join(found)}: {str(e).strip() or type(e).__name__}"
                ) from None
        cfg.retries = 0  # urllib3 Retry(0): a refused or timed-out connection is reported at once
        self.server = cfg.host
        self.api = client.ApiClient(cfg)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.namespace = args.namespace or self._context_namespace(args, found)

    @staticmethod
    def _context_namespace(args, found: list[str]) -> str:
        from kubernetes import config

        if not found:
            try:
                with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                    return f.read().strip() or "default"
            except OSError:
                return "default"
        try:
            contexts, active = config.list_kube_config_contexts(config_file=found[0])
            if args.context:
                active = next(c for c in contexts if c["name"] == args.context)
            return (active.get("context") or {}).get("namespace") or "default"
        except Exception:  # the context was loaded above: a namespace we cannot read is the default one
            return "default"

    def call(
        self,
        verb: str,
        resource: str,
        fn,
        *a,
        name: Optional[str] = None,
        namespace: Optional[str] = None,
        stream: bool = False,
        **kw,
    ):
        """`fn(*a, **kw)` with timeouts; a failure becomes a PluginError saying which request failed and the fix."""
        kw.setdefault("_request_timeout", (CONNECT_TIMEOUT, None if stream else READ_TIMEOUT))
        try:
            return fn(*a, **kw)
        except PluginError:
            raise
        except Exception as e:
            raise PluginError(self.explain(e, verb, resource, name, namespace or self.namespace)) from None

    def explain(self, e: Exception, verb: str, resource: str, name: Optional[str], namespace: str) -> str:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        what = f"{resource} {name!r}" if name else resource
        if isinstance(e, ApiException):
            detail = _status_message(e)
            if e.status == 401:
                return (
                    f"the API server {self.server} refused the kubeconfig's credentials (401 Unauthorized): log in "
                    f"again or refresh its token"
                )
            if e.status == 403:
                m = re.search(r'User "([^"]+)"', detail)
                user = m.group(1) if m else "you"
                who = (
                    f"--serviceaccount={user.split(':')[2]}:{user.split(':')[3]}"
                    if user.startswith("system:serviceaccount:") and user.count(":") == 3
                    else f"--user={user}"
                )
                return (
                    f"forbidden: RBAC does not let {user} {verb} {resource} in namespace {namespace!r}; "
                    f"{USER_ROLES}, grant it: kubectl create rolebinding lrm-safety-view -n {namespace} "
                    f"--clusterrole=view {who}"
                )
            if (
                e.status == 404
                and resource in (PLURAL, "safetystudies")
                and not _names_an_object(e)
                and not self.serves(resource)
            ):
                return (
                    f"the {resource} API ({API_GROUP}/{API_VERSION}) is not installed on {self.server}: install "
                    f"the operator's chart first (helm install lrm-safety charts/lrm-safety-operator), which brings "
                    f"its CRDs"
                )
            if e.status == 404:
                kind = {PLURAL: "safetyexperiment", "safetystudies": "safetystudy"}.get(resource, resource.rstrip("s"))
                listing = {PLURAL: "sexp", "safetystudies": "sstudy"}.get(resource, resource)
                return (
                    f"{kind} {name!r} not found in namespace {namespace!r} (`kubectl get {listing} -n "
                    f"{namespace}` lists them)"
                )
            return f"{verb} {what} in namespace {namespace!r}: {e.status} {e.reason}: {detail}".rstrip(": ")
        if isinstance(e, (HTTPError, OSError)):
            reason = getattr(e, "reason", None) or e
            text = str(reason).split(": ", 1)[-1] if "Errno" in str(reason) else str(reason)
            return (
                f"cannot reach the Kubernetes API server {self.server} ({_short(text)}): is the cluster up, and "
                f"is this the right context (`kubectl config current-context`)?"
            )
        raise e

    def serves(self, resource: str) -> bool:
        """Does discovery list the resource (is its CRD installed)? Asked only after a 404 that names no object."""
        try:
            found = self.custom.get_api_resources(
                API_GROUP, API_VERSION, _request_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
            )
        except Exception:  # a 404 of the group: not installed
            return False
        return any(r.name == resource for r in found.resources or [])


def _status_message(e) -> str:
    try:
        return json.loads(e.body).get("message", "") if e.body else ""
    except (ValueError, AttributeError, TypeError):
        return ""


def _names_an_object(e) -> bool:
    """A 404 for a missing object carries a Status naming it; a missing resource type (no CRD) does not."""
    try:
        return bool((json.loads(e.body).get("details") or {}).get("name"))
    except (ValueError, AttributeError, TypeError):
        return False


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    for cut in ("Failed to establish a new connection: ", "Caused by "):
        text = text.split(cut)[-1]
    return text.strip("()'\" ")[:160]


def _get(cluster: Cluster, name: str) -> dict:
    return cluster.call(
        "get",
        PLURAL,
        cluster.custom.get_namespaced_custom_object,
        API_GROUP,
        API_VERSION,
        cluster.namespace,
        PLURAL,
        name,
        name=name,
    )


def cmd_status(args) -> int:
    cluster = Cluster(args)
    ns = cluster.namespace
    status = _get(cluster, args.name).get("status") or {}
    if args.output == "json":
        print(json.dumps(status, indent=1, sort_keys=True))
        return 0
    console.print(
        f"[bold]{args.name}[/] ({ns}): {status.get('phase', 'Pending')}"
        + (f", stage {status['stage']}" if status.get("stage") else "")
        + (f" — {status['progress']}" if status.get("progress") not in (None, "-") else "")
    )
    table = Table("stage", "state", "attempts", "progress", "last failure", "job")
    for stage, st in (status.get("stages") or {}).items():
        prog = st.get("progress") or {}
        pct = f"{prog['percent']:.0f}%" if prog.get("percent") is not None else "-"
        fails = st.get("failures") or []
        table.add_row(
            stage,
            st.get("state", "-"),
            str(st.get("attempts", 0)),
            pct,
            (fails[-1]["reason"] if fails else (st.get("waiting") or {}).get("reason", "")) or "",
            st.get("jobName") or "",
        )
    console.print(table)
    metrics = status.get("metrics") or {}
    shown = dict(metrics.get("display") or {}) or {
        k: v for k, v in metrics.items() if k not in ("benchmarks", "judges", "display") and v is not None
    }
    if shown:
        console.print("metrics: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    for role, how in (metrics.get("judges") or {}).items():
        if role == "words":
            console.print(f"words (PAIR, the XSTest judge): {how}")
        else:
            console.print(f"{'harm' if role == 'harm' else 'over-refusal'} judged by {how}")
    servers = status.get("servers") or {}
    if servers:
        table = Table("server", "model", "roles", "ready", "state", "stages", "in use by", "endpoint")
        for name, sv in servers.items():
            table.add_row(
                name,
                sv.get("model", ""),
                ", ".join(sv.get("roles") or []),
                f"{sv.get('readyReplicas', 0)}/{sv.get('replicas', 1)}",
                sv.get("state", ""),
                ", ".join(sv.get("stages") or []),
                sv.get("inUseBy") or "-",
                sv.get("endpoint", ""),
            )
        console.print(table)
    if status.get("message"):
        console.print(f"message: {status['message']}")
    return 0


def _current_pods(cluster: Cluster, job: str) -> list:
    pods = cluster.call(
        "list", "pods", cluster.core.list_namespaced_pod, cluster.namespace, label_selector=f"job-name={job}"
    ).items
    return [p for p in pods if (p.metadata.labels or {}).get("job-name") == job]


def cmd_logs(args) -> int:
    cluster = Cluster(args)
    ns, core = cluster.namespace, cluster.core
    status = _get(cluster, args.name).get("status") or {}
    stage = args.stage or status.get("stage") or next(reversed(list((status.get("stages") or {}).keys())), None)
    st = (status.get("stages") or {}).get(stage or "") or {}
    job = st.get("jobName")
    if not job:
        raise PluginError(f"{args.name}: no Job for stage {stage!r} yet")
    pods = _current_pods(cluster, job)
    if not pods:
        raise PluginError(
            f"{args.name}: Job {job} has no pod (deleted with the Job, or not scheduled yet: see "
            f"`kubectl sexp status {args.name}`)"
        )
    for pod in pods:
        name = pod.metadata.name
        if args.follow:
            stream = cluster.call(
                "get",
                "pods/log",
                core.read_namespaced_pod_log,
                name,
                ns,
                name=name,
                follow=True,
                _preload_content=False,
                stream=True,
            )
            for chunk in stream.stream():
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        else:  # raw bytes: the log is text, whatever content type the server names
            sys.stdout.write(
                cluster.call(
                    "get", "pods/log", core.read_namespaced_pod_log, name, ns, name=name, _preload_content=False
                ).data.decode(errors="replace")
            )
    return 0


def cmd_report(args) -> int:
    from lrm_safety.evaluation import report as rep
    from lrm_safety.spec import parse_spec
    from lrm_safety.store import open_store

    cluster = Cluster(args)
    body = _get(cluster, args.name)
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
    from lrm_safety.spec.study import STUDY_PLURAL

    cluster = Cluster(args)
    ns, custom = cluster.namespace, cluster.custom
    if not args.name:
        items = cluster.call(
            "list", STUDY_PLURAL, custom.list_namespaced_custom_object, API_GROUP, API_VERSION, ns, STUDY_PLURAL
        )["items"]
        if args.output == "json":
            print(json.dumps([{"name": i["metadata"]["name"], **(i.get("status") or {})} for i in items], indent=1))
            return 0
        table = Table(
            "name", "phase", "done", "best ASR", "best refusal (keyword)", "message", title=f"SafetyStudies in {ns}"
        )
        for i in items:
            st = i.get("status") or {}
            table.add_row(
                i["metadata"]["name"],
                st.get("phase") or "-",
                st.get("done") or "-",
                _pct(st.get("bestAsr")),
                _pct(st.get("bestRefusalRate")),
                (st.get("message") or "")[:80],
            )
        console.print(table)
        return 0
    body = cluster.call(
        "get",
        STUDY_PLURAL,
        custom.get_namespaced_custom_object,
        API_GROUP,
        API_VERSION,
        ns,
        STUDY_PLURAL,
        args.name,
        name=args.name,
    )
    st = body.get("status") or {}
    if args.output == "json":
        print(json.dumps(st, indent=1, sort_keys=True))
        return 0
    axes = list(dict.fromkeys(k for r in st.get("cells") or [] for k in (r.get("cell") or {})))
    table = Table(
        "experiment",
        *axes,
        "phase",
        "stage",
        "ASR",
        "refusal (keyword)",
        "over-refusal",
        "math",
        "code",
        title=f"{args.name}: {st.get('phase', 'Pending')}, {st.get('done', '-')} done",
    )
    for r in st.get("cells") or []:
        cell = r.get("cell") or {}
        table.add_row(
            r["name"],
            *[str(cell.get(a, "base" if r.get("role") == "base" else "-")) for a in axes],
            r.get("phase") or "-",
            r.get("stage") or "-",
            _pct(r.get("asr")),
            _pct(r.get("refusalRate")),
            _pct(r.get("overRefusal")),
            _pct(r.get("mathAccuracy")),
            _pct(r.get("codeAccuracy")),
        )
    console.print(table)
    if st.get("message"):
        console.print(st["message"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    def connection(parser, default):
        parser.add_argument(
            "-n",
            "--namespace",
            default=default,
            help="the namespace the experiment lives in (default: the context's, else default)",
        )
        parser.add_argument("--context", default=default, help="the kubeconfig context to use (default: its current)")
        parser.add_argument(
            "--kubeconfig", default=default, help="the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"
        )
        parser.add_argument(
            "--debug", action="store_true", default=default, help="show the traceback of a failure instead of one line"
        )

    # kubectl's flags before or after the subcommand (`kubectl sexp status NAME -n NS`, the README's form): the
    # subcommands' copies default to SUPPRESS, so they never overwrite a value given before the subcommand.
    p = argparse.ArgumentParser(
        prog="kubectl sexp",
        description="Status, logs and reports of SafetyExperiments and "
        "SafetyStudies, read from the cluster your kubeconfig reaches.",
    )
    connection(p, None)
    flags = argparse.ArgumentParser(add_help=False)
    connection(flags, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", title="commands")
    output = dict(choices=["table", "json"], default="table", help="table (default) or json, for scripts")
    s = sub.add_parser(
        "status",
        parents=[flags],
        help="stages, progress, attempts, last failure, metrics",
        description="An experiment's phase, its stages (state, attempts, progress, last failure, Job), "
        "headline metrics, judges and served models.",
    )
    s.add_argument("name", help="the SafetyExperiment")
    s.add_argument("-o", "--output", **output)
    s.set_defaults(fn=cmd_status)
    s = sub.add_parser(
        "logs",
        parents=[flags],
        help="the log of a stage's current pod",
        description="The log of the current pod(s) of a stage's Job (every shard of distill).",
    )
    s.add_argument("name", help="the SafetyExperiment")
    s.add_argument("--stage", choices=list(STAGES), help="which stage (default: the current one, else the last)")
    s.add_argument("-f", "--follow", action="store_true", help="stream the log until the pod ends")
    s.set_defaults(fn=cmd_logs)
    s = sub.add_parser(
        "report",
        parents=[flags],
        help="the results table; --out DIR fetches report.md and charts",
        description="The evaluate stage's results (base vs trained) from the experiment's store, read "
        "with your own S3 credentials (as the AWS tools find them).",
    )
    s.add_argument("name", help="the SafetyExperiment")
    s.add_argument("-o", "--output", **output)
    s.add_argument("--out", metavar="DIR", help="also download report.md and the charts into DIR")
    s.set_defaults(fn=cmd_report)
    s = sub.add_parser(
        "studies",
        parents=[flags],
        help="SafetyStudies; with a name, the study's cells side by side",
        description="Without a name: every SafetyStudy in the namespace. With one: its cells side by "
        "side (axis values, phase, stage, ASR, over-refusal, math, code).",
    )
    s.add_argument("name", nargs="?", help="a SafetyStudy (optional)")
    s.add_argument("-o", "--output", **output)
    s.set_defaults(fn=cmd_studies)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    from lrm_safety.errors import quiet_broken_pipe

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        print("\nerror: name a command: status, logs, report or studies (kubectl sexp COMMAND --help)", file=sys.stderr)
        return 2
    try:
        return args.fn(args) or 0
    except PluginError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return quiet_broken_pipe()
    except Exception as e:
        from lrm_safety.store import store_problem

        line = store_problem(e)
        if line is None or args.debug:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
