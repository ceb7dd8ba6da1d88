"""The day's retrieval samples, in named phases: read (SQL), positives, negatives, assemble,
statistics, write. See :mod:`dailyrec.sampling` for what is selected and why.

The phases draw from one ``numpy`` generator seeded with ``(sampling.seed, cur_date)`` in a fixed
order (down-sampling, cap, shuffle, random negatives, exposed, same category, model), so the
output is byte-identical for the same inputs and config. Within a source the draws are in owner
(positive slot) order: the random source draws all its first-round uniforms, then one batch per
collision round (:func:`dailyrec.sampling.negatives.resample_collisions`).

The write is streamed (:mod:`dailyrec.sampling.output`): the output rows are laid out as numpy
index arrays (no sort), then ``train.parquet`` is built and written one row group of
:data:`SAMPLE_ROW_GROUP_ROWS` rows at a time, each group's Arrow columns made by the calling
thread while a writer thread encodes the previous group (and a second thread writes
``holdout.parquet`` and ``seen.parquet``), so no whole Arrow table of the samples is ever held.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec import sql
from dailyrec.config import Config
from dailyrec.contract import ITEM_SCHEMA, LOG_SCHEMA, USER_SCHEMA
from dailyrec.dates import window
from dailyrec.events import engine_info, log_inputs, open_events, read_snapshot
from dailyrec.freshness import is_freshness, row_freshness
from dailyrec.history import AS_OF_END_FILE, AS_OF_HOLDOUT_FILE, day_histories
from dailyrec.holdout import choose_holdout, span_bounds
from dailyrec.sampling.arrays import codes
from dailyrec.sampling.model import ModelVectors, model_info, model_negatives, previous_model_vectors
from dailyrec.sampling.negatives import (Negatives, exposed_negatives, popularity_q, random_negatives,
                                         same_category_negatives)
from dailyrec.sampling.output import (SOURCES, TrainRows, assemble, seen_pairs, train_rows,  # noqa: F401 (re-exported)
                                      write_train)
from dailyrec.sampling.positives import Positives, select_positives
from dailyrec.step import StepRun, begin

log = logging.getLogger("dailyrec.sample")

SAMPLE_ROW_GROUP_ROWS = 131_072
"""Rows per Parquet row group of ``train.parquet``. The training reader shuffles row groups (and
rows within a bounded buffer), so smaller groups give a finer shuffle; groups are cut in row order,
so the rows of one positive stay together and follow it except across a group boundary."""

@dataclass
class DayInputs:
    """What the SQL phase read: the catalog (``I`` items), the window's clicks (``clicks``, holdout
    hours and items outside the catalog included), the rows of ``clicks`` that are training clicks
    on catalog items (``click_rows``, int64[C]) with their user codes ``cu`` and catalog codes
    ``ci`` (int64[C]), the users with positives (``user_ids``, numbered in id order, and their
    feature rows ``users``), per-item counts, exposures and the holdout."""

    catalog: pa.Table
    clicks: pa.Table
    click_rows: np.ndarray
    cu: np.ndarray
    ci: np.ndarray
    user_ids: pa.Array
    users: pa.Table
    popularity: pa.Table
    exposed: pa.Table | None
    holdout: pa.Table
    hours: dict[str, list[int]]
    unknown_item_clicks: int
    features: tuple[list[str], list[str], list[str]]
    holdout_span: dict[str, Any] | None = None
    """:func:`dailyrec.holdout.choose_holdout`'s decision (hours, users, clicks, why)."""
    freshness: Any = None
    """:class:`dailyrec.freshness.RowFreshness` when the spec has item freshness features, else None."""

    @property
    def n_items(self) -> int:
        return self.catalog.num_rows


def feature_names(cfg: Config, catalog: pa.Table) -> tuple[list[str], list[str], list[str]]:
    """``(user, context, item)`` feature columns of the spec (without the ids); ``ValueError``
    for a feature that is neither a users, a log nor a catalog column."""
    fc = cfg.features
    user = [f.name for f in fc.by_side("user") if f.name != "user_id"]
    context = [f.name for f in fc.by_side("context")]
    item = [f.name for f in fc.by_side("item") if f.name != "item_id"]
    bad = ([n for n in user if n not in USER_SCHEMA.names]
           + [n for n in context if n not in LOG_SCHEMA.names and n != "hour_of_day"]
           + [n for n in item if n not in catalog.column_names and not is_freshness(n)])
    if bad:
        raise ValueError(f"feature(s) {bad} of features.spec are neither users, log (context) nor catalog columns")
    return user, context, item


def _open(run: StepRun) -> tuple[Any, pa.Table, tuple[list[str], list[str], list[str]], dict[str, list[int]]]:
    """The SQL connection (``sql.engine``) over the window's logs, the catalog, feature names, the log hours."""
    catalog_path = run.path("features", "catalog.parquet")
    run.require(catalog_path, hint=f"run tasks.retrieval.features for {run.cur_date} first")
    with run.store.fs.open_input_file(catalog_path) as fh:
        catalog = pq.read_table(fh)
    if catalog.num_rows == 0:
        raise ValueError(f"{catalog_path} is empty: no item to sample")
    names = feature_names(run.cfg, catalog)
    files, hours = log_inputs(run.store, window(run.cur_date, run.cfg.sampling.window_days), run.cur_date)
    users = read_snapshot(run.store, "users", run.cur_date)
    con = open_events(run.store, files, users, catalog.select(ITEM_SCHEMA.names), run.cfg.sql, app_name="sample")
    try:
        sql.register_arrow(con, "catalog_codes", pa.table({
            "item_id": catalog["item_id"], "item_code": pa.array(np.arange(catalog.num_rows, dtype=np.int32))}))
    except BaseException:
        con.close()
        raise
    return con, catalog, names, hours


def read_inputs(run: StepRun, then: Any = None) -> tuple[DayInputs, Any]:
    """Phase 1: the SQL of ``sql/sample_*.sql`` over the window (one scan of the logs for the
    clicks and the holdout, one for the popularity, one for the exposures when that source is on)
    and the codes of the clicks (clicks outside the catalog are left out of ``click_rows``).

    ``then(cu, ci, n_items)`` (optional; e.g. the positives' selection) runs in a worker thread as
    soon as the codes are known, while this thread runs the remaining queries; its result is
    returned with the inputs (``None`` without it)."""
    timer, sc = run.timer, run.cfg.sampling
    with timer.step("inputs"):
        con, catalog, (user_feats, context, item_feats), hours = _open(run)
    try:
        with timer.step("sql_holdout_hours"):  # a sparse day's holdout takes more hours (dailyrec.holdout)
            span = choose_holdout(con, run.cfg, run.cur_date, days_with_logs=sum(1 for h in hours.values() if h))
        params = {"cur_date": run.cur_date, "window_days": sc.window_days, "holdout_hours": span["hours"]}
        with timer.step("sql_clicks"):
            clicks = sql.query_arrow(con, "sample_clicks", params, {"context": context})
        with ThreadPoolExecutor(1, thread_name_prefix="sample-codes") as pool:
            codes_done = pool.submit(click_codes, timer, clicks, catalog)
            with timer.step("sql_popularity"):
                pop = sql.query_arrow(con, "sample_popularity", params)
            click_rows, cu, ci, uids, unknown = codes_done.result()
            after = pool.submit(then, cu, ci, catalog.num_rows) if then is not None else None
            sql.register_arrow(con, "train_users", pa.table({
                "user_id": uids, "user_code": pa.array(np.arange(len(uids), dtype=np.int32))}))
            with timer.step("sql_users"):
                users = sql.query_arrow(con, "sample_users", {}, {"user_features": user_feats})
            exposed = None
            if "exposed" in sc.hard_negative_sources and sc.hard_negatives_per_positive > 0:
                with timer.step("sql_exposed"):
                    exposed = sql.query_arrow(con, "sample_exposed", params)
            with timer.step("sql_holdout"):
                sql.register_arrow(con, "holdout_clicks",
                                   clicks.filter(clicks["in_holdout"]).drop_columns(["in_holdout"]))
                holdout = sql.query_arrow(con, "sample_holdout", {},
                                          {"user_features": user_feats, "context": context})
            result = after.result() if after is not None else None
    finally:
        con.close()   # a Spark engine's session stops here
    d = DayInputs(catalog=catalog, clicks=clicks.drop_columns(["in_holdout", "request_id"]), click_rows=click_rows,
                  cu=cu, ci=ci, user_ids=uids, users=users, popularity=pop, exposed=exposed, holdout=holdout,
                  hours=hours, unknown_item_clicks=unknown, features=(user_feats, context, item_feats),
                  holdout_span=span, freshness=row_freshness(run.store, run.cfg, run.cur_date, catalog))
    return d, result


def click_codes(timer: Any, clicks: pa.Table, catalog: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                             pa.Array, int]:
    """``(click_rows, cu, ci, user_ids, unknown_item_clicks)`` of the window's clicks: the rows of
    the training window on catalog items, their user codes (rank of the ``user_id`` among those
    rows' users, in string order) and catalog codes; the number of training clicks on items
    outside the catalog."""
    with timer.step("codes"):
        train = ~np.asarray(clicks["in_holdout"].to_numpy(), bool)
        ci_all = _dictionary_codes(clicks["item_id"], catalog["item_id"])
        known = ci_all >= 0
        click_rows = np.flatnonzero(train & known)
        uidx, udict = _dictionary(clicks["user_id"])
        uidx = uidx[click_rows]
        used = np.flatnonzero(np.bincount(uidx, minlength=len(udict)))
        uids_unsorted = udict.take(pa.array(used))
        order = np.asarray(pc.array_sort_indices(uids_unsorted).to_numpy(), np.int64)
        rank = np.full(len(udict), -1, np.int64)
        rank[used[order]] = np.arange(len(order))
        return (click_rows, rank[uidx], ci_all[click_rows], uids_unsorted.take(pa.array(order)),
                int(np.count_nonzero(train & ~known)))


def _dictionary(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """``(indices int64[N], dictionary)`` of a non-null string column (one hashing pass)."""
    enc = pc.dictionary_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    if enc.null_count:
        raise ValueError("null value in a key column of the window's clicks")
    return np.asarray(enc.indices.to_numpy(), np.int64), enc.dictionary


def _dictionary_codes(values: pa.ChunkedArray, value_set: pa.ChunkedArray) -> np.ndarray:
    """Position of each value in ``value_set`` (int64, -1 when absent or null): one hashing pass
    over ``values`` (dictionary encoding), then a lookup of its distinct values only."""
    enc = pc.dictionary_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    if len(enc) == 0:
        return np.zeros(0, np.int64)
    lut = np.r_[codes(enc.dictionary, value_set), -1]
    idx = np.asarray(enc.indices.fill_null(len(enc.dictionary)).to_numpy(), np.int64)
    return lut[idx]


def item_counts(d: DayInputs) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(impressions int64[I], clicks int64[I], events, clicks)`` of the training window."""
    pcode = codes(d.popularity["item_id"], d.catalog["item_id"])
    known = pcode >= 0
    all_imp = np.asarray(d.popularity["impressions"].to_numpy(), np.int64)
    all_clk = np.asarray(d.popularity["clicks"].to_numpy(), np.int64)
    impressions = np.zeros(d.n_items, np.int64)
    item_clicks = np.zeros(d.n_items, np.int64)
    impressions[pcode[known]] = all_imp[known]
    item_clicks[pcode[known]] = all_clk[known]
    return impressions, item_clicks, int(all_imp.sum()), int(all_clk.sum())


def draw_negatives(run: StepRun, rng: np.random.Generator, d: DayInputs, pos: Positives, q: np.ndarray,
                   model_vectors: ModelVectors | None) -> tuple[Negatives, dict[str, str]]:
    """Phase 3: the random negatives, then the hard-negative sources in :data:`SOURCES` order;
    returns the negatives and ``{source: why it was skipped}``."""
    sc, timer = run.cfg.sampling, run.timer
    sources = list(dict.fromkeys(sc.hard_negative_sources))
    h = sc.hard_negatives_per_positive
    negs = Negatives()
    with timer.step("random_negatives"):
        random_negatives(rng, negs, pos, q, sc.negatives_per_positive)
    skipped: dict[str, str] = {}
    with timer.step("hard_negatives"):
        if "exposed" in sources and h > 0 and d.exposed is not None:
            exposed_negatives(rng, negs, pos, d.exposed, d.user_ids, d.catalog["item_id"], h)
        if "same_category" in sources and h > 0:
            same_category_negatives(rng, negs, pos, d.catalog["item_category"], h)
        if "model" in sources and h > 0:
            if model_vectors is None:
                skipped["model"] = "no previous model vectors were given (first run or no model yet)"
                log.warning("hard-negative source 'model' skipped: %s", skipped["model"])
            else:
                with timer.step("model_negatives"):
                    model_negatives(rng, negs, model_vectors, d.users["user_id"], d.catalog["item_id"], pos, h,
                                    sc.model_hard_skip_top, sc.model_hard_pool)
    return negs, skipped


def _source_stats(items: np.ndarray, log_q: np.ndarray, log_pop: np.ndarray, impressions: np.ndarray,
                  cold_below: int) -> dict[str, Any]:
    if len(items) == 0:
        return {"count": 0, "distinct_items": 0}
    return {
        "count": int(len(items)),
        "distinct_items": int(np.count_nonzero(np.bincount(items))),
        "mean_log_popularity": round(float(log_pop[items].mean()), 4),
        "cold_share": round(float((impressions[items] < cold_below).mean()), 4),
        "mean_log_q": round(float(log_q.mean()), 4),
    }


def statistics(cfg: Config, d: DayInputs, pos: Positives, negs: Negatives, skipped: dict[str, str],
               counts: tuple[np.ndarray, np.ndarray, int, int], log_pop: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    """Phase 5: the manifest's ``stats`` (per-source counts, popularity skew, cold share...)."""
    sc = cfg.sampling
    impressions, _, events_in_window, clicks_in_window = counts
    per_source = {"positive": _source_stats(pos.item, pos.log_q, log_pop, impressions, sc.cold_impressions)}
    for s in SOURCES[1:]:
        if s in negs.parts:
            _, it, lq = negs.parts[s]
            per_source[s] = {**_source_stats(it, lq, log_pop, impressions, sc.cold_impressions), **negs.info[s]}
    return {
        "events_in_window": events_in_window,
        "clicks_in_window": clicks_in_window,
        "clicks_on_items_outside_catalog": d.unknown_item_clicks,
        "candidate_positives": pos.candidates,
        "dropped_by_subsampling": pos.dropped_by_subsampling,
        "dropped_by_cap": pos.dropped_by_cap,
        "users_with_positives": len(d.user_ids),
        "catalog_items": d.n_items,
        "catalog_cold_share": round(float((impressions < sc.cold_impressions).mean()), 4),
        "cold_impressions_below": sc.cold_impressions,
        "popularity": f"{sc.popularity_by} in the training window + {sc.popularity_floor:g}",
        "popularity_alpha": sc.popularity_alpha,
        "random_q_max": float(q.max()),
        "random_q_min": float(q.min()),
        "sources": per_source,
        "skipped_sources": skipped,
        "holdout_clicks": d.holdout.num_rows,
    }


def _held_hours(run: StepRun, d: DayInputs) -> int:
    return d.holdout_span["hours"] if d.holdout_span else run.cfg.training.holdout_hours


def _write_side_files(store: Any, tmp: str, d: DayInputs, pos: Positives, hist: dict[str, Any] | None) -> None:
    # one chunk: the bytes do not depend on the SQL engine's batches (see tasks/retrieval/features.py)
    pq.write_table(d.holdout.combine_chunks(), f"{tmp}/holdout.parquet", filesystem=store.fs, compression="zstd")
    pq.write_table(seen_pairs(d, pos), f"{tmp}/seen.parquet", filesystem=store.fs, compression="zstd")
    for key, name in (("end", AS_OF_END_FILE), ("holdout", AS_OF_HOLDOUT_FILE)) if hist else ():
        pq.write_table(hist[key], f"{tmp}/{name}", filesystem=store.fs, compression="zstd")


def write_samples(run: StepRun, d: DayInputs, rows: TrainRows, pos: Positives, stats: dict[str, Any],
                  counts: dict[str, int], model_vectors: ModelVectors | None,
                  hist: dict[str, Any] | None = None) -> str:
    """Phase 6: ``train.parquet`` (:func:`write_train`), ``holdout.parquet``, ``seen.parquet``
    (:func:`seen_pairs`, written by a second thread meanwhile) and the manifest, atomically."""
    store, timer, sc = run.store, run.timer, run.cfg.sampling
    seed = [sc.seed, int(run.cur_date.replace("-", ""))]
    out = run.partition("samples")
    with store.atomic_output(out) as tmp:
        with ThreadPoolExecutor(1, thread_name_prefix="samples-side") as side:
            side_done = side.submit(_write_side_files, store, tmp, d, pos, hist)
            with timer.step("write_train"):
                groups = write_train(f"{tmp}/train.parquet", store.fs, d, rows, SAMPLE_ROW_GROUP_ROWS)
            with timer.step("write_holdout_seen_wait"):
                side_done.result()
        timer.timings["write"] = round(timer.timings["write_train"] + timer.timings["write_holdout_seen_wait"], 4)
        manifest = run.manifest(
            inputs={"logs": {day: d.hours[day] for day in sorted(d.hours)}, "users": run.partition("users"),
                    "catalog": run.path("features", "catalog.parquet"), "model_vectors": model_info(model_vectors)},
            rows=counts, stats=stats, seed=seed, train_row_groups=groups, train_row_group_rows=SAMPLE_ROW_GROUP_ROWS,
            training_window={"days": sorted(d.hours), "excluded_hours_of_cur_date": min(24, _held_hours(run, d)),
                             "excluded_last_hours": _held_hours(run, d)},
            holdout=d.holdout_span,
            sql_engine=engine_info(run.cfg.sql),
        )
        manifest["timings_s"]["total"] = timer.total()
        manifest["events_per_s"] = round(stats["events_in_window"] / max(timer.total(), 1e-9))
        store.write_json(f"{tmp}/_manifest.json", manifest)
    return out


def select_samples(run: StepRun | str, cfg: Config | None = None,
                   model_vectors: ModelVectors | None = None) -> dict[str, Any]:
    """Select and write the day's training samples and holdout (``samples/dt=D/``); with
    ``features.user_history.enabled`` also the history column and files (:mod:`dailyrec.history`).

    Args:
        run: the step's :class:`dailyrec.step.StepRun`, or a ``cur_date`` (a run named ``sample``
            is begun with ``cfg``).
        model_vectors: the previous model's vectors for the ``model`` source; ``None`` computes them
            (:func:`dailyrec.sampling.model.previous_model_vectors`) when ``model`` is one of
            ``sampling.hard_negative_sources``, so every caller selects what the DAG selects (the
            source is skipped with a warning when there is no earlier gate-passed model).
    Returns:
        ``{"path", "train", "holdout", "rows", "negatives_by_source", "skipped_sources"}``.
    Raises:
        FileNotFoundError: no ``features/dt=D/catalog.parquet`` or no complete log hour of ``cur_date``.
        ValueError: an empty catalog, or a feature of the spec that is no input column.
    """
    run = begin("sample", run, cfg) if isinstance(run, str) else run
    sc = run.cfg.sampling
    hc = run.cfg.features.user_history
    later = model_vectors is None and "model" in sc.hard_negative_sources
    if later and not hc.enabled:  # with the history: after the clicks are read (its user vectors need it)
        with run.timer.step("model_vectors"):
            model_vectors, later = previous_model_vectors(run.store, run.cfg, run.cur_date), False
    rng = np.random.default_rng([sc.seed, int(run.cur_date.replace("-", ""))])

    def positives(cu: np.ndarray, ci: np.ndarray, n_items: int) -> Positives:
        with run.timer.step("positives"):
            p = select_positives(rng, cu, ci, n_items, sc.positive_subsample_t, sc.positive_cap_per_item)
            p.clicked_set  # noqa: B018 (built here, in the worker thread, while the SQL runs)
            return p

    d, pos = read_inputs(run, then=positives)
    hist = None
    if hc.enabled:
        with run.timer.step("user_history"):
            start = (d.holdout_span or {}).get("start") or span_bounds(run.cur_date, _held_hours(run, d))[0]
            hist = day_histories(d.clicks, d.click_rows[pos.click], run.cur_date, start, hc.length, hc.lookback_days)
    if later:
        with run.timer.step("model_vectors"):
            model_vectors = previous_model_vectors(run.store, run.cfg, run.cur_date,
                                                   history=hist["end"] if hist else None)
    counts = item_counts(d)
    log.info("samples dt=%s: %d events, %d clicks in the training window; %d positives kept "
             "(%d dropped by subsampling, %d by the cap, %d clicks on items outside the catalog)",
             run.cur_date, counts[2], counts[3], pos.n, pos.dropped_by_subsampling, pos.dropped_by_cap,
             d.unknown_item_clicks)
    if pos.n == 0:
        log.warning("samples dt=%s: no positive in the training window; train.parquet will be empty", run.cur_date)
    pop_count = (counts[1] if sc.popularity_by == "clicks" else counts[0]).astype(np.float64)
    log_pop = np.log(pop_count + sc.popularity_floor)
    q = popularity_q(pop_count, sc.popularity_floor, sc.popularity_alpha)
    negs, skipped = draw_negatives(run, rng, d, pos, q, model_vectors)
    with run.timer.step("assemble"):
        train = train_rows(d, pos, negs)
        train.history = hist["positives"] if hist else None
    with run.timer.step("stats"):
        stats = statistics(run.cfg, d, pos, negs, skipped, counts, log_pop, q)
    rows = {"train": train.n, "positives": pos.n, "negatives": train.n - pos.n, "holdout": d.holdout.num_rows}
    out = write_samples(run, d, train, pos, stats, rows, model_vectors, hist)
    by_source = {s: v["count"] for s, v in stats["sources"].items() if s != "positive"}
    log.info("samples dt=%s: %d rows (%d positives, %s) + %d holdout clicks -> %s in %.2fs (%d events/s)",
             run.cur_date, train.n, pos.n, by_source, d.holdout.num_rows, out, run.timer.total(),
             counts[2] / max(run.timer.total(), 1e-9))
    return {"path": out, "train": f"{out}/train.parquet", "holdout": f"{out}/holdout.parquet",
            "rows": rows, "negatives_by_source": by_source, "skipped_sources": skipped}
