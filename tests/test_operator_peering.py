"""Leader election among the chart's replicas (kopf peering).

kopf pauses every operator that sees a live peer of the same priority, so identical replicas would all
stand still; each replica therefore draws a tie-breaker below its configured priority.
"""

import random

from safety_operator.main import TIE_BREAK, effective_priority
from safety_operator.settings import Settings


def test_replicas_get_distinct_priorities_above_lower_configured_ones():
    same = Settings(peering=True, priority=100)
    a, b = effective_priority(same, random.Random(1)), effective_priority(same, random.Random(2))
    assert a != b and min(a, b) >= 100 * TIE_BREAK, "equal priorities would make kopf pause every replica"
    assert max(a, b) < effective_priority(Settings(peering=True, priority=101), random.Random(3)), (
        "a higher configured priority still wins over any tie-breaker"
    )
    assert effective_priority(Settings(priority=7)) == 7, "standalone keeps the configured priority"


def test_peering_settings_from_env(monkeypatch):
    monkeypatch.setenv("LRM_SAFETY_PEERING", "true")
    monkeypatch.setenv("LRM_SAFETY_PEERING_LIFETIME", "15")
    s = Settings.from_env()
    assert s.peering and s.peering_lifetime == 15 and s.peering_name == "lrm-safety"
