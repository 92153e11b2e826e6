"""Charts read the table's way: a keyword judge's harmful benchmarks as the refusal rate, legends beside the bars."""

import pytest

from lrm_safety.evaluation import report


def _metrics():
    def entry(metric, base, trained):
        return {
            "metric": metric,
            "base": {"value": base, "ci95": [max(0, base - 0.1), min(1, base + 0.1)], "n": 24},
            "trained": {"value": trained, "ci95": [max(0, trained - 0.1), min(1, trained + 0.1)], "n": 24},
        }

    return {
        "benchmarks": {
            "harmful-heldout": entry("asr", 0.92, 0.1),
            "benign": entry("overRefusal", 0.05, 0.95),
            "math": entry("accuracy", 0.9, 0.95),
        },
        "order": ["harmful-heldout", "benign", "math"],
    }


def test_keyword_judged_harm_is_charted_as_the_refusal_rate():
    keyword = {"harm": "the keyword refusal matcher", "overRefusal": "the keyword refusal matcher"}
    charts = report.render_charts(_metrics(), keyword)
    assert sorted(charts) == ["chart-accuracy.png", "chart-overRefusal.png", "chart-refusalRate.png"]
    fig = report.chart_figure(_metrics(), "asr", flip=True)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == pytest.approx([8.0, 90.0]), "base refuses 8%, trained 90%: the table's numbers, not 1 - them"
    assert "refusal rate (keyword)" in fig.axes[0].get_ylabel() and "higher is better" in fig.axes[0].get_title()
    guard = report.render_charts(_metrics(), {"harm": "a guard model (g)", "overRefusal": "x"})
    assert "chart-asr.png" in guard and "chart-refusalRate.png" not in guard


@pytest.mark.parametrize("metric", ["asr", "overRefusal", "accuracy"])
def test_the_legend_covers_no_bar(metric):
    fig = report.chart_figure(_metrics(), metric)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent(renderer)), (metric, legend, bar.get_window_extent(renderer))


def test_every_bar_says_its_value_and_a_zero_is_visible():
    """A metric of 0 drew no bar, only its whisker: it now has a mark on the axis, and every bar a value label."""
    m = _metrics()
    m["benchmarks"]["harmful-heldout"]["trained"].update(value=0.0, ci95=[0.0, 0.14])
    fig = report.chart_figure(m, "asr")
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["0.0%", "92.0%"], labels
    zero_bar = next(p for p in ax.patches if p.get_height() == 0)
    x = zero_bar.get_x() + zero_bar.get_width() / 2
    marks = [
        ln
        for ln in ax.lines
        if len(ln.get_xdata()) == 2 and min(ln.get_xdata()) < x < max(ln.get_xdata()) and ln.get_linewidth() >= 2
    ]
    assert marks, "a visible mark at 0"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(t.get_window_extent(renderer)) for t in ax.texts), "labels clear of the legend"


def test_n_is_the_items_judged_for_every_model_layout():
    """compareBase: false with one named model: the table's n is that model's (it printed 0)."""
    records = {"ckpt": {"advbench": [{"unsafe": i < 5, "refused": i >= 5} for i in range(50)]}}
    metrics = report.compute(records, {"advbench": "harmful"}, {"harm": "a guard model (g)", "overRefusal": "x"})
    assert metrics["benchmarks"]["advbench"]["ckpt"]["n"] == 50
    rows = report.table_rows(metrics, {"harm": "a guard model (g)", "overRefusal": "x"})
    assert rows[0][2] == "50", rows
    assert report.header(metrics) == ["benchmark", "metric", "n", "ckpt", "delta"]
    both = report.compute(
        {"base": {"advbench": records["ckpt"]["advbench"][:40]}, "trained": records["ckpt"]}, {"advbench": "harmful"}
    )
    assert report.table_rows(both)[0][2] == "40/50", "models judged on different counts show both"


def _aime_records(solved_by):
    """30 problems x 4 samples; problem i solved by the first solved_by[i] samples."""
    return [{"item": i, "correct": s < k} for i, k in enumerate(solved_by) for s in range(4)]


def test_aime_reports_the_releases_acc_beside_the_mean_pass_at_1():
    """The release's eval.py prints "Acc" (a problem any of its 4 samples solved) and the mean pass@1."""
    base = _aime_records([4] * 3 + [1] * 6 + [0] * 21)  # 9 of 30 solved at all; pass@1 (12 + 6) / 120
    trained = _aime_records([4] * 3 + [2] * 3 + [0] * 24)  # 6 solved; pass@1 (12 + 6) / 120
    m = report.compute({"base": {"aime": base}, "trained": {"aime": trained}}, {"aime": "math"})
    b, t = m["benchmarks"]["aime"]["base"], m["benchmarks"]["aime"]["trained"]
    assert (b["value"], b["acc"], b["samples"]) == (0.15, 0.3, 4)
    assert (t["value"], t["acc"]) == (0.15, 0.2)
    assert b["accCi95"] == list(report.wilson(9, 30))
    rows = report.table_rows(m)
    assert rows[0][:3] == ["aime", "mean accuracy (4 samples)", "30"] and rows[0][-1] == "+0.0 pts"
    assert rows[1][:3] == ["aime", "Acc (any of 4)", "30"] and rows[1][3].startswith("30.0% [")
    assert rows[1][-1] == "-10.0 pts"
    one = report.compute({"trained": {"math500": [{"correct": i < 3} for i in range(10)]}}, {"math500": "math"})
    assert "acc" not in one["benchmarks"]["math500"]["trained"] and len(report.table_rows(one)) == 1


def test_the_study_table_has_an_acc_column_for_k_sample_benchmarks():
    from lrm_safety.evaluation import study_report
    from lrm_safety.spec.study import Study

    study = Study.from_manifest(
        {
            "apiVersion": "lrmsafety.io/v1alpha1",
            "kind": "SafetyStudy",
            "metadata": {"name": "aime"},
            "spec": {
                "base": {
                    "storage": {"uri": "file://./s"},
                    "evaluate": {"dataRoot": "/d", "benchmarks": [{"name": "aime"}]},
                },
                "axes": [{"path": "distill.style", "name": "style", "values": ["nocot"]}],
            },
        }
    )
    m = report.benchmark_metrics("math", _aime_records([4] * 3 + [1] * 6 + [0] * 21))
    rows = [
        {
            "name": c.name,
            "role": c.role,
            "cell": c.labels,
            "student": c.spec.student.model,
            "done": True,
            "benchmarks": {"aime": {"metric": "accuracy", **m}},
            "judges": None,
        }
        for c in study.cells
    ]
    text, _ = study_report.render(study, rows)
    assert "| cell | aime: mean accuracy (4 samples) | aime: Acc (any of 4) |" in text
    assert "| style=nocot | 15.0% [" in text and "| 30.0% [" in text
