"""A SafetyStudy's decisions as a pure function: the study and its child experiments as observed -> actions.

The children are ordinary SafetyExperiments with deterministic names (lrm_safety.spec.study), created in grid order
while fewer than maxParallel are unfinished; a restarted operator finds the ones it made (409: adopt). The study's
status is the children's, side by side: a row per cell with its phase and headline metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from lrm_safety.evaluation.report import HEADLINE_KEYS
from lrm_safety.spec import SpecError
from lrm_safety.spec.study import Study, child_manifest

from .status import finish, iso, percent, set_condition, utcnow

FINISHED = ("Succeeded", "Failed")


@dataclass
class StudyActions:
    status: dict[str, Any] = field(default_factory=dict)  # the new status, or {} for no change
    create: list[dict] = field(default_factory=list)  # child experiments to create (409 = adopt)
    patch_children: list[tuple[str, dict]] = field(default_factory=list)  # (child name, merge patch)
    events: list[tuple[str, str, str]] = field(default_factory=list)


def is_study_finished(status) -> bool:
    """Succeeded or Failed, unless it failed for an invalid spec (a fixed spec is expanded again)."""
    return (status or {}).get("phase") in ("Succeeded", "Failed") and not any(
        c.get("reason") == "InvalidSpec" for c in (status or {}).get("conditions") or []
    )


def trim_child(body: dict) -> dict:
    """What the study needs of a child (kept in the operator's index)."""
    status = body.get("status") or {}
    metrics = status.get("metrics") or {}
    return {
        "suspend": bool((body.get("spec") or {}).get("suspend")),
        "phase": status.get("phase"),
        "stage": status.get("stage"),
        "message": status.get("message"),
        "metrics": {k: metrics.get(k) for k in HEADLINE_KEYS if metrics.get(k) is not None},
    }


def _row(cell, child: Optional[dict]) -> dict:
    row: dict[str, Any] = {
        "name": cell.name,
        "role": cell.role,
        "phase": (child or {}).get("phase") or ("Pending" if child else "Waiting"),
    }
    if cell.labels:
        row["cell"] = {str(k): v for k, v in cell.labels.items()}
    if child and child.get("stage"):
        row["stage"] = child["stage"]
    row.update((child or {}).get("metrics") or {})
    if child and child.get("phase") == "Failed":
        row["message"] = (child.get("message") or "")[:300]
    return row


def decide_study(body: dict, children: dict[str, dict], now=None) -> StudyActions:
    """children: this study's SafetyExperiments by name, trimmed (trim_child)."""
    now = now or utcnow()
    meta = body.get("metadata") or {}
    old = body.get("status") or {}
    status = json.loads(json.dumps(old))
    status.setdefault("conditions", [])
    if meta.get("generation") is not None:
        status["observedGeneration"] = meta["generation"]
    acts = StudyActions()
    try:
        study = Study.from_manifest({**body, "metadata": meta})
    except SpecError as e:
        msg = "invalid spec: " + "; ".join(e.lines)
        if old.get("message") == msg:
            return acts
        finish(status, "Failed", "InvalidSpec", msg, now, failed=True)
        return StudyActions(status=status, events=[("Warning", "InvalidSpec", msg)])
    spec, cells = study.spec, study.cells
    active = [c for c in cells if c.name in children and children[c.name].get("phase") not in FINISHED]
    if spec.suspend:
        for c in active:
            if not children[c.name].get("suspend"):
                acts.patch_children.append((c.name, {"spec": {"suspend": True}}))
    else:
        for c in active:
            if children[c.name].get("suspend"):
                acts.patch_children.append((c.name, {"spec": {"suspend": False}}))
        free = spec.max_parallel - len(active)
        for c in cells:
            if free <= 0:
                break
            if c.name not in children:
                acts.create.append(child_manifest(study.name, study.namespace, c, meta.get("uid")))
                acts.events.append(("Normal", "CellCreated", f"{c.where}: created SafetyExperiment {c.name}"))
                free -= 1
    created = {o["metadata"]["name"] for o in acts.create}
    rows = [_row(c, children.get(c.name) or ({} if c.name in created else None)) for c in cells]
    counts = {p: sum(r["phase"] == p for r in rows) for p in ("Succeeded", "Failed", "Running", "Suspended")}
    counts["waiting"] = sum(r["phase"] in ("Waiting", "Pending") for r in rows)
    counts["total"] = len(rows)
    done = counts["Succeeded"] + counts["Failed"]
    finished = [r for r in rows if r["role"] == "cell" and r["phase"] == "Succeeded"]
    scored = [r["asr"] for r in finished if r.get("asr") is not None]
    refusals = [r["refusalRate"] for r in finished if r.get("refusalRate") is not None]
    best = {"bestAsr": min(scored) if scored else None, "bestRefusalRate": max(refusals) if refusals else None}
    status.update(
        cells=rows,
        counts=counts,
        done=f"{done}/{len(rows)}",
        **best,
        display={k: percent(v) for k, v in best.items() if v is not None},
    )
    failed = [r for r in rows if r["phase"] == "Failed"]
    if done == len(rows):
        if old.get("phase") not in FINISHED:
            if failed:
                names = ", ".join(r["name"] for r in failed)
                finish(
                    status,
                    "Failed",
                    "CellsFailed",
                    f"{len(failed)} of {len(rows)} cells failed: {names}",
                    now,
                    failed=True,
                )
                acts.events.append(("Warning", "CellsFailed", status["message"]))
            else:
                finish(status, "Succeeded", "Succeeded", f"all {len(rows)} cells succeeded", now, ready=True)
                acts.events.append(("Normal", "Succeeded", status["message"]))
    elif spec.suspend:
        if old.get("phase") != "Suspended":
            acts.events.append(("Normal", "Suspended", f"{len(active)} running cells suspended"))
        status["phase"] = "Suspended"
        status["message"] = f"suspended: {done}/{len(rows)} cells done"
        status["conditions"] = set_condition(
            status["conditions"], "Progressing", False, "Suspended", status["message"], now
        )
    else:
        status["phase"] = "Running"
        running = len(active) + len(acts.create)
        status["message"] = f"{done}/{len(rows)} cells done, {running} running (maxParallel {spec.max_parallel})" + (
            f"; failed: {', '.join(r['name'] for r in failed)}" if failed else ""
        )
        status["conditions"] = set_condition(
            status["conditions"], "Progressing", True, "CellsRunning", status["message"], now
        )
        status["conditions"] = set_condition(
            status["conditions"], "Ready", False, "CellsRunning", status["message"], now
        )
    status.setdefault("startedAt", iso(now))
    if status != old:
        acts.status = status
    return acts
