"""Generation backends behind one call: generate(conversations, sampling) -> texts."""

from __future__ import annotations

from lrm_safety.generation.base import Generator, Sampling  # noqa: F401


def make_generator(backend: str, model: str | None = None, **kw) -> Generator:
    """backend: vllm | transformers | openai. `model` is a resolved local dir (or the endpoint's model name)."""
    if backend == "transformers":
        from lrm_safety.generation.hf import TransformersGenerator

        return TransformersGenerator(model, **kw)
    if backend == "vllm":
        from lrm_safety.generation.vllm_backend import VLLMGenerator

        return VLLMGenerator(model, **kw)
    if backend == "openai":
        from lrm_safety.generation.openai_backend import OpenAIGenerator

        return OpenAIGenerator(model=model, **kw)
    raise ValueError(f"unknown backend {backend!r}: use vllm, transformers or openai")
