"""Wait-and-validate for a whole day: 24 complete hours, the contract, and sane volumes.

    python -m tasks.ingest.validate_day --cur-date 2026-11-01

Checks the layout of ``logs/dt=D`` (only folders ``hour=00`` .. ``hour=23``: a stray folder or
file is named), every hourly log partition of ``cur_date`` (``_SUCCESS`` + contract), that
``request_id`` is unique over the day, the ``users`` and ``items`` snapshots of the day, and the
volumes: at least ``validation.min_rows_per_day`` rows and ``validation.min_clicks_per_day``
clicks, and no drop of more than ``validation.max_drop_vs_previous_day`` against the previous
day's report. An empty or truncated day fails with a message saying what is missing; nothing is
trained on it.

The verdict is the day's validation record (:mod:`dailyrec.validation`), which the steps reading
logs require: ``<root>/day_checks/dt=D/report.json`` when the day passed (with the list of the
files checked), ``failed.json`` with the error when it did not (the error is raised as well;
``contract_ok`` says whether only a volume check failed: such a day may still be read as a
window day of a later date, never trained on as ``cur_date``).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.contract import check_day_keys, check_day_volumes, check_layout, missing_hours, validate_partition
from dailyrec.dates import previous
from dailyrec.errors import ContractError
from dailyrec.step import StepRun, begin
from dailyrec.storage import SUCCESS_MARKER, open_store
from dailyrec.validation import PASSED, input_files, record_failed


def ready(cur_date: str, cfg: Config) -> tuple[bool, str]:
    """All 24 hourly ``_SUCCESS`` markers of ``cur_date`` are there."""
    missing = missing_hours(open_store(cfg), cur_date)
    return not missing, f"{24 - len(missing)}/24 hours complete; missing {missing}"


def _check_logs(run: StepRun) -> tuple[int, int, int, list[dict[str, int]]]:
    """Layout, completeness and contract of the day's 24 hours; ``(rows, clicks, conversions, hours)``."""
    store, day, cfg = run.store, run.partition("logs"), run.cfg
    check_layout(store, day, hours=True)
    missing = missing_hours(store, run.cur_date)
    if missing:
        raise FileNotFoundError(
            f"logs of {run.cur_date} are incomplete: no {SUCCESS_MARKER} for hour(s) "
            f"{', '.join(f'{h:02d}' for h in missing)} under {day}")
    hours, rows, clicks, conversions = [], 0, 0, 0
    for h in range(24):
        rep = validate_partition(store, "logs", run.cur_date, h, min_rows=cfg.validation.min_rows_per_hour)
        hours.append({"hour": h, "rows": rep.rows, "clicks": rep.stats["clicks"]})
        rows += rep.rows
        clicks += rep.stats["clicks"]
        conversions += rep.stats["conversions"]
    check_day_keys(store, run.cur_date)
    return rows, clicks, conversions, hours


def _check_contract(run: StepRun, files: dict[str, str]) -> dict[str, Any]:
    """The contract checks of the day (logs and snapshots); returns the report so far."""
    store, day = run.store, run.partition("logs")
    with run.timer.step("logs"):
        rows, clicks, conversions, hours = _check_logs(run)
    with run.timer.step("dimensions"):
        users = validate_partition(store, "users", run.cur_date)
        items = validate_partition(store, "items", run.cur_date)
    prev_path = run.path("day_checks", PASSED, cur_date=previous(run.cur_date))
    prev_rows = store.read_json(prev_path)["rows"]["logs"] if store.exists(prev_path) else None
    return run.manifest(
        inputs=[day, users.partition, items.partition],
        rows={"logs": rows, "users": users.rows, "items": items.rows},
        clicks=clicks, conversions=conversions, ctr=round(clicks / rows, 6) if rows else 0.0,
        previous_day_rows=prev_rows, hours=hours, input_files=files)


def _refuse(run: StepRun, exc: Exception, contract_ok: bool, files: dict[str, str] | None = None) -> None:
    record = {**run.manifest(inputs=[run.partition("logs")], rows={}), "contract_ok": contract_ok}
    if files is not None:
        record["input_files"] = files
    path = record_failed(run.store, run.cur_date, exc, record)
    run.log.error("day %s failed validation (recorded in %s): %s", run.cur_date, path, exc)


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Validate a whole day of logs and its dimension snapshots; record the verdict."""
    run = begin("validate_day", cur_date, cfg)
    files = input_files(run.store, run.cur_date)  # before the checks: a file changed meanwhile is not "checked"
    try:
        report = _check_contract(run, files)
    except (ContractError, FileNotFoundError) as exc:
        _refuse(run, exc, contract_ok=False)
        raise
    rows = report["rows"]
    try:
        check_day_volumes(run.partition("logs"), rows["logs"], report["clicks"], report["previous_day_rows"],
                          cfg.validation)
    except ContractError as exc:   # the rows meet the contract; the day is too small to train on
        _refuse(run, exc, contract_ok=True, files=files)
        raise
    run.log.info("day %s: %d rows, %d clicks (ctr %.4f), %d conversions, %d users, %d catalog items",
                 run.cur_date, rows["logs"], report["clicks"], report["ctr"], report["conversions"],
                 rows["users"], rows["items"])
    out = run.partition("day_checks")
    with run.store.atomic_output(out) as tmp:
        run.store.write_json(f"{tmp}/{PASSED}", {**report, "passed": True})
    return {"report": f"{out}/{PASSED}", "rows": rows["logs"], "clicks": report["clicks"],
            "conversions": report["conversions"], "users": rows["users"], "items": rows["items"]}


if __name__ == "__main__":
    cli.main(step)
