"""`lrm-safety operator`: run the kopf operator with the chart's settings."""
from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from typing import Optional

import kopf

from .settings import Settings


def run(settings: Settings, *, stop_flag: Optional[threading.Event] = None, ready_flag=None,
        registry: Optional[kopf.OperatorRegistry] = None, liveness: Optional[str] = None) -> None:
    from . import handlers  # noqa: F401  registers the handlers

    standalone = not settings.peering
    kw = dict(standalone=standalone, priority=settings.priority, stop_flag=stop_flag, ready_flag=ready_flag,
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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    run(settings, liveness=settings.liveness or None)
    return 0
