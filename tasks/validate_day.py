"""Wait-and-validate for a whole day: 24 complete hours, the contract, and sane volumes.

    python -m tasks.validate_day --cur-date 2026-11-01

Checks every hourly log partition of ``cur_date`` (``_SUCCESS`` + contract), the ``users`` and
``items`` snapshots of the day, and the volumes: at least ``validation.min_rows_per_day`` rows and
``validation.min_clicks_per_day`` clicks, and no drop of more than
``validation.max_drop_vs_previous_day`` against the previous day's report. An empty or truncated
day fails with a message saying what is missing; nothing is trained on it. The report goes to
``<root>/day_checks/dt=D/report.json``.
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date, previous
from dailyrec.errors import ContractError
from dailyrec.schemas import validate_partition
from dailyrec.storage import SUCCESS_MARKER, Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.validate_day")


def missing_hours(cur_date: str, cfg: Config | None = None) -> list[int]:
    """Hours of ``cur_date`` whose ``_SUCCESS`` marker is not there yet."""
    cfg = cfg or load_config()
    store = open_store(cfg)
    return [h for h in range(24)
            if not store.exists(f"{store.partition('logs', cur_date, h)}/{SUCCESS_MARKER}")]


def validate_day(cur_date: str, cfg: Config | None = None) -> dict[str, Any]:
    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    missing = missing_hours(cur_date, cfg)
    if missing:
        raise FileNotFoundError(
            f"logs of {cur_date} are incomplete: no {SUCCESS_MARKER} for hour(s) "
            f"{', '.join(f'{h:02d}' for h in missing)} under {store.partition('logs', cur_date)}")
    hours, rows, clicks, conversions = [], 0, 0, 0
    with timer.step("logs"):
        for h in range(24):
            rep = validate_partition(store, "logs", cur_date, h, min_rows=cfg.validation.min_rows_per_hour)
            hours.append({"hour": h, "rows": rep.rows, "clicks": rep.stats["clicks"]})
            rows += rep.rows
            clicks += rep.stats["clicks"]
            conversions += rep.stats["conversions"]
    with timer.step("dimensions"):
        users = validate_partition(store, "users", cur_date)
        items = validate_partition(store, "items", cur_date)
    day = store.partition("logs", cur_date)
    if rows < cfg.validation.min_rows_per_day:
        raise ContractError(f"{day}: {rows} rows in the day, fewer than validation.min_rows_per_day="
                            f"{cfg.validation.min_rows_per_day} (empty or truncated day)")
    if clicks < cfg.validation.min_clicks_per_day:
        raise ContractError(f"{day}: {clicks} clicks in the day, fewer than validation.min_clicks_per_day="
                            f"{cfg.validation.min_clicks_per_day}")
    prev_path = f"{store.partition('day_checks', previous(cur_date))}/report.json"
    prev_rows = None
    if store.exists(prev_path):
        prev_rows = store.read_json(prev_path)["rows"]["logs"]
        floor = (1 - cfg.validation.max_drop_vs_previous_day) * prev_rows
        if rows < floor:
            raise ContractError(
                f"{day}: {rows} rows, less than {1 - cfg.validation.max_drop_vs_previous_day:.0%} of the "
                f"previous day's {prev_rows} (truncated day? see validation.max_drop_vs_previous_day)")
    report = make_manifest(
        "validate_day", cfg, cur_date,
        inputs=[day, users.partition, items.partition],
        rows={"logs": rows, "users": users.rows, "items": items.rows}, timings=timer.timings,
        clicks=clicks, conversions=conversions, ctr=round(clicks / rows, 6), previous_day_rows=prev_rows,
        hours=hours)
    out = store.partition("day_checks", cur_date)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    log.info("day %s: %d rows, %d clicks (ctr %.4f), %d conversions, %d users, %d catalog items",
             cur_date, rows, clicks, clicks / rows, conversions, users.rows, items.rows)
    return {"report": f"{out}/report.json", "rows": rows, "clicks": clicks, "conversions": conversions,
            "users": users.rows, "items": items.rows}


def main() -> None:
    from dailyrec import cli

    args = cli.parser(__doc__.splitlines()[0]).parse_args()
    cli.run(lambda: validate_day(args.cur_date, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
