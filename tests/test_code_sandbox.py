"""The code benchmark's sandbox: a correct program passes; an infinite loop, a fork bomb and a network call fail
their test and leave nothing running; the loader reads LiveCodeBench's formats."""

import base64
import json
import pickle
import time
import zlib

import psutil

from lrm_safety.evaluation.judges.code import decode_tests, extract_program, grade_code, prompt_for, run_tests

SUM = [
    {"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
    {"input": "10 -4\n", "output": "6", "testtype": "stdin"},
]


def _answer(code):
    return f"<think>\nRead two ints and add them.\n</think>\n\nHere it is:\n```python\n{code}\n```"


def test_a_correct_solution_passes_and_a_wrong_one_fails():
    ok = grade_code(_answer("a, b = map(int, input().split())\nprint(a + b)"), {"tests": SUM})
    assert ok == {"passed": True, "passedTests": 2, "tests": 2, "error": None}
    wrong = grade_code(_answer("a, b = map(int, input().split())\nprint(a - b)"), {"tests": SUM})
    assert not wrong["passed"] and wrong["error"] == "test 0: wrong answer"
    assert grade_code("I think the answer is to add them.", {"tests": SUM})["error"] == "no code block in the answer"


def test_functional_problems_call_the_solution_method():
    code = (
        "class Solution:\n    def twoSum(self, nums, target):\n"
        "        return [0, 1] if nums[0] + nums[1] == target else []"
    )
    tests = [{"input": "[2, 7, 11]\n9", "output": "[0, 1]", "testtype": "functional"}]
    assert run_tests(code, tests, fn_name="twoSum")["passed"]


def test_an_infinite_loop_is_killed_at_the_timeout():
    t0 = time.monotonic()
    r = run_tests("while True:\n    pass", SUM[:1], timeout_s=2)
    assert not r["passed"] and "timed out" in r["error"] and time.monotonic() - t0 < 10


def _sandboxed():
    """Live (not zombie) processes running a sandboxed program."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and p.info["cmdline"][-3:] == ["-I", "-S", "main.py"]:
            out.append(p)
    return out


def test_a_fork_bomb_is_contained_and_reaped():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    t0 = time.monotonic()
    r = run_tests(bomb, SUM[:1], timeout_s=3)
    assert not r["passed"] and time.monotonic() - t0 < 15
    deadline = time.monotonic() + 5
    while _sandboxed() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sandboxed() == [], "no forked process outlives the test"


def test_a_network_call_fails():
    """A server is listening on this machine's loopback: outside the sandbox the program would reach it."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint(3)"
        r = run_tests(code, SUM[:1], timeout_s=5)
    assert not r["passed"] and "unreachable" in r["error"].lower(), r


def test_loader_reads_public_json_and_private_pickled_tests_and_builds_the_prompt():
    private = [{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(private)))).decode()
    assert decode_tests(json.dumps(SUM)) == SUM and decode_tests(packed) == private
    # The fork's DeepSeekAPI layout (lcb_runner/prompts/code_generation.py, get_generic_question_template_answer).
    p = prompt_for({"question_content": "Add two numbers.", "starter_code": ""})
    assert p.startswith("### Question:\nAdd two numbers.\n\n### Format: Read the input from stdin")
    assert "```python\n# YOUR CODE HERE\n```\n\n### Answer:" in p
    starter = prompt_for({"question_content": "q", "starter_code": "class Solution:\n    def f(self): ..."})
    assert "### Format: Use the starter code" in starter and "```python\nclass Solution:" in starter
    # extraction_utils.py extract_code: between the last two lines holding ```, on the whole output
    assert extract_program("```python\nx = 1\n```\nthen\n```python\nprint(2)\n```") == "print(2)"
    assert extract_program("<think>\n```python\nprint(1)\n```\n</think>\n\nDone.") == "print(1)", "reasoning too"
    assert extract_program("no code") is None and extract_program("```python\nprint(1)") is None


def test_grading_follows_the_fork():
    """testing_util.py: stdout lines as text or exact decimals (no tolerance), the import prelude, exit() as a
    normal end, the first failing test ends the run; a functional tuple equals its list."""
    from lrm_safety.evaluation.judges.code import same_output

    assert same_output("2.5\n", "2.50", False) and same_output("1 2\n", " 1 2 ", False)
    assert not same_output("0.3333", "0.333", False), "exact decimals, no tolerance"
    assert not same_output("1\n2", "1", False) and not same_output("abc", "abd", False)
    assert run_tests("print(gcd(4, 6)); print(deque([1]).pop())", [{"input": "", "output": "2\n1"}])["passed"], (
        "the fork's prelude imports math, collections, ..."
    )
    assert run_tests("print(3)\nexit()\nprint(4)", [{"input": "", "output": "3"}])["passed"]
    r = run_tests(
        "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)",
        [{"input": "1 2", "output": "3"}, {"input": "9 9", "output": "18"}, {"input": "1 1", "output": "2"}],
    )
    assert not r["passed"] and r["passedTests"] == 1 and "test 1" in r["error"], "stopped at the first failure"
    pair = "class Solution:\n    def f(self, x):\n        return (x, x)"
    assert run_tests(pair, [{"input": "3", "output": "[3, 3]"}], fn_name="f")["passed"]


def test_livecodebench_benchmark_end_to_end_on_its_format(tmp_path):
    """The loader reads LiveCodeBench's JSONL, the stage's judging runs the sandbox, the report says pass@1."""
    from conftest import make_ctx
    from lrm_safety.evaluation import benchmarks as bm
    from lrm_safety.evaluation.report import compute
    from lrm_safety.stages.evaluate import judge_records

    private = base64.b64encode(
        zlib.compress(pickle.dumps(json.dumps([{"input": "7 8\n", "output": "15\n", "testtype": "stdin"}])))
    ).decode()
    rows = [
        {
            "question_id": "abc1",
            "question_content": "Read two integers and print their sum.",
            "starter_code": "",
            "public_test_cases": json.dumps(SUM),
            "private_test_cases": private,
            "metadata": "{}",
        },
        {
            "question_id": "lc2",
            "question_content": "Return the square.",
            "starter_code": "class Solution:\n    def sq(self, x): ...",
            "public_test_cases": json.dumps([{"input": "4", "output": "16", "testtype": "functional"}]),
            "private_test_cases": "[]",
            "metadata": json.dumps({"func_name": "sq"}),
        },
    ]
    (tmp_path / "lcb.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ctx = make_ctx(
        tmp_path,
        {
            "evaluate": {
                "dataRoot": "/d",
                "benchmarks": [{"name": "livecodebench", "path": str(tmp_path / "lcb.jsonl")}],
            }
        },
    )
    bench = ctx.spec.evaluate.benchmarks[0]
    items = bm.load_items(ctx, bench)
    assert len(items[0]["tests"]) == 3 and items[1]["fn_name"] == "sq"
    assert bm.sampling_for(bench).max_tokens == 30000
    recs = [
        {"item": 0, "response": _answer("a, b = map(int, input().split())\nprint(a + b)")},
        {"item": 1, "response": _answer("class Solution:\n    def sq(self, x):\n        return x * x + 1")},
    ]
    judge_records("code", items, recs, judge=None)
    assert [r["passed"] for r in recs] == [True, False]
    m = compute({"trained": {"livecodebench": recs}}, {"livecodebench": "code"})["benchmarks"]["livecodebench"]
    assert m["metric"] == "passAt1" and m["trained"]["value"] == 0.5
