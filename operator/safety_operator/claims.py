"""Identical stage work claimed once, with the API server as the arbiter.

A claim is a coordination.k8s.io Lease named by the work id (`reuse.work_id`: the same stage config in the same
store) in the experiment's namespace. Creating it is atomic, so of N experiments that reach the same work in the
same instant exactly one gets 201 and makes the Job; the others get 409 and wait, then reuse its output. Why a
Lease rather than the watch-fed Job index: an index learns of a Job only after its create returns, so cells of a
study started together all saw "nobody" and all ran the work.

The Lease is owned by the holding experiment, so garbage collection removes the claim of a deleted holder; the
holder deletes it when its stage finishes (succeeded or failed). A holder whose pods cannot start (a missing
Secret, an image pull, unschedulable) or whose attempt failed and waits for a retry marks the claim stuck; after
`grace` seconds another experiment may take it over (an update at the Lease's resourceVersion, so of several
waiters again exactly one wins).
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from lrm_safety.spec import API_GROUP, API_VERSION, KIND

from .manifests import LABEL_EXPERIMENT, LABEL_STAGE, LABEL_WORK

PREFIX = "lrm-work-"
STUCK = f"{API_GROUP}/stuck-since"  # annotation: when the holder's pods got held up (absent: moving)


def lease_name(work: str) -> str:
    return f"{PREFIX}{work}"


def render(
    work: str,
    stage: str,
    namespace: str,
    experiment: str,
    uid: Optional[str],
    now: str,
    resource_version: Optional[str] = None,
) -> dict:
    """The claim of `experiment` on `work`; with `resource_version`, the update that takes over a stuck claim."""
    meta: dict = {
        "name": lease_name(work),
        "namespace": namespace,
        "labels": {LABEL_WORK: work, LABEL_EXPERIMENT: experiment, LABEL_STAGE: stage},
    }
    if uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": experiment,
                "uid": uid,
                "controller": False,
                "blockOwnerDeletion": False,
            }
        ]
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": experiment, "acquireTime": now, "renewTime": now},
    }


def view(lease: dict) -> dict:
    """What decisions need of a claim (the operator's index holds this, not the Lease)."""
    meta = lease.get("metadata") or {}
    return {
        "holder": (lease.get("spec") or {}).get("holderIdentity"),
        "stage": (meta.get("labels") or {}).get(LABEL_STAGE),
        "stuckSince": (meta.get("annotations") or {}).get(STUCK),
        "resourceVersion": meta.get("resourceVersion"),
        "uid": meta.get("uid"),
    }


def takeover_in(claim: dict, now: dt.datetime, grace: float) -> Optional[float]:
    """Seconds until a stuck claim may be taken over (0: now), or None while its holder is moving."""
    since = claim.get("stuckSince")
    if not since:
        return None
    stuck = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
    return max((stuck + dt.timedelta(seconds=grace) - now).total_seconds(), 0.0)


def micro(t: dt.datetime) -> str:
    """Lease times are MicroTime."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
