"""Feature tables of a day: counters, catalog and the chained vocabularies (SQL in ``sql/``).

Used by the ``tasks.retrieval.features`` stage; see docs/features-and-sampling.md for the
counters (``sql/counters.sql``), the catalog (``sql/catalog.sql``) and the vocabulary chain
(``sql/vocab_counts.sql``, ``sql/vocab_state.sql``: ids seen at least ``features.min_count``
times in the window, kept until unseen for ``features.evict_after_days`` days) and the
normalisation statistics of the ``numeric`` features (``sql/numeric_stats.sql``, stored with the
models that use them: ``models.features.attach_numeric_stats``).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dailyrec import sql
from dailyrec.config import Config
from dailyrec.contract import ITEM_SCHEMA, LOG_SCHEMA, USER_SCHEMA
from dailyrec.dates import previous
from dailyrec.storage import Store

log = logging.getLogger("dailyrec.features")

VOCAB_STATE_SCHEMA = pa.schema([
    pa.field("feature", pa.string(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("last_seen_dt", pa.date32()),
    pa.field("total_count", pa.int64()),
])
OUTPUT_FILES = ("item_counters.parquet", "user_counters.parquet", "catalog.parquet",
                "vocabularies.json", "vocab_state.parquet", "numeric_stats.json")
NUMERIC_STATS_FILE = "numeric_stats.json"
STAT_DIGITS = 12
"""Significant digits the statistics are rounded to (DuckDB's parallel sums may differ in the last
bits between runs; rounded, a re-run writes the same bytes)."""


def vocab_source(name: str) -> str:
    """The ``events*`` view holding vocab feature ``name`` (``ValueError`` when none does)."""
    if name in LOG_SCHEMA.names or name == "hour_of_day":
        return "events"
    if name in USER_SCHEMA.names:
        return "events_users"
    if name in ITEM_SCHEMA.names:
        return "events_items"
    raise ValueError(f"vocab feature {name!r} is neither a log, a users nor an items column")


def counters_and_catalog(con: Any, cur_date: str, cfg: Config, windows: list[int],
                         timer: Any) -> tuple[pa.Table, pa.Table, pa.Table]:
    """``(item_counters, user_counters, catalog)`` over the ``events`` view of ``con``."""
    params = {"cur_date": cur_date, "max_window": max(windows), "prior_strength": cfg.features.ctr_prior_strength}
    with timer.step("item_counters"):
        item_counters = sql.query_arrow(con, "counters", params, {"key": "item_id", "windows": windows})
    with timer.step("user_counters"):
        user_counters = sql.query_arrow(con, "counters", params, {"key": "user_id", "windows": windows})
    log.info("counters: %d items, %d users seen in the last %d day(s)",
             item_counters.num_rows, user_counters.num_rows, max(windows))
    with timer.step("catalog"):
        sql.register_arrow(con, "item_counters", item_counters)
        catalog = sql.query_arrow(con, "catalog", {}, {"windows": windows})
    return item_counters, user_counters, catalog


def _previous_state(store: Store, cur_date: str, vocab_features: list[str]) -> tuple[pa.Table, str | None]:
    """The vocab state of the day before (its vocab features only) and its path, or an empty one."""
    import pyarrow.parquet as pq

    prev_day = previous(cur_date)
    prev_path = f"{store.partition('features', prev_day)}/vocab_state.parquet"
    if not store.exists(prev_path):
        log.info("no vocab state for %s: vocabularies start from the window of %s", prev_day, cur_date)
        return VOCAB_STATE_SCHEMA.empty_table(), None
    with store.fs.open_input_file(prev_path) as fh:
        prev_state = pq.read_table(fh).select(VOCAB_STATE_SCHEMA.names).cast(VOCAB_STATE_SCHEMA)
    # a feature no longer of kind vocab drops out of the chain
    prev_state = prev_state.filter(pc.is_in(prev_state["feature"], pa.array(vocab_features, pa.string())))
    log.info("vocab state chained from %s (%d ids)", prev_path, prev_state.num_rows)
    return prev_state, prev_path


def vocabularies(con: Any, store: Store, cur_date: str, cfg: Config
                 ) -> tuple[dict[str, list[str]], pa.Table, str | None]:
    """``({feature: [id, ...]}, vocab state, previous state's path or None)`` for the spec's
    ``vocab`` features, chained from ``features/dt=<D-1>/vocab_state.parquet``."""
    fc = cfg.features
    vocab_features = [f.name for f in fc.spec if f.kind == "vocab"]
    parts = [
        sql.query_arrow(con, "vocab_counts",
                        {"feature": name, "cur_date": cur_date, "vocab_days": cfg.sampling.window_days},
                        {"column": name, "source": vocab_source(name)})
        for name in vocab_features
    ]
    today = (pa.concat_tables(parts) if parts else
             pa.table({"feature": pa.array([], pa.string()), "id": pa.array([], pa.string()),
                       "window_count": pa.array([], pa.int64()), "day_count": pa.array([], pa.int64()),
                       "last_seen_dt": pa.array([], pa.date32())}))
    prev_state, prev_path = _previous_state(store, cur_date, vocab_features)
    sql.register_arrow(con, "today", today)
    sql.register_arrow(con, "prev_state", prev_state)
    state = sql.query_arrow(con, "vocab_state", {"cur_date": cur_date, "min_count": fc.min_count,
                                                 "evict_after_days": fc.evict_after_days})
    state = state.cast(VOCAB_STATE_SCHEMA)
    vocabs: dict[str, list[str]] = {name: [] for name in vocab_features}
    for f, i in zip(state["feature"].to_pylist(), state["id"].to_pylist()):  # sorted by (feature, id) in SQL
        vocabs[f].append(i)
    return vocabs, state, prev_path


def numeric_source(name: str, side: str, catalog_columns: list[str]) -> str:
    """The ``events*`` view holding numeric feature ``name`` of ``side``: ``events_users`` (a users
    column), ``events`` (a log column / ``hour_of_day``) or ``events_catalog`` (a catalog column:
    the item side features and counters). ``ValueError`` names a feature found in none."""
    if side == "user" and name in USER_SCHEMA.names:
        return "events_users"
    if side == "context" and (name in LOG_SCHEMA.names or name == "hour_of_day"):
        return "events"
    if side == "item" and name in catalog_columns:
        return "events_catalog"
    where = {"user": "a users snapshot column", "context": "a log column",
             "item": f"a catalog column ({catalog_columns})"}[side]
    raise ValueError(f"numeric feature {name!r} (side {side}) is not {where}")


def _rounded(v: Any) -> float | None:
    return None if v is None else float(f"{float(v):.{STAT_DIGITS}g}")


def numeric_stats(con: Any, cur_date: str, cfg: Config, catalog: pa.Table) -> dict[str, dict[str, Any]]:
    """``{feature: {"mean", "std", "rows", "count", "missing", "transform"}}`` for each ``numeric``
    feature of ``features.spec``: ``sql/numeric_stats.sql`` over the ``events*`` views of ``con``
    (the training window: ``sampling.window_days`` days up to ``cur_date`` without the last
    ``training.holdout_hours`` hours). ``std`` is 1.0 when the values are constant or absent, ``mean``
    0.0 without a value (the model then maps every value to 0). Rounded to :data:`STAT_DIGITS`
    significant digits. Raises ``ValueError`` for a feature no view holds (:func:`numeric_source`)."""
    from dailyrec.freshness import is_freshness

    # the item freshness features are computed per row, not read from a view: dailyrec.freshness.freshness_stats
    specs = [f for f in cfg.features.spec if f.kind == "numeric" and not (f.side == "item" and is_freshness(f.name))]
    if not specs:
        return {}
    sql.register_arrow(con, "catalog", catalog)
    sql.run(con, "events_catalog_view")
    out: dict[str, dict[str, Any]] = {}
    for f in specs:
        row = sql.query_arrow(con, "numeric_stats",
                              {"feature": f.name, "cur_date": cur_date, "window_days": cfg.sampling.window_days,
                               "holdout_hours": cfg.training.holdout_hours, "log1p": f.transform == "log1p"},
                              {"column": f.name, "source": numeric_source(f.name, f.side, catalog.column_names)}
                              ).to_pylist()[0]
        mean, std = _rounded(row["mean"]), _rounded(row["std"])
        out[f.name] = {"mean": mean if mean is not None else 0.0,
                       "std": std if std is not None and std > 0 else 1.0,
                       "rows": int(row["rows"]), "count": int(row["count"]), "missing": int(row["missing"]),
                       "transform": f.transform}
        if not row["count"]:
            log.warning("numeric feature %s has no value in the training window of %s: mean 0, std 1",
                        f.name, cur_date)
    return out


def read_numeric_stats(store: Store, cur_date: str) -> dict[str, dict[str, Any]]:
    """``features/dt=D/numeric_stats.json`` of the features step (``{}`` when the partition predates
    numeric features and has no such file; a numeric feature without statistics is then refused by
    ``models.features.attach_numeric_stats``, naming it)."""
    path = f"{store.partition('features', cur_date)}/{NUMERIC_STATS_FILE}"
    return store.read_json(path) if store.exists(path) else {}


def shrink_vocabularies(store: Store, cfg: Config, cur_date: str, vocabs: dict[str, list[str]],
                        state: pa.Table) -> tuple[dict[str, list[str]], pa.Table, dict[str, Any]]:
    """With ``passes.enabled`` (the daily run is the passes' consolidation): run the admission
    shrink of ``cur_date`` (:func:`dailyrec.eviction.shrink`, writes ``admission/dt=D/``) and leave
    the evicted ids (evicted and not seen since: :func:`dailyrec.eviction.evicted_ids`) out of the
    vocabularies and of the vocab state. Returns ``(vocabs, state, summary)``; ``summary`` (for the
    manifest): ``state``, ``evicted``/``kept``/``dropped``/``tombstones`` ``{feature: count}``,
    ``left_out`` ``{feature: ids removed from the vocabulary}``, ``hours_added``."""
    from dailyrec.eviction import evicted_ids, shrink

    res = shrink(store, cfg, cur_date)
    gone = evicted_ids(store, cur_date)
    left_out = {}
    for f, ids in vocabs.items():
        kept = [i for i in ids if i not in gone.get(f, ())]
        left_out[f] = len(ids) - len(kept)
        vocabs[f] = kept
    for f, ids in gone.items():
        state = state.filter(pc.invert(pc.and_(pc.equal(state["feature"], f),
                                               pc.is_in(state["id"], pa.array(sorted(ids), pa.string())))))
    summary = {"state": res["state"], "evicted": {f: len(v) for f, v in res["evicted"].items()},
               "kept": res["kept"], "dropped": res["dropped"], "tombstones": res["tombstones"],
               "left_out": left_out, "hours_added": res["hours_added"]}
    log.info("admission shrink of %s: evicted %s, left out of the vocabularies %s", cur_date,
             summary["evicted"], left_out)
    return vocabs, state, summary
