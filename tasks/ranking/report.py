"""The daily ranking DAG's per-date report, from the ranking steps' own manifests.

    python -m tasks.ranking.report --cur-date 2026-11-02

Writes ``reports/daily_ranking/dt=D/report.{json,md}`` with whatever exists for ``cur_date``
(samples, training, evaluation and gate, publish): a run stopped at the gate still gets a report
(:func:`dailyrec.report.write_report`; the DAG runs it as the teardown of ``start``: whatever
happened upstream, and adds the run's verdict, docs/scheduling.md).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.report import write_report
from dailyrec.step import begin


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Write the ranking report of ``cur_date``; returns its path and the steps found."""
    return write_report(begin("ranking_report", cur_date, cfg), "ranking")


if __name__ == "__main__":
    cli.main(step)
