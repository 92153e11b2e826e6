"""A lease in the store: of several pods that need the same missing work, one does it and the others wait.

S3 has no compare-and-swap here, so the lease is claimed by writing it and reading it back after a settling
pause: the store is strongly consistent, so of concurrent claimants the last writer's record is what all of
them read, and only that one goes on. The holder renews it while it works; a lease not renewed for `ttl`
seconds (its pod died) is taken over. The waiter stops waiting as soon as the work is published.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Callable, Optional


def holder_id() -> str:
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StoreLease:
    def __init__(
        self,
        store,
        key: str,
        *,
        ttl: float = 600.0,
        settle: Optional[float] = None,
        poll: Optional[float] = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        # LRM_SAFETY_LEASE_SETTLE_SECONDS / _POLL_SECONDS: tests shorten the waits
        settle = settle if settle is not None else float(os.environ.get("LRM_SAFETY_LEASE_SETTLE_SECONDS", 2.0))
        poll = poll if poll is not None else float(os.environ.get("LRM_SAFETY_LEASE_POLL_SECONDS", 15.0))
        self.store, self.key, self.ttl, self.settle, self.poll = store, key, ttl, settle, poll
        self.clock, self.sleep = clock, sleep
        self.holder = holder_id()

    def _current(self):
        if not self.store.exists(self.key):
            return None
        try:
            return self.store.read_json(self.key)
        except (ValueError, OSError):
            return None

    def _live(self, rec) -> bool:
        return (
            bool(rec) and rec.get("holder") != self.holder and self.clock() - float(rec.get("renewedAt", 0)) < self.ttl
        )

    def acquire(self, done: Callable[[], bool], on_wait: Callable[[str], None] = lambda holder: None) -> bool:
        """True once this process holds the lease; False as soon as `done()` says someone finished the work."""
        while True:
            if done():
                return False
            rec = self._current()
            if self._live(rec):
                on_wait(rec.get("holder", "?"))
                self.sleep(self.poll)
                continue
            self.renew()
            self.sleep(self.settle)
            rec = self._current()
            if rec and rec.get("holder") == self.holder:
                return True

    def renew(self) -> None:
        self.store.write_json(self.key, {"holder": self.holder, "renewedAt": self.clock()})

    def release(self) -> None:
        rec = self._current()
        if rec and rec.get("holder") == self.holder:
            self.store.delete_prefix(self.key)
