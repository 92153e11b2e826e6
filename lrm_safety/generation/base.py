from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Sampling:
    """None (temperature, top_p, seed: openai backend only) means not sent: the endpoint's own default applies."""

    temperature: Optional[float] = 0.0
    top_p: Optional[float] = 1.0
    max_tokens: Optional[int] = 512  # None: the endpoint's own cap (openai backend only)
    seed: Optional[int] = 0
    batch_size: int = 16

    @classmethod
    def from_spec(cls, spec, **override) -> "Sampling":
        values = dict(
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=spec.max_tokens,
            seed=spec.seed,
            batch_size=spec.batch_size,
        )
        values.update({k: v for k, v in override.items() if v is not None})
        return cls(**values)


def estimate_tokens(text: str) -> int:
    """Tokens of `text` where no tokenizer is at hand: about 4 tokens per 3 words."""
    return int(len(text.split()) * 4 / 3) + 1 if text else 0


class Generator:
    """Chat conversations in, completion texts out (same order). After each call `finish` holds, per text, "stop"
    (the model ended its turn) or "length" (cut off at max_tokens)."""

    name = "base"
    finish: list[str] = []

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the model's tokenizer (an estimate where the backend has none)."""
        return estimate_tokens(text)

    def generate(self, conversations: list[list[dict]], sampling: Sampling, desc: Optional[str] = None) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def release_memory() -> None:
    """After an engine is dropped: collect it and hand its GPU memory back, so the next model fits."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
