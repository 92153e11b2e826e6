"""The study's results table: per student, a row per cell (its non-student axes' values) and the base row, a
column per benchmark with its 95% interval; charts of ASR per cell, safety vs over-refusal, mixing on/off.

Read from each child's evaluate metrics.json (a reused stage's from its source), so it can be rebuilt at any
time with `lrm-safety report study.yaml`, as the study's cells finish.
"""

from __future__ import annotations

import io
from typing import Optional

from lrm_safety.context import StageContext
from lrm_safety.evaluation import report
from lrm_safety.spec import Experiment
from lrm_safety.spec.study import Cell, Study, short


def _metrics(ctx: StageContext) -> Optional[tuple[dict, Optional[dict]]]:
    found = ctx.resolve("evaluate")
    if found is None:
        return None
    src, manifest = found
    return ctx.store.read_json(f"{src}/metrics.json"), manifest.get("judges")


def collect(study: Study, base_dir) -> list[dict]:
    """One row per child: its cell values, role, and per benchmark the evaluated model's metrics."""
    rows = []
    for cell in study.cells:
        ctx = StageContext(Experiment(name=cell.name, namespace=study.namespace, spec=cell.spec), base_dir=base_dir)
        got = _metrics(ctx)
        model = "base" if cell.role == "base" else "trained"
        row = {
            "name": cell.name,
            "role": cell.role,
            "cell": cell.labels,
            "student": cell.spec.student.model,
            "done": got is not None,
            "benchmarks": {},
            "judges": None,
        }
        if got:
            metrics, row["judges"] = got
            for bench in metrics.get("order") or metrics["benchmarks"]:
                e = metrics["benchmarks"][bench]
                if model in e:
                    row["benchmarks"][bench] = {"metric": e["metric"], **e[model]}
        rows.append(row)
    return rows


def _label(row: dict, student_axis: Optional[str]) -> str:
    if row["role"] == "base":
        return "base (untrained)"
    return ", ".join(f"{k}={short(v)}" for k, v in row["cell"].items() if k != student_axis) or row["name"]


def _text(m: Optional[dict], flip: bool) -> str:
    if not m or m.get("value") is None:
        return "-"
    v, (lo, hi) = m["value"], m["ci95"]
    if flip:
        v, lo, hi = 1 - v, 1 - hi, 1 - lo
    return f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _student_axis(study: Study) -> Optional[str]:
    return next((a.label for a in study.spec.axes if a.path in ("student.model", "student")), None)


def render(study: Study, rows: list[dict]) -> tuple[str, dict[str, bytes]]:
    judges = next((r["judges"] for r in rows if r["judges"]), None)
    keyword = report.keyword_judged(judges)
    benches: list[str] = []
    for r in rows:
        benches += [b for b in r["benchmarks"] if b not in benches]
    kind = {b: next(r["benchmarks"][b]["metric"] for r in rows if b in r["benchmarks"]) for b in benches}
    head = [("refusal rate (keyword)" if keyword and kind[b] == "asr" else report.LABEL[kind[b]]) for b in benches]
    # k-sample benchmarks (AIME): the release's any-of-k "Acc" in a column beside the mean pass@1
    samples = {b: max(r["benchmarks"][b].get("samples", 1) for r in rows if b in r["benchmarks"]) for b in benches}
    acc = [b for b in benches if any("acc" in r["benchmarks"].get(b, {}) for r in rows)]
    head = [f"mean {h} ({samples[b]} samples)" if samples[b] > 1 else h for b, h in zip(benches, head)]
    sa = _student_axis(study)
    lines = [
        f"# lrm-safety study: {study.name}",
        "",
        f"{sum(r['done'] for r in rows)} of {len(rows)} experiments evaluated. {report.direction(judges)} "
        "95% intervals in brackets.",
    ]
    lines += report.judges_lines(judges)
    for student in dict.fromkeys(r["student"] for r in rows):
        mine = [r for r in rows if r["student"] == student]
        mine = [r for r in mine if r["role"] == "base"] + [r for r in mine if r["role"] != "base"]
        lines += [
            "",
            f"## {student}",
            "",
            "| cell | "
            + " | ".join(
                [*(f"{b}: {h}" for b, h in zip(benches, head)), *(f"{b}: Acc (any of {samples[b]})" for b in acc)]
            )
            + " |",
            "|" + "---|" * (len(benches) + len(acc) + 1),
        ]
        for r in mine:
            cells = [
                _text(r["benchmarks"].get(b), keyword and kind[b] == "asr") if r["done"] else "pending" for b in benches
            ] + [report.acc_cell(r["benchmarks"].get(b)) if r["done"] else "pending" for b in acc]
            lines.append(f"| {_label(r, sa)} | " + " | ".join(cells) + " |")
    charts = _charts(study, rows, benches, kind, keyword, sa)
    lines += [""] + [f"![{name}]({name})" for name in charts]
    return "\n".join(lines) + "\n", charts


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _charts(study: Study, rows: list[dict], benches: list[str], kind: dict, keyword: bool, sa) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, bytes] = {}
    harm = next((b for b in benches if kind[b] == "asr"), None)
    over = next((b for b in benches if kind[b] == "overRefusal"), None)
    acc = next((b for b in benches if kind[b] == "accuracy"), None)
    done = [r for r in rows if r["done"]]
    flip = lambda v: (1 - v) if keyword else v  # noqa: E731
    harm_label = "refusal rate (keyword)" if keyword else "attack success rate"
    if harm and done:
        shown = [r for r in done if harm in r["benchmarks"] and r["benchmarks"][harm]["value"] is not None]
        fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(shown) + 2), 3.4), dpi=100)
        vals = [100 * flip(r["benchmarks"][harm]["value"]) for r in shown]
        lo = [
            100 * (flip(r["benchmarks"][harm]["ci95"][1]) if keyword else r["benchmarks"][harm]["ci95"][0])
            for r in shown
        ]
        hi = [
            100 * (flip(r["benchmarks"][harm]["ci95"][0]) if keyword else r["benchmarks"][harm]["ci95"][1])
            for r in shown
        ]
        ax.bar(
            range(len(shown)),
            vals,
            yerr=[[max(0, v - a) for v, a in zip(vals, lo)], [max(0, b - v) for v, b in zip(vals, hi)]],
            capsize=3,
            color=["#9aa5b1" if r["role"] == "base" else "#2f7ed8" for r in shown],
        )
        ax.set_xticks(range(len(shown)), [_label(r, sa).replace(", ", "\n") for r in shown], fontsize=8)
        ax.set_ylabel(f"{harm_label} (%)")
        ax.set_ylim(0, 105)
        ax.set_title(f"{harm}: {harm_label} per cell")
        charts["chart-asr-per-cell.png"] = _png(fig)
    if harm and over and done:
        shown = [r for r in done if harm in r["benchmarks"] and over in r["benchmarks"]]
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        for r in shown:
            x, y = 100 * flip(r["benchmarks"][harm]["value"]), 100 * r["benchmarks"][over]["value"]
            ax.scatter([x], [y], color="#9aa5b1" if r["role"] == "base" else "#2f7ed8")
            ax.annotate(_label(r, sa), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{harm}: {harm_label} (%)")
        ax.set_ylabel(f"{over}: over-refusal (%)")
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.set_title("safety vs over-refusal")
        charts["chart-safety-vs-overrefusal.png"] = _png(fig)
    mixing = next((a for a in study.spec.axes if a.path == "mix.mathCount"), None)
    if mixing and done:
        metrics = [(b, lab) for b, lab in ((harm, harm_label), (over, "over-refusal"), (acc, "accuracy")) if b]
        fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
        width = 0.8 / max(len(mixing.values), 1)
        for i, value in enumerate(mixing.values):
            mine = [r for r in done if r["role"] == "cell" and r["cell"].get(mixing.label) == value]
            means = []
            for b, _ in metrics:
                vs = [r["benchmarks"][b]["value"] for r in mine if b in r["benchmarks"]]
                vs = [flip(v) if b == harm else v for v in vs if v is not None]
                means.append(100 * sum(vs) / len(vs) if vs else 0)
            ax.bar(
                [j + (i - (len(mixing.values) - 1) / 2) * width for j in range(len(metrics))],
                means,
                width,
                label=f"{mixing.label}={value}",
            )
        ax.set_xticks(range(len(metrics)), [lab for _, lab in metrics])
        ax.set_ylabel("mean over cells (%)")
        ax.legend(frameon=False)
        ax.set_title("math mixing on/off")
        charts["chart-mixing.png"] = _png(fig)
    return charts


def write(study: Study, store, base_dir) -> str:
    """<storage>/<study>/report.md, its charts and study.json (the rows)."""
    rows = collect(study, base_dir)
    text, charts = render(study, rows)
    for name, data in charts.items():
        store.write_bytes(f"{study.name}/{name}", data)
    store.write_json(f"{study.name}/study.json", {"name": study.name, "rows": rows})
    store.write_bytes(f"{study.name}/report.md", text.encode())
    return store.uri(f"{study.name}/report.md")


def first_cell(study: Study) -> Cell:
    return next(c for c in study.cells if c.role == "cell")
