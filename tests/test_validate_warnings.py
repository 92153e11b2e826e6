"""`validate` warns (never fails) when the chosen rendering would train no reasoning for the student's template, and
its kind error names both kinds."""

import subprocess
import sys

import yaml


def _validate(tmp_path, student, rendering):
    doc = {
        "apiVersion": "lrmsafety.io/v1alpha1",
        "kind": "SafetyExperiment",
        "metadata": {"name": "w"},
        "spec": {
            "student": {"model": str(student)},
            "evaluate": {"dataRoot": "s3://d"},
            "train": {"rendering": rendering},
        },
    }
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(doc))
    return subprocess.run([sys.executable, "-m", "lrm_safety.cli", "validate", str(f)], capture_output=True, text=True)


def test_conversation_rendering_with_the_r1_template_warns(tmp_path, r1_tokenizer_dir):
    import shutil

    student = tmp_path / "r1-distill-qwen-7b"  # a model folder as a user has it: a config beside the tokenizer
    shutil.copytree(r1_tokenizer_dir, student)
    (student / "config.json").write_text('{"model_type": "qwen2", "transformers_version": "5.0.0"}')
    r1_tokenizer_dir = student
    r = _validate(tmp_path, r1_tokenizer_dir, "conversation")
    assert r.returncode == 0, r.stderr
    assert "valid SafetyExperiment 'w'" in r.stdout
    assert "warning: spec.train.rendering: conversation trains no reasoning" in r.stdout
    ok = _validate(tmp_path, r1_tokenizer_dir, "prompt-completion")
    assert ok.returncode == 0 and "spec.train.rendering" not in ok.stdout


def test_conversation_rendering_with_a_template_that_keeps_reasoning_is_quiet(tmp_path, smol_dir):
    r = _validate(tmp_path, smol_dir, "conversation")
    assert r.returncode == 0 and "spec.train.rendering" not in r.stdout, r.stdout


def test_unknown_student_says_it_cannot_check(tmp_path):
    r = _validate(tmp_path, "some-org/not-on-this-machine", "conversation")
    assert r.returncode == 0 and "tokenizer is not on this machine to check" in r.stdout


def test_kind_error_names_both_kinds(tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "lrmsafety.io/v1alpha1", "kind": "Pod", "metadata": {"name": "p"}}))
    r = subprocess.run([sys.executable, "-m", "lrm_safety.cli", "validate", str(f)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "kind: must be SafetyExperiment (got 'Pod'; a SafetyStudy" in r.stderr + r.stdout
