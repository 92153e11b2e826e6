"""SafetyStudy as pure functions: grid expansion, names, validation that names the cell, baselines, the plan."""

from pathlib import Path

import pytest

from lrm_safety.spec import SpecError
from lrm_safety.spec.study import Study, cell_name, expand, parse_study

REPO = Path(__file__).resolve().parent.parent
BASE = {"evaluate": {"dataRoot": "s3://d"}}
STYLES = ["default", "realsafe", "improved", "short", "template", "nocot"]


def grid(axes, **kw):
    return expand("grid", parse_study({"base": BASE, "axes": axes, **kw}))


def test_grid_is_every_combination_in_axis_order_with_exclude_and_include():
    cells = grid(
        [
            {"path": "distill.style", "name": "style", "values": ["short", "nocot"]},
            {"path": "mix.safetyCount", "values": [1000, 400]},
        ],
        exclude=[{"style": "nocot", "safetyCount": 400}],
        include=[{"style": "template", "safetyCount": 1000}],
    )
    runs = [c for c in cells if c.role == "cell"]
    assert [c.labels for c in runs] == [
        {"style": "short", "safetyCount": 1000},
        {"style": "short", "safetyCount": 400},
        {"style": "nocot", "safetyCount": 1000},
        {"style": "template", "safetyCount": 1000},
    ]
    assert [c.name for c in runs] == ["grid-short-1000", "grid-short-400", "grid-nocot-1000", "grid-template-1000"]
    assert runs[1].spec.distill.style == "short" and runs[1].spec.mix.safety_count == 400
    assert all(c.spec.evaluate.compare_base is False for c in runs), "the base row is its own experiment"


def test_one_base_evaluation_per_student_evaluates_only_the_base():
    cells = grid(
        [
            {"path": "distill.style", "values": STYLES},
            {"path": "student.model", "values": ["org/Qwen-7B", "org/Llama-8B"]},
        ]
    )
    base = [c for c in cells if c.role == "base"]
    assert len(base) == 2 and {b.spec.student.model for b in base} == {"org/Qwen-7B", "org/Llama-8B"}
    assert all(b.spec.stages == ["evaluate"] and b.spec.evaluate.compare_base for b in base)
    assert len(base[0].students) == 6, "each base row serves the six styles of its student"
    assert len({c.name for c in cells}) == len(cells) == 14


def test_names_are_deterministic_dns_labels_within_42_characters():
    labels = {"student": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "style": "improved", "safetyCount": 1000}
    name = cell_name("r1-distill-long-study", labels)
    assert len(name) <= 42 and name == cell_name("r1-distill-long-study", dict(labels))
    assert name.startswith("r1-distill-long-study-deepseek-r1")
    assert cell_name("r1-distill-long-study", {**labels, "safetyCount": 400}) != name
    assert cell_name("s", {"style": "short", "student": "org/Qwen-7B"}) == "s-short-qwen-7b"


def test_invalid_cells_are_named_by_their_values():
    with pytest.raises(SpecError) as e:
        grid(
            [
                {"path": "distill.style", "name": "style", "values": ["short", "bogus"]},
                {"path": "train.learningRate", "values": [1e-5, -1]},
            ]
        )
    lines = e.value.lines
    assert (
        "cells[style=bogus,learningRate=1e-05].spec.distill.style: Input should be 'default', 'realsafe', "
        "'improved', 'short', 'template' or 'nocot'" in lines
    )
    assert "cells[style=short,learningRate=-1].spec.train.learningRate: must be > 0 (got -1)" in lines
    assert not any("style=short,learningRate=1e-05" in line for line in lines), "valid cells are not reported"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"axes": [{"path": "a.b", "values": [1]}, {"path": "c.b", "values": [2]}]}, "axis names repeat"),
        (
            {"axes": [{"path": "distill.style", "values": ["short"]}], "exclude": [{"styel": "short"}]},
            "styel: not an axis",
        ),
        (
            {
                "axes": [{"path": "distill.style", "values": ["short"]}, {"path": "mix.seed", "values": [1]}],
                "include": [{"style": "nocot"}],
            },
            "include[0] must give every axis a value",
        ),
        ({"axes": [{"path": "Distill.style", "values": ["short"]}]}, "spec.axes[0].path"),
        ({"axes": []}, "spec.axes: List should have at least 1 item"),
    ],
)
def test_study_spec_errors_name_the_field(spec, message):
    with pytest.raises(SpecError) as e:
        expand("s", parse_study({"base": BASE, **spec}))
    assert any(message in line for line in e.value.lines), e.value.lines


def test_study_name_is_short_enough_to_prefix_cells():
    doc = {
        "apiVersion": "lrmsafety.io/v1alpha1",
        "kind": "SafetyStudy",
        "metadata": {"name": "x" * 29},
        "spec": {"base": BASE, "axes": [{"path": "mix.seed", "values": [1]}]},
    }
    with pytest.raises(SpecError, match="at most 28 characters"):
        Study.from_manifest(doc)


def test_examples_validate_and_the_plan_shares_work():
    """The study's grid (six styles x 1k/400 safety samples x math on/off): the base evaluated once, not 24 times,
    and distillation once per style, since only mix reads the other two axes."""
    from lrm_safety.plan import study_plan

    study = Study.load(str(REPO / "examples" / "study.yaml"))
    cells = [c for c in study.cells if c.role == "cell"]
    assert len(cells) == 24 and sorted({c.labels["style"] for c in cells}) == sorted(STYLES)
    assert {(c.labels["safety"], c.labels["math"]) for c in cells} == {(1000, 4000), (1000, 0), (400, 4000), (400, 0)}
    assert any(b.name == "livecodebench" for b in cells[0].spec.evaluate.benchmarks)
    plan = study_plan(study, REPO / "examples")
    evaluations = [u for u in plan["units"] if u["stage"] == "evaluate"]
    base = [u for u in evaluations if u["experiments"] == [f"{study.name}-base"]]
    assert len(base) == 1 and plan["with"]["baseEvaluations"] == 1 and plan["without"]["baseEvaluations"] == 24
    assert plan["with"]["modelEvaluations"] == 25 and plan["without"]["modelEvaluations"] == 48
    distills = [u for u in plan["units"] if u["stage"] == "distill"]
    assert len(distills) == 6 and all(len(u["experiments"]) == 4 for u in distills)
    assert plan["without"]["jobs"] == 24 * 4 and plan["with"]["jobs"] == 6 + 24 + 24 + 25
    assert Study.load(str(REPO / "examples" / "quickstart-study.yaml")).cells[0].role == "base"


def test_the_rendering_axis_shares_distill_and_mix(capsys):
    """examples/study.yaml's commented axis, uncommented: what the student is trained on differs, so train and
    evaluate run per rendering, while distill and mix (which never read train.rendering) are computed once."""
    from lrm_safety.cli import main
    from lrm_safety.plan import study_plan

    text = (REPO / "examples" / "study.yaml").read_text()
    axis = "    # - {path: train.rendering, name: rendering, values: [prompt-completion, conversation]}"
    assert axis in text
    doc = study_doc()
    doc["spec"]["axes"].append(
        {"path": "train.rendering", "name": "rendering", "values": ["prompt-completion", "conversation"]}
    )
    study = Study.from_manifest(doc)
    plan = study_plan(study, REPO / "examples")
    units = {stage: [u for u in plan["units"] if u["stage"] == stage] for stage in ("distill", "mix", "train")}
    assert len(units["distill"]) == 6 and all(len(u["experiments"]) == 8 for u in units["distill"])
    assert len(units["mix"]) == 24 and all(len(u["experiments"]) == 2 for u in units["mix"])
    assert len(units["train"]) == 48 and all(len(u["experiments"]) == 1 for u in units["train"])
    for u in units["mix"]:
        renderings = {next(c for c in study.cells if c.name == n).labels["rendering"] for n in u["experiments"]}
        assert renderings == {"prompt-completion", "conversation"}
    path = REPO / "examples" / "_rendering_axis_test.yaml"  # beside the example: its relative paths still resolve
    try:
        path.write_text(text.replace(axis, axis.replace("# - ", "- ")))
        assert main(["render", str(path), "--plan"]) == 0
    finally:
        path.unlink(missing_ok=True)
    out = capsys.readouterr().out
    mix_lines = [ln for ln in out.splitlines() if ln.strip().startswith("mix ")]
    assert len(mix_lines) == 24 and all(ln.count(", ") == 1 for ln in mix_lines), "each mix shared by two renderings"


def test_math_distillation_is_one_unit_per_teacher_across_styles():
    from lrm_safety.plan import study_plan

    doc = study_doc()
    doc["spec"]["base"]["distill"]["mathPrompts"] = "s3://lrm-safety/data/math_prompts_4k.jsonl"
    doc["spec"]["base"]["mix"]["mathSource"] = "distill"
    study = Study.from_manifest(doc)
    plan = study_plan(study, REPO / "examples")
    math = [u for u in plan["units"] if u["stage"] == "distill-math"]
    assert len(math) == 1 and len(math[0]["experiments"]) == 24
    assert plan["with"]["mathDistillations"] == 1 and plan["without"]["mathDistillations"] == 24
    doc["spec"]["axes"].append({"path": "teacher.model", "values": ["deepseek-ai/DeepSeek-R1", "Qwen/QwQ-32B"]})
    two = study_plan(Study.from_manifest(doc), REPO / "examples")
    assert two["with"]["mathDistillations"] == 2, "once per teacher"


def study_doc():
    import yaml

    return yaml.safe_load((REPO / "examples" / "study.yaml").read_text())
