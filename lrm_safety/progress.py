"""Live progress of a running stage: a small JSON object in the store, rewritten at most every few seconds.

The operator reads it for the experiments it sees running (about once a minute) and copies it into status and the
`Progress` printer column. Why a store object: stage pods already write the store, so it needs no RBAC, no
ServiceAccount token in the pod and no endpoint to expose; the operator reads it only for running experiments and
patches status only when it changed (docs/architecture.md weighs it against Kubeflow Trainer's status endpoint).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Optional

PROGRESS = "_PROGRESS"


def progress_key(prefix: str, part: Optional[int] = None) -> str:
    """One object per stage, or per distill shard (each shard's pod writes its own)."""
    return f"{prefix}/{PROGRESS}.json" if part is None else f"{prefix}/{PROGRESS}-{part:05d}.json"


class ProgressReporter:
    """`update(done)` writes {done, total, unit, percent, etaSeconds, detail} at most every `every_s` seconds."""

    def __init__(
        self,
        store,
        prefix: str,
        total: int,
        unit: str,
        part: Optional[int] = None,
        every_s: float = 15.0,
        clock=time.monotonic,
    ):
        self.store, self.key, self.total, self.unit, self.every_s, self.clock = (
            store,
            progress_key(prefix, part),
            max(int(total), 0),
            unit,
            every_s,
            clock,
        )
        self.started = clock()
        self.started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.last = None
        self.first_done: Optional[int] = None

    def update(self, done: int, force: bool = False, **detail) -> Optional[dict]:
        now = self.clock()
        if self.first_done is None:
            self.first_done = done  # work a resumed run had already done does not count toward its rate
        if not force and self.last is not None and now - self.last < self.every_s:
            return None
        rate = (done - self.first_done) / (now - self.started) if now > self.started else 0.0
        left = max(self.total - done, 0)
        doc = {
            "done": int(done),
            "total": self.total,
            "unit": self.unit,
            "percent": round(100.0 * done / self.total, 1) if self.total else None,
            "etaSeconds": round(left / rate) if rate > 0 and left else (0 if not left else None),
            "startedAt": self.started_at,
            "updatedAt": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "detail": detail,
        }
        try:
            self.store.write_json(self.key, doc)
        except Exception:  # progress is best effort: never fail a stage over it
            return None
        self.last = now
        return doc


def combine(docs: list[dict]) -> Optional[dict]:
    """Distill shards' progress as one: done and total added up, the slowest ETA, details summed where numeric."""
    docs = [d for d in docs if d]
    if not docs:
        return None
    if len(docs) == 1:
        return docs[0]
    done, total = sum(d["done"] for d in docs), sum(d["total"] for d in docs)
    etas = [d["etaSeconds"] for d in docs if d.get("etaSeconds") is not None]
    detail: dict = {}
    for d in docs:
        for k, v in (d.get("detail") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                detail[k] = detail.get(k, 0) + v
    return {
        "done": done,
        "total": total,
        "unit": docs[0]["unit"],
        "percent": round(100.0 * done / total, 1) if total else None,
        "etaSeconds": max(etas) if etas else None,
        "updatedAt": max(d.get("updatedAt", "") for d in docs),
        "detail": detail,
        "parts": len(docs),
    }


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def column(stage: Optional[str], doc: Optional[dict]) -> str:
    """The Progress printer column: `train 120/312 (38%) ETA 41m`, or `-` before the first report."""
    if not stage or not doc:
        return "-"
    pct = f" ({doc['percent']:.0f}%)" if doc.get("percent") is not None else ""
    eta = f" ETA {_duration(doc['etaSeconds'])}" if doc.get("etaSeconds") else ""
    return f"{stage} {doc['done']}/{doc['total']}{pct}{eta}"
