"""The store against a real S3 server (SeaweedFS) and file://, same tests."""

import os

import pytest

from lrm_safety.store import MANIFEST, FileStore, S3Store, open_store


def test_roundtrip_and_listing(store):
    store.write_bytes("exp/a/one.txt", b"hello")
    store.write_jsonl("exp/a/rows.jsonl", [{"i": 1}, {"i": 2, "s": "é"}])
    store.write_json("exp/b/x.json", {"k": [1, 2]})
    assert store.read_bytes("exp/a/one.txt") == b"hello"
    assert store.read_jsonl("exp/a/rows.jsonl") == [{"i": 1}, {"i": 2, "s": "é"}]
    assert store.read_json("exp/b/x.json") == {"k": [1, 2]}
    assert store.exists("exp/a/one.txt") and not store.exists("exp/a/nope")
    assert store.size("exp/a/one.txt") == 5 and store.size("exp/a/nope") is None
    assert store.list("exp/a/") == ["exp/a/one.txt", "exp/a/rows.jsonl"]
    assert store.list("exp/") == ["exp/a/one.txt", "exp/a/rows.jsonl", "exp/b/x.json"]
    assert store.delete_prefix("exp/a/") == 2
    assert store.list("exp/") == ["exp/b/x.json"]
    if isinstance(store, FileStore):
        assert not (store.root / "exp" / "a").exists() and (store.root / "exp" / "b").is_dir()
    with pytest.raises(FileNotFoundError):
        store.read_bytes("exp/a/one.txt")


def test_overwrite_is_whole(store):
    store.write_bytes("k", b"x" * 1000)
    store.write_bytes("k", b"short")
    assert store.read_bytes("k") == b"short"


def test_interrupted_write_leaves_nothing(store):
    def chunks():
        yield b"first half "
        raise KeyboardInterrupt("pod killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        store.write_stream("exp/stage/data.jsonl", chunks())
    assert not store.exists("exp/stage/data.jsonl")
    assert store.list("exp/") == []


def test_manifest_and_is_done(store):
    prefix = "exp/mix"
    store.write_jsonl(f"{prefix}/train.jsonl", [{"a": 1}])
    assert not store.is_done(prefix, "h1")
    m = store.write_manifest(prefix, stage="mix", config_hash="h1", files=[f"{prefix}/train.jsonl"], counts={"n": 1})
    assert m["files"][0]["key"] == "train.jsonl" and len(m["files"][0]["sha256"]) == 64
    assert store.is_done(prefix, "h1")
    assert not store.is_done(prefix, "h2"), "a different config must not count as done"
    # A listed file that was later truncated or removed invalidates the manifest.
    store.write_bytes(f"{prefix}/train.jsonl", b"")
    assert not store.is_done(prefix, "h1")


def test_interrupted_stage_is_not_done(store):
    """Crash after data but before the manifest: is_done refuses; a crash mid-manifest leaves no manifest."""
    prefix = "exp/distill"
    store.write_jsonl(f"{prefix}/shard-00000.jsonl", [{"id": 1}])
    assert not store.is_done(prefix, "h")

    def broken():
        yield b'{"stage": "distill", "configHash": "h", '
        raise SystemExit(137)

    with pytest.raises(SystemExit):
        store.write_stream(f"{prefix}/{MANIFEST}", broken())
    assert not store.exists(f"{prefix}/{MANIFEST}")
    assert not store.is_done(prefix, "h")


def test_dir_upload_download(store, tmp_path):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(os.urandom(3000))
    (src / "sub" / "cfg.json").write_text("{}")
    keys = store.upload_dir(src, "exp/train/checkpoint-2")
    assert keys == ["exp/train/checkpoint-2/model.bin", "exp/train/checkpoint-2/sub/cfg.json"]
    out = store.download_dir("exp/train/checkpoint-2", tmp_path / "back")
    assert (out / "model.bin").read_bytes() == (src / "model.bin").read_bytes()
    assert (out / "sub" / "cfg.json").read_text() == "{}"


def test_manifest_hashes_stream_without_reading_whole_objects(store, tmp_path, monkeypatch):
    """Manifests of multi-GB weights: uploaded files are hashed from the local copy, others streamed."""
    import hashlib

    blob = os.urandom(3 * 2**20 + 17)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.safetensors").write_bytes(blob)
    keys = store.upload_dir(tmp_path / "w", "exp/train/model")
    monkeypatch.setattr(type(store), "read_bytes", lambda *a: pytest.fail("read a whole object to hash it"))
    downloads = []
    real_iter = type(store).iter_bytes
    monkeypatch.setattr(type(store), "iter_bytes", lambda self, key: downloads.append(key) or real_iter(self, key))
    m = store.write_manifest("exp/train", stage="train", config_hash="h", files=keys)
    want = hashlib.sha256(blob).hexdigest()
    assert m["files"] == [{"key": "model/model.safetensors", "bytes": len(blob), "sha256": want}]
    assert downloads == [], "the uploader's own files are not read back"
    fresh = (
        open_store(store.root_uri, endpoint=getattr(store.client, "meta", None) and store.client.meta.endpoint_url)
        if isinstance(store, S3Store)
        else FileStore(store.root)
    )
    assert fresh.digest(keys[0]) == (len(blob), want)
    assert downloads == keys, "another process streams the object once"


def test_s3_multipart_upload(s3_endpoint, bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig

    store = S3Store(bucket, "big", endpoint=s3_endpoint)
    store.transfer = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    blob = os.urandom(11 * 2**20)
    (tmp_path / "blob").write_bytes(blob)
    store.upload_file(tmp_path / "blob", "w.bin")
    head = store.client.head_object(Bucket=bucket, Key="big/w.bin")
    assert head["ContentLength"] == len(blob)
    assert "-" in head["ETag"], "a multipart upload's ETag carries the part count"
    assert store.read_bytes("w.bin") == blob


def test_open_store_forms(tmp_path):
    assert isinstance(open_store(f"file://{tmp_path}"), FileStore)
    rel = open_store("file://./arts", base_dir=tmp_path)
    assert rel.root == (tmp_path / "arts").resolve()
    with pytest.raises(ValueError, match="needs a bucket"):
        open_store("s3://")


def test_file_store_rejects_escaping_keys(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        FileStore(tmp_path).write_bytes("../outside", b"x")
