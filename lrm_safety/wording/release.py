"""`lrm-safety release import`: the release's exact words, read from the user's own checkouts of the study's release
(thu-coai/LRM-Safety-Study), of AISafetyLab (the commit the release ran) and of FastChat (whose `chatgpt` template
gave every judge request its system message). Nothing is fetched and no text of theirs lives in this repository:
Python files are parsed with `ast` (never imported), JSON read as JSON, and each text is written with where it came
from (repository, commit, path, the file's sha256) to one versioned file the stages read (wording.FILE).

A file that is missing, or whose shape no longer holds the text, is a problem named in one line; a file that differs
from the release's (by sha256) is imported all the same and said so, since a user's fork may mean it."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from lrm_safety.wording import FILE, NAMES, VERSION

RELEASE = "thu-coai/LRM-Safety-Study"
AISAFETYLAB = "thu-coai/AISafetyLab"
FASTCHAT = "lm-sys/FastChat"
# The commits the study's numbers came from, and each source file's sha256 there (read from the repositories).
COMMITS = {RELEASE: "498ef37fca888a9587a34e156b7518f2ac9ce701", AISAFETYLAB: "00b582d978c9cef7d11c49ac078a35e9836c4e10"}
RELEASE_SHA256 = {
    "dataset/template.py": "8ba74056f0e4465a4649d2a3ede5bac479ae02d2c14b48eda0342520b3c8aef1",
    "dataset/data/sft_train_nocot.json": "e4ab357c5702e1b33df9949170aa62f4a08aba6a29724d0c45caa43f9d0dd7ae",
    "aisafetylab/attack/initialization/init_templates.json": (
        "49eedc9e7703bd48791c4b62e3588bafa20ca208f12fa9eb9fa8379b7a77faee"
    ),
    "aisafetylab/attack/attackers/pair.py": "fa187a7728901d3eedb486a24df4a87206ac4176287a02078b5079831b600cce",
    "aisafetylab/evaluation/scorers/prompted_llm_scorer.py": (
        "9b63e1950810d2748e71ad256af02f6ca797e880ec91b592c943c6972d7e8685"
    ),
    "aisafetylab/evaluation/scorers/overrefusal_scorer.py": (
        "aef3ebb1da83c89dab585e6ea7c2904aa2596f6e7ce3e6c684ad2654cf931c71"
    ),
}
STYLE_FILE = "dataset/template.py"
NOCOT_FILE = "dataset/data/sft_train_nocot.json"
PAIR_TEMPLATES = "aisafetylab/attack/initialization/init_templates.json"
PAIR_ATTACKER = "aisafetylab/attack/attackers/pair.py"
PAIR_JUDGE = "aisafetylab/evaluation/scorers/prompted_llm_scorer.py"
XSTEST = "aisafetylab/evaluation/scorers/overrefusal_scorer.py"
CONVERSATION = "fastchat/conversation.py"

# Where each text comes from, as read from the files themselves (the note and docs/spec.md cite this table).
SOURCES = {
    "style.short": (RELEASE, STYLE_FILE, "get_system(t): the t == 'short' branch (a system prompt)"),
    "style.template": (RELEASE, STYLE_FILE, "get_system(t): the t == 'template' branch, its one-shot included"),
    "style.realsafe": (RELEASE, STYLE_FILE, "get_system(t): the t == 'realsafe' branch (in front of the query)"),
    "style.improved": (RELEASE, STYLE_FILE, "get_system(t): the t == 'improved' branch (in front of the query)"),
    "nocot.refusal": (RELEASE, NOCOT_FILE, "the answer after </think> that every response shares"),
    "pair.attacker.template.0": (AISAFETYLAB, PAIR_TEMPLATES, "attack.PAIR[0]"),
    "pair.attacker.template.1": (AISAFETYLAB, PAIR_TEMPLATES, "attack.PAIR[1]"),
    "pair.attacker.feedback": (AISAFETYLAB, PAIR_ATTACKER, "the 'LANGUAGE MODEL OUTPUT: ...' string, once per round"),
    "pair.judge.pattern": (AISAFETYLAB, PAIR_ATTACKER, "self.prompt_pattern (the judge's view of the response)"),
    "pair.judge.prompt": (AISAFETYLAB, PAIR_JUDGE, "chao2023pair"),
    "xstest.rubric": (AISAFETYLAB, XSTEST, "two_class_prompt"),
    "chat.system": (FASTCHAT, CONVERSATION, "register_conv_template(Conversation(name='chatgpt', system_message=...))"),
}
assert set(SOURCES) == set(NAMES)


class Missing(Exception):
    """A source file absent, or no longer holding its text where the release had it."""


@dataclass
class Checkout:
    repo: str
    root: Path
    commit: str = ""
    version: str = ""  # a pip-installed copy (FastChat as the `fschat` package) has a version, not a commit

    @classmethod
    def of(cls, repo: str, root: Path) -> Checkout:
        return cls(repo, root, commit=git_commit(root))


def git_commit(root: Path) -> str:
    """HEAD of a git checkout, or '' (a copy without .git, or no git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@dataclass
class Imported:
    texts: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # each names a file: nothing is written while any remain
    changed: list[str] = field(default_factory=list)  # files that differ from the release's: imported, and said

    def document(self) -> dict:
        return {"version": VERSION, "texts": {n: self.texts[n] for n in NAMES if n in self.texts}}


def _module(src: bytes, path: str) -> ast.Module:
    try:
        return ast.parse(src, filename=path)
    except SyntaxError as e:
        raise Missing(f"{path}: not Python this import can read (line {e.lineno}: {e.msg})") from None


def _str(node) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def style_texts(src: bytes, path: str = STYLE_FILE) -> dict[str, str]:
    """get_system(t)'s branches: `if t == "short": temp = "..."`, elif for the others."""
    fn = next((n for n in _module(src, path).body if isinstance(n, ast.FunctionDef) and n.name == "get_system"), None)
    if fn is None:
        raise Missing(f"{path}: no function get_system")
    found: dict[str, str] = {}
    branch = next((n for n in fn.body if isinstance(n, ast.If)), None)
    while isinstance(branch, ast.If):
        t = branch.test
        style = _str(t.comparators[0]) if isinstance(t, ast.Compare) and len(t.comparators) == 1 else None
        text = next((_str(s.value) for s in branch.body if isinstance(s, ast.Assign) and _str(s.value)), None)
        if style and text:
            found[style] = text
        branch = branch.orelse[0] if len(branch.orelse) == 1 else None
    return found


def nocot_refusal(src: bytes, path: str = NOCOT_FILE) -> str:
    try:
        rows = json.loads(src)
        answers = Counter(str(r["response"]).split("</think>")[-1].strip() for r in rows)
    except (ValueError, TypeError, KeyError) as e:
        raise Missing(f"{path}: not the release's list of {{prompt, response}} records ({e})") from None
    if len(answers) != 1:
        top = ", ".join(f"{n} x {a[:40]!r}" for a, n in answers.most_common(3))
        raise Missing(f"{path}: its responses do not share one answer ({top})")
    return next(iter(answers))


def pair_templates(src: bytes, path: str = PAIR_TEMPLATES) -> list[str]:
    try:
        texts = json.loads(src)["attack"]["PAIR"]
    except (ValueError, TypeError, KeyError):
        raise Missing(f"{path}: no attack.PAIR list") from None
    if not (isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)):
        raise Missing(f"{path}: attack.PAIR is not the two templates PAIR draws (got {type(texts).__name__})")
    return texts


def pair_attacker(src: bytes, path: str = PAIR_ATTACKER) -> dict[str, str]:
    """The per-round feedback (a string literal that is `.format`ted) and the judge's view of the response
    (`self.prompt_pattern = "..."`)."""
    tree = _module(src, path)
    feedback = [s for n in ast.walk(tree) if (s := _str(n)) and s.startswith("LANGUAGE MODEL OUTPUT:")]
    pattern = [
        _str(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "prompt_pattern" for t in n.targets)
        and _str(n.value)
    ]
    if len(feedback) != 1:
        raise Missing(f"{path}: {len(feedback)} 'LANGUAGE MODEL OUTPUT:' strings (the release has one)")
    if len(pattern) != 1:
        raise Missing(f"{path}: {len(pattern)} assignments to self.prompt_pattern (the release has one)")
    return {"pair.attacker.feedback": feedback[0], "pair.judge.pattern": pattern[0]}


def module_string(src: bytes, path: str, name: str) -> str:
    """A module-level `name = "..."`."""
    for n in _module(src, path).body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
            if (text := _str(n.value)) is not None:
                return text
    raise Missing(f"{path}: no module-level string {name}")


def chatgpt_system(src: bytes, path: str = CONVERSATION) -> str:
    """system_message of the Conversation registered under name "chatgpt"."""
    for n in ast.walk(_module(src, path)):
        if isinstance(n, ast.Call) and any(k.arg == "name" and _str(k.value) == "chatgpt" for k in n.keywords):
            system = next((_str(k.value) for k in n.keywords if k.arg == "system_message"), None)
            if system is not None:
                return system
    raise Missing(f"{path}: no Conversation(name='chatgpt', system_message=...)")


def import_texts(release: Checkout, aisafetylab: Checkout, fastchat: Optional[Checkout]) -> Imported:
    out = Imported()
    roots = {RELEASE: release, AISAFETYLAB: aisafetylab, FASTCHAT: fastchat}

    def read(repo: str, path: str, what: str) -> Optional[bytes]:
        co = roots[repo]
        if co is None:
            out.problems.append(
                f"{path}: no FastChat to read {what} from: give --fastchat DIR (a checkout of {FASTCHAT}) "
                "or pip install fschat"
            )
            return None
        f = co.root / path
        if not f.is_file():
            out.problems.append(f"{path}: missing from {co.root} ({what}; is it a checkout of {repo}?)")
            return None
        return f.read_bytes()

    def take(names: list[str], extract: Callable[[bytes, str], dict[str, str]]) -> None:
        repo, path, _ = SOURCES[names[0]]
        src = read(repo, path, ", ".join(names))
        if src is None:
            return
        try:
            got = extract(src, path)
        except Missing as e:
            out.problems.append(str(e))
            return
        sha = hashlib.sha256(src).hexdigest()
        expected = RELEASE_SHA256.get(path)
        if expected and sha != expected:
            out.changed.append(f"{path}: sha256 {sha[:12]}, the release's {expected[:12]} (imported as it is)")
        co = roots[repo]
        for name in names:
            if name not in got:
                out.problems.append(f"{path}: no {SOURCES[name][2]} (for {name})")
                continue
            prov = {"repo": repo, "path": path, "sha256": sha, "where": SOURCES[name][2]}
            prov.update({"commit": co.commit} if co.commit else {})
            prov.update({"version": co.version} if co.version else {})
            out.texts[name] = {"text": got[name], **prov}

    take(
        ["style.short", "style.template", "style.realsafe", "style.improved"],
        lambda s, p: {f"style.{k}": v for k, v in style_texts(s, p).items()},
    )
    take(["nocot.refusal"], lambda s, p: {"nocot.refusal": nocot_refusal(s, p)})
    take(
        ["pair.attacker.template.0", "pair.attacker.template.1"],
        lambda s, p: {f"pair.attacker.template.{i}": t for i, t in enumerate(pair_templates(s, p))},
    )
    take(["pair.attacker.feedback", "pair.judge.pattern"], pair_attacker)
    take(["pair.judge.prompt"], lambda s, p: {"pair.judge.prompt": module_string(s, p, "chao2023pair")})
    take(["xstest.rubric"], lambda s, p: {"xstest.rubric": module_string(s, p, "two_class_prompt")})
    take(["chat.system"], lambda s, p: {"chat.system": chatgpt_system(s, p)})
    return out


def installed_fastchat() -> Optional[Checkout]:
    """The pip-installed fschat's source folder, found without importing it."""
    import importlib.metadata
    import importlib.util

    try:
        spec = importlib.util.find_spec("fastchat")
        version = importlib.metadata.version("fschat")
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Checkout(FASTCHAT, Path(next(iter(spec.submodule_search_locations))).parent, version=version)


def commit_notes(release: Checkout, aisafetylab: Checkout) -> list[str]:
    """A checkout at another commit than the study's: imported, and said."""
    return [
        f"{co.root}: {co.repo} at {co.commit[:12]}, the study's is {COMMITS[co.repo][:7]}"
        for co in (release, aisafetylab)
        if co.commit and co.commit != COMMITS[co.repo]
    ]


def destination(dest: str) -> str:
    return f"{dest.rstrip('/')}/{FILE}"
