"""Stage progress objects: throttled writes, shards combined, the printer column's text."""

from lrm_safety.progress import ProgressReporter, column, combine, progress_key


def test_reports_are_throttled_and_carry_rate_and_eta(tmp_path):
    from lrm_safety.store import open_store

    store = open_store(f"file://{tmp_path}")
    times = iter([100.0, 100.0, 105.0, 160.0, 161.0])
    r = ProgressReporter(store, "e/train", 100, "steps", every_s=15, clock=times.__next__)
    assert r.update(10)["done"] == 10, "the first report is written"
    assert r.update(12) is None, "5 s later: throttled"
    doc = r.update(40, loss=0.5)
    assert doc["percent"] == 40.0 and doc["etaSeconds"] == 120 and doc["detail"] == {"loss": 0.5}
    assert store.read_json(progress_key("e/train")) == doc
    assert r.update(100, force=True)["etaSeconds"] == 0


def test_shards_combine_and_the_column_reads_well():
    a = {"done": 4, "total": 8, "unit": "prompts", "etaSeconds": 60, "updatedAt": "1", "detail": {"accepted": 3}}
    b = {"done": 2, "total": 8, "unit": "prompts", "etaSeconds": 2600, "updatedAt": "2", "detail": {"accepted": 2}}
    c = combine([a, b])
    assert (c["done"], c["total"], c["percent"], c["etaSeconds"], c["detail"]) == (6, 16, 37.5, 2600, {"accepted": 5})
    assert column("distill", c) == "distill 6/16 (38%) ETA 43m"
    assert (
        column("train", {"done": 120, "total": 312, "percent": 38.5, "etaSeconds": 4000})
        == "train 120/312 (38%) ETA 1h06m"
    )
    assert column("train", None) == "-" and combine([]) is None
