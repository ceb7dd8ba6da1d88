"""The day's events: complete hourly log files, dimension snapshots, the DuckDB ``events`` view,
and each user's latest context (the rows a user tower runs on outside training).

Used by the features, sampling and ranking-samples steps (:func:`log_inputs`,
:func:`read_snapshot`, :func:`open_events`) and by the ``model`` hard-negative source, the
FAISS recall check and serving (:func:`latest_user_rows`, :func:`active_user_rows`). The SQL is
in ``sql/events_view.sql`` and ``sql/user_latest_context.sql``; see docs/features-and-sampling.md.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from dailyrec.config import Config, SqlConfig
from dailyrec.contract import read_partition, validate_partition
from dailyrec.dates import window
from dailyrec.storage import SUCCESS_MARKER, Store

log = logging.getLogger("dailyrec.events")


def log_inputs(store: Store, days: list[str], cur_date: str) -> tuple[list[str], dict[str, list[int]]]:
    """The Parquet files of the complete (``_SUCCESS``) hourly log partitions of ``days``.

    Days without any hour are skipped; hours without ``_SUCCESS`` are skipped with a warning.

    Returns:
        ``(files, {day: [hours]})``: file paths in day/hour order, and the complete hours per day.
    Raises:
        FileNotFoundError: ``cur_date`` has no complete hour (names ``logs/dt=cur_date``).
    """
    files: list[str] = []
    hours: dict[str, list[int]] = {}
    for day in days:
        got = []
        for h in range(24):
            part = store.partition("logs", day, h)
            if not store.is_dir(part):
                continue
            if not store.exists(f"{part}/{SUCCESS_MARKER}"):
                log.warning("skipping %s: no %s marker (incomplete hour)", part, SUCCESS_MARKER)
                continue
            fs = store.list_files(part, ".parquet")
            if fs:
                files += fs
                got.append(h)
        if got:
            hours[day] = got
            if len(got) < 24:
                log.warning("logs dt=%s has %d complete hour(s) of 24", day, len(got))
    if cur_date not in hours:
        raise FileNotFoundError(
            f"log partition {store.partition('logs', cur_date)} does not exist or holds no complete hour "
            f"(cur_date {cur_date} must have logs)")
    return files, hours


def read_snapshot(store: Store, dataset: str, cur_date: str) -> pa.Table:
    """The ``users`` or ``items`` snapshot of ``cur_date``, checked against the log contract
    (``ContractError`` naming file and column; ``FileNotFoundError`` when absent)."""
    validate_partition(store, dataset, cur_date)
    return read_partition(store, dataset, cur_date)


def open_events(store: Store, files: list[str], users: pa.Table, items: pa.Table,
                engine: SqlConfig | None = None, app_name: str = "dailyrec") -> Any:
    """A connection with the views ``logs_raw`` (``files``), ``users``, ``items`` and ``events*``
    (``sql/events_view.sql``); the caller closes it.

    ``engine``: the ``sql`` config section; ``None`` or ``engine="duckdb"`` gives a DuckDB
    connection, ``engine="spark"`` a :class:`dailyrec.spark.SparkEngine` (its session starts
    here, named ``app_name``; closing the engine stops it). :mod:`dailyrec.sql` runs the same
    files on either.
    """
    from dailyrec import sql

    if engine is not None and engine.engine == "spark":
        from dailyrec.spark import SparkEngine

        con: Any = SparkEngine(engine, app_name=f"dailyrec-{app_name}")
    else:
        con = sql.connect()
    try:
        sql.register_parquet(con, "logs_raw", store, files, base_dir=store.path("logs"))
        sql.register_arrow(con, "users", users)
        sql.register_arrow(con, "items", items)
        sql.run(con, "events_view")
    except BaseException:
        con.close()
        raise
    return con


def engine_info(engine: SqlConfig) -> dict[str, Any]:
    """What a manifest records of the SQL engine: ``{"engine": "duckdb"}`` or, for Spark, its
    master too (``{"engine": "spark", "master": "local[2]"}``)."""
    return {"engine": "spark", "master": engine.spark_master} if engine.engine == "spark" else {"engine": "duckdb"}


def latest_user_rows(store: Store, cfg: Config, cur_date: str) -> pa.Table:
    """Every user of the ``users`` snapshot of ``cur_date`` with the context of their latest
    impression in the training window (``sampling.window_days`` days up to ``cur_date``);
    ``last_event_time`` is NULL for users without one. One row per user, by ``user_id``.

    Raises:
        FileNotFoundError: ``cur_date`` has no complete log hour, or a snapshot is missing.
    """
    from dailyrec import sql

    files, _ = log_inputs(store, window(cur_date, cfg.sampling.window_days), cur_date)
    users = read_snapshot(store, "users", cur_date)
    items = read_snapshot(store, "items", cur_date)
    con = open_events(store, files, users, items)
    try:
        return sql.query_arrow(con, "user_latest_context", {}, {})
    finally:
        con.close()


def active_user_rows(store: Store, cfg: Config, cur_date: str) -> pa.Table:
    """The rows of :func:`latest_user_rows` of users with an impression in the window."""
    import pyarrow.compute as pc

    rows = latest_user_rows(store, cfg, cur_date)
    return rows.filter(pc.is_valid(rows.column("last_event_time")))
