"""The JIT-extension cache clears build locks that no live run can own, and only those."""

import fcntl
import os

from lrm_safety.training.extension_cache import ENV, extension_cache


def _plant(root):
    baton = root / "deepspeed_shm_comm" / "lock"
    baton.parent.mkdir(parents=True)
    baton.touch()
    (root / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").write_bytes(b"built")
    return baton


def test_a_lock_left_by_a_killed_run_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path))
    baton = _plant(tmp_path)
    with extension_cache() as (root, removed):
        assert root == tmp_path and os.environ[ENV] == str(tmp_path)
        assert removed == [baton] and not baton.exists()
        assert (tmp_path / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").exists(), "built ops are kept"


def test_a_lock_is_kept_while_another_run_holds_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path))
    baton = _plant(tmp_path)
    with open(tmp_path / ".lrm-safety.flock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_SH)  # a concurrent training, maybe mid-build
        with extension_cache() as (_, removed):
            assert removed == [] and baton.exists()
    with extension_cache() as (_, removed):
        assert removed == [baton], "once that run is gone the lock is stale"


def test_two_runs_share_the_cache_and_the_variable_is_restored(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("LRM_SAFETY_CACHE", str(tmp_path))
    with extension_cache() as (root, _):
        assert root == tmp_path / "torch_extensions" and os.environ[ENV] == str(root)
        baton = _plant(root)
        with extension_cache() as (_, removed):
            assert removed == [] and baton.exists(), "a run in the same cache may be building"
    assert ENV not in os.environ
