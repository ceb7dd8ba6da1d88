"""The summary of one pass (hourly_training's ``report``, its teardown): what each step left.

    python -m tasks.hourly.report --cur-date 2026-11-02 --hour 5

Reads what exists of the pass (``pass_samples``, ``prequential/two_tower``, ``passes/two_tower``,
``deltas/two_tower``, ``registry/two_tower/dt=D/hour=HH/published.json``) and writes
``reports/hourly_training/dt=D/hour=HH/report.{json,md}`` (atomic): prequential metrics, rows,
admitted ids, delta counts, the published version and the freshness (seconds from the last
hour's ``_SUCCESS`` to the delta serving: the publish record's ``freshness_s``). A
missing piece is listed under ``missing`` (the report of a failed run still gets written).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Collect the pass's figures into its report; returns the summary."""
    from dailyrec.pass_report import pass_summary, render_markdown

    run = begin("hourly_report", cur_date, cfg)
    summary = pass_summary(run, hour)
    out = run.partition("reports/hourly_training", summary["hour"])
    with run.store.atomic_output(out) as tmp:
        run.store.write_json(f"{tmp}/report.json", summary)
        run.store.write_text(f"{tmp}/report.md", render_markdown(summary))
    run.log.info("pass %s report: %s", summary["pass"], summary["verdict"])
    return {"report": f"{out}/report.json", "pass": summary["pass"], "verdict": summary["verdict"],
            "prequential": summary["prequential"], "delta": summary["delta"], "missing": summary["missing"]}


if __name__ == "__main__":
    cli.main(step)
