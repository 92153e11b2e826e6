"""Per-benchmark generation defaults are the release's; overrides apply field by field; k samples per item give a
mean pass@1 with an interval over items, each sample with its own recorded seed."""

import pytest

from lrm_safety.evaluation import benchmarks as bm
from lrm_safety.evaluation.report import benchmark_metrics
from lrm_safety.spec import parse_spec


def _bench(name="advbench", **kw):
    pair = {
        "attacker": {"model": "a", "endpoint": "http://a/v1"},  # advbench-pair needs its attacker and judge
        "judge": {"model": "j", "endpoint": "http://j/v1"},
    }
    return parse_spec(
        {"evaluate": {"dataRoot": "/d", "pair": pair, "benchmarks": [{"name": name, **kw}]}}
    ).evaluate.benchmarks[0]


@pytest.mark.parametrize(
    "name,temperature,top_p,max_tokens,samples",
    [
        ("advbench", 0.6, 0.95, 4096, 1),  # attack_refusal_evaluation/run_gen_eval.py
        ("advbench-pap", 0.6, 0.95, 4096, 1),
        ("advbench-pair", 0.6, 0.95, 2048, 1),  # pair_res.sh: the final response
        ("xstest", 0.0, 1.0, 256, 1),  # run_xstest.sh, xstest_eval.py generates greedily
        ("math500", 0.6, 0.95, 32768, 1),  # reasoning_evaluation/eval_math.sh
        ("aime", 0.6, 0.95, 32768, 4),  # eval_math.sh --n_sampling 4
    ],
)
def test_registry_defaults_are_the_releases(name, temperature, top_p, max_tokens, samples):
    s = bm.sampling_for(_bench(name))
    assert (s.temperature, s.top_p, s.max_tokens, s.seed) == (temperature, top_p, max_tokens, 0)
    assert bm.samples_for(_bench(name)) == samples
    assert bm.REGISTRY[name].release


def test_overrides_apply_field_by_field():
    ev = parse_spec(
        {
            "evaluate": {
                "dataRoot": "/d",
                "sampling": {"maxTokens": 128, "batchSize": 4},
                "benchmarks": [
                    {"name": "aime", "sampling": {"temperature": 0.0}, "samples": 2},
                    {"name": "custom", "kind": "benign", "path": "/x.jsonl"},
                ],
            }
        }
    ).evaluate
    aime, custom = ev.benchmarks
    s = bm.sampling_for(aime, ev.sampling)
    assert (s.temperature, s.top_p, s.max_tokens, s.batch_size) == (0.0, 0.95, 128, 4) and bm.samples_for(aime) == 2
    c = bm.sampling_for(custom)
    assert (c.temperature, c.max_tokens) == (0.0, 256), "a custom benign benchmark generates as XSTest"


def test_k_samples_give_mean_pass_at_1_with_an_interval_over_items():
    # 3 items x 4 samples: item 0 right 4/4, item 1 right 2/4, item 2 right 0/4 -> (1 + 0.5 + 0) / 3
    recs = [
        {"item": i, "sample": j, "correct": ok}
        for i, oks in enumerate([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]])
        for j, ok in enumerate(oks)
    ]
    m = benchmark_metrics("math", recs)
    assert m["n"] == 3 and m["samples"] == 4 and m["value"] == 0.5
    lo, hi = m["ci95"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0 and round(hi - 0.5, 4) == round(0.5 - lo, 4)
    one = benchmark_metrics("math", [{"correct": True}, {"correct": False}])
    assert one["n"] == 2 and "samples" not in one and one["ci95"] == [0.0945, 0.9055], "one sample: Wilson"


def test_samples_use_distinct_recorded_seeds():
    from lrm_safety.generation import Sampling
    from lrm_safety.stages.evaluate import run_benchmark

    class Echo:
        def __init__(self):
            self.seeds = []

        def generate(self, convs, sampling, desc=None):
            self.seeds.append(sampling.seed)
            return [f"<think>\nwork\n</think>\n\n\\\\boxed{{{sampling.seed % 2}}}" for _ in convs]

    gen = Echo()
    items = [{"prompt": "1 - 1?", "reference": "0"}, {"prompt": "2 - 2?", "reference": "0"}]
    recs = run_benchmark("math", "none", items, gen, Sampling(temperature=0.6, seed=10), judge=None, samples=3)
    assert gen.seeds == [10, 11, 12] and [r["seed"] for r in recs] == [10, 10, 11, 11, 12, 12]
    assert [(r["item"], r["sample"]) for r in recs][:3] == [(0, 0), (1, 0), (0, 1)]
    assert benchmark_metrics("math", recs)["value"] == round(2 / 3, 4), "seeds 10 and 12 answer 0"
