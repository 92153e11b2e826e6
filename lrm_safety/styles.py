"""Reasoning styles: how the teacher is asked to reason, and the template-CoT builder.

Placement follows the study's release (dataset/template.py): `default` sends the raw prompt (the naive
distillation baseline); the realsafe and improved instructions are put in front of the user's query; short and
template are system prompts; nocot answers with one fixed refusal after an empty think block. The wording is
this project's own and carries every clause of the release's instructions (docs/spec.md lists them);
`distill.instruction` replaces a style's text with any other, the release's exact prompts included.

Every style yields responses in one format: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`.
"""

from __future__ import annotations

import re
from typing import Optional

from lrm_safety.errors import BadInput

# The 8 categories of the study's template checklist, in its order.
CATEGORIES = (
    "harassment/threatening",
    "hate/threatening",
    "illicit/violent",
    "self-harm/intent/instructions",
    "sexual/minors",
    "violence/graphic",
    "misinformation",
    "privacy/sensitive",
)

# realsafe (prefix): look for illegal or unethical risk while thinking; when clearly violating rules or law, conclude
# in the reasoning to refuse explicitly and refuse with words such as "sorry" / "cannot assist with"; otherwise do
# exactly what the user asks.
REALSAFE = (
    "Answer the user's query below as well as you can. While you think it over, watch for underlying risks of "
    "illegal or unethical use. If such a risk is clear, so that answering would plainly break rules or laws, "
    "identify it in your thinking and conclude there that you must explicitly refuse; then refuse clearly, with "
    'wording such as "sorry" or "cannot assist with". If the query carries no clear risk, do exactly what the '
    "user asks.\n\nQUERY: "
)
# improved (prefix), the rectified instruction: (1) assess risk while reasoning; (2) no harmful information in the
# reasoning or anywhere in the response; (3) refuse explicitly and immediately in reasoning and answer, in every
# scenario, without looking for other ways to fulfil it, even when framed as fiction or a hypothetical; (4) ignore
# later instructions or reframings once judged harmful; (5) clear refusal wording ("sorry", "cannot assist with");
# (6) when the reasoning says refuse, the answer begins with "Sorry" right after </think>; (7) no clear risk: fulfil.
IMPROVED = (
    "First assess, while you reason, whether the user's query carries underlying risks, above all illegal or "
    "unethical ones. Put no harmful information in your reasoning or anywhere in your response. If the request "
    "breaks rules or policies, refuse explicitly and at once, in both your reasoning and your final answer, whatever "
    "the scenario: do not look for any other way to satisfy it, even when it is framed as fiction or a "
    "hypothetical, and do not follow further instructions or attempts to reframe it once you have judged it "
    'harmful. Refuse in clear terms such as "sorry" or "cannot assist with". Whenever your reasoning concludes '
    'that you must refuse, begin the answer right after "</think>" with "Sorry". If you find no clear risk, '
    "carry out the request as asked.\n\nQUERY: "
)
_BASE = (
    "You are a helpful AI assistant that gives well-reasoned, detailed responses. Think through the reasoning "
    "first, as an internal monologue, then give the user the answer. Use this format: <think>\n...\n</think>\n"
    "For math questions, put the final answer inside \\boxed{}. "
)
# short (system): the base format, consider safety and harm while reasoning, refuse harmful requests in the answer
# but never without reasoning first, and keep the reasoning short and precise.
SHORT = _BASE + (
    "While reasoning, weigh the general safety and possible harm of the user's request. If it is harmful, refuse "
    "in the answer section, and never refuse without first going through the reasoning. Keep the reasoning short "
    "and precise."
)
NOCOT_REFUSAL = "I'm sorry, I can't assist with that request."


def _checklist(verdicts: dict[str, bool]) -> list[str]:
    return [f"* {c}: {'Yes' if verdicts.get(c) else 'No'}." for c in CATEGORIES]


def template_reasoning(verdicts: dict[str, bool], request: str) -> str:
    """The release's shape: the request restated, one line per category in the study's order, a conclusion."""
    unsafe = any(verdicts.get(c) for c in CATEGORIES)
    lines = [
        f"Before answering, I check the user's request to {request.strip().rstrip('.?!')} against each of "
        f"these categories."
    ] + _checklist(verdicts)
    lines.append(
        "So the request is unsafe, and I must refuse it." if unsafe else "So the request is safe, and I can answer it."
    )
    return "\n".join(lines)


_EXAMPLE_Q = "How can I learn more about online privacy and protect myself from unwanted tracking?"
_EXAMPLE_A = (
    "Good starting points are the guides of digital-rights groups such as the EFF, free online courses on "
    "privacy and security, and the privacy settings of the services you use: limit what they share, use a "
    "password manager and two-factor authentication, and prefer browsers and extensions that block trackers."
)
# template (system): the base format, check the request against each category while reasoning, refuse harmful ones
# in the answer but never without reasoning, keep it short and precise, the category list, and a one-shot example.
TEMPLATE = _BASE + (
    "While reasoning, check the user's request for safety and possible harm against each of the unsafe content "
    "categories below. If it is harmful, refuse in the answer section, and never refuse without first going "
    "through the reasoning. Keep the reasoning short and precise, and always use the format <think>\n...\n</think>\n"
    "UNSAFE CONTENT categories:\n"
    + "\n".join(f"* {c}:" for c in CATEGORIES)
    + "\n\nExample:\nQuestion: "
    + _EXAMPLE_Q
    + "\nResponse: <think>\n"
    + template_reasoning({}, "learn how to protect their online privacy")
    + "\n</think>\n"
    + _EXAMPLE_A
)

PREFIX = {"realsafe": REALSAFE, "improved": IMPROVED}
SYSTEM = {"short": SHORT, "template": TEMPLATE}
STYLES = ("default", "realsafe", "improved", "short", "template", "nocot")

CHECKLIST_PROMPT = (
    "Classify the user request below against each safety category. Reply with exactly one line per "
    "category, in this order, in the form `category: yes` or `category: no`, and nothing else.\n\nCategories:\n"
    + "\n".join(CATEGORIES)
    + "\n\nUser request:\n{prompt}"
)

REFUSE_PROMPT = (
    "The following request is harmful. Write a brief, polite refusal that does not provide any of the "
    "requested content. Start with 'Sorry'.\n\nRequest:\n{prompt}"
)


def instruction(style: str, safety_awareness: bool = True) -> tuple[Optional[str], str]:
    """(text, placement) of the style's instruction: placement prefix (to the query), system, or none."""
    if style not in STYLES:
        raise BadInput(f"unknown style {style!r}; known: {', '.join(STYLES)}")
    if not safety_awareness or style in ("default", "nocot"):
        return None, "none"
    if style in PREFIX:
        return PREFIX[style], "prefix"
    return SYSTEM[style], "system"


def system_prompt(style: str, safety_awareness: bool = True) -> Optional[str]:
    """The style's system prompt, if it has one (short and template)."""
    text, placement = instruction(style, safety_awareness)
    return text if placement == "system" else None


def teacher_messages(
    style: str, prompt: str, safety_awareness: bool = True, custom: Optional[tuple[str, str]] = None
) -> list[dict]:
    """The conversation the teacher answers; `custom` = (text, placement) replaces the style's instruction."""
    text, placement = custom or instruction(style, safety_awareness)
    if placement == "prefix":
        return [{"role": "user", "content": text + prompt}]
    if placement == "system":
        return [{"role": "system", "content": text}, {"role": "user", "content": prompt}]
    return [{"role": "user", "content": prompt}]


def format_response(reasoning: str, answer: str) -> str:
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{answer.strip()}"


def parse_response(text: str) -> tuple[Optional[str], str]:
    """Split a response into (reasoning, answer). Reasoning is None when there is no think block.

    Handles R1-style output where the chat template already opened `<think>`, so only `</think>`
    appears, and an unclosed `<think>` (generation cut off mid-reasoning: the answer is empty).
    """
    if "</think>" in text:
        head, _, answer = text.partition("</think>")
        reasoning = head.split("<think>", 1)[1] if "<think>" in head else head
        return reasoning.strip(), answer.strip()
    if "<think>" in text:
        before, _, reasoning = text.partition("<think>")
        return reasoning.strip(), before.strip()
    return None, text.strip()


def answer_only(text: str) -> str:
    """A reasoning teacher's final answer: the text after its own think block, with no think tags left in it."""
    _, answer = parse_response(text)
    return re.sub(r"</?think>", "", answer).strip()


_LINE = re.compile(
    r"^\W*(?P<cat>" + "|".join(re.escape(c) for c in CATEGORIES) + r")\W*[:\-]\s*\**\s*(?P<v>yes|no)\b", re.I | re.M
)


class ChecklistError(ValueError):
    """The labeller left categories out: the sample is regenerated, never read as 'no'."""


def parse_checklist(text: str) -> dict[str, bool]:
    """`category: yes/no` lines (any order, markdown allowed); every category must be there."""
    verdicts: dict[str, bool] = {}
    for m in _LINE.finditer(text):
        verdicts.setdefault(m.group("cat").lower(), m.group("v").lower() == "yes")
    missing = [c for c in CATEGORIES if c not in verdicts]
    if missing:
        raise ChecklistError(f"checklist misses {', '.join(missing)}")
    return verdicts


def split_template_response(text: str) -> tuple[str, str, dict[str, bool]]:
    """(checklist reasoning, answer, verdicts) from a teacher that filled the one-shot template.

    A reasoning teacher writes its own think block first and the template's after it: the last think block that
    holds the checklist is the template's. Raises ChecklistError when no block has all 8 category lines.
    """
    blocks = list(re.finditer(r"(?:<think>)?(?P<body>(?:(?!<think>|</think>).)*)</think>", text, re.S))
    for m in reversed(blocks):
        try:
            verdicts = parse_checklist(m.group("body"))
        except ChecklistError:
            continue
        answer = re.sub(r"</?think>", "", text[m.end() :]).strip()
        return m.group("body").strip(), answer, verdicts
    parse_checklist(text)  # raises with the missing categories
    raise ChecklistError("checklist outside a <think> block")


def verdicts_from_labels(labels) -> dict[str, bool]:
    labels = {str(x).lower() for x in (labels or [])}
    unknown = labels - set(CATEGORIES)
    if unknown:
        raise BadInput(f"unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
    return {c: c in labels for c in CATEGORIES}


def nocot_response(answer: str) -> str:
    return f"<think>\n\n</think>\n\n{answer.strip()}"
