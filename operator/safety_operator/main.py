"""`lrm-safety operator`: run the kopf operator with the chart's settings."""
from __future__ import annotations

import argparse
import asyncio
import logging
import random
import threading
from typing import Optional

import kopf

from .settings import Settings

# kopf pauses every operator when peers share a priority, so the chart's identical replicas would all stand
# still. Each replica adds a random tie-breaker below the configured priority: the highest one acts, the
# rest stand by and take over once its peering entry expires (settings.peering_lifetime).
TIE_BREAK = 1_000_000


def effective_priority(settings: Settings, rng: random.Random = random.SystemRandom()) -> int:
    return settings.priority * TIE_BREAK + rng.randrange(TIE_BREAK) if settings.peering else settings.priority


def run(settings: Settings, *, stop_flag: Optional[threading.Event] = None, ready_flag=None,
        registry: Optional[kopf.OperatorRegistry] = None, liveness: Optional[str] = None) -> None:
    from . import handlers  # noqa: F401  registers the handlers

    standalone = not settings.peering
    priority = effective_priority(settings)
    if not standalone:
        logging.getLogger(__name__).info("peering %r with priority %d", settings.peering_name, priority)
    kw = dict(standalone=standalone, priority=priority, stop_flag=stop_flag, ready_flag=ready_flag,
              liveness_endpoint=liveness, registry=registry)
    if settings.namespaces:
        kw["namespaces"] = list(settings.namespaces)
    else:
        kw["clusterwide"] = True
    if not standalone:
        kw["peering_name"] = settings.peering_name
    asyncio.run(kopf.operator(**kw))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lrm-safety operator")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=True)  # "[namespace/name]" on every per-object line
    settings = Settings.from_env()
    run(settings, liveness=settings.liveness or None)
    return 0
