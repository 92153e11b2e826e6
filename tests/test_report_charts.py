"""Charts read the table's way: a keyword judge's harmful benchmarks as the refusal rate, legends beside the bars."""
import pytest

from lrm_safety import report


def _metrics():
    def entry(metric, base, trained):
        return {"metric": metric, "base": {"value": base, "ci95": [max(0, base - .1), min(1, base + .1)], "n": 24},
                "trained": {"value": trained, "ci95": [max(0, trained - .1), min(1, trained + .1)], "n": 24}}

    return {"benchmarks": {"harmful-heldout": entry("asr", 0.92, 0.1), "benign": entry("overRefusal", 0.05, 0.95),
                           "math": entry("accuracy", 0.9, 0.95)}, "order": ["harmful-heldout", "benign", "math"]}


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
