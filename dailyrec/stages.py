"""The registry of pipeline stages: one name, one module, one ``step`` function.

Stage ``"retrieval.features"`` is the module ``tasks.retrieval.features``; its function
``step(cur_date: str, cfg: Config, ...) -> dict`` is what both the DAG task (through
:func:`call`) and ``python -m tasks.retrieval.features`` (through :func:`dailyrec.cli.main`) run.
A module may also define ``ready(cur_date, cfg, ...) -> tuple[bool, str]``, the check a DAG's
sensor pokes before the step (inputs present?), without side effects.

Light module: a DAG file may import it at parse time; step modules are imported only when called.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

STAGES: tuple[str, ...] = (
    "ingest.check_hour",
    "ingest.validate_day",
    "retrieval.features",
    "retrieval.sample",
    "retrieval.train_two_tower",
    "retrieval.evaluate_two_tower",
    "retrieval.export_embeddings",
    "retrieval.build_index",
    "retrieval.publish_redis",
    "retrieval.report",
    "ranking.ranking_samples",
    "ranking.train_mmoe",
    "ranking.evaluate_mmoe",
    "ranking.publish_model",
    "ranking.report",
    "serving.serving_check",
    "serving.score_check",
    "hourly.pass_samples",
    "hourly.prequential",
    "hourly.train_pass",
    "hourly.export_delta",
    "hourly.publish_delta",
    "hourly.report",
)


def module_name(stage: str) -> str:
    """``"retrieval.features"`` -> ``"tasks.retrieval.features"``; ``KeyError`` for an unknown stage."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return f"tasks.{stage}"


def step_of(stage: str) -> Callable[..., dict[str, Any]]:
    """The stage's ``step`` function (imports its module)."""
    return importlib.import_module(module_name(stage)).step


def ready_of(stage: str) -> Callable[..., tuple[bool, str]] | None:
    """The stage's ``ready`` check, or ``None`` when it has none."""
    return getattr(importlib.import_module(module_name(stage)), "ready", None)


def _kwargs(fn: Callable[..., Any], run: dict[str, Any]) -> dict[str, Any]:
    """Values of ``run`` for ``fn``'s parameters other than ``cur_date`` and ``cfg`` (e.g. ``hour``)."""
    params = [n for n in inspect.signature(fn).parameters if n not in ("cur_date", "cfg")]
    return {n: run[n] for n in params if n in run}


def call(stage: str, run: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` for a DAG run (``run`` from the ``start`` task: ``cur_date``, ``overrides``...)."""
    from dailyrec.runctx import config_for

    fn = step_of(stage)
    return fn(run["cur_date"], config_for(run), **_kwargs(fn, run))


def poke(stage: str, run: dict[str, Any]) -> tuple[bool, str]:
    """The stage's ``ready`` check for a DAG run: ``(ready, what is missing or found)``."""
    from dailyrec.runctx import config_for

    fn = ready_of(stage)
    if fn is None:
        raise KeyError(f"stage {stage!r} has no ready() check to wait on")
    return fn(run["cur_date"], config_for(run), **_kwargs(fn, run))
