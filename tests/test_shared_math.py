"""Math distillation shared across styles: a finished distill's math is reused, and two distills that need
the same math at the same time do it once (a lease in the store; the other waits, then reuses)."""

import json
import threading

import pytest

from conftest import make_ctx
from lrm_safety.stages import distill
from lrm_safety.stages.lease import StoreLease
from lrm_safety.store import open_store


class Teacher:
    """An endpoint teacher that answers from a script and counts what it was sent, by kind."""

    def __init__(self, log):
        self.log = log

    def generate(self, convs, sampling, desc=None):
        out = []
        for c in convs:
            text = c[-1]["content"]
            if "What is" in text:
                self.log.append("math")
                n = int(text.split("What is ")[1].split("+")[0])
                out.append(f"<think>{n} plus one is {n + 1}.</think>The answer is \\boxed{{{n + 1}}}.")
            else:
                self.log.append("safety")
                out.append("<think>This request is harmful; I must refuse.</think>Sorry, I can't help with that.")
        return out

    def close(self):
        pass


@pytest.fixture
def teacher(monkeypatch):
    log = []
    monkeypatch.setattr(distill, "make_generator", lambda *a, **k: Teacher(log))
    monkeypatch.setenv("LRM_SAFETY_LEASE_SETTLE_SECONDS", "0.2")
    monkeypatch.setenv("LRM_SAFETY_LEASE_POLL_SECONDS", "0.2")
    return log


def _ctx(tmp_path, name, style, math_file="math.jsonl", shards=1):
    return make_ctx(
        tmp_path,
        {
            "teacher": {"model": "r1", "backend": "openai", "endpoint": "http://teacher/v1"},
            "distill": {
                "prompts": "safety.jsonl",
                "mathPrompts": math_file,
                "style": style,
                "shards": shards,
                "rectify": {"consistencyFilter": False},
            },
        },
        name=name,
    )


def _data(tmp_path, math_file="math.jsonl", n=6):
    (tmp_path / "safety.jsonl").write_text(
        "".join(json.dumps({"prompt": f"How do I hurt person {i}?"}) + "\n" for i in range(4))
    )
    (tmp_path / math_file).write_text(
        "".join(json.dumps({"problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(n))
    )


def test_a_second_style_reuses_the_first_styles_math(tmp_path, teacher):
    _data(tmp_path)
    distill.run(_ctx(tmp_path, "improved", "improved"))
    assert teacher.count("math") == 6 and teacher.count("safety") == 4
    teacher.clear()
    ctx = _ctx(tmp_path, "short", "short")
    distill.run(ctx)
    assert teacher == ["safety"] * 4, "the math was not sent to the teacher again"
    math = distill.accepted_rows(ctx, "math")
    assert len(math) == 6 and all("\\boxed" in r["answer"] for r in math)
    assert ctx.store.read_json(f"{distill._parts_prefix(ctx, 0)}/_DONE.json")["mathFrom"] == "improved"
    # Other math prompts are other work.
    _data(tmp_path, "math2.jsonl", n=3)
    teacher.clear()
    distill.run(_ctx(tmp_path, "other", "short", math_file="math2.jsonl"))
    assert teacher.count("math") == 3


def test_two_distills_at_once_distil_the_math_once(tmp_path, teacher):
    _data(tmp_path)
    errors = []

    def run(name, style):
        try:
            distill.run(_ctx(tmp_path, name, style, shards=2))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", "improved"), ("b", "realsafe"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert teacher.count("math") == 6, "each math prompt once, across both experiments and their shards"
    assert teacher.count("safety") == 8
    for name, style in (("a", "improved"), ("b", "realsafe")):
        assert len(distill.accepted_rows(_ctx(tmp_path, name, style, shards=2), "math")) == 6


def test_lease_one_holder_the_other_waits_until_done(tmp_path):
    store = open_store(f"file://{tmp_path}/s")
    done = threading.Event()
    got = {}

    def claim(who):
        lease = StoreLease(store, "_cache/x.lease", settle=0.1, poll=0.05)
        got[who] = lease.acquire(done.is_set)
        if got[who]:
            store.write_json("_cache/x.json", {"by": who})
            done.set()
            lease.release()

    threads = [threading.Thread(target=claim, args=(w,)) for w in ("p", "q")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(got.values()) == [False, True] and not store.exists("_cache/x.lease")


def test_a_stale_lease_is_taken_over(tmp_path):
    store = open_store(f"file://{tmp_path}/s")
    now = [1000.0]
    store.write_json("k.lease", {"holder": "dead-pod", "renewedAt": 0.0})
    lease = StoreLease(store, "k.lease", ttl=600, settle=0, poll=0, clock=lambda: now[0], sleep=lambda s: None)
    assert lease.acquire(lambda: False) and store.read_json("k.lease")["holder"] == lease.holder
