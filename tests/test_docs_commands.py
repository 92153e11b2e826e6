"""The shell lines README.md, docs/*.md and the chart's NOTES tell a user to copy, checked as a user's shell and the
tools would take them: bash's own expansion gives the arguments written (no brace expansion, no glob that zsh or
failglob would stop at), helm lines render the chart with `helm template`, kubectl lines name a namespace,
`lrm-safety` and `kubectl sexp` lines parse with their own argument parsers, make targets exist."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOTES = REPO / "charts" / "lrm-safety-operator" / "templates" / "NOTES.txt"
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
TOOLS = ("helm", "kubectl", "lrm-safety", ".venv/bin/lrm-safety", "make")
# kubectl verbs and objects that take no namespace (cluster-scoped, or a file that names its own)
CLUSTER_WIDE = re.compile(
    r"^kubectl (create namespace|get --raw|plugin|config|apply (--server-side )?-f (examples|crds)|"
    r"get crd|version|api-resources|wait --for=condition=Established)"
)


def commands(text: str) -> list[str]:
    """Fenced bash blocks (continuations joined, comment lines dropped) and inline code spans that are whole
    commands of the project's tools."""
    out = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang not in ("bash", "sh", "shell"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = _strip_comment(line).strip()
            if line:
                out.append(line)
    for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text):  # prose mentions (`kubectl get sexp`) are not copied
        if span.startswith(tuple(t + " " for t in TOOLS)) and len(span.split()) >= 4 and "[-" not in span:
            out.append(span.strip())
    return out


def placeholders(argv: list[str]) -> bool:
    """NAME, DIR, REGISTRY...: a line the user completes; its tool's parser cannot judge the blanks."""
    return any(w.isupper() and w.isalpha() and len(w) > 1 for w in argv[1:])


def _strip_comment(line: str) -> str:
    """The line up to its first ` #` outside quotes."""
    cut = line.find(" #")
    while cut != -1:
        try:
            shlex.split(line[:cut])
            return line[:cut]
        except ValueError:  # inside a quote: look further
            cut = line.find(" #", cut + 2)
    return "" if line.lstrip().startswith("#") else line


def segments(line: str) -> list[str]:
    """A command line's simple commands: split at &&, ||, ; and | outside quotes."""
    parts, cur, quote, i = [], "", None, 0
    while i < len(line):
        c = line[i]
        if quote:
            cur += c
            quote = None if c == quote else quote
        elif c in "'\"":
            quote, cur = c, cur + c
        elif line[i : i + 2] in ("&&", "||"):
            parts.append(cur)
            cur, i = "", i + 1
        elif c in ";|":
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return [p.strip() for p in [*parts, cur] if p.strip()]


def bash_argv(segment: str, tmp: Path) -> list[str]:
    """The words bash gives the command, run as printf's arguments in an empty folder with failglob on (an
    unquoted glob that matches nothing is an error there, as it is in zsh by default)."""
    assert "$(" not in segment and "`" not in segment and not re.search(r"(?<![-=\w])[<>]", segment), segment
    r = subprocess.run(
        ["bash", "-c", f"shopt -s failglob; printf '%s\\0' {segment}"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, f"bash refuses {segment!r}: {r.stderr.strip()}"
    return r.stdout.split("\0")[:-1]


def all_commands():
    found = []
    for doc in DOCS:
        found += [(doc.relative_to(REPO).as_posix(), c) for c in commands(doc.read_text())]
    return found


CASES = all_commands()


def test_the_docs_hold_commands_to_check():
    tools = {c.split()[0] for _, c in CASES}
    assert {"helm", "kubectl", "make"} <= tools and any("lrm-safety" in t for t in tools), tools
    assert sum(c.startswith("helm ") for _, c in CASES) >= 3


@pytest.mark.parametrize("doc,line", CASES, ids=[f"{d}:{c[:50]}" for d, c in CASES])
def test_each_line_runs_as_written(doc, line, tmp_path):
    examples = _example_names()
    for seg in segments(line):
        if "$" in seg or seg.split()[0] not in TOOLS + ("docker", "buildah", "export", "tensorboard"):
            continue
        argv = bash_argv(seg, tmp_path)
        written = shlex.split(seg)
        assert argv == written, f"{doc}: bash turns {seg!r} into {argv} (quote the braces or globs)"
        tool = argv[0]
        if tool == "helm":
            _helm(doc, argv, tmp_path)
        elif tool == "kubectl":
            _kubectl(doc, seg, argv, examples)
        elif tool.endswith("lrm-safety"):
            _lrm_safety(doc, argv)
        elif tool == "make":
            targets = set(re.findall(r"^([a-z][-a-z]*):", (REPO / "Makefile").read_text(), re.M))
            assert all(a in targets or "=" in a for a in argv[1:]), f"{doc}: {seg}: no such make target"


def _helm(doc, argv, tmp):
    verb = argv[1]
    if verb in ("uninstall", "repo", "version", "status"):
        return
    assert HELM, "helm missing: make install puts it in .venv/bin"
    args = argv[2:]
    if verb == "upgrade":
        args = [a for a in args if a != "--install"]
    if verb in ("install", "upgrade"):
        verb = "template"
    r = subprocess.run([HELM, verb, *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, f"{doc}: {' '.join(argv)}: {r.stderr.strip()}"


def _kubectl(doc, seg, argv, examples):
    if argv[1] == "sexp":
        from lrm_safety.kubectl_plugin import build_parser

        try:
            args = build_parser().parse_args(argv[2:])
        except SystemExit:
            pytest.fail(f"{doc}: {seg}: kubectl sexp refuses these arguments")
        name = getattr(args, "name", None)
        if name in examples:
            assert args.namespace == examples[name], f"{doc}: {seg}: {name} lives in -n {examples[name]}"
        return
    if CLUSTER_WIDE.match(" ".join(argv)):
        return
    assert "-n" in argv or "--namespace" in argv or "-A" in argv or any(a.startswith("--namespace=") for a in argv), (
        f"{doc}: {seg}: name the namespace (-n)"
    )
    named = [
        a
        for a in argv
        if a in examples
        or any(a.startswith(p) for p in ("job/", "experiment="))
        and a.split("/")[-1].split("=")[-1].rsplit("-", 2)[0] in examples
    ]
    for a in named:
        want = examples.get(a) or examples[a.split("/")[-1].split("=")[-1].rsplit("-", 2)[0]]
        ns = argv[argv.index("-n") + 1] if "-n" in argv else None
        assert ns == want, f"{doc}: {seg}: {a} lives in -n {want}"


def _lrm_safety(doc, argv):
    from lrm_safety.cli import build_parser

    if placeholders(argv):
        return

    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{doc}: {' '.join(argv)}: lrm-safety refuses these arguments")
    path = getattr(args, "file", None)
    if path and path.startswith("examples/"):
        assert (REPO / path).is_file(), f"{doc}: {path} does not exist"


def _example_names() -> dict[str, str]:
    names = {}
    for f in (REPO / "examples").glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        meta = doc.get("metadata") or {}
        names[meta["name"]] = meta.get("namespace", "default")
    return names


def test_the_charts_notes_name_a_namespace_in_every_kubectl_line():
    for line in NOTES.read_text().splitlines():
        line = line.strip().rstrip("\\").strip()
        if line.startswith("kubectl ") and not CLUSTER_WIDE.match(line):
            assert re.search(r"(^| )(-n|-A|--namespace)( |=|$)", line), f"NOTES.txt: {line}: name the namespace"


def test_the_checker_catches_what_broke_before(tmp_path):
    """The lines that failed as written: unquoted braces (helm saw two arguments) and an unquoted glob."""
    with pytest.raises(AssertionError, match="bash turns"):
        seg = "helm template r charts/lrm-safety-operator --set watch.namespaces={research,team-b}"
        assert bash_argv(seg, tmp_path) == shlex.split(seg), "bash turns it"
    with pytest.raises(AssertionError, match="bash refuses"):
        bash_argv("helm template r charts/lrm-safety-operator --set worker.imagePullSecrets[0].name=x", tmp_path)
    ok = "helm template r charts/lrm-safety-operator --set 'watch.namespaces={research,team-b}'"
    assert bash_argv(ok, tmp_path) == shlex.split(ok)
