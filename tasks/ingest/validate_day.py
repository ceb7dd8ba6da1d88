"""Wait-and-validate for a whole day: 24 complete hours, the contract, and sane volumes.

    python -m tasks.ingest.validate_day --cur-date 2026-11-01

Checks every hourly log partition of ``cur_date`` (``_SUCCESS`` + contract), the ``users`` and
``items`` snapshots of the day, and the volumes: at least ``validation.min_rows_per_day`` rows and
``validation.min_clicks_per_day`` clicks, and no drop of more than
``validation.max_drop_vs_previous_day`` against the previous day's report. An empty or truncated
day fails with a message saying what is missing; nothing is trained on it. The report goes to
``<root>/day_checks/dt=D/report.json``.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.contract import check_day_volumes, missing_hours, validate_partition
from dailyrec.dates import previous
from dailyrec.step import begin
from dailyrec.storage import SUCCESS_MARKER, open_store


def ready(cur_date: str, cfg: Config) -> tuple[bool, str]:
    """All 24 hourly ``_SUCCESS`` markers of ``cur_date`` are there."""
    missing = missing_hours(open_store(cfg), cur_date)
    return not missing, f"{24 - len(missing)}/24 hours complete; missing {missing}"


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Validate a whole day of logs and its dimension snapshots; record the day's report."""
    run = begin("validate_day", cur_date, cfg)
    store, day = run.store, run.partition("logs")
    missing = missing_hours(store, run.cur_date)
    if missing:
        raise FileNotFoundError(
            f"logs of {run.cur_date} are incomplete: no {SUCCESS_MARKER} for hour(s) "
            f"{', '.join(f'{h:02d}' for h in missing)} under {day}")
    hours, rows, clicks, conversions = [], 0, 0, 0
    with run.timer.step("logs"):
        for h in range(24):
            rep = validate_partition(store, "logs", run.cur_date, h, min_rows=cfg.validation.min_rows_per_hour)
            hours.append({"hour": h, "rows": rep.rows, "clicks": rep.stats["clicks"]})
            rows += rep.rows
            clicks += rep.stats["clicks"]
            conversions += rep.stats["conversions"]
    with run.timer.step("dimensions"):
        users = validate_partition(store, "users", run.cur_date)
        items = validate_partition(store, "items", run.cur_date)
    prev_path = run.path("day_checks", "report.json", cur_date=previous(run.cur_date))
    prev_rows = store.read_json(prev_path)["rows"]["logs"] if store.exists(prev_path) else None
    check_day_volumes(day, rows, clicks, prev_rows, cfg.validation)
    report = run.manifest(
        inputs=[day, users.partition, items.partition],
        rows={"logs": rows, "users": users.rows, "items": items.rows},
        clicks=clicks, conversions=conversions, ctr=round(clicks / rows, 6), previous_day_rows=prev_rows,
        hours=hours)
    out = run.partition("day_checks")
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    run.log.info("day %s: %d rows, %d clicks (ctr %.4f), %d conversions, %d users, %d catalog items",
                 run.cur_date, rows, clicks, clicks / rows, conversions, users.rows, items.rows)
    return {"report": f"{out}/report.json", "rows": rows, "clicks": clicks, "conversions": conversions,
            "users": users.rows, "items": items.rows}


if __name__ == "__main__":
    cli.main(step)
