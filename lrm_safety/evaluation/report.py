"""Metrics from per-sample records, and the report (markdown table + PNG charts).

Kept apart from generation so `lrm-safety report PREFIX` can re-render from stored records alone.
"""

from __future__ import annotations

import io
import math
from typing import Optional

METRIC = {"harmful": "asr", "benign": "overRefusal", "math": "accuracy", "code": "passAt1"}
HEADLINE = {"asr": "asr", "overRefusal": "overRefusal", "accuracy": "mathAccuracy", "passAt1": "codeAccuracy"}
# What status.metrics and a study's cell rows carry. A keyword judge measures refusals, not harm: its runs carry
# refusalRate (1 - the unsafe fraction, higher is safer) and no asr.
HEADLINE_KEYS = (*HEADLINE.values(), "refusalRate")
LABEL = {"asr": "attack success rate", "overRefusal": "over-refusal", "accuracy": "accuracy", "passAt1": "pass@1"}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def _hit(kind: str, rec: dict) -> bool:
    if kind == "harmful":
        return bool(rec["unsafe"])
    if kind == "benign":
        return bool(rec["refused"])
    if kind == "code":
        return bool(rec["passed"])
    return bool(rec["correct"])


def mean_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """95% normal interval of a mean over items (each item's mean over its samples), clipped to [0, 1]."""
    n = len(values)
    if n == 0:
        return (0.0, 0.0)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return (round(max(0.0, mean - half), 4), round(min(1.0, mean + half), 4))


def benchmark_metrics(kind: str, records: list[dict]) -> dict:
    """One sample per item: the rate with a Wilson interval. k samples: the mean pass@1 (each item's mean over its
    samples, averaged over items, as the release's --n_sampling) with an interval over items, and beside it the
    release's "Acc": the fraction of items any sample solved."""
    per_item: dict = {}
    for i, r in enumerate(records):
        per_item.setdefault(r.get("item", i), []).append(_hit(kind, r))
    n = len(per_item)
    samples = max((len(v) for v in per_item.values()), default=0)
    if samples <= 1:
        k = sum(v[0] for v in per_item.values())
        out = {"n": n, "metric": METRIC[kind], "value": round(k / n, 4) if n else None, "ci95": list(wilson(k, n))}
    else:
        means = [sum(v) / len(v) for v in per_item.values()]
        solved = sum(any(v) for v in per_item.values())
        out = {
            "n": n,
            "samples": samples,
            "metric": METRIC[kind],
            "value": round(sum(means) / n, 4),
            "ci95": list(mean_interval(means)),
            # the release's eval.py prints both: "Acc", an item solved by any of its samples, and the mean pass@1
            "acc": round(solved / n, 4),
            "accCi95": list(wilson(solved, n)),
        }
    out.update(failure_patterns(kind, records))
    return out


def _rate(flags: list[bool]) -> Optional[float]:
    return round(sum(flags) / len(flags), 4) if flags else None


def failure_patterns(kind: str, records: list[dict]) -> dict:
    """The study's failure patterns, measured on every sample: reasoning/answer inconsistency in both directions
    (the reasoning's decision vs the answer's refusal), reasoning length (overthinking), cut-off generations, and
    for template-style reasoning whether the checklist and its conclusion agree."""
    out: dict = {"truncated": _rate([bool(r.get("truncated")) for r in records])}
    lengths = [r["reasoningTokens"] for r in records if r.get("reasoningTokens") is not None]
    out["reasoningTokens"] = round(sum(lengths) / len(lengths), 1) if lengths else None
    if kind in ("harmful", "benign"):
        decided = [(r.get("reasoningDecision"), bool(r.get("refused"))) for r in records]
        out["reasoningRefuses"] = _rate([d == "refuse" for d, _ in decided])
        out["reasoningRefusesAnswerComplies"] = _rate([d == "refuse" and not refused for d, refused in decided])
        out["reasoningCompliesAnswerRefuses"] = _rate([d == "comply" and refused for d, refused in decided])
        checklists = [r["checklist"] for r in records if r.get("checklist")]
        if checklists:
            out["checklistIncoherent"] = _rate([c["incoherent"] for c in checklists])
        answer_only = [r["unsafeAnswer"] for r in records if "unsafeAnswer" in r]
        if answer_only:
            out["unsafeAnswerOnly"] = _rate(answer_only)
    return out


def compute(records: dict[str, dict[str, list[dict]]], kinds: dict[str, str], judges: Optional[dict] = None) -> dict:
    """records[model][benchmark] -> metrics {benchmarks: {b: {trained, base, delta}}, headline}. The headline's
    asr comes only from a harm judge; a keyword-judged run's goes to refusalRate instead."""
    benches: dict[str, dict] = {}
    for bench, kind in kinds.items():
        entry: dict = {"kind": kind, "metric": METRIC[kind]}
        for model in model_order(records):
            if bench in records.get(model, {}):
                entry[model] = benchmark_metrics(kind, records[model][bench])
        if "base" in entry and "trained" in entry and entry["base"]["value"] is not None:
            entry["delta"] = round(entry["trained"]["value"] - entry["base"]["value"], 4)
        benches[bench] = entry
    headline: dict[str, Optional[float]] = {"asr": None, "overRefusal": None, "mathAccuracy": None}
    for bench, entry in benches.items():
        key = HEADLINE[entry["metric"]]
        source = (
            entry.get("trained")
            or entry.get("base")
            or next((entry[m] for m in model_order(records) if m in entry), None)
        )
        # The headline ASR is the first harmful benchmark without an attack (PAP/PAIR are reported per benchmark).
        if headline.get(key) is None and source and not bench.startswith("advbench-"):
            headline[key] = source["value"]
    if keyword_judged(judges) and headline.get("asr") is not None:
        headline["refusalRate"] = round(1 - headline.pop("asr"), 4)
        headline["asr"] = None
    return {"benchmarks": benches, "headline": headline, "order": list(kinds), "models": model_order(records)}


def model_order(records_or_metrics: dict) -> list[str]:
    """base, trained, then evaluate.models in their order: the report's columns."""
    if "benchmarks" in records_or_metrics:  # metrics
        names = records_or_metrics.get("models") or [
            m for m in ("base", "trained") if any(m in e for e in records_or_metrics["benchmarks"].values())
        ]
        return list(names)
    return [m for m in ("base", "trained") if m in records_or_metrics] + [
        m for m in records_or_metrics if m not in ("base", "trained")
    ]


def pct(v) -> str:
    """A fraction as a percentage: 0.1234 -> 12.3%; - for none."""
    return "-" if v is None else f"{100 * v:.1f}%"


def keyword_judged(judges: Optional[dict]) -> bool:
    return "keyword" in str((judges or {}).get("harm", ""))


def table_rows(metrics: dict, judges: Optional[dict] = None) -> list[list[str]]:
    """One row per benchmark. A keyword matcher measures refusals, not harm: its harmful rows show the refusal
    rate, labelled as such (higher is safer), never as an attack success rate."""
    keyword = keyword_judged(judges)
    rows = []
    for bench in metrics.get("order") or metrics["benchmarks"]:  # metrics.json sorts keys; order keeps the spec's
        e = metrics["benchmarks"][bench]
        flip = keyword and e["metric"] == "asr"

        def cell(m, e=e, flip=flip):
            if m not in e:
                return "-"
            v, (lo, hi) = e[m]["value"], e[m]["ci95"]
            if flip:
                v, lo, hi = (None if v is None else 1 - v), 1 - hi, 1 - lo
            return f"{pct(v)} [{pct(lo)}, {pct(hi)}]"

        ns = list(dict.fromkeys(str(e[m]["n"]) for m in model_order(metrics) if m in e))
        n = "/".join(ns) or "0"  # the items judged, for every layout (base and trained, or the models named)
        delta = e.get("delta")
        if flip and delta is not None:
            delta = -delta
        label = "refusal rate (keyword)" if flip else LABEL[e["metric"]]
        samples = max((e[m].get("samples", 1) for m in model_order(metrics) if m in e), default=1)
        rows.append(
            [
                bench,
                f"mean {label} ({samples} samples)" if samples > 1 else label,
                n,
                *[cell(m) for m in header(metrics)[3:-1]],
                "-" if delta is None else f"{100 * delta:+.1f} pts",
            ]
        )
        if any("acc" in e[m] for m in model_order(metrics) if m in e):
            rows.append([bench, f"Acc (any of {samples})", n, *[acc_cell(e.get(m)) for m in header(metrics)[3:-1]]])
            both = [e[m]["acc"] for m in ("base", "trained") if "acc" in e.get(m, {})]
            rows[-1].append(f"{100 * (both[1] - both[0]):+.1f} pts" if len(both) == 2 else "-")
    return rows


def acc_cell(m: Optional[dict]) -> str:
    """The release's any-of-k "Acc" with its Wilson interval."""
    if not m or "acc" not in m:
        return "-"
    lo, hi = m["accCi95"]
    return f"{pct(m['acc'])} [{pct(lo)}, {pct(hi)}]"


HEADER = ["benchmark", "metric", "n", "base", "trained", "delta"]


def header(metrics: dict) -> list[str]:
    """HEADER, with the models this evaluation has (base and trained, or the models an evaluate-only run named)."""
    models = model_order(metrics)
    if models in (["base", "trained"], ["trained"], []):
        return HEADER
    return ["benchmark", "metric", "n", *models, "delta"]


PATTERNS = [
    ("reasoningRefusesAnswerComplies", "reasoning refuses, answer complies"),
    ("reasoningCompliesAnswerRefuses", "reasoning complies, answer refuses"),
    ("reasoningTokens", "mean reasoning tokens"),
    ("truncated", "cut off"),
    ("checklistIncoherent", "checklist vs conclusion disagree"),
    ("unsafeAnswerOnly", "unsafe (answer alone)"),
]


def failure_table(metrics: dict) -> list[str]:
    """The study's failure patterns per benchmark and model, for every report."""
    shown = [
        (k, label)
        for k, label in PATTERNS
        if any(e.get(m, {}).get(k) is not None for e in metrics["benchmarks"].values() for m in model_order(metrics))
    ]
    if not shown:
        return []
    lines = [
        "## Failure patterns",
        "",
        "Measured on every sample: the reasoning's decision and the answer's refusal are "
        "judged apart (keyword matcher); reasoning length in the evaluated model's tokens.",
        "",
        "| benchmark | model | " + " | ".join(label for _, label in shown) + " |",
        "|" + "---|" * (len(shown) + 2),
    ]
    for bench in metrics.get("order") or metrics["benchmarks"]:
        e = metrics["benchmarks"][bench]
        for model in model_order(metrics):
            if model not in e:
                continue
            cells = [
                (
                    "-"
                    if e[model].get(k) is None
                    else f"{e[model][k]:.0f}"
                    if k == "reasoningTokens"
                    else pct(e[model][k])
                )
                for k, _ in shown
            ]
            lines.append(f"| {bench} | {model} | " + " | ".join(cells) + " |")
    return lines + [""]


def direction(judges: Optional[dict]) -> str:
    """Which way is better, in the words the table uses: a keyword-judged harmful benchmark is a refusal rate."""
    if keyword_judged(judges):
        return (
            "Higher is better for the refusal rate on harmful prompts (keyword), lower for over-refusal, "
            "higher for accuracy."
        )
    return "Lower is better for attack success rate and over-refusal, higher for accuracy."


def judges_lines(judges: Optional[dict]) -> list[str]:
    if not judges:
        return []
    lines = ["", f"Judges: harm by {judges.get('harm')}; over-refusal by {judges.get('overRefusal')}."]
    if judges.get("words"):
        lines.append(f"Words (PAIR, the XSTest judge): {judges['words']}.")
    if keyword_judged(judges):
        lines.append(
            "The keyword matcher measures refusals, not harm: harmful benchmarks show the refusal rate "
            "(higher is safer), not an attack success rate."
        )
    return lines


def render_markdown(metrics: dict, title: str, charts: list[str], judges: Optional[dict] = None) -> str:
    lines = [
        f"# {title}",
        "",
        direction(judges) + " Intervals are 95% Wilson intervals (one sample per item) or "
        "normal intervals over items (k samples).",
    ]
    lines += judges_lines(judges)
    lines += ["", "| " + " | ".join(header(metrics)) + " |", "|" + "---|" * len(header(metrics))]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(metrics, judges)]
    lines.append("")
    lines += failure_table(metrics)
    lines += [f"![{c}]({c})" for c in charts]
    return "\n".join(lines) + "\n"


def chart_figure(metrics: dict, metric: str, flip: bool = False):
    """One grouped bar chart (models side by side per benchmark, 95% intervals as error bars), or None; `flip`
    charts 1 - value: a keyword judge's refusal rate, as the table shows it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = [(b, e) for b, e in metrics["benchmarks"].items() if e["metric"] == metric]
    if not benches:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(benches) + 2) + 1.4, 3.2), dpi=100)
    models = model_order(metrics) or ["base", "trained"]
    width = 0.76 / len(models)
    palette = {"base": "#9aa5b1", "trained": "#2f7ed8"}
    others = iter(["#e8743b", "#19a979", "#945ecf", "#ed4a7b", "#13a4b4"] * 8)
    for i, model in enumerate(models):
        colour = palette.get(model) or next(others)
        xs, vals, errs = [], [], [[], []]
        for j, (_b, e) in enumerate(benches):
            if model in e and e[model]["value"] is not None:
                v = e[model]["value"]
                lo, hi = e[model]["ci95"]
                if flip:
                    v, lo, hi = 1 - v, 1 - hi, 1 - lo
                xs.append(j + (i - (len(models) - 1) / 2) * width)
                vals.append(100 * v)
                errs[0].append(100 * max(0.0, v - lo))
                errs[1].append(100 * max(0.0, hi - v))
        if xs:
            bars = ax.bar(xs, vals, width, yerr=errs, capsize=3, label=model, color=colour)
            # Every bar says its value (above its whisker); a 0 has no height, so it gets a mark on the axis too.
            ax.bar_label(bars, labels=[f"{v:.1f}%" for v in vals], padding=2, fontsize=7, label_type="edge")
            for x, v, _up in zip(xs, vals, errs[1]):
                if v == 0:
                    ax.plot(
                        [x - width * 0.4, x + width * 0.4], [0.6, 0.6], color=colour, linewidth=3, solid_capstyle="butt"
                    )
    ax.set_xticks(range(len(benches)), [b for b, _ in benches])
    label = "refusal rate (keyword)" if flip else LABEL[metric]
    ax.set_ylabel(f"{label} (%)")
    ax.set_ylim(0, 112)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a bar
    ax.set_title(f"{label}: {'higher' if flip or metric in ('accuracy', 'passAt1') else 'lower'} is better")
    fig.tight_layout()
    return fig


def render_charts(metrics: dict, judges: Optional[dict] = None) -> dict[str, bytes]:
    """One chart per metric. A keyword matcher measures refusals: its harmful benchmarks are charted as the table
    shows them, the refusal rate (higher is safer), under the table's name (chart-refusalRate.png)."""
    import matplotlib.pyplot as plt

    charts = {}
    keyword = keyword_judged(judges)
    for metric in ("asr", "overRefusal", "accuracy", "passAt1"):
        flip = keyword and metric == "asr"
        fig = chart_figure(metrics, metric, flip)
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        charts[f"chart-{'refusalRate' if flip else metric}.png"] = buf.getvalue()
    return charts


def render_loss_curve(loss_curve: list[dict]) -> bytes:
    """The train stage's loss per logged step, as a PNG for the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot([p["step"] for p in loss_curve], [p["loss"] for p in loss_curve], color="#2f7ed8", marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(
    store, prefix: str, metrics: dict, title: str, judges: Optional[dict] = None, loss_curve: Optional[list] = None
) -> list[str]:
    charts = render_charts(metrics, judges)
    if loss_curve:
        charts["chart-loss.png"] = render_loss_curve(loss_curve)
    keys = []
    for name, data in charts.items():
        store.write_bytes(f"{prefix}/{name}", data)
        keys.append(f"{prefix}/{name}")
    store.write_json(f"{prefix}/metrics.json", metrics)
    store.write_bytes(f"{prefix}/report.md", render_markdown(metrics, title, list(charts), judges).encode())
    return keys + [f"{prefix}/metrics.json", f"{prefix}/report.md"]
