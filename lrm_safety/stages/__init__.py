"""The four stages. Each module has `run(ctx, **kw) -> dict` (the summary) and a config hash."""

from importlib import import_module

from lrm_safety.spec import STAGES


def stage_module(name: str):
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return import_module(f"{__name__}.{name}")
