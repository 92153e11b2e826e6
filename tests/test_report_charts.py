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
