"""Feature preparation (stage 2 of the daily retrieval DAG): counters, catalog and vocabularies.

    python -m tasks.retrieval.features --cur-date 2026-11-03 [--set features.min_count=2]

Reads the hourly log partitions of the last ``max(features.counter_windows_days,
sampling.window_days)`` days up to ``cur_date`` (the days that exist; ``cur_date`` itself must
exist) and the users/items snapshots of ``cur_date``; all the work is SQL in ``sql/*.sql`` run by
DuckDB over the Parquet files. Writes atomically to ``<root>/features/dt=D/``:

* ``item_counters.parquet``, ``user_counters.parquet``: per key and counter window ``W``
  ``impressions_Wd``, ``clicks_Wd``, ``ctr_Wd`` (smoothed), ``last_seen_dt``, ``recency_days``;
* ``catalog.parquet``: every item of ``items/dt=D`` with its side features and counters (0 for
  unseen items), the set item embeddings are exported for;
* ``vocabularies.json`` (``{feature: [id, ...]}`` for each ``vocab`` feature of the spec) and
  ``vocab_state.parquet`` (``feature, id, last_seen_dt, total_count``), chained from
  ``features/dt=<D-1>`` (see ``sql/vocab_state.sql`` and docs/features-and-sampling.md);
* ``_manifest.json``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date, previous, window
from dailyrec.contract import ITEM_SCHEMA, LOG_SCHEMA, USER_SCHEMA, read_partition, validate_partition
from dailyrec.storage import SUCCESS_MARKER, Store, Timer, make_manifest, open_store
from dailyrec import sql as _duck

log = logging.getLogger("dailyrec.features")

# Candidate config keys (see the report / docs): features.ctr_prior_strength.

VOCAB_STATE_SCHEMA = pa.schema([
    pa.field("feature", pa.string(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("last_seen_dt", pa.date32()),
    pa.field("total_count", pa.int64()),
])
OUTPUT_FILES = ("item_counters.parquet", "user_counters.parquet", "catalog.parquet",
                "vocabularies.json", "vocab_state.parquet")


# ---- inputs -------------------------------------------------------------------------------
def log_inputs(store: Store, days: list[str], cur_date: str) -> tuple[list[str], dict[str, list[int]]]:
    """The Parquet files of the complete (``_SUCCESS``) hourly log partitions of ``days``.

    Days without any hour are skipped; ``cur_date`` must have at least one complete hour, else
    ``FileNotFoundError`` naming ``logs/dt=cur_date``. Hours without ``_SUCCESS`` are skipped
    with a warning. Returns ``(files, {day: [hours]})``.
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
    """The users/items snapshot of ``cur_date``, checked against the contract."""
    validate_partition(store, dataset, cur_date)
    return read_partition(store, dataset, cur_date)


def open_events(store: Store, files: list[str], users: pa.Table, items: pa.Table):
    """A DuckDB connection with the views ``logs_raw``, ``users``, ``items``, ``events*``."""
    con = _duck.connect()
    _duck.register_parquet(con, "logs_raw", store, files, base_dir=store.path("logs"))
    _duck.register_arrow(con, "users", users)
    _duck.register_arrow(con, "items", items)
    _duck.run(con, "events_view")
    return con


def _vocab_source(name: str) -> str:
    if name in LOG_SCHEMA.names or name == "hour_of_day":
        return "events"
    if name in USER_SCHEMA.names:
        return "events_users"
    if name in ITEM_SCHEMA.names:
        return "events_items"
    raise ValueError(f"vocab feature {name!r} is neither a log, a users nor an items column")


def _check_windows(windows: list[int]) -> list[int]:
    ws = sorted(set(windows))
    if not ws or any(not isinstance(w, int) or w < 1 for w in ws):
        raise ValueError(f"features.counter_windows_days must hold integers >= 1, got {windows!r}")
    return ws


def _write(store: Store, table: pa.Table, path: str) -> None:
    pq.write_table(table, path, filesystem=store.fs, compression="zstd")


# ---- the step -----------------------------------------------------------------------------
def build_features(cur_date: str, cfg: Config | None = None) -> dict[str, Any]:
    """Compute counters, catalog and vocabularies of ``cur_date``; returns pointers and counts."""
    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    fc = cfg.features
    windows = _check_windows(list(fc.counter_windows_days))
    vocab_days = cfg.sampling.window_days
    timer = Timer()

    with timer.step("inputs"):
        days = window(cur_date, max(max(windows), vocab_days))
        files, hours = log_inputs(store, days, cur_date)
        users = read_snapshot(store, "users", cur_date)
        items = read_snapshot(store, "items", cur_date)
    log.info("features dt=%s: %d log file(s) over %d day(s) %s, %d users, %d items in the snapshots",
             cur_date, len(files), len(hours), sorted(hours), users.num_rows, items.num_rows)

    con = open_events(store, files, users, items)
    params = {"cur_date": cur_date, "max_window": max(windows), "prior_strength": fc.ctr_prior_strength}
    with timer.step("item_counters"):
        item_counters = _duck.query_arrow(con, "counters", params, {"key": "item_id", "windows": windows})
    with timer.step("user_counters"):
        user_counters = _duck.query_arrow(con, "counters", params, {"key": "user_id", "windows": windows})
    log.info("counters: %d items, %d users seen in the last %d day(s)",
             item_counters.num_rows, user_counters.num_rows, max(windows))

    with timer.step("catalog"):
        _duck.register_arrow(con, "item_counters", item_counters)
        catalog = _duck.query_arrow(con, "catalog", {}, {"windows": windows})
    unseen = catalog.num_rows - int(pc.sum(pc.is_valid(catalog["last_seen_dt"])).as_py() or 0)
    log.info("catalog: %d items (%d without events in %d day(s))", catalog.num_rows, unseen, max(windows))

    with timer.step("vocabularies"):
        vocab_features = [f.name for f in fc.spec if f.kind == "vocab"]
        parts = [
            _duck.query_arrow(con, "vocab_counts",
                              {"feature": name, "cur_date": cur_date, "vocab_days": vocab_days},
                              {"column": name, "source": _vocab_source(name)})
            for name in vocab_features
        ]
        today = (pa.concat_tables(parts) if parts else
                 pa.table({"feature": pa.array([], pa.string()), "id": pa.array([], pa.string()),
                           "window_count": pa.array([], pa.int64()), "day_count": pa.array([], pa.int64()),
                           "last_seen_dt": pa.array([], pa.date32())}))
        prev_day = previous(cur_date)
        prev_path = f"{store.partition('features', prev_day)}/vocab_state.parquet"
        if store.exists(prev_path):
            with store.fs.open_input_file(prev_path) as fh:
                prev_state = pq.read_table(fh).select(VOCAB_STATE_SCHEMA.names).cast(VOCAB_STATE_SCHEMA)
            # a feature no longer of kind vocab drops out of the chain
            prev_state = prev_state.filter(pc.is_in(prev_state["feature"], pa.array(vocab_features, pa.string())))
            log.info("vocab state chained from %s (%d ids)", prev_path, prev_state.num_rows)
        else:
            prev_state = VOCAB_STATE_SCHEMA.empty_table()
            prev_path = None
            log.info("no vocab state for %s: vocabularies start from the window of %s", prev_day, cur_date)
        _duck.register_arrow(con, "today", today)
        _duck.register_arrow(con, "prev_state", prev_state)
        state = _duck.query_arrow(con, "vocab_state", {"cur_date": cur_date, "min_count": fc.min_count,
                                                       "evict_after_days": fc.evict_after_days})
        state = state.cast(VOCAB_STATE_SCHEMA)
        feat_col = state["feature"].to_pylist()
        id_col = state["id"].to_pylist()
        vocabularies: dict[str, list[str]] = {name: [] for name in vocab_features}
        for f, i in zip(feat_col, id_col):  # already sorted by (feature, id) in SQL
            vocabularies[f].append(i)
    con.close()
    sizes = {k: len(v) for k, v in vocabularies.items()}
    log.info("vocabularies: %s", sizes)

    out = store.partition("features", cur_date)
    rows = {"item_counters": item_counters.num_rows, "user_counters": user_counters.num_rows,
            "catalog": catalog.num_rows, "vocab_state": state.num_rows, **{f"vocab_{k}": v for k, v in sizes.items()}}
    with timer.step("write"), store.atomic_output(out) as tmp:
        _write(store, item_counters, f"{tmp}/item_counters.parquet")
        _write(store, user_counters, f"{tmp}/user_counters.parquet")
        _write(store, catalog, f"{tmp}/catalog.parquet")
        _write(store, state, f"{tmp}/vocab_state.parquet")
        store.write_text(f"{tmp}/vocabularies.json", json.dumps(vocabularies, sort_keys=True) + "\n")
        manifest = make_manifest(
            "features", cfg, cur_date,
            inputs={"logs": {d: hours[d] for d in sorted(hours)},
                    "users": store.partition("users", cur_date), "items": store.partition("items", cur_date),
                    "prev_vocab_state": prev_path},
            rows=rows, timings=timer.timings,
            counter_windows_days=windows, vocab_window_days=vocab_days,
            ctr_prior_strength=fc.ctr_prior_strength, min_count=fc.min_count,
            evict_after_days=fc.evict_after_days, catalog_unseen_items=unseen,
            vocab_sizes=sizes, files=list(OUTPUT_FILES),
        )
        manifest["timings_s"]["total"] = timer.total()
        store.write_json(f"{tmp}/_manifest.json", manifest)
    log.info("features dt=%s written to %s in %.2fs", cur_date, out, timer.total())
    return {"path": out, "catalog": f"{out}/catalog.parquet", "vocabularies": f"{out}/vocabularies.json",
            "rows": rows, "days": sorted(hours), "vocab_sizes": sizes}


def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    cli.run(lambda: build_features(args.cur_date, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
