"""The operator's memory, one concern to an object, each owned by the Controller (controller.py) that `main` creates:
no module-level state, so two operators can live in one process and every test starts a fresh one.

- WorkQueue: the experiments due for a reconcile, one at a time each, with their backoff and the Jobs just made;
- ClaimBook: claims on identical work as the Lease watch shows them, and who waits on each;
- Watched: the kopf indices and what the pod watches noticed between reconciles;
- ServerBook: the served models' idle looks and what their objects last said;
- StudyBook: each study's queue of one, its cells' last signals and the cells just made.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from typing import Optional

Key = tuple[str, str]  # (namespace, name)
MADE_GRACE_SECONDS = 120.0
CREATED_GRACE_SECONDS = 120.0


class WorkQueue:
    """Experiments due for a look (monotonic times), at most one reconcile each at a time (a thread lock for the
    reconcile, an asyncio lock for its turn), and a trigger arriving while one waits for its turn joins it."""

    def __init__(self, resync_seconds: float):
        self.resync_seconds = resync_seconds
        self.due: dict[Key, float] = {}
        self.errors: dict[Key, int] = defaultdict(int)  # consecutive failed reconciles, for their backoff
        self.fresh: dict[Key, dict] = {}  # a just-created experiment's body: its first reconcile needs no GET
        self.locks: dict[Key, threading.Lock] = defaultdict(threading.Lock)
        self.turns: dict[Key, asyncio.Lock] = {}
        self.queued: set[Key] = set()
        self.made: dict[Key, dict[str, tuple[dict, float]]] = {}  # Jobs created that the index may not show yet
        self.wake: Optional[asyncio.Event] = None  # set by the scheduler loop when it starts

    def jitter(self) -> float:
        return self.resync_seconds * (1 + 0.2 * random.random())

    def kick(self, key: Key, fresh: Optional[dict] = None) -> None:
        """Due now. The handler returns at once: a burst is a table of due keys drained by a bounded pool, not
        thousands of handler coroutines each holding its object while waiting for a thread."""
        if fresh is not None:
            self.fresh[key] = fresh
        self.due[key] = 0.0
        if self.wake is not None:
            self.wake.set()

    def look_within(self, key: Key, seconds: float) -> None:
        self.due[key] = min(self.due.get(key, float("inf")), time.monotonic() + seconds)

    def look_in(self, key: Key, seconds: float) -> None:
        self.due[key] = time.monotonic() + seconds

    def failed(self, key: Key) -> None:
        self.errors[key] += 1
        self.look_in(key, min(10 * 2 ** (self.errors[key] - 1), self.resync_seconds))

    def with_made(self, key: Key, jobs: dict[str, dict], now: float) -> dict[str, dict]:
        """A Job this operator created counts as existing until the watch delivers it, so a reconcile that queued
        with an older snapshot neither re-creates it (a 409) nor thinks the stage lost its Job."""
        made = self.made.get(key)
        if not made:
            return jobs
        for name in [n for n, (_, t) in made.items() if n in jobs or now - t > MADE_GRACE_SECONDS]:
            del made[name]
        if not made:
            self.made.pop(key, None)
            return jobs
        return {**{n: job for n, (job, _) in made.items()}, **jobs}

    def remember_made(self, key: Key, name: str, job: dict) -> None:
        self.made.setdefault(key, {})[name] = (job, time.monotonic())

    def take_due(self, now: float, room: int) -> list[tuple[Key, Optional[dict]]]:
        """Up to `room` due keys (the earliest first), each given the safety net's next look meanwhile."""
        due = sorted((at, key) for key, at in dict(self.due).items() if at <= now)[: max(room, 0)]
        for _, key in due:
            self.due[key] = now + self.jitter()  # the reconcile sets the look it needs next
        return [(key, self.fresh.pop(key, None)) for _, key in due]

    def forget(self, key: Key) -> None:
        for d in (self.due, self.errors, self.made, self.turns, self.fresh):
            d.pop(key, None)
        self.locks.pop(key, None)


class ClaimBook:
    """Claims on identical work (namespace, work id) -> claims.view, fed by the Lease watch and our own writes, and
    the experiments waiting on each holder (woken when the claim changes)."""

    def __init__(self):
        self.claims: dict[tuple[str, str], dict] = {}
        self.waiters: dict[tuple[str, str], set] = defaultdict(set)

    def get(self, namespace: str, work: str) -> Optional[dict]:
        return self.claims.get((namespace, work))

    def put(self, namespace: str, work: str, view: dict) -> None:
        self.claims[(namespace, work)] = view

    def drop(self, namespace: str, work: str) -> Optional[dict]:
        return self.claims.pop((namespace, work), None)

    def wait(self, namespace: str, work: str, experiment: str) -> None:
        self.waiters[(namespace, work)].add(experiment)

    def wake(self, namespace: str, work: str) -> list[str]:
        return list(self.waiters.pop((namespace, work), ()))


class Watched:
    """The kopf indices (handed over by every handler, read by the scheduler and the worker threads' snapshots) and
    what the pod watches noticed that a reconcile must not miss."""

    def __init__(self):
        self.indices: dict[str, object] = {}
        self.pod_signals: dict[str, tuple] = {}  # pod uid -> what of it matters to a decision
        self.awaiting: dict[tuple[str, str], str] = {}  # (namespace, Job) finished before its pods' end -> experiment
        self.disrupted: dict[Key, dict[str, dict]] = {}  # experiment -> stage pods evicted, until status holds them

    def keep(self, **indices) -> None:
        self.indices.update({k: v for k, v in indices.items() if v is not None})

    def index(self, name: str) -> dict:
        return self.indices.get(name) or {}

    def note_disruption(self, key: Key, pod: str, what: dict) -> None:
        self.disrupted.setdefault(key, {})[pod] = what

    def recorded(self, key: Key, pods) -> None:
        for pod in pods:
            (self.disrupted.get(key) or {}).pop(pod, None)

    def forget(self, key: Key) -> None:
        self.disrupted.pop(key, None)


class ServerBook:
    """Served models: when each one's idle clock is next due, and what its pods, Service and slices last said (their
    users reconcile only when that changes)."""

    def __init__(self):
        self.due: dict[Key, float] = {}  # (namespace, Deployment) -> monotonic time of its idle look
        self.signals: dict[str, tuple] = {}  # object uid -> its last signal

    def changed(self, uid: str, type_: str, signal: tuple) -> bool:
        """Has what matters of this object changed since its last event (always, when it is gone)?"""
        if type_ == "DELETED":
            self.signals.pop(uid, None)
            return True
        if self.signals.get(uid) == signal:
            return False
        self.signals[uid] = signal
        return True


class StudyBook:
    """Each study's work queue of one (a queued run reads the index when it starts, so a burst of cell events costs
    one GET and one status patch), its cells' last signals, and cells made that the index may not show yet."""

    def __init__(self):
        self.queued: set[Key] = set()
        self.runs: dict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.child_signals: dict[str, tuple] = {}  # child uid -> (phase, stage, metrics, suspend)
        self.created: dict[Key, dict[str, float]] = {}  # study -> cell name -> monotonic time created
        self.due: dict[Key, float] = {}  # unfinished studies -> their safety-net look


def with_recent_creates(children: dict[str, dict], created: dict[str, float], now: float) -> dict[str, dict]:
    """Cells this operator created that the index has not shown yet count as active, so that a lagging watch
    neither re-creates them nor lets more than maxParallel run. After the grace a missing cell is missing
    (deleted by hand) and is created again. Prunes `created` of cells the index now shows or past the grace."""
    for name in [n for n, t in created.items() if n in children or now - t > CREATED_GRACE_SECONDS]:
        del created[name]
    pending = {n: {"name": n, "phase": None, "stage": None, "suspend": False, "metrics": {}} for n in created}
    return {**pending, **children}
