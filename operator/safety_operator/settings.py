"""Operator settings from the environment (the Helm chart sets these)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .manifests import WorkerDefaults


def _bool(value: str | None, default: bool) -> bool:
    return default if value is None else value.lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    workers: int = 32  # reconcile threads: a transition is a few API round trips, so throughput is latency-bound
    resync_seconds: float = 300.0  # safety net for missed watch events, unfinished experiments only (+0-20% jitter)
    tick_seconds: float = 10.0  # how often due wake-ups (retry backoffs, start deadlines) are checked: no API call
    read_store: bool = True  # read stage manifests before starting or re-creating a stage (needs S3 credentials)
    progress_seconds: float = 60.0  # how often a running stage's progress object is read (0: never)
    watch_server_timeout: int = 300
    watch_client_timeout: int = 330
    peering: bool = False
    peering_name: str = "lrm-safety"
    peering_lifetime: int = 60  # seconds a silent peer counts as alive: how soon a standby takes over
    liveness: str = "http://0.0.0.0:8080/healthz"
    priority: int = 0
    worker: WorkerDefaults = field(default_factory=WorkerDefaults)  # stage-pod defaults for what specs leave unset
    post_events: bool = True
    api_connections: int = 32  # kopf's connections to the API server (its watches hold about 8 of them)
    claim_grace_seconds: float = 120.0  # a holder of identical work whose pods are held up keeps its claim this long
    store_secret: str = "lrm-safety-s3"  # the operator's S3 credentials Secret (named in the no-credentials warning)

    @classmethod
    def from_env(cls) -> "Settings":
        e = os.environ
        ns = tuple(n.strip() for n in e.get("LRM_SAFETY_NAMESPACES", "").split(",") if n.strip())
        return cls(
            namespaces=ns,
            workers=int(e.get("LRM_SAFETY_WORKERS", "32")),
            resync_seconds=float(e.get("LRM_SAFETY_RESYNC_SECONDS", "300")),
            tick_seconds=float(e.get("LRM_SAFETY_TICK_SECONDS", "10")),
            read_store=_bool(e.get("LRM_SAFETY_READ_STORE"), True),
            progress_seconds=float(e.get("LRM_SAFETY_PROGRESS_SECONDS", "60")),
            watch_server_timeout=int(e.get("LRM_SAFETY_WATCH_SERVER_TIMEOUT", "300")),
            watch_client_timeout=int(e.get("LRM_SAFETY_WATCH_CLIENT_TIMEOUT", "330")),
            peering=_bool(e.get("LRM_SAFETY_PEERING"), False),
            peering_name=e.get("LRM_SAFETY_PEERING_NAME", "lrm-safety"),
            peering_lifetime=int(e.get("LRM_SAFETY_PEERING_LIFETIME", "60")),
            liveness=e.get("LRM_SAFETY_LIVENESS", "http://0.0.0.0:8080/healthz"),
            priority=int(e.get("LRM_SAFETY_PRIORITY", "0")),
            worker=WorkerDefaults.from_env(e),
            post_events=_bool(e.get("LRM_SAFETY_EVENTS"), True),
            api_connections=int(e.get("LRM_SAFETY_API_CONNECTIONS", "32")),
            claim_grace_seconds=float(e.get("LRM_SAFETY_CLAIM_GRACE_SECONDS", "120")),
            store_secret=e.get("LRM_SAFETY_S3_SECRET", "lrm-safety-s3"),
        )
