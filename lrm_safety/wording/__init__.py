"""The words the study's models read: each style's instruction, the nocot refusal, PAIR's attacker and judge prompts,
the XSTest rubric and the chat system message the release's client sent. Either the release's own, imported from a
user's checkouts (`lrm-safety release import`, release.py), or this project's wording (styles.py, the evaluation
modules). One object answers every consumer with the text filled in, and says which text it used, by hash.

Placement is the release's wherever the words come from: realsafe and improved go in front of the user's query,
short and template are system prompts, default sends the raw prompt, nocot answers one fixed refusal."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Optional

from lrm_safety import styles
from lrm_safety.errors import BadInput

FILE = "release-texts.json"  # under the data root (evaluate.dataRoot) unless spec.promptsFile names another
VERSION = 1
STYLE_TEXTS = ("realsafe", "improved", "short", "template")
# Every text an import extracts, by name (release.py says where each comes from).
NAMES = (
    *(f"style.{s}" for s in STYLE_TEXTS),
    "nocot.refusal",
    "pair.attacker.template.0",
    "pair.attacker.template.1",
    "pair.attacker.feedback",
    "pair.judge.prompt",
    "pair.judge.pattern",
    "xstest.rubric",
    "chat.system",
)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Wording:
    """The texts in force for a run: `origin` release (imported, verbatim) or builtin (this project's)."""

    origin: str
    texts: dict[str, str] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)  # name -> {repo, commit, path, sha256}
    where: str = ""  # the file it was read from (builtin: why no file was read)

    @classmethod
    def builtin(cls, why: str = "") -> Wording:
        from lrm_safety.wording import builtin as words

        texts = {
            "style.realsafe": styles.REALSAFE,
            "style.improved": styles.IMPROVED,
            "style.short": styles.SHORT,
            "style.template": styles.TEMPLATE,
            "nocot.refusal": styles.NOCOT_REFUSAL,
            "pair.attacker.template.0": words.ATTACKER_SYSTEM,
            "pair.attacker.template.1": words.ATTACKER_FIRST,
            "pair.attacker.feedback": words.ATTACKER_FEEDBACK,
            "pair.judge.prompt": words.JUDGE_PROMPT,
            "xstest.rubric": words.XSTEST_TWO_CLASS,
        }
        return cls("builtin", texts, where=why)

    @classmethod
    def from_document(cls, doc: dict, where: str = "") -> Wording:
        if doc.get("version") != VERSION or not isinstance(doc.get("texts"), dict):
            raise BadInput(
                f"{where}: not a release-texts file of version {VERSION}: re-run `lrm-safety release import`"
            )
        texts = {name: t["text"] for name, t in doc["texts"].items() if isinstance(t, dict) and "text" in t}
        sources = {name: {k: v for k, v in t.items() if k != "text"} for name, t in doc["texts"].items()}
        return cls("release", texts, sources, where)

    # ---- what each consumer reads
    @property
    def release(self) -> bool:
        return self.origin == "release"

    def style(self, style: str) -> Optional[str]:
        return self.texts.get(f"style.{style}")

    def instruction(self, style: str, safety_awareness: bool = True) -> tuple[Optional[str], str]:
        """(text, placement) of the style's instruction in these words; placement as the release's (styles.py)."""
        placement = styles.instruction(style, safety_awareness)[1]
        return (self.style(style), placement) if placement != "none" else (None, "none")

    def system_prompt(self, style: str) -> Optional[str]:
        text, placement = self.instruction(style)
        return text if placement == "system" else None

    def nocot_refusal(self) -> Optional[str]:
        return self.texts.get("nocot.refusal")

    def chat_system(self) -> Optional[str]:
        """The system message the release's client (FastChat's `chatgpt` template) sent with every judge request."""
        return self.texts.get("chat.system") if self.release else None

    def pair_order(self, choice: str, seed: int, item: int) -> tuple[int, int]:
        """(system, opening) indices of PAIR's two attacker templates. The release draws their order with an
        unseeded random.sample per run (its third defect); `first` is the order of its file (the long system prompt,
        then the opening), `second` the other, `random` a draw seeded by the template seed and the item."""
        if choice == "second":
            return 1, 0
        if choice == "random":
            return tuple(random.Random(seed * 1_000_003 + item).sample([0, 1], 2))  # type: ignore[return-value]
        return 0, 1

    def pair_attacker(self, goal: str, target: str, order: tuple[int, int]) -> tuple[str, str]:
        """(system message, first user message) of PAIR's attacker for one request."""
        a, b = (self.texts[f"pair.attacker.template.{i}"] for i in order)
        if self.release:
            return a.format(query=goal, reference_responses=target), b.format(query=goal, reference_responses=target)
        return a.format(goal=goal, target=target), b.format(goal=goal, target=target)

    def pair_feedback(self, response: str, goal: str, score: int) -> str:
        t = self.texts["pair.attacker.feedback"]
        if self.release:
            return t.format(target_responses=response, query=goal, eval_results=score)
        return t.format(response=response, goal=goal, score=score)

    def pair_judge(self, goal: str, response: str) -> list[dict]:
        """The in-loop judge's messages: the release formats its judge prompt with the goal and, as the response,
        its pattern of the goal and the target's output; its client adds the chat system message."""
        if self.release:
            shown = self.texts["pair.judge.pattern"].replace("{query}", goal).replace("{target_responses}", response)
            user = self.texts["pair.judge.prompt"].format(query=goal, response=shown)
        else:
            user = self.texts["pair.judge.prompt"].format(goal=goal, response=response)
        return _with_system(self.chat_system(), user)

    def xstest(self, query: str, response: str, template: Optional[str] = None) -> list[dict]:
        """The XSTest judge's messages: the rubric filled in as the release's scorer fills it (str.format), or a
        user's template (its {query} and {response} replaced), with the release's chat system message when the
        release's words are in force (its client sent one with every request, whatever the rubric)."""
        if template is None and self.release:
            user = self.texts["xstest.rubric"].format(query=query, response=response)
        else:
            rubric = template or self.texts["xstest.rubric"]
            user = rubric.replace("{query}", query).replace("{response}", response)
        return _with_system(self.chat_system(), user)

    # ---- what was used
    def hashes(self, names=NAMES) -> dict[str, str]:
        return {n: digest(self.texts[n])[:12] for n in names if n in self.texts}

    def digest(self) -> str:
        """One hash of every text in force (stage config hashes include it: other words, other outputs)."""
        return digest(json.dumps({"origin": self.origin, "texts": self.texts}, sort_keys=True))[:16]

    def describe(self, names=NAMES) -> str:
        if not self.release:
            why = f" ({self.where})" if self.where else ""
            head = f"the project's own wording{why}; import the release's with `lrm-safety release import`"
        else:
            commits = dict.fromkeys(
                f"{s['repo']}@{(s.get('commit') or s.get('version') or '?')[:7]}" for s in self.sources.values()
            )
            head = f"the release's words from {self.where} (imported from {', '.join(commits)})"
        listed = ", ".join(f"{n} {h}" for n, h in self.hashes(names).items())
        return f"{head}: {listed}" if listed else head


def used(spec) -> dict[str, list[str]]:
    """Which texts each reader of this spec reads, by role (validate, render, the stages' records)."""
    out: dict[str, list[str]] = {}
    d, ev = spec.distill, spec.evaluate
    if "distill" in spec.stages:
        names = []
        if d.instruction is None and styles.instruction(d.style, d.rectify.resolved(d.style).safety_awareness)[0]:
            names.append(f"style.{d.style}")
        coded = d.style == "template" and d.template_labeller != "oneshot" and d.template_refusal == "fixed"
        if d.rectify.refusal_text is None and (d.style == "nocot" or coded):
            names.append("nocot.refusal")
        out["teacher"] = names
    if "mix" in spec.stages and spec.mix.system_prompt and styles.instruction(d.style)[1] == "system":
        out["training system prompt"] = [f"style.{d.style}"]
    if "evaluate" in spec.stages:
        if any(b.name == "advbench-pair" for b in ev.benchmarks):
            out["PAIR attacker"] = ["pair.attacker.template.0", "pair.attacker.template.1", "pair.attacker.feedback"]
            out["PAIR judge"] = ["pair.judge.prompt", "pair.judge.pattern", "chat.system"]
        judge = ev.over_refusal_judge
        if judge is not None and judge.kind == "llm":
            out["XSTest judge"] = ([] if judge.template else ["xstest.rubric"]) + ["chat.system"]
    return {role: names for role, names in out.items() if names}


def describe_use(words: Wording, roles: dict[str, list[str]]) -> list[str]:
    """One line for the words, then one per reader with the hash of each text it reads."""
    lines = [words.describe([])]
    for role, names in roles.items():
        got = words.hashes(names)
        shown = ", ".join(f"{n} {got[n]}" if n in got else f"{n} (none: not sent)" for n in names)
        lines.append(f"{role}: {shown}")
    return lines


def _with_system(system: Optional[str], user: str) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def locate(spec) -> tuple[Optional[str], str]:
    """(the file `prompts` reads, or None with why not). promptsFile when set; else the data root's file, looked for
    only where the data root is on the experiment's kind of storage (a file:// demo with the default s3:// data root
    never reaches for S3)."""
    if spec.prompts == "builtin":
        return None, "prompts: builtin"
    if spec.prompts_file:
        return spec.prompts_file, ""
    root = spec.evaluate.data_root
    if not root:
        return None, "no evaluate.dataRoot to look in"
    if root.startswith("s3://") != spec.storage.uri.startswith("s3://"):
        return None, f"evaluate.dataRoot {root} is not on the storage ({spec.storage.uri}): set promptsFile"
    return f"{root.rstrip('/')}/{FILE}", ""


def resolve(spec, read) -> Wording:
    """The words a spec's `prompts` asks for. `read(uri) -> bytes` raises FileNotFoundError for a missing file, and
    any other failure as it is (a store that cannot be read fails the stage rather than change its words).
    auto: the release's where the file is, else the project's (a promptsFile named must be there); release: the
    file must be there; builtin: never read."""
    uri, why = locate(spec)
    if uri is None:
        if spec.prompts == "release":
            raise BadInput(f"spec.prompts release: {why} (where `lrm-safety release import` wrote release-texts.json)")
        return Wording.builtin(why)
    try:
        doc = json.loads(read(uri))
    except FileNotFoundError:
        if spec.prompts == "release" or spec.prompts_file:
            field = "spec.promptsFile" if spec.prompts_file else "spec.prompts: release"
            raise BadInput(
                f"{field}: {uri} is not there: run `lrm-safety release import RELEASE_DIR "
                f"--aisafetylab AISAFETYLAB_DIR {uri.rsplit('/', 1)[0]}`"
            ) from None
        return Wording.builtin(f"no {uri}")
    except json.JSONDecodeError as e:
        raise BadInput(f"spec.promptsFile: {uri} is not JSON ({e.msg}, line {e.lineno}): re-run the import") from None
    return Wording.from_document(doc, uri)
