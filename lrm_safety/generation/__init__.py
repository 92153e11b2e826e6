"""Generation backends behind one call: generate(conversations, sampling) -> texts."""
from __future__ import annotations

from .base import Generator, Sampling  # noqa: F401


def make_generator(backend: str, model: str | None = None, **kw) -> Generator:
    """backend: vllm | transformers | openai. `model` is a resolved local dir (or the endpoint's model name)."""
    if backend == "transformers":
        from .hf import TransformersGenerator

        return TransformersGenerator(model, **kw)
    if backend == "vllm":
        from .vllm_backend import VLLMGenerator

        return VLLMGenerator(model, **kw)
    if backend == "openai":
        from .openai_backend import OpenAIGenerator

        return OpenAIGenerator(model=model, **kw)
    raise ValueError(f"unknown backend {backend!r}: use vllm, transformers or openai")
