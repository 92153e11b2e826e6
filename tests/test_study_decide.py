"""The study's decision function, pure: maxParallel counts cells created but not yet seen by the watch, so a
lagging index neither re-creates a cell nor runs more than maxParallel at once."""

from safety_operator.books import CREATED_GRACE_SECONDS, with_recent_creates
from safety_operator.study_status import decide_study


def _study(n=6, max_parallel=2, **spec):
    return {
        "apiVersion": "lrmsafety.io/v1alpha1",
        "kind": "SafetyStudy",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "maxParallel": max_parallel,
            "baseline": False,
            "base": {
                "stages": ["mix"],
                "mix": {"safetySource": "s3://d/s.jsonl", "mathCount": 0},
                "evaluate": {"dataRoot": "s3://d"},
            },
            "axes": [{"path": "mix.seed", "values": list(range(n))}],
            **spec,
        },
        "status": {},
    }


def _child(phase):
    return {"phase": phase, "stage": None, "suspend": False, "metrics": {}}


def test_max_parallel_creates_only_the_free_slots_in_grid_order():
    acts = decide_study(_study(), {})
    names = [o["metadata"]["name"] for o in acts.create]
    assert len(names) == 2
    seen = {names[0]: _child("Succeeded"), names[1]: _child("Running")}
    again = [o["metadata"]["name"] for o in decide_study(_study(), seen).create]
    assert len(again) == 1 and again[0] not in names


def test_a_cells_row_carries_its_headline_metrics_code_included():
    from safety_operator.study_status import trim_child

    first = decide_study(_study(), {}).create[0]["metadata"]["name"]
    child = trim_child(
        {
            "spec": {},
            "status": {
                "phase": "Succeeded",
                "metrics": {
                    "asr": 0.1,
                    "overRefusal": 0.2,
                    "mathAccuracy": 0.5,
                    "codeAccuracy": 0.25,
                    "benchmarks": {"x": {}},
                },
            },
        }
    )
    row = next(r for r in decide_study(_study(), {first: child}).status["cells"] if r["name"] == first)
    assert (row["asr"], row["overRefusal"], row["mathAccuracy"], row["codeAccuracy"]) == (0.1, 0.2, 0.5, 0.25)
    assert "benchmarks" not in row, "the row stays small: headlines only"


def test_cells_created_but_not_yet_indexed_hold_their_slots():
    first = [o["metadata"]["name"] for o in decide_study(_study(), {}).create]
    created = dict.fromkeys(first, 100.0)
    # The watch has shown nothing yet: without the memo the same two cells would be created again.
    assert [o["metadata"]["name"] for o in decide_study(_study(), {}).create] == first
    lagging = with_recent_creates({}, created, now=101.0)
    assert decide_study(_study(), lagging).create == []
    # One is indexed as finished: exactly one slot frees, and the memo forgets the indexed cell.
    lagging = with_recent_creates({first[0]: _child("Succeeded")}, created, now=102.0)
    assert list(created) == [first[1]]
    assert len(decide_study(_study(), lagging).create) == 1


def test_a_cell_missing_after_the_grace_is_created_again():
    created = {"gone": 0.0}
    assert "gone" in with_recent_creates({}, created, now=CREATED_GRACE_SECONDS - 1)
    assert with_recent_creates({}, created, now=CREATED_GRACE_SECONDS + 1) == {} and created == {}


def test_a_burst_of_cell_events_reconciles_the_study_at_most_twice(monkeypatch):
    """One run in flight and one queued: the queued run reads the index when it starts, so it sees every event."""
    import asyncio
    import time

    from safety_operator.controller import Controller
    from safety_operator.settings import Settings

    ctl = Controller(Settings())
    index: dict = {("ns", "s"): []}
    ctl.watched.keep(study_children=index)
    seen: list[int] = []

    def reconcile(namespace, name, children):
        seen.append(len(children))
        time.sleep(0.05)
        return True

    ctl.reconcile_study = reconcile

    async def burst():
        async def event(i):
            index[("ns", "s")] = [{"name": f"c{j}"} for j in range(i + 1)]
            await ctl.run_study("ns", "s")

        await asyncio.gather(*(event(i) for i in range(20)))

    asyncio.run(burst())
    assert 1 <= len(seen) <= 2 and seen[-1] == 20


def test_keyword_judged_cells_give_a_best_refusal_rate_not_a_best_asr():
    from safety_operator.study_status import trim_child

    names = [o["metadata"]["name"] for o in decide_study(_study(max_parallel=6), {}).create]
    kids = {
        n: trim_child({"spec": {}, "status": {"phase": "Succeeded", "metrics": {"refusalRate": r, "overRefusal": 0.1}}})
        for n, r in zip(names[:2], (0.4, 0.7))
    }
    st = decide_study(_study(max_parallel=6), kids).status
    assert st["bestAsr"] is None and st["bestRefusalRate"] == 0.7 and st["display"] == {"bestRefusalRate": "70.0%"}
    assert next(r for r in st["cells"] if r["name"] == names[0])["refusalRate"] == 0.4
