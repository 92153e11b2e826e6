"""Content-addressed stage reuse: a finished stage is found by what it was computed from, not by who ran it.

A stage's key is the hash of its config hash (its own spec sections and its upstream's, `StageContext.hash`)
and the digests of every input file it reads, directly or through its upstream stages. A finished stage
publishes `_cache/<stage>/<key>.json`, a pointer to its prefix; another experiment in the same store whose
stage has the same key uses that output instead of computing it again: its own `_SUCCESS.json` then names
the output's prefix as `source` (a link: nothing is copied, and the model is stored once).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from lrm_safety.spec import config_hash

if TYPE_CHECKING:
    from lrm_safety.context import StageContext

CACHE = "_cache"


class CannotDigest(Exception):
    """An input this process cannot read (the operator does not see the pods' local paths): no reuse lookup."""


def _pathlike(ref: Optional[str], base_dir: Path) -> bool:
    if not ref or ref.startswith("builtin:") or ref == "distill":
        return False
    if ref.startswith(("s3://", "file://", "/", "./", "../")) or ref.endswith((".gguf", ".json", ".jsonl")):
        return True
    return (base_dir / ref).exists()


def input_uris(ctx: "StageContext", stage: str) -> list[str]:
    """Every input file or model directory the stage reads, its upstream stages' included (hub ids and builtin
    names are not files: the spec's model id and revision already name them)."""

    s, have = ctx.spec, set(ctx.spec.stages)
    if stage == "distill":
        uris = [
            s.distill.prompts,
            s.distill.math_prompts,
            s.teacher.model if s.teacher.backend != "openai" else None,
            s.distill.instruction.path if s.distill.instruction else None,
        ]
    elif stage == "mix":
        uris = (input_uris(ctx, "distill") if ctx.mix_reads_distill() else []) + [
            s.mix.safety_source,
            s.mix.math_source,
            s.student.model,
        ]
    elif stage == "train":
        uris = input_uris(ctx, "mix") + [s.student.model]
    elif stage == "evaluate":
        uris = (
            (input_uris(ctx, "train") if "train" in have else [])
            + [s.student.model]
            + [m.model for m in s.evaluate.models]
            + [b.data_path(s.evaluate.data_root) for b in s.evaluate.benchmarks]
            + [s.evaluate.judge.model if s.evaluate.judge.kind == "guard" else None]
        )
    else:
        raise ValueError(stage)
    return sorted({u for u in uris if _pathlike(u, ctx.base_dir)})


def digest(uri: str, ctx: "StageContext", local: bool = True) -> str:
    """What the input holds: an S3 object's ETag and size (or a prefix's listing), a local file's sha256, a local
    directory's names, sizes and modification times; 'missing' when there is nothing (the stage then fails)."""
    if uri.startswith("s3://"):
        from lrm_safety.store import S3Store

        bucket, _, key = uri[5:].partition("/")
        # inputs are read through the storage endpoint (read_input), so the store's client reaches them
        store = S3Store(
            bucket,
            "",
            endpoint=ctx.spec.storage.endpoint,
            region=ctx.spec.storage.region,
            client=getattr(ctx.store, "client", None),
        )
        try:
            head = store.client.head_object(Bucket=bucket, Key=key)
            return f"{head.get('ETag')}:{head.get('ContentLength')}"
        except Exception as e:  # a prefix (a model directory), or missing
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket",):
                return "missing"
            if code not in ("404", "NoSuchKey", "NotFound"):
                raise CannotDigest(f"{uri}: {e}") from None
        h, n = hashlib.sha256(), 0
        try:
            for page in store.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=key.rstrip("/") + "/"
            ):
                for obj in page.get("Contents", []):
                    h.update(f"{obj['Key']}\0{obj.get('ETag')}\0{obj['Size']}\n".encode())
                    n += 1
        except Exception as e:
            if str(getattr(e, "response", {}).get("Error", {}).get("Code", "")) == "NoSuchBucket":
                return "missing"
            raise CannotDigest(f"{uri}: {e}") from None
        return h.hexdigest() if n else "missing"
    if not local:
        raise CannotDigest(f"{uri}: a path in the pods' file system")
    path = Path(uri.removeprefix("file://"))
    if not path.is_absolute():
        path = ctx.base_dir / path
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    return "missing"


def cache_key(ctx: "StageContext", stage: str, local: bool = True) -> str:
    return config_hash("reuse", stage, ctx.hash(stage), {u: digest(u, ctx, local) for u in input_uris(ctx, stage)})


def work_id(ctx: "StageContext", stage: str) -> str:
    """The same stage work in the same store, from the spec alone (no input read): the label the operator uses
    to let only one experiment run it at a time, while the others wait and then reuse it."""
    return config_hash("work", ctx.spec.storage.uri, stage, ctx.hash(stage, read=False))


def pointer(stage: str, key: str) -> str:
    return f"{CACHE}/{stage}/{key}.json"


def resolve(ctx: "StageContext", stage: str, local: bool = True) -> Optional[tuple[str, dict]]:
    """(the prefix holding the stage's files, its manifest) when the stage is finished for this config: by this
    experiment (or linked before), or by another with the same key; None otherwise."""
    store, own, h = ctx.store, ctx.prefix(stage), ctx.hash(stage)
    if store.is_done(own, h):
        m = store.read_manifest(own)
        return m.get("source") or own, m
    try:
        key = cache_key(ctx, stage, local)
    except CannotDigest:
        return None
    ptr = pointer(stage, key)
    if not store.exists(ptr):
        return None
    entry = store.read_json(ptr)
    src = entry.get("prefix", "")
    if not src or src == own or not store.is_done(src, h):
        return None
    m = store.read_manifest(src)
    return m.get("source") or src, {
        **m,
        "source": m.get("source") or src,
        "reusedFrom": m.get("reusedFrom") or entry.get("experiment"),
    }


def link(ctx: "StageContext", stage: str, found: tuple[str, dict]) -> dict:
    """Record in this experiment's prefix that its stage is another's finished output (the files stay there)."""
    src, manifest = found
    linked = {
        **manifest,
        "configHash": ctx.hash(stage),
        "source": src,
        "linkedAt": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    ctx.store.write_json(f"{ctx.prefix(stage)}/_SUCCESS.json", linked)
    return linked


def publish(ctx: "StageContext", stage: str) -> Optional[str]:
    """After the stage finished here: point its key at this prefix, so identical work elsewhere reuses it. The
    first finisher's pointer stays while its output is whole."""
    store, own = ctx.store, ctx.prefix(stage)
    m = store.read_manifest(own)
    if not m or m.get("source") or not store.is_done(own, ctx.hash(stage)):
        return None
    try:
        ptr = pointer(stage, cache_key(ctx, stage))
    except CannotDigest:  # an input this process cannot read now: nothing to publish it under
        return None
    if store.exists(ptr):
        src = store.read_json(ptr).get("prefix")
        if src and src != own and store.is_done(src, ctx.hash(stage)):
            return ptr
    store.write_json(
        ptr,
        {
            "stage": stage,
            "experiment": ctx.exp.name,
            "prefix": own,
            "configHash": ctx.hash(stage),
            "finishedAt": m.get("finishedAt"),
        },
    )
    return ptr
