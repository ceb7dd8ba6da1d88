"""The samples of one pass (hourly incremental training, docs/hourly.md): the daily sampler of
:mod:`dailyrec.sampling` run on the pass's hours only.

* **Catalog of the pass** (:func:`pass_catalog`): every item of the ``items/dt=D`` snapshot (items
  born during the day included) with its side features and the counters of ``D - 1`` as the daily
  catalog has them (``features/dt=D-1/item_counters.parquet`` through ``sql/catalog.sql``: an item
  without counters, e.g. born on ``D``, gets zero impressions/clicks and the prior CTR). The counters
  are the base's: a pass never recomputes day-long windows.
* **Vocabularies**: the base's (``features/dt=D-1/vocabularies.json``) plus the ids admitted so far
  (:func:`dailyrec.passes.pass_vocabularies`, show/click admission).
* **Samples**: positives = the pass's clicks on catalog items (word2vec down-sampling / cap as the
  daily step), random negatives with ``log q`` from the pass's popularity, the hard-negative sources
  of ``sampling.hard_negative_sources`` (``exposed``: impressed in the pass and not clicked;
  ``same_category``; ``model``: the warm-source model's towers). SQL: ``sql/pass_clicks.sql``,
  ``sql/pass_popularity.sql``, ``sql/pass_exposed.sql``, ``sql/sample_users.sql``. Draws from one
  generator seeded with ``(sampling.seed, cur_date, hour)``: a re-run writes the same bytes.

Output (atomic), ``pass_samples/dt=D/hour=HH/``: ``train.parquet`` (the columns of
``samples/dt=D/train.parquet``), ``catalog.parquet``, ``vocabularies.json``, ``admission.json``
(the admission summary), ``touched_items.parquet`` (``item_id``, ``impressions``, ``clicks``,
``in_catalog``: the items impressed in the pass, sorted by ``item_id``), ``_manifest.json``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec import sql
from dailyrec.contract import ITEM_SCHEMA
from dailyrec.dates import previous
from dailyrec.events import engine_info, open_events, read_snapshot
from dailyrec.passes import pass_hours, pass_label, pass_start, pass_vocabularies, require_hours, warm_source_for_pass
from dailyrec.sampling.model import ModelVectors, model_info
from dailyrec.sampling.negatives import popularity_q
from dailyrec.sampling.output import train_rows, write_train
from dailyrec.sampling.positives import select_positives
from dailyrec.sampling.select import (SAMPLE_ROW_GROUP_ROWS, DayInputs, click_codes, draw_negatives, feature_names,
                                      item_counts, statistics)
from dailyrec.step import StepRun
from dailyrec.storage import Store

log = logging.getLogger("dailyrec.pass_samples")

DATASET = "pass_samples"
FILES = ("train.parquet", "catalog.parquet", "vocabularies.json", "admission.json", "touched_items.parquet")


def pass_catalog(store: Store, cfg: Any, cur_date: str) -> tuple[pa.Table, str]:
    """``(catalog, counters path)``: the ``items/dt=D`` snapshot joined with ``D - 1``'s item counters
    (``sql/catalog.sql``, the daily catalog's columns, sorted by ``item_id``).

    Raises:
        FileNotFoundError: no ``items/dt=D`` snapshot or no ``features/dt=D-1/item_counters.parquet``.
        ContractError: the snapshot breaks the log contract.
    """
    counters_path = f"{store.partition('features', previous(cur_date))}/item_counters.parquet"
    if not store.exists(counters_path):
        raise FileNotFoundError(f"{counters_path} is missing: the pass catalog of {cur_date} takes the item "
                                f"counters of the daily base's features (run tasks.retrieval.features for "
                                f"{previous(cur_date)})")
    items = read_snapshot(store, "items", cur_date)
    with store.fs.open_input_file(counters_path) as fh:
        counters = pq.read_table(fh)
    con = sql.connect()
    try:
        sql.register_arrow(con, "items", items)
        sql.register_arrow(con, "item_counters", counters)
        catalog = sql.query_arrow(con, "catalog", {}, {"windows": sorted(cfg.features.counter_windows_days)})
    finally:
        con.close()
    if catalog.num_rows == 0:
        raise ValueError(f"{store.partition('items', cur_date)}: empty items snapshot, no catalog for the pass")
    return catalog.combine_chunks(), counters_path


def read_pass_inputs(run: StepRun, hours: list[int], catalog: pa.Table) -> tuple[DayInputs, pa.Table]:
    """The SQL phase over the pass's hourly partitions: ``(DayInputs of the pass, popularity)``
    (``DayInputs.holdout`` is empty: a pass has no holdout). ``MissingHourError`` for an hour without
    ``_SUCCESS``."""
    store, cfg, timer, sc = run.store, run.cfg, run.timer, run.cfg.sampling
    user_feats, context, item_feats = names = feature_names(cfg, catalog)
    with timer.step("inputs"):
        files = require_hours(store, run.cur_date, hours)
        users = read_snapshot(store, "users", run.cur_date)
        con = open_events(store, files, users, catalog.select(ITEM_SCHEMA.names), cfg.sql, app_name="pass_samples")
    params = {"cur_date": run.cur_date, "first_hour": hours[0], "last_hour": hours[-1]}
    try:
        with timer.step("sql_clicks"):
            clicks = sql.query_arrow(con, "pass_clicks", params, {"context": context})
        click_rows, cu, ci, uids, unknown = click_codes(timer, clicks, catalog)
        sql.register_arrow(con, "train_users", pa.table({
            "user_id": uids, "user_code": pa.array(np.arange(len(uids), dtype=np.int32))}))
        with timer.step("sql_users"):
            users_t = sql.query_arrow(con, "sample_users", {}, {"user_features": user_feats})
        with timer.step("sql_popularity"):
            pop = sql.query_arrow(con, "pass_popularity", params)
        exposed = None
        if "exposed" in sc.hard_negative_sources and sc.hard_negatives_per_positive > 0:
            with timer.step("sql_exposed"):
                exposed = sql.query_arrow(con, "pass_exposed", params)
    finally:
        con.close()
    d = DayInputs(catalog=catalog, clicks=clicks.drop_columns(["in_holdout", "request_id"]), click_rows=click_rows,
                  cu=cu, ci=ci, user_ids=uids, users=users_t, popularity=pop, exposed=exposed,
                  holdout=pa.table({"user_id": pa.array([], pa.string())}), hours={run.cur_date: hours},
                  unknown_item_clicks=unknown, features=names, holdout_span=None)
    return d, pop


def pass_model_vectors(run: StepRun, d: DayInputs, model_dir: str, label: str) -> ModelVectors | None:
    """The warm-source model's vectors for the ``model`` hard-negative source: its user tower on each
    user with positives (side features + the context of the user's first click in the pass), its item
    tower on the pass catalog. ``None`` without users."""
    from dailyrec.embeddings import tower_vectors

    if len(d.user_ids) == 0:
        return None
    _, context, _ = d.features
    cu = np.asarray(d.cu)
    codes, first = np.unique(cu, return_index=True)
    rows = d.users.take(pa.array(codes))
    ctx = d.clicks.take(pa.array(np.asarray(d.click_rows)[first]))
    for c in context:
        rows = rows.append_column(c, ctx.column(c))
    specs = run.cfg.features.spec
    u = tower_vectors(f"{model_dir}/user_tower", rows, specs)
    v = tower_vectors(f"{model_dir}/item_tower", d.catalog, specs)
    return ModelVectors(user_ids=np.asarray(rows.column("user_id").to_pylist(), dtype=object), user_vectors=u,
                        item_ids=np.asarray(d.catalog.column("item_id").to_pylist(), dtype=object),
                        item_vectors=v, version=label)


def _touched(d: DayInputs, pop: pa.Table) -> pa.Table:
    """The pass's impressed items (sorted by ``item_id``) and whether each is in the catalog."""
    ids = pop.column("item_id").combine_chunks()
    in_cat = pc.is_in(ids, value_set=d.catalog.column("item_id").combine_chunks())
    t = pa.table({"item_id": ids, "impressions": pc.cast(pop.column("impressions"), pa.int64()),
                  "clicks": pc.cast(pop.column("clicks"), pa.int64()), "in_catalog": in_cat})
    return t.take(pc.sort_indices(t, [("item_id", "ascending")]))


def _admission_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The admission summary with every id collection as a sorted list (JSON, byte-stable)."""
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (set, frozenset, list, tuple)):
            items = [norm(x) for x in v]
            return sorted(items) if all(isinstance(x, str) for x in items) else items
        return v
    return norm(summary)


def select_pass_samples(run: StepRun, hour: int) -> dict[str, Any]:
    """Select and write the samples of the pass holding ``hour`` (``pass_samples/dt=D/hour=HH/``).

    Returns ``{"path", "train", "catalog", "vocabularies", "rows", "admitted": {feature: n},
    "hours", "negatives_by_source"}``.
    Raises:
        MissingPassError: the pass's warm source (previous pass, or the base of ``D - 1``) is missing:
            checked first, nothing is written.
        MissingHourError: an hour of the pass has no ``_SUCCESS``.
        FileNotFoundError: no items/users snapshot of ``cur_date``, no base features of ``D - 1``.
    """
    store, cfg, timer, sc = run.store, run.cfg, run.timer, run.cfg.sampling
    d_str, hours = run.cur_date, pass_hours(cfg, hour)
    start = pass_start(cfg, hour)
    # the chain first: a pass whose warm source is missing stops here (MissingPassError), before admission
    label, mdir = warm_source_for_pass(store, cfg, "two_tower", d_str, start)
    base_vocab_path = f"{store.partition('features', previous(d_str))}/vocabularies.json"
    run.require(base_vocab_path,
                hint=f"the daily base's vocabularies: run tasks.retrieval.features for {previous(d_str)}")
    with timer.step("catalog"):
        catalog, counters_path = pass_catalog(store, cfg, d_str)
    with timer.step("admission"):
        vocabs, summary = pass_vocabularies(store, cfg, d_str, start, store.read_json(base_vocab_path))
        summary = _admission_json(summary)
    d, pop = read_pass_inputs(run, hours, catalog)
    mv = None
    if "model" in sc.hard_negative_sources and sc.hard_negatives_per_positive > 0:
        with timer.step("model_vectors"):
            mv = pass_model_vectors(run, d, mdir, label)
    rng = np.random.default_rng([sc.seed, int(d_str.replace("-", "")), start])
    with timer.step("positives"):
        pos = select_positives(rng, d.cu, d.ci, d.n_items, sc.positive_subsample_t, sc.positive_cap_per_item)
    counts = item_counts(d)
    pop_count = (counts[1] if sc.popularity_by == "clicks" else counts[0]).astype(np.float64)
    log_pop = np.log(pop_count + sc.popularity_floor)
    q = popularity_q(pop_count, sc.popularity_floor, sc.popularity_alpha)
    negs, skipped = draw_negatives(run, rng, d, pos, q, mv)
    with timer.step("assemble"):
        rows = train_rows(d, pos, negs)
    stats = statistics(cfg, d, pos, negs, skipped, counts, log_pop, q)
    touched = _touched(d, pop)
    admitted = {k: len(v) for k, v in (summary.get("admitted") or {}).items()}  # rows added to the base's
    newly = {k: len(v) for k, v in (summary.get("newly_admitted") or {}).items()}  # admitted by this pass
    n = {"train": rows.n, "positives": pos.n, "negatives": rows.n - pos.n, "clicks": len(d.cu),
         "catalog": d.n_items, "touched_items": touched.num_rows, "users_with_positives": len(d.user_ids)}
    out = run.partition(DATASET, start)
    with timer.step("write"), store.atomic_output(out) as tmp:
        groups = write_train(f"{tmp}/train.parquet", store.fs, d, rows, SAMPLE_ROW_GROUP_ROWS)
        pq.write_table(catalog, f"{tmp}/catalog.parquet", filesystem=store.fs, compression="zstd")
        pq.write_table(touched, f"{tmp}/touched_items.parquet", filesystem=store.fs, compression="zstd")
        store.write_text(f"{tmp}/vocabularies.json", json.dumps(vocabs, sort_keys=True) + "\n")
        store.write_text(f"{tmp}/admission.json", json.dumps(summary, sort_keys=True, indent=1) + "\n")
        manifest = run.manifest(
            inputs={"logs": {d_str: hours}, "users": run.partition("users"), "items": run.partition("items"),
                    "item_counters": counters_path, "base_vocabularies": base_vocab_path,
                    "admission_state": summary.get("state"), "model_vectors": model_info(mv)},
            rows=n, pass_label=pass_label(d_str, start), hours=hours, stats=stats,
            seed=[sc.seed, int(d_str.replace("-", "")), start], train_row_groups=groups,
            vocab_sizes={k: len(v) for k, v in vocabs.items()}, admitted=admitted, newly_admitted=newly,
            files=list(FILES),
            sql_engine=engine_info(cfg.sql))
        store.write_json(f"{tmp}/_manifest.json", manifest)
    by_source = {s: v["count"] for s, v in stats["sources"].items() if s != "positive"}
    log.info("pass %s (hours %s): %d rows (%d positives, %s), %d touched items, admitted %s -> %s",
             pass_label(d_str, start), hours, rows.n, pos.n, by_source, touched.num_rows, admitted, out)
    return {"path": out, "train": f"{out}/train.parquet", "catalog": f"{out}/catalog.parquet",
            "vocabularies": f"{out}/vocabularies.json", "rows": n, "admitted": admitted,
            "newly_admitted": newly, "hours": hours,
            "negatives_by_source": by_source, "skipped_sources": skipped}
