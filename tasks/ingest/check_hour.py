"""Hourly log check: is the hour complete (``_SUCCESS``), does it meet the contract, how big is it.

    python -m tasks.ingest.check_hour --cur-date 2026-11-01 --hour 5

The report is written (atomically) to ``<root>/log_checks/dt=YYYY-MM-DD/hour=HH/report.json`` and
returned; a violation raises ``ContractError`` naming partition, file and column, and writes
nothing.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.contract import hour_complete, validate_partition
from dailyrec.dates import check_hour
from dailyrec.step import begin
from dailyrec.storage import open_store


def ready(cur_date: str, cfg: Config, hour: int) -> tuple[bool, str]:
    """True when ``logs/dt=cur_date/hour=HH/_SUCCESS`` exists."""
    ok = hour_complete(open_store(cfg), cur_date, check_hour(hour))
    return ok, "complete (_SUCCESS)" if ok else "no _SUCCESS yet"


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Validate one hourly log partition against the contract and record its report."""
    run = begin("check_hour", cur_date, cfg)
    check_hour(hour)
    with run.timer.step("validate"):
        rep = validate_partition(run.store, "logs", run.cur_date, hour, min_rows=cfg.validation.min_rows_per_hour)
    report = run.manifest(inputs=[rep.partition], rows={"logs": rep.rows}, hour=hour, check=rep.as_dict())
    out = run.partition("log_checks", hour)
    with run.store.atomic_output(out) as tmp:
        run.store.write_json(f"{tmp}/report.json", report)
    run.log.info("logs dt=%s hour=%02d: %d rows in %d file(s), ctr=%.4f -> %s/report.json",
                 run.cur_date, hour, rep.rows, len(rep.files), rep.stats.get("ctr", 0.0), out)
    return {"report": f"{out}/report.json", "rows": rep.rows, "files": rep.files,
            "clicks": rep.stats["clicks"], "conversions": rep.stats["conversions"]}


if __name__ == "__main__":
    cli.main(step)
