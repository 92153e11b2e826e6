"""The study's report from its children's evaluate outputs, and `lrm-safety run` over a study (stages played)."""

import yaml

from lrm_safety import runner
from lrm_safety.context import StageContext
from lrm_safety.evaluation import report
from lrm_safety.spec import Experiment
from lrm_safety.spec.study import Study


def _study(tmp_path, mixing=False):
    axes = [{"path": "distill.style", "name": "style", "values": ["nocot", "template"]}]
    if mixing:
        axes.append({"path": "mix.mathCount", "name": "math", "values": [48, 0]})
    doc = {
        "apiVersion": "lrmsafety.io/v1alpha1",
        "kind": "SafetyStudy",
        "metadata": {"name": "rep"},
        "spec": {
            "base": {
                "storage": {"uri": "file://./store"},
                "student": {"model": "builtin:smollm2-135m-instruct"},
                "mix": {"mathSource": "builtin:synthetic-math"},
                "evaluate": {
                    "benchmarks": [
                        {"name": "custom", "label": "harmful", "kind": "harmful", "path": "h.jsonl"},
                        {"name": "custom", "label": "benign", "kind": "benign", "path": "b.jsonl"},
                        {"name": "custom", "label": "math", "kind": "math", "path": "m.jsonl"},
                    ]
                },
            },
            "axes": axes,
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def fake_evaluate(spec_path: str, base_dir, unsafe: int):
    """What an evaluate stage leaves: records judged, metrics.json, the manifest."""
    exp = Experiment.load(spec_path)
    ctx = StageContext(exp, base_dir=base_dir)
    model = "base" if exp.spec.stages == ["evaluate"] else "trained"
    records = {
        model: {
            "harmful": [{"unsafe": i < unsafe, "refused": i >= unsafe} for i in range(10)],
            "benign": [{"refused": i < 2} for i in range(10)],
            "math": [{"correct": i < 3} for i in range(10)],
        }
    }
    metrics = report.compute(records, {"harmful": "harmful", "benign": "benign", "math": "math"})
    prefix = ctx.prefix("evaluate")
    ctx.store.write_json(f"{prefix}/metrics.json", metrics)
    ctx.store.write_manifest(
        prefix,
        stage="evaluate",
        config_hash=ctx.hash("evaluate"),
        files=[f"{prefix}/metrics.json"],
        extra={"judges": {"harm": "a guard model on the whole output"}},
    )


def test_run_study_runs_base_first_then_cells_and_writes_the_table(tmp_path, monkeypatch):
    ran = []

    def pipeline(spec_path, stages, force, base_dir, servers=None):
        name = Experiment.load(spec_path).name
        ran.append((name, stages))
        fake_evaluate(spec_path, base_dir, unsafe={"rep-base": 8, "rep-nocot-48": 1}.get(name, 4))
        return dict.fromkeys(stages, "ran")

    monkeypatch.setattr(runner, "run_pipeline", pipeline)
    runner.run_study(_study(tmp_path, mixing=True))
    assert ran[0] == ("rep-base", ("evaluate",)), "the base row first, evaluate only"
    assert [n for n, _ in ran[1:]] == ["rep-nocot-48", "rep-nocot-0", "rep-template-48", "rep-template-0"]
    assert all(stages == ("distill", "mix", "train", "evaluate") for _, stages in ran[1:])
    text = (tmp_path / "store" / "rep" / "report.md").read_text()
    assert "| base (untrained) | 80.0% [49.0, 94.3]" in text
    assert "| style=nocot, math=48 | 10.0% [1.8, 40.4]" in text
    assert "harmful: attack success rate" in text and "math: accuracy" in text
    assert "Lower is better for attack success rate" in text  # a harm judge: the table's ASR wording
    from PIL import Image

    for chart in ("chart-asr-per-cell.png", "chart-safety-vs-overrefusal.png", "chart-mixing.png"):
        assert f"![{chart}]({chart})" in text
        with Image.open(tmp_path / "store" / "rep" / chart) as im:
            assert im.size[0] > 300 and im.size[1] > 200


def test_report_of_a_half_finished_study_marks_pending_cells(tmp_path):
    path = _study(tmp_path)
    study = Study.load(path)
    cell = next(c for c in study.cells if c.name == "rep-nocot")
    spec = tmp_path / "nocot.yaml"
    from lrm_safety.spec.study import child_manifest

    spec.write_text(yaml.safe_dump(child_manifest("rep", "default", cell)))
    fake_evaluate(str(spec), tmp_path, unsafe=3)
    from lrm_safety.cli import main

    assert main(["report", path]) == 0
    text = (tmp_path / "store" / "rep" / "report.md").read_text()
    assert "1 of 3 experiments evaluated" in text
    assert "| style=template | pending | pending | pending |" in text and "| style=nocot | 30.0%" in text
