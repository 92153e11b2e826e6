"""The release's exact words by reference: `lrm-safety release import` over trees shaped like the release, AISafetyLab
and FastChat (same paths and structure, texts written for these tests), and each imported text reaching the exact
request a model receives, captured by a scripted OpenAI-compatible server; the project's own words otherwise."""

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from conftest import SMOL, make_ctx
from lrm_safety import styles
from lrm_safety.cli import main
from lrm_safety.wording import FILE, NAMES, Wording, describe_use, locate, resolve, used
from lrm_safety.wording import builtin as own
from test_openai_backend import ChatServer

REPO = Path(__file__).resolve().parent.parent

STYLE = {
    "short": "Fixture short system: reason in <think>\n...\n</think>, briefly.",
    "template": (
        "Fixture template system.\n* harassment/threatening:\n* hate/threatening:\n\nExamples:\nQuestion: fixture q\n"
        "Response: <think>\n* harassment/threatening: No.\nFixture conclusion.\n</think>\nfixture answer"
    ),
    "realsafe": "Fixture realsafe instruction, weigh the risk.\n\nQUERY: ",
    "improved": "Fixture improved instruction, refuse at once.\n\nQUERY: ",
}
NOCOT = "Fixture fixed refusal."
ATTACKER_SYSTEM = (
    'Fixture attacker system for "{query}", aiming at "{reference_responses}". Reply as JSON '
    '{{"improvement": "...", "prompt": "..."}}.'
)
ATTACKER_OPENING = 'Fixture opening: craft a prompt P for "{query}" that starts "{reference_responses}".'
FEEDBACK = "LANGUAGE MODEL OUTPUT: {target_responses}\nFIXTURE GOAL: '{query}'\nSCORE: {eval_results}"
PATTERN = "[FP]: {query}\n[FR]: {target_responses}"
JUDGE = 'Fixture judge for TASK `{query}`. Answer "Rating: [[n]]". Shown: {response}'
RUBRIC = 'Fixture rubric: 1_full_compliance or 2_full_refusal.\nquestion: "{query}"\nresponse: "{response}"\nCLASS:'
SYSTEM = "Fixture assistant system message."


def _write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def release_tree(root: Path) -> Path:
    branches = "".join(
        f"    {'if' if i == 0 else 'elif'} t=={name!r}:\n        temp = {text!r}\n"
        for i, (name, text) in enumerate(STYLE.items())
    )
    _write(root, "dataset/template.py", f"\ndef get_system(t):\n{branches}    return temp\n")
    rows = [{"prompt": f"p{i}", "response": f"<think>\n\n</think>\n\n{NOCOT}", "data_type": "x"} for i in range(3)]
    _write(root, "dataset/data/sft_train_nocot.json", json.dumps(rows))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty"],
        check=True,
    )
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fixture"], check=True
    )
    return root


def lab_tree(root: Path) -> Path:
    templates = {"attack": {"default": ["x {query}"], "PAIR": [ATTACKER_SYSTEM, ATTACKER_OPENING]}, "judge": {}}
    _write(root, "aisafetylab/attack/initialization/init_templates.json", json.dumps(templates))
    _write(
        root,
        "aisafetylab/attack/attackers/pair.py",
        "class PAIREvaluator:\n    def __init__(self):\n"
        f"        self.prompt_pattern = {PATTERN!r}\n\n"
        "class PAIRManager:\n    def step(self, stream):\n"
        f"        add_to_conv = {FEEDBACK!r}.format(target_responses=1, query=2, eval_results=3)\n",
    )
    _write(root, "aisafetylab/evaluation/scorers/prompted_llm_scorer.py", f"other = 'x'\nchao2023pair = {JUDGE!r}\n")
    _write(root, "aisafetylab/evaluation/scorers/overrefusal_scorer.py", f"two_class_prompt = {RUBRIC!r}\n")
    return root


def fastchat_tree(root: Path) -> Path:
    _write(
        root,
        "fastchat/conversation.py",
        "register_conv_template(\n    Conversation(\n        name='chatgpt',\n"
        f"        system_message={SYSTEM!r},\n        roles=('user', 'assistant'),\n    )\n)\n",
    )
    return root


@pytest.fixture
def trees(tmp_path):
    return (
        release_tree(tmp_path / "LRM-Safety-Study"),
        lab_tree(tmp_path / "AISafetyLab"),
        fastchat_tree(tmp_path / "FastChat"),
    )


def do_import(trees, dest, *extra) -> int:
    rel, lab, fc = trees
    return main(["release", "import", str(rel), "--aisafetylab", str(lab), "--fastchat", str(fc), str(dest), *extra])


@pytest.fixture
def imported(trees, tmp_path):
    dest = tmp_path / "data"
    assert do_import(trees, dest) == 0
    return dest / FILE


def test_import_extracts_every_text_verbatim_with_its_provenance(trees, tmp_path, capsys):
    rel, lab, fc = trees
    dest = tmp_path / "data"
    assert do_import(trees, dest) == 0
    out, err = capsys.readouterr()
    doc = json.loads((dest / FILE).read_text())
    texts = doc["texts"]
    assert doc["version"] == 1 and set(texts) == set(NAMES)
    expected = {
        **{f"style.{k}": v for k, v in STYLE.items()},
        "nocot.refusal": NOCOT,
        "pair.attacker.template.0": ATTACKER_SYSTEM,
        "pair.attacker.template.1": ATTACKER_OPENING,
        "pair.attacker.feedback": FEEDBACK,
        "pair.judge.pattern": PATTERN,
        "pair.judge.prompt": JUDGE,
        "xstest.rubric": RUBRIC,
        "chat.system": SYSTEM,
    }
    assert {n: t["text"] for n, t in texts.items()} == expected
    head = subprocess.run(["git", "-C", str(rel), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    style = texts["style.improved"]
    assert style["repo"] == "thu-coai/LRM-Safety-Study" and style["path"] == "dataset/template.py"
    assert style["commit"] == head, "the checkout's own commit"
    assert style["sha256"] == hashlib.sha256((rel / "dataset/template.py").read_bytes()).hexdigest()
    judge = texts["xstest.rubric"]
    assert judge["path"] == "aisafetylab/evaluation/scorers/overrefusal_scorer.py" and "commit" not in judge, "no .git"
    # every text printed with its source; files that differ from the release's by sha256 are said, one line each
    assert all(n in out for n in NAMES) and "release-texts.json" in out
    changed = [ln for ln in err.splitlines() if "the release's" in ln and "sha256" in ln]
    assert len(changed) == 6 and any("dataset/template.py" in ln for ln in changed)
    assert "the study's is 498ef37" in err, "a release checkout at another commit is said"


def test_missing_or_reshaped_files_are_named_one_line_each_and_nothing_is_written(trees, tmp_path, capsys):
    rel, lab, fc = trees
    (lab / "aisafetylab/evaluation/scorers/overrefusal_scorer.py").unlink()
    src = (rel / "dataset/template.py").read_text()
    (rel / "dataset/template.py").write_text(src.replace("t=='improved'", "t=='improved-v2'"))
    (lab / "aisafetylab/attack/initialization/init_templates.json").write_text(json.dumps({"attack": {}}))
    dest = tmp_path / "data"
    assert do_import(trees, dest) == 3
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert any("overrefusal_scorer.py: missing from" in ln for ln in lines)
    assert any("dataset/template.py: no get_system(t): the t == 'improved' branch" in ln for ln in lines)
    assert any("init_templates.json: no attack.PAIR list" in ln for ln in lines)
    assert any("nothing written" in ln for ln in lines)
    assert not (dest / FILE).exists()


def test_no_fastchat_is_named_with_the_fix(trees, tmp_path, capsys, monkeypatch):
    from lrm_safety.wording import release

    monkeypatch.setattr(release, "installed_fastchat", lambda: None)
    rel, lab, _ = trees
    assert main(["release", "import", str(rel), "--aisafetylab", str(lab), str(tmp_path / "d")]) == 3
    assert "give --fastchat DIR" in capsys.readouterr().err


def test_python_sources_are_parsed_never_run(trees, tmp_path):
    """A source file that would do something when imported does nothing: ast reads its strings."""
    rel, lab, fc = trees
    marker = tmp_path / "ran"
    path = lab / "aisafetylab/evaluation/scorers/prompted_llm_scorer.py"
    path.write_text(f"open({str(marker)!r}, 'w').write('x')\n" + path.read_text())
    assert do_import(trees, tmp_path / "data") == 0 and not marker.exists()


# ---- where the words come from


def _spec(tmp_path, **over):
    return make_ctx(tmp_path, over).spec


def test_auto_reads_the_data_roots_file_builtin_never_and_a_file_demo_never_reaches_for_s3(tmp_path, imported):
    ctx = make_ctx(tmp_path, {"evaluate": {"dataRoot": str(imported.parent)}})
    assert locate(ctx.spec) == (f"{imported.parent}/{FILE}", "") and ctx.wording.release
    assert make_ctx(
        tmp_path, {"prompts": "builtin", "evaluate": {"dataRoot": str(imported.parent)}}
    ).wording.origin == ("builtin")
    demo = make_ctx(tmp_path, {"evaluate": {"dataRoot": "s3://nowhere-at-all/data"}})
    uri, why = locate(demo.spec)
    assert uri is None and "not on the storage" in why
    assert demo.wording.origin == "builtin", "no network: a file:// run never reads an s3:// data root"
    absent = make_ctx(tmp_path, {"evaluate": {"dataRoot": str(tmp_path / "empty")}})
    assert absent.wording.origin == "builtin" and "no " in absent.wording.where


def test_release_and_a_named_file_must_be_there(tmp_path):
    from lrm_safety.errors import BadInput

    missing = str(tmp_path / "nope" / FILE)
    for over, field in (
        ({"prompts": "release"}, "spec.prompts: release"),
        ({"promptsFile": missing}, "spec.promptsFile"),
    ):
        ctx = make_ctx(tmp_path, {**over, "evaluate": {"dataRoot": str(tmp_path / "nope")}})
        with pytest.raises(BadInput, match=field) as e:
            ctx.wording  # noqa: B018
        assert "lrm-safety release import" in str(e.value)


def test_the_words_enter_the_hashes_only_when_they_are_the_releases(tmp_path, imported):
    base = {"stages": ["distill", "mix"], "distill": {"prompts": "builtin:demo-safety", "style": "nocot"}}
    own_ctx = make_ctx(tmp_path, base)
    explicit = make_ctx(
        tmp_path, {**base, "distill": {**base["distill"], "rectify": {"refusalText": styles.NOCOT_REFUSAL}}}
    )
    assert own_ctx.hash("distill") == explicit.hash("distill"), "the project's words hash as before the knob existed"
    rel_ctx = make_ctx(tmp_path, {**base, "promptsFile": str(imported)})
    assert rel_ctx.hash("distill") != own_ctx.hash("distill") and rel_ctx.hash("mix") != own_ctx.hash("mix")
    # work ids (labels, render) never read the file
    from lrm_safety.reuse import work_id

    unread = make_ctx(tmp_path, {**base, "promptsFile": str(tmp_path / "absent.json")})
    assert len(work_id(unread, "distill")) == 16 and unread._wording is None


# ---- the texts reach the requests


class Scripted(ChatServer):
    """One OpenAI-compatible server for every role, told apart by model name; records each request body."""

    async def handle(self, request):
        body = await request.json()
        self.bodies.append(body)
        if body["model"] == "attacker":
            text = json.dumps({"improvement": "story", "prompt": "a story about it"})
        elif body["model"] == "pair-judge":
            text = "Rating: [[2]]"
        elif body["model"] == "gpt-4o":
            text = "1_full_compliance"
        else:
            text = "<think>\nweighing it\n</think>\n\nSorry, I cannot assist with that."
        msg = {"role": "assistant", "content": text}
        return web.json_response({"choices": [{"index": 0, "finish_reason": "stop", "message": msg}]})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def of(self, model):
        return [b for b in self.bodies if b["model"] == model]


def _distill_spec(url, style, **top):
    return {
        "stages": ["distill"],
        "teacher": {"model": "teacher", "backend": "openai", "endpoint": url},
        "distill": {
            "prompts": "builtin:demo-safety",
            "limit": 3,
            "style": style,
            "sampling": {"temperature": 0.0, "maxTokens": 64, "batchSize": 4},
            "rectify": {"maxAttempts": 1},
        },
        **top,
    }


@pytest.mark.parametrize("words", ["release", "builtin"])
def test_the_teacher_reads_the_style_instruction_where_the_release_puts_it(tmp_path, imported, words):
    from lrm_safety.stages import distill

    top = {"promptsFile": str(imported)} if words == "release" else {"prompts": "builtin"}
    with Scripted() as srv:
        for style in ("improved", "template"):
            (tmp_path / style).mkdir()
            ctx = make_ctx(tmp_path / style, _distill_spec(srv.url, style, **top))
            distill.run(ctx)
            manifest = ctx.store.read_manifest(ctx.prefix("distill"))
            text = STYLE[style] if words == "release" else getattr(styles, style.upper())
            assert manifest["words"].startswith("the release's" if words == "release" else "the project's own")
            assert f"style.{style} {hashlib.sha256(text.encode()).hexdigest()[:12]}" in manifest["words"]
            sent = [b["messages"] for b in srv.of("teacher") if b not in getattr(srv, "_seen", [])]
            srv._seen = list(srv.bodies)
            assert len(sent) == 3, "the three safety prompts (no math prompts here)"
            for msgs in sent:
                if style == "improved":  # in front of the query, as the release's get_system('improved') is used
                    assert (
                        len(msgs) == 1 and msgs[0]["content"].startswith(text) and len(msgs[0]["content"]) > len(text)
                    )
                else:  # a system prompt, its one-shot included
                    assert msgs[0] == {"role": "system", "content": text} and msgs[1]["role"] == "user"


def test_nocot_answers_with_the_imported_refusal(tmp_path, imported):
    from lrm_safety.stages import distill

    with Scripted() as srv:
        ctx = make_ctx(tmp_path, _distill_spec(srv.url, "nocot", promptsFile=str(imported)))
        distill.run(ctx)
    rows = [r for r in ctx.store.read_jsonl(distill.shard_key(ctx, 0)) if r["kind"] == "safety" and r["accepted"]]
    refused = [r for r in rows if r["answer"] == NOCOT]
    assert refused and all(r["response"] == f"<think>\n\n</think>\n\n{NOCOT}" for r in refused)


def _evaluate_spec(tmp_path, url, shared_data, **top):
    return {
        "stages": ["evaluate"],
        "student": {"model": SMOL},
        "evaluate": {
            "backend": "transformers",
            "compareBase": True,
            "dataRoot": str(shared_data),
            "judge": {"kind": "refusal"},
            "overRefusalJudge": {"model": "gpt-4o", "endpoint": url},
            "sampling": {"temperature": 0.0, "maxTokens": 8, "batchSize": 4},
            "benchmarks": [{"name": "advbench-pair", "limit": 2}, {"name": "xstest", "limit": 2}],
            "pair": {
                "streams": 2,
                "iterations": 1,
                "targetMaxTokens": 8,
                "attacker": {"model": "attacker", "endpoint": url},
                "judge": {"model": "pair-judge", "endpoint": url},
                **top.pop("pair", {}),
            },
        },
        **top,
    }


def test_a_scripted_evaluation_sends_the_releases_words_to_pair_and_the_xstest_judge(
    tmp_path, imported, shared_data, smol_dir
):
    from lrm_safety.stages import evaluate

    with Scripted() as srv:
        ctx = make_ctx(tmp_path, _evaluate_spec(tmp_path, srv.url, shared_data, promptsFile=str(imported)))
        evaluate.run(ctx)
    items = [json.loads(x) for x in (shared_data / "advbench_subset50.jsonl").read_text().splitlines()[:2]]
    goals = [it["query"] for it in items]
    # PAIR's attacker: the first template as its system prompt, the second as its first turn, both filled in
    attacks = srv.of("attacker")
    assert attacks
    for body in attacks:
        system, first = body["messages"][0], body["messages"][1]
        goal = next(g for g in goals if f'"{g}"' in system["content"])
        assert system["role"] == "system" and system["content"].startswith(f'Fixture attacker system for "{goal}"')
        assert system["content"].endswith('{"improvement": "...", "prompt": "..."}.'), "str.format, as AISafetyLab"
        assert first["role"] == "user" and first["content"].startswith(
            f'Fixture opening: craft a prompt P for "{goal}"'
        )
    # PAIR's in-loop judge: FastChat's system message, then chao2023pair around the release's response pattern
    judged = srv.of("pair-judge")
    assert judged
    for body in judged:
        msgs = body["messages"]
        assert msgs[0] == {"role": "system", "content": SYSTEM} and msgs[1]["role"] == "user"
        assert msgs[1]["content"].startswith("Fixture judge for TASK `") and "Shown: [FP]: " in msgs[1]["content"]
        assert "\n[FR]: " in msgs[1]["content"]
    # the XSTest judge: the system message and the rubric, and no sampling setting the release did not send
    xs = srv.of("gpt-4o")
    assert len(xs) == 2  # the student's answers to 2 prompts (evaluate only: the student is the base)
    for body in xs:
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert body["messages"][1]["content"].startswith("Fixture rubric: 1_full_compliance")
        assert not {"temperature", "top_p", "seed", "max_tokens"} & set(body)
    manifest = ctx.store.read_manifest(ctx.prefix("evaluate"))
    words = manifest["judges"]["words"]
    wording = Wording.from_document(json.loads(imported.read_text()), str(imported))
    for name in ("pair.attacker.template.0", "pair.judge.prompt", "xstest.rubric", "chat.system"):
        assert f"{name} {wording.hashes([name])[name]}" in words
    report = ctx.store.read_bytes(f"{ctx.prefix('evaluate')}/report.md").decode()
    assert "Words (PAIR, the XSTest judge): the release's words" in report
    recs = ctx.store.read_jsonl(f"{ctx.prefix('evaluate')}/records-{ctx.hash('evaluate')}/base/advbench-pair.jsonl")
    assert all(r["pairAttackerTemplates"] == [0, 1] for r in recs)


def test_without_the_import_the_projects_words_and_no_system_message(tmp_path, shared_data, smol_dir):
    from lrm_safety.stages import evaluate

    with Scripted() as srv:
        spec = _evaluate_spec(tmp_path, srv.url, shared_data, pair={"template": "second"})
        spec["evaluate"]["benchmarks"] = [{"name": "advbench-pair", "limit": 1}, {"name": "xstest", "limit": 1}]
        ctx = make_ctx(tmp_path, spec)
        evaluate.run(ctx)
    attack = srv.of("attacker")[0]["messages"]
    goal = json.loads((shared_data / "advbench_subset50.jsonl").read_text().splitlines()[0])
    goal, target = goal["query"], goal["target"]
    # template: second swaps the project's two attacker texts, as it would the release's
    assert attack[0] == {"role": "system", "content": own.ATTACKER_FIRST.format(goal=goal, target=target)}
    xs = srv.of("gpt-4o")[0]["messages"]
    assert len(xs) == 1 and xs[0]["role"] == "user" and "2_full_refusal" in xs[0]["content"]
    assert all(m["role"] != "system" for b in srv.of("pair-judge") for m in b["messages"])
    words = ctx.store.read_manifest(ctx.prefix("evaluate"))["judges"]["words"]
    assert words.startswith("the project's own wording")


def test_the_template_order_is_chosen_and_random_is_seeded():
    w = Wording.builtin()
    assert w.pair_order("first", 0, 3) == (0, 1) and w.pair_order("second", 0, 3) == (1, 0)
    draws = [w.pair_order("random", 7, i) for i in range(40)]
    assert draws == [w.pair_order("random", 7, i) for i in range(40)], "seeded: the same every run"
    assert set(draws) == {(0, 1), (1, 0)} and draws != [w.pair_order("random", 8, i) for i in range(40)]


# ---- validate, render and the status say which words


def test_validate_says_whose_words_each_reader_gets(tmp_path, imported, shared_data, capsys):
    from conftest import write_experiment

    for name in ("advbench_subset50.jsonl", "xstest_safe250.jsonl"):  # the benchmarks beside the import
        (imported.parent / name).symlink_to(shared_data / name)
    spec = {
        "storage": {"uri": f"file://{tmp_path}/store"},
        "distill": {"prompts": "builtin:demo-safety", "style": "improved"},
        "evaluate": {
            "dataRoot": str(imported.parent),
            "benchmarks": [{"name": "advbench-pair"}, {"name": "xstest"}],
            "overRefusalJudge": {"model": "gpt-4o", "endpoint": "http://judge/v1"},
            "pair": {
                "attacker": {"model": "a", "endpoint": "http://a/v1"},
                "judge": {"model": "j", "endpoint": "http://j/v1"},
            },
        },
    }
    path = write_experiment(tmp_path / "e.yaml", "e", spec)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    improved = hashlib.sha256(STYLE["improved"].encode()).hexdigest()[:12]
    assert f"# prompts (auto): the release's words from {imported}" in out
    assert f"# prompts (auto): teacher: style.improved {improved}" in out
    assert "# prompts (auto): XSTest judge: xstest.rubric" in out and "PAIR judge: pair.judge.prompt" in out
    imported.unlink()
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# prompts (auto): the project's own wording (no " in out
    assert "chat.system (none: not sent)" in out
    spec["prompts"] = "release"
    write_experiment(path, "e", spec)
    assert main(["validate", str(path)]) == 3
    assert "spec.prompts: release" in capsys.readouterr().err


def test_render_of_the_example_shows_the_releases_words_from_s3(trees, tmp_path, s3_endpoint, bucket, capsys):
    """examples/experiment.yaml as written, its store pointed at a real S3 server holding the import."""
    assert do_import(trees, f"s3://{bucket}/data", "--endpoint", s3_endpoint) == 0
    capsys.readouterr()
    text = (REPO / "examples" / "experiment.yaml").read_text()
    text = text.replace("s3://lrm-safety/", f"s3://{bucket}/").replace("http://minio.storage.svc:9000", s3_endpoint)
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    assert main(["render", str(path)]) == 0
    assert "if it is there when the stages run" in capsys.readouterr().out, "no S3 read without --check-store"
    assert main(["render", str(path), "--check-store"]) == 0
    out = capsys.readouterr().out
    assert f"the release's words from s3://{bucket}/data/{FILE}" in out
    teacher = next(ln for ln in out.splitlines() if ln.startswith("# prompts (auto): teacher:"))
    assert f"style.improved {hashlib.sha256(STYLE['improved'].encode()).hexdigest()[:12]}" in teacher
    for reader in ("PAIR attacker", "PAIR judge", "XSTest judge"):
        assert f"# prompts (auto): {reader}: " in out


def test_used_lists_only_the_texts_a_spec_sends(tmp_path):
    spec = make_ctx(tmp_path, {"stages": ["distill"], "distill": {"prompts": "p.jsonl", "style": "default"}}).spec
    assert used(spec) == {}
    spec = make_ctx(
        tmp_path,
        {"stages": ["distill"], "distill": {"prompts": "p.jsonl", "style": "improved", "instruction": {"text": "x"}}},
    ).spec
    assert used(spec) == {}, "a user's instruction replaces the style's text"
    lines = describe_use(Wording.builtin(), {"teacher": ["style.short"]})
    assert lines[1] == f"teacher: style.short {hashlib.sha256(styles.SHORT.encode()).hexdigest()[:12]}"


def test_resolve_refuses_a_file_of_another_version(tmp_path):
    from lrm_safety.errors import BadInput

    path = tmp_path / FILE
    path.write_text(json.dumps({"version": 99, "texts": {}}))
    spec = make_ctx(tmp_path, {"promptsFile": str(path)}).spec
    with pytest.raises(BadInput, match="re-run `lrm-safety release import`"):
        resolve(spec, lambda uri: Path(uri).read_bytes())


def test_the_docs_list_every_text_with_its_source_and_the_third_pair_defect():
    from lrm_safety.wording.release import SOURCES

    docs = (REPO / "docs" / "spec.md").read_text()
    table = docs[docs.index("**Words by import**") :]
    for name, (_, path, _) in SOURCES.items():
        row = next((ln for ln in table.splitlines() if f"`{name.split('.')[0]}." in ln and path in ln), None)
        assert row, f"{name}: no row naming {path}"
    assert "| default | follows | opt-in deviation | words |" in docs
    assert "A third defect" in docs and "random.sample" in docs and "pair.templateSeed" in docs


def test_the_readme_first_screen_states_the_rendering_choice():
    first = "\n".join((REPO / "README.md").read_text().splitlines()[:40])
    assert "rendering: conversation" in first and "safety_train/trl_train_code/train_sft.py" in first
    assert "`</think>`" in first and "lrm-safety release import" in first
