"""Retrieval sample selection (daily_retrieval's ``select_samples``): positives, negatives, holdout.

    python -m tasks.retrieval.sample --cur-date 2026-11-03 [--set sampling.negatives_per_positive=8]

The maths is :mod:`dailyrec.sampling`. When ``model`` is one of ``sampling.hard_negative_sources``,
:func:`dailyrec.sampling.select_samples` computes the previous gate-passed model's vectors itself
(its towers on the day's active users and catalog), so the CLI, the DAG and any library caller
select the same samples. The logs of the window must have passed ``tasks.ingest.validate_day``
(``run.require_validated``). Output: ``samples/dt=D/``.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.dates import window
from dailyrec.sampling import select_samples
from dailyrec.step import begin


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Select the day's training samples and holdout; returns pointers and counts."""
    run = begin("sample", cur_date, cfg)
    run.require(run.path("features", "catalog.parquet"), hint=f"run tasks.retrieval.features for {run.cur_date} first")
    run.require_validated(window(run.cur_date, cfg.sampling.window_days))
    return select_samples(run)


if __name__ == "__main__":
    cli.main(step)
