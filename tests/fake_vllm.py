"""A stand-in for `vllm serve` on machines without vLLM: the same command line, /health and an OpenAI-compatible
/v1/chat/completions, answered by the project's transformers backend on the model directory it is given, one request
at a time. It lets the local runner's server lifecycle (start once, share, stop) run on any CPU; the vLLM lane runs
the same tests against the real `vllm serve`. Each start appends its argv to $FAKE_VLLM_STARTS."""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["serve"])
    p.add_argument("model")
    p.add_argument("--served-model-name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args, _ = p.parse_known_args(argv)
    if os.environ.get("FAKE_VLLM_STARTS"):
        with open(os.environ["FAKE_VLLM_STARTS"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "argv": argv}) + "\n")
    from lrm_safety.generation import Sampling, make_generator

    gen = make_generator("transformers", args.model)
    name = args.served_model_name or args.model

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {}) if self.path == "/health" else self._send(404, {"error": "not found"})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions" or req.get("model") != name:
                return self._send(404, {"error": {"message": f"model {req.get('model')!r} does not exist"}})
            s = Sampling(
                temperature=req.get("temperature", 1.0),
                top_p=req.get("top_p", 1.0),
                max_tokens=req.get("max_tokens") or 512,
                seed=req.get("seed") or 0,
                batch_size=1,
            )
            text = gen.generate([req["messages"]], s)[0]
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": name,
                    "choices": [
                        {"index": 0, "finish_reason": gen.finish[0], "message": {"role": "assistant", "content": text}}
                    ],
                },
            )

    HTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
