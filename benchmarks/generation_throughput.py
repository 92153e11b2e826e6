"""Generation throughput of the transformers backend (the one evaluate and distill use where vLLM is absent) on
the builtin model: greedy, a batch of chat prompts, new tokens per second.

  python benchmarks/generation_throughput.py --prompts 64 --max-tokens 256 [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run(prompts: int, max_tokens: int, batch: int, model: str = "builtin:smollm2-135m-instruct") -> dict:
    import torch

    from lrm_safety.generation import Sampling, make_generator
    from lrm_safety.models.refs import resolve_model

    gen = make_generator("transformers", str(resolve_model(model)))
    convs = [[{"role": "user", "content": f"Explain step {i} of baking bread, briefly."}] for i in range(prompts)]
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens, batch_size=batch)
    gen.generate(convs[:batch], Sampling(temperature=0.0, max_tokens=8, batch_size=batch))  # warm-up
    t0 = time.perf_counter()
    texts = gen.generate(convs, sampling)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = sum(gen.count_tokens(t) for t in texts)
    res = {
        "device": gen.device,
        "prompts": prompts,
        "maxTokens": max_tokens,
        "batch": batch,
        "newTokens": tokens,
        "seconds": round(dt, 2),
        "tokensPerS": round(tokens / dt, 1),
        "truncated": sum(f == "length" for f in gen.finish) / len(texts),
    }
    gen.close()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args(argv)
    res = run(a.prompts, a.max_tokens, a.batch)
    print(
        f"transformers backend: {res['tokensPerS']} new tokens/s ({res['prompts']} prompts, batch {res['batch']}, "
        f"{res['device']})"
    )
    print("RESULT", json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
