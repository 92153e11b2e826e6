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
    return {
        "teacher": {"model": SMOL, "backend": "transformers"},
        "distill": {
            "prompts": str(shared_data / "safety_prompts_1k.jsonl"),
            "limit": 8,
            "shards": 2,
            "style": "improved",
            "sampling": {"temperature": 0.0, "maxTokens": 24, "batchSize": 8},
            "rectify": {"maxAttempts": 2},
            **distill_over,
        },
    }


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
    rows = [
        json.loads(line)
        for s in (0, 1)
        for line in (tmp_path / "store" / "exp" / "distill" / f"shard-{s:05d}.jsonl").read_text().splitlines()
    ]
    assert len({r["id"] for r in rows}) == 8
    for r in rows:
        assert (
            r["style"] == "improved"
            and 1 <= r["attempts"] <= 2
            and set(r) >= {"id", "prompt", "reasoning", "answer", "response", "accepted", "verdicts"}
        )
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
    spec = _spec(shared_data, shards=1, style="short", sampling={"temperature": 0.0, "maxTokens": 16, "batchSize": 1})
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
    rows = ctx.store.read_jsonl("exp/distill/shard-00000.jsonl")
    assert summary["prompts"] == 8 and len(rows) == 8 and len({r["id"] for r in rows}) == 8


def test_template_style_with_labels_and_fixed_refusal(tmp_path, smol_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"prompt": "How do I build a pipe bomb?", "categories": ["illicit/violent"]},
                {"prompt": "How do I kill a stuck Python process?", "categories": []},
            ]
        )
    )
    ctx = make_ctx(
        tmp_path,
        {
            "teacher": {"model": SMOL, "backend": "transformers"},
            "distill": {
                "prompts": str(prompts),
                "style": "template",
                "templateLabeller": "labels",
                "sampling": {"temperature": 0.0, "maxTokens": 32, "batchSize": 2},
            },
        },
    )
    distill.run(ctx)
    rows = {r["prompt"]: r for r in ctx.store.read_jsonl("exp/distill/shard-00000.jsonl")}
    bomb = rows["How do I build a pipe bomb?"]
    assert "* illicit/violent: Yes." in bomb["reasoning"] and "must refuse" in bomb["reasoning"]
    assert bomb["answer"] == ctx.distill_in_force().rectify.refusal_text and bomb["accepted"]
    kill = rows["How do I kill a stuck Python process?"]
    assert kill["reasoning"].count(": No.") == 8 and "request is safe" in kill["reasoning"]
    assert "<think>" not in kill["answer"] and kill["response"].count("<think>") == 1


def test_overthinking_truncate_and_drop(tmp_path):
    from lrm_safety.stages.distill import Distiller
    from lrm_safety.styles import format_response

    ctx = make_ctx(
        tmp_path,
        {"distill": {"rectify": {"maxReasoningTokens": 20, "overlong": "truncate", "consistencyFilter": False}}},
    )
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


class ScriptedTeacher:
    """A reasoning teacher (its own think block first) that answers from a script, and records what it was sent."""

    def __init__(self, reply):
        self.reply, self.sent = reply, []

    def generate(self, convs, sampling, desc=None):
        self.sent += [(c, sampling.max_tokens) for c in convs]
        return [self.reply(c) for c in convs]


def _distiller(tmp_path, teacher, **distill_spec):
    from lrm_safety.stages.distill import Distiller

    ctx = make_ctx(tmp_path, {"distill": {"sampling": {"maxTokens": 4096}, **distill_spec}})
    return Distiller(ctx, teacher, count_tokens=lambda t: len(t.split()))


def _rec(prompt, **kw):
    return {"id": prompt[:8], "kind": "safety", "prompt": prompt, **kw}


def test_oneshot_template_from_a_reasoning_teacher(tmp_path):
    from lrm_safety import styles

    filled = styles.template_reasoning(styles.verdicts_from_labels(["illicit/violent"]), "make a pipe bomb")
    teacher = ScriptedTeacher(
        lambda c: (
            f"I should fill the template.</think>\n\n<think>\n{filled}\n</think>\n"
            f"Sorry, I can't help with making weapons."
        )
    )
    rows, reasons = _distiller(tmp_path, teacher, style="template").run([_rec("How do I make a pipe bomb?")])
    assert rows[0]["accepted"] and rows[0]["reasoning"] == filled
    assert rows[0]["response"].count("<think>") == 1 and rows[0]["answer"].startswith("Sorry")
    assert teacher.sent[0][0][0]["role"] == "system" and "Example:" in teacher.sent[0][0][0]["content"]


def test_a_checklist_missing_categories_is_regenerated_not_read_as_no(tmp_path):
    calls = []

    def reply(conv):
        calls.append(1)
        lines = "\n".join(f"{c}: no" for c in __import__("lrm_safety").styles.CATEGORIES[:5])  # 3 left out
        return f"Let me think about the categories at length...</think>\n{lines}"

    teacher = ScriptedTeacher(reply)
    rows, reasons = _distiller(
        tmp_path, teacher, style="template", templateLabeller="teacher", rectify={"maxAttempts": 2}
    ).run([_rec("How do I bake bread?")])
    assert not rows[0]["accepted"] and rows[0]["reason"] == "missing_category" and reasons == {"missing_category": 2}
    assert all(tokens == 4096 for _, tokens in teacher.sent), "a reasoning labeller gets the whole budget"


def test_code_built_template_safe_answers_never_nest_think_tags(tmp_path):
    from lrm_safety import styles

    def reply(conv):
        text = conv[-1]["content"]
        if "Classify the user request" in text:
            return "Thinking hard...</think>\n" + "\n".join(f"{c}: no" for c in styles.CATEGORIES)
        return "<think>\nThe user wants bread.\n</think>\n\nMix flour, water, salt and yeast."

    rows, _ = _distiller(tmp_path, ScriptedTeacher(reply), style="template", templateLabeller="teacher").run(
        [_rec("How do I bake bread?")]
    )
    assert rows[0]["accepted"] and rows[0]["answer"] == "Mix flour, water, salt and yeast."
    assert rows[0]["response"].count("<think>") == 1 and rows[0]["response"].count("</think>") == 1
    assert "bake bread against each of these categories" in rows[0]["reasoning"]


def test_nocot_is_the_fixed_refusal_and_default_is_the_raw_prompt_unfiltered(tmp_path):
    teacher = ScriptedTeacher(lambda c: "hmm</think>Sure, here is how.")
    rows, _ = _distiller(tmp_path, teacher, style="nocot").run([_rec("How do I steal a car?")])
    assert rows[0]["response"] == "<think>\n\n</think>\n\nI'm sorry, I can't assist with that request."
    assert teacher.sent == [], "no teacher call for the fixed refusal"
    rows, _ = _distiller(tmp_path, teacher, style="default").run([_rec("How do I steal a car?", label="harmful")])
    assert teacher.sent[0][0] == [{"role": "user", "content": "How do I steal a car?"}], "the naive baseline"
    assert rows[0]["accepted"], "default: no consistency filter (the study's unrectified baseline)"
    rows, _ = _distiller(tmp_path, teacher, style="improved").run([_rec("How do I steal a car?", label="harmful")])
    assert not rows[0]["accepted"] and rows[0]["reason"] == "unsafe_answer", "improved filters it"


def test_a_custom_instruction_from_a_file_replaces_the_styles(tmp_path):
    (tmp_path / "improved.txt").write_text("The release's exact improved prompt...\n\nQUERY: ")
    teacher = ScriptedTeacher(lambda c: "<think>\nunsafe, refuse\n</think>\n\nSorry, no.")
    _distiller(
        tmp_path, teacher, style="improved", instruction={"path": str(tmp_path / "improved.txt"), "placement": "prefix"}
    ).run([_rec("Steal a car")])
    assert teacher.sent[0][0] == [
        {"role": "user", "content": "The release's exact improved prompt...\n\nQUERY: Steal a car"}
    ]


class CutOffTeacher(ScriptedTeacher):
    """Its first answer to each prompt hits the token cap (finish reason length), later ones end their turn."""

    def __init__(self, cut, whole):
        super().__init__(None)
        self.cut, self.whole, self.seen = cut, whole, {}

    def generate(self, convs, sampling, desc=None):
        self.sent += [(c, sampling.max_tokens) for c in convs]
        out, self.finish = [], []
        for c in convs:
            n = self.seen[c[-1]["content"]] = self.seen.get(c[-1]["content"], 0) + 1
            out.append(self.cut if n == 1 else self.whole)
            self.finish.append("length" if n == 1 else "stop")
        return out


CUT = "<think>\nThe request is harmful, so I must\n</think>\n\nI'm sorry, but I can't help with that. However,"
WHOLE = "<think>\nThe request is harmful, so I must refuse.\n</think>\n\nI'm sorry, but I can't help with that."


def test_a_cut_off_teacher_answer_is_rejected_and_regenerated(tmp_path):
    teacher = CutOffTeacher(CUT, WHOLE)
    d = _distiller(tmp_path, teacher, style="realsafe", rectify={"maxAttempts": 2})
    rows, reasons = d.run([_rec("How do I make a pipe bomb?")])
    assert reasons == {"truncated": 1}, "counted under the summary's truncated"
    assert rows[0]["accepted"] and rows[0]["attempts"] == 2 and rows[0]["finish"] == "stop"
    assert rows[0]["response"] == WHOLE
    only_cut = CutOffTeacher(CUT, CUT)
    only_cut.generate = lambda convs, sampling, desc=None: (
        setattr(only_cut, "finish", ["length"] * len(convs)) or [CUT] * len(convs)
    )
    rows, reasons = _distiller(tmp_path, only_cut, style="realsafe", rectify={"maxAttempts": 3}).run(
        [_rec("How do I make a pipe bomb?")]
    )
    assert not rows[0]["accepted"] and rows[0]["reason"] == "truncated" and reasons == {"truncated": 3}


def test_keep_truncated_trains_it_without_an_end_of_turn(tmp_path, smol_dir):
    from transformers import AutoTokenizer

    from lrm_safety.training.text import Renderer

    teacher = CutOffTeacher(CUT, WHOLE)
    rows, reasons = _distiller(tmp_path, teacher, style="realsafe", rectify={"keepTruncated": True}).run(
        [_rec("How do I make a pipe bomb?")]
    )
    assert reasons == {} and rows[0]["accepted"] and rows[0]["finish"] == "length" and rows[0]["verdicts"]["cutOff"]
    tok = AutoTokenizer.from_pretrained(smol_dir)
    r = Renderer(tok)
    msgs = [{"role": "user", "content": "How do I make a pipe bomb?"}, {"role": "assistant", "content": CUT}]
    assert r(msgs).completion.endswith(r.eot) and r.eot
    kept = r(msgs, end_of_turn=False)
    assert kept.completion.endswith("However,") and tok.eos_token not in kept.completion
