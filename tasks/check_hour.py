"""Hourly log check: is the hour complete (``_SUCCESS``), does it meet the contract, how big is it.

    python -m tasks.check_hour --cur-date 2026-11-01 --hour 5

The report is written (atomically) to ``<root>/log_checks/dt=YYYY-MM-DD/hour=HH/report.json`` and
returned; a violation raises ``ContractError`` naming partition, file and column, and writes
nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.dates import check_hour as _valid_hour
from dailyrec.dates import parse_date
from dailyrec.schemas import validate_partition
from dailyrec.storage import SUCCESS_MARKER, Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.check_hour")


def hour_is_complete(cur_date: str, hour: int, cfg: Config | None = None) -> bool:
    """True when ``logs/dt=cur_date/hour=HH/_SUCCESS`` exists."""
    cfg = cfg or load_config()
    store = open_store(cfg)
    return store.exists(f"{store.partition('logs', cur_date, hour)}/{SUCCESS_MARKER}")


def check_hour(cur_date: str, hour: int, cfg: Config | None = None) -> dict[str, Any]:
    """Validate one hourly log partition and record the result; returns the report."""
    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    _valid_hour(hour)
    store = open_store(cfg)
    timer = Timer()
    with timer.step("validate"):
        rep = validate_partition(store, "logs", cur_date, hour, min_rows=cfg.validation.min_rows_per_hour)
    report = make_manifest("check_hour", cfg, cur_date, inputs=[rep.partition], rows={"logs": rep.rows},
                           timings=timer.timings, hour=hour, check=rep.as_dict())
    out = store.partition("log_checks", cur_date, hour)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    log.info("logs dt=%s hour=%02d: %d rows in %d file(s), ctr=%.4f -> %s/report.json",
             cur_date, hour, rep.rows, len(rep.files), rep.stats.get("ctr", 0.0), out)
    return {"report": f"{out}/report.json", "rows": rep.rows, "files": rep.files,
            "clicks": rep.stats["clicks"], "conversions": rep.stats["conversions"]}


def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--hour", type=int, required=True)
    args = p.parse_args()
    cli.run(lambda: check_hour(args.cur_date, args.hour, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
