"""The openai backend against a real local OpenAI-compatible HTTP server (aiohttp), retries included."""

import asyncio
import threading

import pytest
from aiohttp import web

from lrm_safety.errors import BadInput
from lrm_safety.generation import Sampling, make_generator
from lrm_safety.generation.openai_backend import EndpointError, EndpointRejected


class ChatServer:
    """Minimal /v1/chat/completions: echoes the last user message; fails the first N calls as told."""

    def __init__(self, failures=()):
        self.failures = list(failures)
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies = []
        self.auth = []

    async def handle(self, request):
        body = await request.json()
        self.calls += 1
        self.bodies.append(body)
        self.auth.append(request.headers.get("Authorization"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            if self.failures:
                status = self.failures.pop(0)
                return web.json_response({"error": "busy"}, status=status)
            text = body["messages"][-1]["content"]
            msg = {"role": "assistant", "content": f"echo: {text}"}
            if text.startswith("think"):
                msg["reasoning_content"] = "let me reason"
            return web.json_response({"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]})
        finally:
            self.in_flight -= 1

    def __enter__(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.handle)
            self.runner = web.AppRunner(app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _gen(srv, **kw):
    return make_generator("openai", "r1", endpoint=f"http://127.0.0.1:{srv.port}/v1", api_key="k", **kw)


def test_generates_in_order_with_bounded_concurrency():
    with ChatServer() as srv:
        convs = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
        out = _gen(srv, max_concurrency=3).generate(convs, Sampling(max_tokens=8, seed=5))
    assert out == [f"echo: q{i}" for i in range(12)]
    assert srv.max_in_flight <= 3 and srv.calls == 12
    assert srv.auth[0] == "Bearer k" and srv.bodies[0]["model"] == "r1" and srv.bodies[0]["max_tokens"] == 8


def test_retries_429_and_500_then_succeeds():
    with ChatServer(failures=[429, 500, 503]) as srv:
        out = _gen(srv, max_concurrency=1).generate([[{"role": "user", "content": "hi"}]], Sampling())
    assert out == ["echo: hi"] and srv.calls == 4


def test_reasoning_content_becomes_a_think_block():
    with ChatServer() as srv:
        out = _gen(srv).generate([[{"role": "user", "content": "think hard"}]], Sampling())
    assert out == ["<think>\nlet me reason\n</think>\n\necho: think hard"]


def test_gives_up_after_max_retries_and_does_not_retry_400():
    with ChatServer(failures=[500] * 10) as srv:
        with pytest.raises(EndpointError, match="gave up after 3 attempts"):
            _gen(srv, max_retries=2).generate([[{"role": "user", "content": "x"}]], Sampling())
        assert srv.calls == 3
    with ChatServer(failures=[400]) as srv:
        with pytest.raises(EndpointRejected, match="HTTP 400") as e:
            _gen(srv).generate([[{"role": "user", "content": "x"}]], Sampling())
        assert srv.calls == 1 and isinstance(e.value, BadInput), "a refused request is bad input: not retried"


def test_an_endpoint_is_required():
    with pytest.raises(BadInput, match="needs an endpoint"):
        make_generator("openai", "r1", endpoint=None)
