"""Feature preparation (daily_retrieval's ``build_features``): counters, catalog and vocabularies.

    python -m tasks.retrieval.features --cur-date 2026-11-03 [--set features.min_count=2]

Reads the hourly log partitions of the last ``max(features.counter_windows_days,
sampling.window_days)`` days up to ``cur_date`` (the days that exist; ``cur_date`` itself must
exist; each must have passed ``tasks.ingest.validate_day``: ``run.require_validated``) and the
users/items snapshots of ``cur_date``; all the work is SQL in ``sql/*.sql`` run by
DuckDB or Spark SQL (``sql.engine``) over the Parquet files (:mod:`dailyrec.features`).
Writes atomically to ``<root>/features/dt=D/``:

* ``item_counters.parquet``, ``user_counters.parquet``: per key and counter window ``W``
  ``impressions_Wd``, ``clicks_Wd``, ``ctr_Wd`` (smoothed), ``last_seen_dt``, ``recency_days``;
* ``catalog.parquet``: every item of ``items/dt=D`` with its side features and counters (0 for
  unseen items), the set item embeddings are exported for;
* ``vocabularies.json`` (``{feature: [id, ...]}`` for each ``vocab`` feature of the spec) and
  ``vocab_state.parquet`` (``feature, id, last_seen_dt, total_count``), chained from
  ``features/dt=<D-1>`` (see ``sql/vocab_state.sql`` and docs/features-and-sampling.md);
* ``numeric_stats.json``: ``{feature: {"mean", "std", "rows", "count", "missing", "transform"}}``
  for each ``numeric`` feature of the spec (``sql/numeric_stats.sql``: over the training window,
  the held-out hours excluded), which the training steps store with their models
  (``models.features.attach_numeric_stats``); ``{}`` without numeric features; the item freshness
  features (``item_age_days``, ``item_clicks_<H>h``) with :func:`dailyrec.freshness.freshness_stats`
  (one value per training-window impression, as of its event time);
* ``_manifest.json``.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.dates import window
from dailyrec.events import engine_info, log_inputs, open_events, read_snapshot
from dailyrec.features import (NUMERIC_STATS_FILE, OUTPUT_FILES, counters_and_catalog, numeric_stats,
                               shrink_vocabularies, vocabularies)
from dailyrec.freshness import freshness_stats
from dailyrec.step import begin


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Compute counters, catalog and vocabularies of ``cur_date``; returns pointers and counts."""
    run = begin("features", cur_date, cfg)
    store, fc, d = run.store, cfg.features, run.cur_date
    windows = sorted(fc.counter_windows_days)  # distinct, 1..365: checked by the config
    days = window(d, max(max(windows), cfg.sampling.window_days))
    run.require_validated(days)
    with run.timer.step("inputs"):
        files, hours = log_inputs(store, days, d)
        users = read_snapshot(store, "users", d)
        items = read_snapshot(store, "items", d)
    run.log.info("features dt=%s: %d log file(s) over %d day(s) %s, %d users, %d items in the snapshots",
                 d, len(files), len(hours), sorted(hours), users.num_rows, items.num_rows)
    with run.timer.step("engine"):
        con = open_events(store, files, users, items, cfg.sql, app_name="features")
    try:
        item_counters, user_counters, catalog = counters_and_catalog(con, d, cfg, windows, run.timer)
        unseen = catalog.num_rows - int(pc.sum(pc.is_valid(catalog["last_seen_dt"])).as_py() or 0)
        run.log.info("catalog: %d items (%d without events in %d day(s))", catalog.num_rows, unseen, max(windows))
        with run.timer.step("vocabularies"):
            vocabs, state, prev_path = vocabularies(con, store, d, cfg)
        with run.timer.step("numeric_stats"):
            nstats = numeric_stats(con, d, cfg, catalog)
            nstats |= freshness_stats(store, cfg, d, catalog)  # item age / recent clicks: dailyrec.freshness
    finally:
        con.close()
    admission = None
    if cfg.passes.enabled:  # the consolidation of the hourly passes: shrink, evicted ids leave the vocabularies
        with run.timer.step("shrink"):
            vocabs, state, admission = shrink_vocabularies(store, cfg, d, vocabs, state)
    sizes = {k: len(v) for k, v in vocabs.items()}
    run.log.info("vocabularies: %s", sizes)

    out = run.partition("features")
    rows = {"item_counters": item_counters.num_rows, "user_counters": user_counters.num_rows,
            "catalog": catalog.num_rows, "vocab_state": state.num_rows, **{f"vocab_{k}": v for k, v in sizes.items()}}
    with run.timer.step("write"), store.atomic_output(out) as tmp:
        for name, table in (("item_counters", item_counters), ("user_counters", user_counters),
                            ("catalog", catalog), ("vocab_state", state)):
            # one chunk: the bytes then do not depend on how the engine batched its result (DuckDB's
            # batches follow its thread count, Spark's its partitions; the Parquet writer's pages do)
            pq.write_table(table.combine_chunks(), f"{tmp}/{name}.parquet", filesystem=store.fs, compression="zstd")
        store.write_text(f"{tmp}/vocabularies.json", json.dumps(vocabs, sort_keys=True) + "\n")
        store.write_text(f"{tmp}/{NUMERIC_STATS_FILE}", json.dumps(nstats, sort_keys=True, indent=1) + "\n")
        manifest = run.manifest(
            inputs={"logs": {day: hours[day] for day in sorted(hours)},
                    "users": run.partition("users"), "items": run.partition("items"), "prev_vocab_state": prev_path},
            rows=rows, counter_windows_days=windows, vocab_window_days=cfg.sampling.window_days,
            ctr_prior_strength=fc.ctr_prior_strength, min_count=fc.min_count,
            evict_after_days=fc.evict_after_days, catalog_unseen_items=unseen,
            vocab_sizes=sizes, numeric_stats=nstats, files=list(OUTPUT_FILES), sql_engine=engine_info(cfg.sql),
            **({"admission": admission} if admission is not None else {}))
        manifest["timings_s"]["total"] = run.timer.total()
        store.write_json(f"{tmp}/_manifest.json", manifest)
    run.log.info("features dt=%s written to %s in %.2fs", d, out, run.timer.total())
    return {"path": out, "catalog": f"{out}/catalog.parquet", "vocabularies": f"{out}/vocabularies.json",
            "numeric_stats": f"{out}/{NUMERIC_STATS_FILE}",
            "rows": rows, "days": sorted(hours), "vocab_sizes": sizes}


if __name__ == "__main__":
    cli.main(step)
