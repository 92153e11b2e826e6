"""transformers backend: the CPU path and the fallback where vLLM is not installed."""

from __future__ import annotations

from typing import Optional

from tqdm.auto import tqdm

from lrm_safety.generation.base import Generator, Sampling, release_memory


class TransformersGenerator(Generator):
    name = "transformers"

    def __init__(self, model_dir, *, dtype: Optional[str] = None, device: Optional[str] = None, **_):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
            dtype or "", torch.bfloat16 if self.device == "cuda" else torch.float32
        )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(self.device).eval()

    def generate(self, conversations, sampling: Sampling, desc=None):
        torch = self.torch
        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        # Longest first: similar lengths share a batch, so less padding; results go back in order.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        self.finish = ["stop"] * len(prompts)
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        bar = tqdm(total=len(prompts), desc=desc or "generate", unit="prompt", leave=False)
        for start in range(0, len(order), sampling.batch_size):
            idx = order[start : start + sampling.batch_size]
            batch = self.tokenizer(
                [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            kwargs = dict(max_new_tokens=sampling.max_tokens, pad_token_id=self.tokenizer.pad_token_id)
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
                torch.manual_seed(sampling.seed + start)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                gen = self.model.generate(**batch, **kwargs)
            new = gen[:, batch["input_ids"].shape[1] :]
            for row, (i, text) in enumerate(zip(idx, self.tokenizer.batch_decode(new, skip_special_tokens=True))):
                out[i] = text
                if not eos & set(new[row].tolist()):  # never ended its turn: cut off at max_new_tokens
                    self.finish[i] = "length"
            bar.update(len(idx))
        bar.close()
        return out

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def close(self):
        self.model = None
        release_memory()
