"""Samples of one pass (hourly_training's ``pass_samples``): admission, pass catalog, pass samples.

    python -m tasks.hourly.pass_samples --cur-date 2026-11-02 --hour 5

``hour`` is any hour of the pass (a pass is ``training.split_per_pass`` hours; it is named by its
first hour). Admission first (``dailyrec.passes.pass_vocabularies``: the base vocabularies of
``D - 1`` plus the ids admitted so far), then the daily sampler on the pass's hourly partitions only
(:mod:`dailyrec.pass_samples`). Output (atomic): ``pass_samples/dt=D/hour=HH/`` (``train.parquet``
with the columns of the daily samples, ``catalog.parquet``, ``vocabularies.json``,
``admission.json``, ``touched_items.parquet``, ``_manifest.json``).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin


def ready(cur_date: str, cfg: Config, hour: int) -> tuple[bool, str]:
    """True when every hour of the pass has its ``logs/dt=D/hour=HH/_SUCCESS``."""
    from dailyrec.passes import log_hours_complete, pass_hours
    from dailyrec.storage import open_store

    return log_hours_complete(open_store(cfg), cur_date, pass_hours(cfg, hour))


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Admit ids and select the samples of the pass holding ``hour``; returns pointers and counts."""
    from dailyrec.pass_samples import select_pass_samples

    run = begin("pass_samples", cur_date, cfg)
    return select_pass_samples(run, hour)


if __name__ == "__main__":
    cli.main(step)
