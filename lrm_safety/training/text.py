"""What the student is trained on, rendered exactly as it will be prompted.

The prompt is the student's chat template with `add_generation_prompt=True`, the very text evaluate and vLLM
send. The completion is the teacher's response as plain text: the reasoning inside the think tags the
student's generation prompt expects (if that prompt already opens `<think>`, the completion starts inside it),
the answer, then the template's end of turn. Both are tokenised here, without special tokens added, so the
trained tokens are the inference prompt's tokens followed by the completion's: no chat template can drop the
reasoning (the DeepSeek-R1-Distill template renders an assistant turn as `content.split('</think>')[-1]`), and
no token merges across the boundary.

`mode="conversation"` renders the whole conversation through the chat template instead, as the study's release
did (TRL 0.16 with a `messages` dataset): reproducible, and visibly lossy for templates like R1-Distill's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lrm_safety.errors import BadInput
from lrm_safety.styles import parse_response

MODES = ("prompt-completion", "conversation")
_SENTINEL = "\u2063lrm-safety-end-of-turn-probe\u2063"


@dataclass
class Rendered:
    prompt: str  # text of the part that is never trained on with loss=completion
    completion: str  # text of the trained part
    input_ids: list[int]
    completion_start: int  # index of the first completion token in input_ids
    truncated: bool = False

    @property
    def completion_mask(self) -> list[int]:
        return [0] * self.completion_start + [1] * (len(self.input_ids) - self.completion_start)

    def __len__(self) -> int:
        return len(self.input_ids)


def _template(tokenizer, messages, **kw) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise BadInput(
            "the student's tokenizer has no chat template: SFT data must be rendered the way the model is "
            "prompted; use a chat (instruct or R1-distilled) model"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, **kw)


def end_of_turn(tokenizer) -> str:
    """What the chat template writes after an assistant message, up to and including the EOS token."""
    text = _template(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}])
    tail = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
    eos = tokenizer.eos_token or ""
    if eos and eos in tail:
        return tail[: tail.index(eos) + len(eos)]
    return tail.rstrip("\n") or eos


def completion_text(prompt: str, response: str, eot: str) -> str:
    """The response in the form the student generates after `prompt`."""
    reasoning, answer = parse_response(response)
    if reasoning is None:  # no reasoning block (plain data): trained as written
        return response.strip() + eot
    head = prompt.rstrip(" ")
    if head.endswith("<think>\n"):
        body = f"{reasoning}\n</think>\n\n{answer}"
    elif head.endswith("<think>"):
        body = f"\n{reasoning}\n</think>\n\n{answer}"
    else:
        body = f"<think>\n{reasoning}\n</think>\n\n{answer}"
    return body + eot


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render(
    tokenizer,
    messages: list[dict],
    mode: str = "prompt-completion",
    max_length: Optional[int] = None,
    eot: Optional[str] = None,
) -> Rendered:
    """messages = [..., user, assistant]: the training example as token ids with the completion's start."""
    if mode not in MODES:
        raise BadInput(f"unknown rendering {mode!r}; use one of {', '.join(MODES)}")
    if not messages or messages[-1].get("role") != "assistant":
        raise BadInput("a training conversation must end with the assistant's response")
    prompt = _template(tokenizer, messages[:-1], add_generation_prompt=True)
    if mode == "prompt-completion":
        completion = completion_text(prompt, messages[-1]["content"], end_of_turn(tokenizer) if eot is None else eot)
        p_ids, c_ids = _ids(tokenizer, prompt), _ids(tokenizer, completion)
        ids, start = p_ids + c_ids, len(p_ids)
    else:
        full = _template(tokenizer, messages)
        ids, p_ids = _ids(tokenizer, full), _ids(tokenizer, prompt)
        start = 0
        while start < min(len(ids), len(p_ids)) and ids[start] == p_ids[start]:
            start += 1
        completion = tokenizer.decode(ids[start:])
        prompt = tokenizer.decode(ids[:start])
    truncated = max_length is not None and len(ids) > max_length
    if truncated:  # as TRL does: keep the start
        ids = ids[:max_length]
        start = min(start, max_length)
    return Rendered(prompt=prompt, completion=completion, input_ids=ids, completion_start=start, truncated=truncated)


class Renderer:
    """One student's renderer: the end of turn is probed once, not per example."""

    def __init__(self, tokenizer, mode: str = "prompt-completion", max_length: Optional[int] = None):
        self.tokenizer, self.mode, self.max_length = tokenizer, mode, max_length
        self.eot = end_of_turn(tokenizer) if mode == "prompt-completion" else ""

    def __call__(self, messages: list[dict], end_of_turn: bool = True) -> Rendered:
        """`end_of_turn=False`: a response the teacher was cut off writing (distill.rectify.keepTruncated) is trained
        without the end of turn, so the student never learns to stop there (prompt-completion only)."""
        return render(self.tokenizer, messages, self.mode, self.max_length, eot=self.eot if end_of_turn else "")


def reasoning_in(rendered: Rendered) -> bool:
    """Does the trained part hold reasoning (text between think tags, or before a `</think>` the prompt opened)?"""
    text = rendered.completion
    if "</think>" not in text:
        return False
    before = text.split("</think>", 1)[0].replace("<think>", "")
    return bool(before.strip())
