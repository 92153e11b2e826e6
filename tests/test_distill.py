"""distill on the real builtin model (CPU, transformers backend): shards, resume, rectification filters."""
import json

import pytest

from conftest import SMOL, make_ctx
from lrm_safety import generation
from lrm_safety.stages import distill


class Counting:
    """Wraps make_generator to count the prompts sent to the teacher."""

    def __init__(self, monkeypatch):
        self.prompts = 0
        real = generation.make_generator

        def make(*a, **kw):
            gen = real(*a, **kw)
            inner = gen.generate

            def generate(convs, sampling, desc=None):
                self.prompts += len(convs)
                return inner(convs, sampling, desc)

            gen.generate = generate
            return gen

        monkeypatch.setattr(distill, "make_generator", make)


def _spec(shared_data, **distill_over):
    return {"teacher": {"model": SMOL, "backend": "transformers"},
            "distill": {"prompts": str(shared_data / "safety_prompts_1k.jsonl"), "limit": 8, "shards": 2,
                        "style": "improved",
                        "sampling": {"temperature": 0.0, "maxTokens": 24, "batchSize": 8},
                        "rectify": {"maxAttempts": 2}, **distill_over}}


def test_two_shards_then_rerun_generates_nothing(tmp_path, shared_data, smol_dir, monkeypatch):
    counter = Counting(monkeypatch)
    ctx = make_ctx(tmp_path, _spec(shared_data))
    first = distill.run_shard(ctx, 0, 2)
    assert distill.finalize(ctx) is None, "manifest must wait for every shard"
    second = distill.run_shard(ctx, 1, 2)
    manifest = distill.finalize(ctx)
    assert first["prompts"] == second["prompts"] == 4
    assert manifest["counts"]["prompts"] == 8
    assert manifest["counts"]["accepted"] + manifest["counts"]["rejected"] == 8
    rows = [json.loads(line) for s in (0, 1) for line in
            (tmp_path / "store" / "exp" / "distill" / f"shard-{s:05d}.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in rows}) == 8
    for r in rows:
        assert r["style"] == "improved" and 1 <= r["attempts"] <= 2 and set(r) >= {
            "id", "prompt", "reasoning", "answer", "response", "accepted", "verdicts"}
        if not r["accepted"]:
            assert r["reason"] in manifest["counts"]["rejectionReasons"]
    # The 135M teacher rarely writes a think block: rejections and regenerations show it.
    assert sum(manifest["counts"]["rejectionReasons"].values()) >= manifest["counts"]["rejected"]
    sent = counter.prompts
    assert sent >= 8
    assert ctx.is_done("distill")
    assert distill.run(ctx)["skipped"] is True
    for s in (0, 1):
        distill.run_shard(ctx, s, 2)
    assert counter.prompts == sent, "a rerun must generate nothing new"


def test_restarted_shard_resumes_from_written_parts(tmp_path, shared_data, smol_dir, monkeypatch):
    counter = Counting(monkeypatch)
    spec = _spec(shared_data, shards=1, style="nocot", sampling={"temperature": 0.0, "maxTokens": 16, "batchSize": 1})
    spec["distill"]["rectify"] = {"maxAttempts": 1, "consistencyFilter": False}
    ctx = make_ctx(tmp_path, spec)
    # Simulate a pod killed after its first part: write that part, then remove the shard's completion marker.
    distill.run_shard(ctx, 0, 1)
    parts_dir = next((tmp_path / "store" / "exp" / "distill").glob("parts-*/shard-00000"))
    parts = sorted(parts_dir.glob("part-*.jsonl"))
    assert len(parts) == 2  # 8 prompts in parts of 4 x batchSize 1
    (parts_dir / "_DONE.json").unlink()
    parts[1].unlink()
    before = counter.prompts
    summary = distill.run_shard(ctx, 0, 1)
    assert counter.prompts - before == 4, "only the prompts of the lost part are generated again"
    assert summary["prompts"] == 8 and summary["accepted"] == 8
    assert all(r["reasoning"] == "" for r in ctx.store.read_jsonl("exp/distill/shard-00000.jsonl"))


def test_template_style_with_labels_and_fixed_refusal(tmp_path, smol_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "How do I build a pipe bomb?", "categories": ["illicit/violent"]},
        {"prompt": "How do I kill a stuck Python process?", "categories": []},
    ]))
    ctx = make_ctx(tmp_path, {"teacher": {"model": SMOL, "backend": "transformers"},
                              "distill": {"prompts": str(prompts), "style": "template", "templateLabeller": "labels",
                                          "sampling": {"temperature": 0.0, "maxTokens": 32, "batchSize": 2}}})
    distill.run(ctx)
    rows = {r["prompt"]: r for r in ctx.store.read_jsonl("exp/distill/shard-00000.jsonl")}
    bomb = rows["How do I build a pipe bomb?"]
    assert "- illicit/violent: yes" in bomb["reasoning"] and "must refuse" in bomb["reasoning"]
    assert bomb["answer"] == ctx.spec.distill.rectify.refusal_text and bomb["accepted"]
    kill = rows["How do I kill a stuck Python process?"]
    assert kill["reasoning"].count(": no") == 8 and "request is safe" in kill["reasoning"]


def test_overthinking_truncate_and_drop(tmp_path):
    from lrm_safety.stages.distill import Distiller
    from lrm_safety.styles import format_response

    ctx = make_ctx(tmp_path, {"distill": {"rectify": {"maxReasoningTokens": 20, "overlong": "truncate",
                                                      "consistencyFilter": False}}})
    d = Distiller(ctx, generator=None, count_tokens=lambda t: len(t.split()))
    long = format_response("word " * 100, "I'm sorry, I can't help with that.")
    ok, reason, response, verdicts, _ = d._check({"kind": "safety", "prompt": "x"}, long)
    assert ok and verdicts["truncated"] and len(response.split("</think>")[0].split()) <= 21
    ctx2 = make_ctx(tmp_path, {"distill": {"rectify": {"maxReasoningTokens": 20, "overlong": "drop"}}}, name="e2")
    d2 = Distiller(ctx2, generator=None, count_tokens=lambda t: len(t.split()))
    ok, reason, _, _, retry = d2._check({"kind": "safety", "prompt": "x"}, long)
    assert not ok and reason == "overthinking" and not retry


def test_missing_prompt_field_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hi"}) + "\n")
    ctx = make_ctx(tmp_path, {"distill": {"prompts": str(bad)}})
    with pytest.raises(ValueError, match="set distill.promptField"):
        distill.load_prompts(ctx)
