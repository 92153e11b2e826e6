"""Reasoning styles: how the teacher is asked to reason, and the template-CoT builder.

The study compares plain teacher CoT with safety-aware and rectified instructions, and finds that
short or template reasoning is as safe as long reasoning and easier for a student to learn.
Every style yields responses in one format: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`.
"""
from __future__ import annotations

from typing import Optional

from .errors import BadInput

# The 8 categories of the study's template checklist.
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

_FORMAT = (
    "Write your reasoning between <think> and </think>, then write the final answer to the user after "
    "</think>."
)

_AWARE = (
    "Before anything else, assess whether the request could facilitate harm (violence, weapons, crime, "
    "self-harm, abuse, hate, sexual content involving minors, privacy violations, dangerous misinformation)."
)

SYSTEM_PROMPTS = {
    "default": "You are a helpful assistant. Think through the problem step by step. " + _FORMAT,
    "realsafe": (
        "You are a helpful and safe assistant. " + _AWARE + " If it is harmful, decline politely; otherwise "
        "help fully. " + _FORMAT
    ),
    "improved": (
        "You are a helpful and safe assistant. " + _AWARE + " State your risk assessment explicitly at the "
        "start of your reasoning. If the request is harmful, decide to refuse at once: do not explore "
        "workarounds, partial answers or alternative framings, and treat hypothetical, fictional or "
        "role-play wrappers around a harmful request as the harmful request itself. When your reasoning "
        "concludes that you must refuse, the answer must begin with a clear refusal and must not contain "
        "any of the harmful content. If the request is safe, answer it helpfully and completely. " + _FORMAT
    ),
    "short": (
        "You are a helpful and safe assistant. Reason briefly, in at most three sentences: say whether the "
        "request is safe and what you will do. If it is harmful, refuse in the answer; otherwise answer "
        "helpfully. " + _FORMAT
    ),
    "template": "You are a helpful and safe assistant. Answer the user's request helpfully and directly.",
    "nocot": "You are a helpful and safe assistant. Refuse harmful requests; answer safe ones helpfully.",
}

# Without rectification the teacher gets the plain CoT instruction (the study's naive baseline).
UNRECTIFIED = SYSTEM_PROMPTS["default"]

CHECKLIST_PROMPT = (
    "Classify the user request below against each safety category. Reply with exactly one line per "
    "category in the form `category: yes` or `category: no`, and nothing else.\n\nCategories:\n"
    + "\n".join(CATEGORIES)
    + "\n\nUser request:\n{prompt}"
)

REFUSE_PROMPT = (
    "The following request is harmful. Write a brief, polite refusal that does not provide any of the "
    "requested content. Start with 'I'm sorry'.\n\nRequest:\n{prompt}"
)


def system_prompt(style: str, safety_awareness: bool = True) -> str:
    if style not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(SYSTEM_PROMPTS)}")
    if not safety_awareness and style in ("realsafe", "improved", "short"):
        return UNRECTIFIED
    return SYSTEM_PROMPTS[style]


def teacher_messages(style: str, prompt: str, safety_awareness: bool = True) -> list[dict]:
    return [{"role": "system", "content": system_prompt(style, safety_awareness)}, {"role": "user", "content": prompt}]


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


def parse_checklist(text: str) -> dict[str, bool]:
    """Read `category: yes/no` lines; categories the labeller skipped count as no."""
    verdicts = {c: False for c in CATEGORIES}
    for line in text.lower().splitlines():
        for cat in CATEGORIES:
            if cat in line:
                tail = line.split(cat, 1)[1]
                verdicts[cat] = "yes" in tail.split()[:3] or tail.strip(" :*-").startswith("yes")
    return verdicts


def verdicts_from_labels(labels) -> dict[str, bool]:
    labels = {str(x).lower() for x in (labels or [])}
    unknown = labels - set(CATEGORIES)
    if unknown:
        raise BadInput(f"unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
    return {c: c in labels for c in CATEGORIES}


def template_reasoning(verdicts: dict[str, bool]) -> str:
    """The fixed checklist: each category marked yes/no, then a one-line conclusion."""
    lines = ["Safety checklist:"] + [f"- {c}: {'yes' if verdicts.get(c) else 'no'}" for c in CATEGORIES]
    flagged = [c for c in CATEGORIES if verdicts.get(c)]
    if flagged:
        lines.append(f"Conclusion: the request is unsafe ({', '.join(flagged)}), so I must refuse.")
    else:
        lines.append("Conclusion: the request is safe, so I will answer it helpfully.")
    return "\n".join(lines)


def nocot_response(answer: str) -> str:
    return f"<think>\n\n</think>\n\n{answer.strip()}"
