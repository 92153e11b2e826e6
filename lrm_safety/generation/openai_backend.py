"""OpenAI-compatible chat endpoint (a remote R1, an in-cluster vLLM server, a judge) through the official `openai`
client: its retries with backoff and Retry-After, its timeouts and typed errors; concurrency bounded here."""

from __future__ import annotations

import asyncio
import os
from typing import Optional

from tqdm.auto import tqdm

from lrm_safety.errors import BadInput
from lrm_safety.generation.base import Generator, Sampling


class EndpointError(RuntimeError):
    """The endpoint kept failing (overloaded, down, timing out) after the client's retries: transient."""


class EndpointRejected(BadInput):
    """The endpoint refused the request itself (bad model name, bad key, malformed request): not retried."""


class OpenAIGenerator(Generator):
    name = "openai"

    def __init__(
        self,
        *,
        endpoint: str,
        model: Optional[str] = None,
        api_key: Optional[str] = None,
        max_concurrency: int = 16,
        max_retries: int = 6,
        timeout: float = 600.0,
        **_,
    ):
        if not endpoint:
            raise BadInput(
                "the openai backend needs an endpoint (the base URL of an OpenAI-compatible server, "
                "e.g. http://vllm.ns.svc:8000/v1)"
            )
        self.endpoint = endpoint.rstrip("/")
        self.model = model or "default"
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("LRM_SAFETY_API_KEY") or "none"
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout

    async def _one(self, client, sem, messages, sampling: Sampling, index: int) -> str:
        import openai

        def given(value):  # None: not sent, the endpoint's default applies
            return openai.NOT_GIVEN if value is None else value

        async with sem:
            try:
                r = await client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    max_tokens=given(sampling.max_tokens),
                    temperature=given(sampling.temperature),
                    top_p=given(sampling.top_p),
                    seed=given(None if sampling.seed is None else sampling.seed + index),
                )
            except (
                openai.BadRequestError,
                openai.AuthenticationError,
                openai.PermissionDeniedError,
                openai.NotFoundError,
                openai.UnprocessableEntityError,
            ) as e:
                raise EndpointRejected(f"{self.endpoint}: HTTP {e.status_code}: {e.message}"[:500]) from None
            except openai.APIError as e:  # after the client's retries
                raise EndpointError(
                    f"{self.endpoint}: gave up after {self.max_retries + 1} attempts ({type(e).__name__}: {e})"[:500]
                ) from None
        msg = r.choices[0].message
        self._finish[index] = "length" if r.choices[0].finish_reason == "length" else "stop"
        text = msg.content or ""
        reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
        return f"<think>\n{reasoning}\n</think>\n\n{text}" if reasoning else text

    async def _all(self, conversations, sampling, desc):
        from openai import AsyncOpenAI

        sem = asyncio.Semaphore(self.max_concurrency)
        self._finish = ["stop"] * len(conversations)
        bar = tqdm(total=len(conversations), desc=desc or "generate", unit="prompt", leave=False)
        async with AsyncOpenAI(
            base_url=self.endpoint, api_key=self.api_key, max_retries=self.max_retries, timeout=self.timeout
        ) as client:

            async def run(i, conv):
                text = await self._one(client, sem, conv, sampling, i)
                bar.update(1)
                return text

            results = await asyncio.gather(*(run(i, c) for i, c in enumerate(conversations)))
        bar.close()
        return list(results)

    def generate(self, conversations, sampling: Sampling, desc=None):
        texts = asyncio.run(self._all(conversations, sampling, desc))
        self.finish = self._finish
        return texts
