"""OpenAI-compatible chat endpoint (a remote R1, an in-cluster vLLM server): bounded concurrency, retries."""
from __future__ import annotations

import asyncio
import os
import random
from typing import Optional

from tqdm.auto import tqdm

from .base import Generator, Sampling

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    pass


class OpenAIGenerator(Generator):
    name = "openai"

    def __init__(self, *, endpoint: str, model: Optional[str] = None, api_key: Optional[str] = None,
                 max_concurrency: int = 16, max_retries: int = 6, backoff: float = 0.5, timeout: float = 600.0, **_):
        self.endpoint = endpoint.rstrip("/")
        self.model = model or "default"
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("LRM_SAFETY_API_KEY")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout

    async def _one(self, client, sem, messages, sampling: Sampling, seed: int) -> str:
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": seed}
        last = None
        async with sem:
            for attempt in range(self.max_retries + 1):
                try:
                    r = await client.post(f"{self.endpoint}/chat/completions", json=body)
                except (httpx.TransportError, httpx.TimeoutException) as e:
                    last = f"{type(e).__name__}: {e}"
                else:
                    if r.status_code == 200:
                        msg = r.json()["choices"][0]["message"]
                        text = msg.get("content") or ""
                        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
                        return f"<think>\n{reasoning}\n</think>\n\n{text}" if reasoning else text
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                    if r.status_code not in RETRY_STATUS:
                        raise EndpointError(f"{self.endpoint}: {last}")
                    retry_after = r.headers.get("retry-after")
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        await asyncio.sleep(min(float(retry_after), 60.0))
                        continue
                if attempt < self.max_retries:
                    await asyncio.sleep(min(self.backoff * 2 ** attempt, 30.0) * (0.5 + random.random()))
        raise EndpointError(f"{self.endpoint}: gave up after {self.max_retries + 1} attempts ({last})")

    async def _all(self, conversations, sampling, desc):
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        sem = asyncio.Semaphore(self.max_concurrency)
        bar = tqdm(total=len(conversations), desc=desc or "generate", unit="prompt", leave=False)
        async with httpx.AsyncClient(headers=headers, timeout=self.timeout) as client:
            async def run(i, conv):
                text = await self._one(client, sem, conv, sampling, sampling.seed + i)
                bar.update(1)
                return text

            results = await asyncio.gather(*(run(i, c) for i, c in enumerate(conversations)))
        bar.close()
        return list(results)

    def generate(self, conversations, sampling: Sampling, desc=None):
        return asyncio.run(self._all(conversations, sampling, desc))
