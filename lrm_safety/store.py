"""Artifact store over file:// and s3:// with atomic writes and stage manifests.

Atomicity is what makes stages resumable: a key is either absent or complete. Local files are
written to a temp file and renamed; S3 objects become visible only when their PUT (or multipart
completion) succeeds. `_SUCCESS.json` is written last, so `is_done` never accepts half a stage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

MANIFEST = "_SUCCESS.json"
MULTIPART_THRESHOLD = 64 * 1024 * 1024


def file_chunks(path: str | Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(size), b"")


def sized_sha256(chunks: Iterable[bytes]) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def _jsonl(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def parse_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _join(prefix: str, rel: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{rel}" if prefix else rel


class Store:
    """Keys are '/'-separated paths relative to the store root."""

    root_uri: str

    # -- primitives each backend implements
    def read_bytes(self, key: str) -> bytes: ...
    def iter_bytes(self, key: str) -> Iterator[bytes]: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def write_stream(self, key: str, chunks: Iterable[bytes]) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> Optional[int]: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def upload_file(self, local: str | Path, key: str) -> None: ...
    def download_file(self, key: str, local: str | Path) -> None: ...

    def local_path(self, key: str) -> Optional[Path]:
        """Where the object already lies on this machine's disk, if it does (file:// stores)."""
        return None

    # -- derived helpers
    def uri(self, key: str = "") -> str:
        return self.root_uri.rstrip("/") + ("/" + key if key else "")

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def read_jsonl(self, key: str) -> list[dict]:
        return parse_jsonl(self.read_bytes(key))

    def write_jsonl(self, key: str, rows: Iterable[dict]) -> None:
        self.write_bytes(key, _jsonl(rows))

    def upload_dir(self, local: str | Path, prefix: str) -> list[str]:
        local = Path(local)
        keys = []
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = _join(prefix, path.relative_to(local).as_posix())
            self.upload_file(path, key)
            self._uploaded()[key] = path
            keys.append(key)
        return keys

    def _uploaded(self) -> dict[str, Path]:
        """Local source of each file this process uploaded (hashed only if a manifest asks for it)."""
        return self.__dict__.setdefault("_sources", {})

    def digest(self, key: str) -> tuple[int, str]:
        """(size, sha256) of a stored object, streamed: a model's weights are never held in memory whole.

        Files this process uploaded are hashed from the local copy, so a manifest never re-downloads them.
        """
        local = self._uploaded().get(key)
        if local is not None and local.is_file() and local.stat().st_size == self.size(key):
            return sized_sha256(file_chunks(local))
        return sized_sha256(self.iter_bytes(key))

    def download_dir(self, prefix: str, local: str | Path) -> Path:
        local = Path(local)
        prefix = _join(prefix, "")
        for key in self.list(prefix):
            self.download_file(key, local / key[len(prefix) :])
        return local

    # -- manifests
    def write_manifest(
        self,
        prefix: str,
        *,
        stage: str,
        config_hash: str,
        files: Iterable[str] = (),
        counts: Optional[dict] = None,
        metrics: Optional[dict] = None,
        extra: Optional[dict] = None,
    ) -> dict:
        """Record every file's size and sha256, then write the manifest last."""
        entries = []
        for key in sorted(set(files)):
            size, sha = self.digest(key)
            entries.append(
                {
                    "key": key[len(prefix.rstrip("/")) + 1 :] if key.startswith(prefix) else key,
                    "bytes": size,
                    "sha256": sha,
                }
            )
        manifest = {
            "stage": stage,
            "configHash": config_hash,
            "files": entries,
            "counts": counts or {},
            "metrics": metrics or {},
            "finishedAt": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        self.write_json(f"{prefix.rstrip('/')}/{MANIFEST}", manifest)
        return manifest

    def read_manifest(self, prefix: str) -> Optional[dict]:
        key = f"{prefix.rstrip('/')}/{MANIFEST}"
        if not self.exists(key):
            return None
        try:
            return self.read_json(key)
        except (ValueError, OSError):
            return None

    def is_done(self, prefix: str, config_hash: str) -> bool:
        """True when the stage's manifest matches this config and every file it lists is whole."""
        manifest = self.read_manifest(prefix)
        if not manifest or manifest.get("configHash") != config_hash:
            return False
        base = manifest.get("source") or prefix  # a link to another experiment's output (reuse.py)
        for entry in manifest.get("files", []):
            if self.size(f"{base.rstrip('/')}/{entry['key']}") != entry["bytes"]:
                return False
        return True


class FileStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root_uri = "file://" + self.root.as_posix()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store root")
        return path

    def local_path(self, key: str) -> Optional[Path]:
        return self._path(key)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        return file_chunks(self._path(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        self.write_stream(key, [data])

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> Optional[int]:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return []
        out = []
        for path in start.rglob("*"):
            if path.is_file() and not path.name.endswith(".tmp"):
                rel = path.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            path = self._path(key)
            path.unlink()
            for parent in path.parents:  # no empty folders left behind, as on S3
                if parent == self.root:
                    break
                try:
                    parent.rmdir()
                except OSError:  # not empty (or a writer just put something there)
                    break
        return len(keys)

    def upload_file(self, local: str | Path, key: str) -> None:
        self.write_stream(key, file_chunks(local))

    def download_file(self, key: str, local: str | Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), local)


class S3Store(Store):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: Optional[str] = None,
        region: Optional[str] = None,
        client=None,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region or os.environ.get("AWS_REGION") or "us-east-1",
            # Retries ride out short outages; AWS_MAX_ATTEMPTS / AWS_RETRY_MODE tune them as for any AWS client.
            config=Config(
                retries={
                    "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or 5),
                    "mode": os.environ.get("AWS_RETRY_MODE") or "standard",
                },
                s3={"addressing_style": "path"},
            ),
        )
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(self.uri(key)) from None

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(self.uri(key)) from None
        yield from body.iter_chunks(1 << 20)

    def write_bytes(self, key: str, data: bytes) -> None:
        if len(data) >= MULTIPART_THRESHOLD:
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key), Config=self.transfer)
        else:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        # Spool to a local temp file so an exception mid-stream uploads nothing.
        with tempfile.TemporaryFile() as f:
            for chunk in chunks:
                f.write(chunk)
            f.seek(0)
            self.client.upload_fileobj(f, self.bucket, self._key(key), Config=self.transfer)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> Optional[int]:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _iter(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._iter(prefix))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": self._key(k)} for k in keys[i : i + 1000]]}
            )
        return len(keys)

    def upload_file(self, local: str | Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(key), Config=self.transfer)

    def download_file(self, key: str, local: str | Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        self.client.download_file(self.bucket, self._key(key), str(tmp), Config=self.transfer)
        os.replace(tmp, local)


def open_store(
    uri: str, *, endpoint: Optional[str] = None, region: Optional[str] = None, base_dir: str | Path = "."
) -> Store:
    """file:///abs, file://./rel (relative to base_dir), a plain path, or s3://bucket/prefix."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"{uri}: s3 URI needs a bucket (s3://bucket/prefix)")
        return S3Store(bucket, prefix, endpoint=endpoint, region=region)
    path = uri[7:] if uri.startswith("file://") else uri
    path = Path(path)
    if not path.is_absolute():
        path = Path(base_dir) / path
    return FileStore(path)


def read_uri_bytes(uri: str, *, endpoint: Optional[str] = None, base_dir: str | Path = ".") -> bytes:
    """Read one object named by a full URI or path (input data sets, prompt files)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        return S3Store(bucket, "", endpoint=endpoint).read_bytes(key)
    path = Path(uri[7:] if uri.startswith("file://") else uri)
    if not path.is_absolute():
        path = Path(base_dir) / path
    return path.read_bytes()


def store_problem(e: BaseException) -> str | None:
    """One line, with the fix, for the S3 failures a user meets first (no credentials, no bucket, no endpoint)."""
    try:
        from botocore import exceptions as bx
    except ImportError:
        return None
    if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return (
            "no S3 credentials for the store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "or use a file:// storage.uri"
        )
    if isinstance(e, bx.EndpointConnectionError):
        return (
            f"cannot reach the S3 endpoint {e.kwargs.get('endpoint_url')}: check storage.endpoint (or AWS_ENDPOINT_URL)"
        )
    if isinstance(e, bx.ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        bucket = e.response.get("Error", {}).get("BucketName", "")
        if code == "NoSuchBucket":
            return f"bucket {bucket or '(of storage.uri)'} does not exist: create it or fix storage.uri"
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return f"the store refused these credentials ({code}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    return None
