"""Retrieval sample selection (stage 3 of the daily retrieval DAG): positives, negatives, holdout.

    python -m tasks.retrieval.sample --cur-date 2026-11-03 [--set sampling.negatives_per_positive=8]

Inputs: the hourly logs of the last ``sampling.window_days`` days up to ``cur_date``, the users
snapshot of ``cur_date`` and ``features/dt=D/catalog.parquet`` (tasks.retrieval.features). The heavy lifting
is DuckDB SQL (``sql/sample_*.sql``) and vectorised numpy; no per-row Python.

* training window: the window minus the last ``training.holdout_hours`` hours of ``cur_date``;
  ``holdout.parquet`` holds the clicks of those hours (user features + context + item_id).
* positives: the window's clicks on catalog items, hot items down-sampled (word2vec keep
  probability ``min(1, sqrt(t/f) + t/f)``, ``f`` = the item's share of the clicks,
  ``t = sampling.positive_subsample_t``) and/or capped per item (``positive_cap_per_item``).
* random negatives: ``negatives_per_positive`` per positive from the whole catalog with
  ``q_j ∝ (clicks_j + 1) ** popularity_alpha`` (clicks in the training window; the +1 floor keeps
  cold items drawable), never an item the user clicked in the window (collisions resampled, the
  rest dropped); ``log_q = log q_j``.
* hard negatives (``sampling.hard_negative_sources``, ``hard_negatives_per_positive`` each):
  ``exposed`` (impressed to the user, never clicked), ``same_category`` (a uniform catalog item
  of the positive's category the user did not click), ``model`` (:func:`model_hard_negatives`
  on the previous model's vectors, passed as :class:`ModelVectors`; skipped with a warning
  when there are none).

Output (atomic), ``samples/dt=D/``: ``train.parquet``, ``holdout.parquet``, ``seen.parquet`` (the
distinct user/item clicks of the training window, before down-sampling), ``_manifest.json``
(with per-source statistics). Deterministic under ``(sampling.seed, cur_date)``. See
docs/features-and-sampling.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date, window
from dailyrec.contract import ITEM_SCHEMA, LOG_SCHEMA, USER_SCHEMA
from dailyrec.storage import Timer, make_manifest, open_store
from dailyrec import sql as _duck
from tasks.retrieval.features import log_inputs, open_events, read_snapshot

log = logging.getLogger("dailyrec.sample")

SOURCES = ("positive", "random", "exposed", "same_category", "model")
"""Values of the ``source`` column; rows of one positive follow it in this order."""

RESAMPLE_ROUNDS = 8
"""Redraws of a negative that collides with a click of its user before it is dropped."""
SCORE_BLOCK = 1 << 24
"""Upper bound of the score-matrix entries (users x items) scored at once by the model source."""


@dataclass(frozen=True)
class ModelVectors:
    """The previous model's vectors for the ``model`` hard-negative source.

    ``user_ids[U]`` with ``user_vectors[U, D]`` (e.g. the user tower on each user's latest
    context), ``item_ids[I]`` with ``item_vectors[I, D]``; ``version`` names the model.
    """

    user_ids: np.ndarray
    user_vectors: np.ndarray
    item_ids: np.ndarray
    item_vectors: np.ndarray
    version: str = ""


# ---- the model hard-negative source ---------------------------------------------------------
def model_hard_negatives(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    item_ids: np.ndarray,
    clicked: np.ndarray,
    k: int,
    skip_top: int,
    block: int = SCORE_BLOCK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items a model ranks high for each user that the user did not click, below the top ranks.

    Exact inner-product ranking with numpy, ``block`` score entries at a time. For user ``u``
    the items are ranked by ``user_vectors[u] . item_vectors[j]`` (descending, ties by item row);
    the first ``skip_top`` ranks are skipped (they are likely true positives the user simply did
    not reach: "false negatives"), then the first ``k`` items the user did not click are returned.

    Args:
        user_vectors: ``float[U, D]``.
        item_vectors: ``float[I, D]``.
        item_ids: ``[I]``, what to return for item row ``j`` (ids, or catalog codes).
        clicked: ``int[N, 2]`` (user row, item row) pairs the users clicked (excluded).
        k: hard negatives per user (fewer when the catalog is too small).
        skip_top: ranks ``0 .. skip_top - 1`` are never returned.
    Returns:
        ``(user_row int64[M], item_id [M], rank int64[M])``, by user then rank; ``rank`` is the
        item's 0-based position in the user's full ranking (clicked items included).
    """
    user_vectors = np.asarray(user_vectors, dtype=np.float32)
    item_vectors = np.asarray(item_vectors, dtype=np.float32)
    item_ids = np.asarray(item_ids)
    n_users, n_items = user_vectors.shape[0], item_vectors.shape[0]
    if item_vectors.ndim != 2 or user_vectors.ndim != 2 or user_vectors.shape[1] != item_vectors.shape[1]:
        raise ValueError(f"vector shapes do not match: users {user_vectors.shape}, items {item_vectors.shape}")
    if len(item_ids) != n_items:
        raise ValueError(f"{len(item_ids)} item ids for {n_items} item vectors")
    empty = (np.zeros(0, np.int64), item_ids[:0], np.zeros(0, np.int64))
    if k <= 0 or n_users == 0 or n_items == 0:
        return empty
    clicked = np.asarray(clicked, dtype=np.int64).reshape(-1, 2)
    ckeys = _unique_sorted(clicked[:, 0] * n_items + clicked[:, 1])
    per_user = np.bincount(ckeys // n_items, minlength=n_users)
    rows = max(1, min(n_users, block // n_items))
    out_u, out_j, out_r = [], [], []
    for b0 in range(0, n_users, rows):
        b1 = min(n_users, b0 + rows)
        scores = user_vectors[b0:b1] @ item_vectors.T
        m = int(min(n_items, skip_top + k + per_user[b0:b1].max()))
        if m < n_items:
            cand = np.argpartition(-scores, m - 1, axis=1)[:, :m]
        else:
            cand = np.broadcast_to(np.arange(n_items), scores.shape).copy()
        cs = np.take_along_axis(scores, cand, axis=1)
        order = np.lexsort((cand, -cs), axis=1)
        cand = np.take_along_axis(cand, order, axis=1)
        keys = (np.arange(b0, b1, dtype=np.int64)[:, None] * n_items + cand).ravel()
        is_clicked = _member(ckeys, keys).reshape(cand.shape)
        valid = ~is_clicked
        valid[:, :skip_top] = False
        sel = valid & (np.cumsum(valid, axis=1) <= k)
        r, c = np.nonzero(sel)
        out_u.append(r + b0)
        out_j.append(cand[r, c])
        out_r.append(c)
    u = np.concatenate(out_u).astype(np.int64)
    j = np.concatenate(out_j)
    return u, item_ids[j], np.concatenate(out_r).astype(np.int64)


# ---- vectorised helpers ---------------------------------------------------------------------
def _searchsorted(a: np.ndarray, v: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted(a, v)`` with the queries sorted first (several times faster on large
    unsorted ``v``: numpy's binary search reuses the previous bound on sorted keys)."""
    if len(v) < 4096:
        return np.searchsorted(a, v, side=side)
    order = np.argsort(v)
    out = np.empty(len(v), dtype=np.int64)
    out[order] = np.searchsorted(a, v[order], side=side)
    return out


def _unique_sorted(x: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort-based; faster than ``np.unique`` on large int arrays)."""
    s = np.sort(x)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``keys`` in ``sorted_keys`` (unique, ascending), elementwise."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = _searchsorted(sorted_keys, keys)
    pos[pos == len(sorted_keys)] = 0
    return sorted_keys[pos] == keys


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start offset and count of each value ``0..n-1`` in the sorted array ``keys``."""
    r = np.arange(n)
    start = np.searchsorted(keys, r, side="left")
    return start, np.searchsorted(keys, r, side="right") - start


def _draw_from_groups(rng: np.random.Generator, owner_group: np.ndarray, start: np.ndarray,
                      count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A uniform member offset of each owner's group; returns (kept mask, offsets)."""
    c = count[owner_group]
    ok = c > 0
    off = start[owner_group[ok]] + (rng.random(int(ok.sum())) * c[ok]).astype(np.int64)
    return ok, off


def _log_freq(items: np.ndarray, n_items: int) -> np.ndarray:
    """log of each entry's item frequency within ``items`` (float64)."""
    if len(items) == 0:
        return np.zeros(0)
    cnt = np.bincount(items, minlength=n_items)
    return np.log(cnt[items] / len(items))


class _Negatives:
    """Collects the negative rows of each source: owner (positive slot), item, log_q."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def add(self, source: str, owner: np.ndarray, items: np.ndarray, log_q: np.ndarray, **info: Any) -> None:
        self.parts[source] = (owner.astype(np.int64), items.astype(np.int64), log_q.astype(np.float64))
        self.info[source] = info


def _resample_collisions(rng, owner_user, items, clicked_keys, n_items, redraw) -> tuple[np.ndarray, dict[str, int]]:
    """Redraw items that the owner user clicked (``redraw(mask) -> new items``); drop what is left."""
    resampled = 0
    coll = _member(clicked_keys, owner_user * n_items + items)
    first = int(coll.sum())
    for _ in range(RESAMPLE_ROUNDS):
        if not coll.any():
            break
        idx = np.flatnonzero(coll)
        resampled += len(idx)
        items[idx] = redraw(idx)
        coll = np.zeros(len(items), dtype=bool)
        coll[idx] = _member(clicked_keys, owner_user[idx] * n_items + items[idx])
    return ~coll, {"collisions": first, "redraws": resampled, "dropped": int(coll.sum())}


# ---- the step -------------------------------------------------------------------------------
def _feature_names(cfg: Config, catalog: pa.Table) -> tuple[list[str], list[str], list[str]]:
    fc = cfg.features
    user = [f.name for f in fc.by_side("user") if f.name != "user_id"]
    context = [f.name for f in fc.by_side("context")]
    item = [f.name for f in fc.by_side("item") if f.name != "item_id"]
    bad = ([n for n in user if n not in USER_SCHEMA.names]
           + [n for n in context if n not in LOG_SCHEMA.names and n != "hour_of_day"]
           + [n for n in item if n not in catalog.column_names])
    if bad:
        raise ValueError(f"feature(s) {bad} of features.spec are neither users, log (context) nor catalog columns")
    return user, context, item


def _codes(values: pa.ChunkedArray | pa.Array, value_set: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Position of each value in ``value_set`` (int64, -1 when absent): Arrow hashing."""
    vs = value_set.combine_chunks() if isinstance(value_set, pa.ChunkedArray) else value_set
    idx = pc.fill_null(pc.index_in(values, value_set=vs), -1)
    return np.asarray(idx.to_numpy(), dtype=np.int64)


def _dict_take(col: pa.ChunkedArray | pa.Array, idx: np.ndarray) -> pa.Array:
    """``col[idx]``; strings go through a dictionary so the take copies indices only."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.dictionary_encode()
    return arr.take(pa.array(idx))


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


def select_samples(cur_date: str, cfg: Config | None = None,
                   model_vectors: ModelVectors | None = None) -> dict[str, Any]:
    """Select the day's training samples and holdout; returns pointers and counts."""
    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    sc = cfg.sampling
    holdout_hours = cfg.training.holdout_hours
    timer = Timer()
    rng = np.random.default_rng([sc.seed, int(cur_date.replace("-", ""))])

    with timer.step("inputs"):
        fdir = store.partition("features", cur_date)
        catalog_path = f"{fdir}/catalog.parquet"
        if not store.exists(catalog_path):
            raise FileNotFoundError(f"{catalog_path} does not exist: run tasks.retrieval.features for {cur_date} first")
        with store.fs.open_input_file(catalog_path) as fh:
            catalog = pq.read_table(fh)
        n_items = catalog.num_rows
        if n_items == 0:
            raise ValueError(f"{catalog_path} is empty: no item to sample")
        user_feats, context, item_feats = _feature_names(cfg, catalog)
        files, hours = log_inputs(store, window(cur_date, sc.window_days), cur_date)
        users = read_snapshot(store, "users", cur_date)
        con = open_events(store, files, users, catalog.select(ITEM_SCHEMA.names))
        _duck.register_arrow(con, "catalog_codes", pa.table({
            "item_id": catalog["item_id"], "item_code": pa.array(np.arange(n_items, dtype=np.int32))}))
    params = {"cur_date": cur_date, "window_days": sc.window_days, "holdout_hours": holdout_hours}
    with timer.step("sql_clicks"):
        clicks = _duck.query_arrow(con, "sample_clicks", params, {"context": context})
    with timer.step("codes"):
        # catalog row (item_code) of each click; clicks on items outside the catalog are no positives
        ci_all = _codes(clicks["item_id"], catalog["item_id"])
        n_clicks_all = len(ci_all)
        known_click = ci_all >= 0
        clicks = clicks.filter(pa.array(known_click))
        ci = ci_all[known_click]
        # users with positives, numbered in user_id order (user_code)
        uids = pc.unique(clicks["user_id"])
        uids = uids.take(pc.array_sort_indices(uids))
        cu = _codes(clicks["user_id"], uids)
        n_users = len(uids)
        _duck.register_arrow(con, "train_users", pa.table({
            "user_id": uids, "user_code": pa.array(np.arange(n_users, dtype=np.int32))}))
    with timer.step("sql_users"):
        user_table = _duck.query_arrow(con, "sample_users", {}, {"user_features": user_feats})
    with timer.step("sql_popularity"):
        pop = _duck.query_arrow(con, "sample_popularity", params)
    sources = list(dict.fromkeys(sc.hard_negative_sources))
    exposed = None
    if "exposed" in sources and sc.hard_negatives_per_positive > 0:
        with timer.step("sql_exposed"):
            exposed = _duck.query_arrow(con, "sample_exposed", params)
    with timer.step("sql_holdout"):
        holdout = _duck.query_arrow(con, "sample_holdout", params,
                                    {"user_features": user_feats, "context": context})
    con.close()

    with timer.step("positives"):
        pcode = _codes(pop["item_id"], catalog["item_id"])
        known = pcode >= 0
        all_imp = np.asarray(pop["impressions"].to_numpy(), np.int64)
        all_clk = np.asarray(pop["clicks"].to_numpy(), np.int64)
        impressions = np.zeros(n_items, np.int64)
        item_clicks = np.zeros(n_items, np.int64)
        impressions[pcode[known]] = all_imp[known]
        item_clicks[pcode[known]] = all_clk[known]
        events_in_window = int(all_imp.sum())
        clicks_in_window = int(all_clk.sum())
        unknown_item_clicks = int(n_clicks_all - len(ci))

        n_clicks = len(ci)
        clicked_keys = _unique_sorted(cu * n_items + ci)
        keep = np.ones(n_clicks, dtype=bool)
        t = sc.positive_subsample_t
        if t is not None and n_clicks:
            f = np.bincount(ci, minlength=n_items) / n_clicks
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(f > 0, t / np.where(f > 0, f, 1.0), 0.0)
            keep_prob = np.minimum(1.0, np.sqrt(r) + r)
            keep = rng.random(n_clicks) < keep_prob[ci]
        dropped_subsample = int(n_clicks - keep.sum())
        idx = np.flatnonzero(keep)
        dropped_cap = 0
        cap = sc.positive_cap_per_item
        if cap is not None and len(idx):
            order = np.lexsort((rng.random(len(idx)), ci[idx]))
            s_items = ci[idx][order]
            starts = np.r_[0, np.flatnonzero(np.diff(s_items)) + 1]
            group_start = np.repeat(starts, np.diff(np.r_[starts, len(s_items)]))
            rank = np.arange(len(s_items)) - group_start
            kept = np.sort(idx[order][rank < cap])
            dropped_cap = int(len(idx) - len(kept))
            idx = kept
        pos = idx[rng.permutation(len(idx))]  # shuffled positive slots -> rows of `clicks`
        n_pos = len(pos)
        pos_user = cu[pos]
        pos_item = ci[pos]
        pos_log_q = _log_freq(pos_item, n_items)
    log.info("samples dt=%s: %d events, %d clicks in the training window; %d positives kept "
             "(%d dropped by subsampling, %d by the cap, %d clicks on items outside the catalog)",
             cur_date, events_in_window, clicks_in_window, n_pos, dropped_subsample, dropped_cap,
             unknown_item_clicks)
    if n_pos == 0:
        log.warning("samples dt=%s: no positive in the training window; train.parquet will be empty", cur_date)

    negs = _Negatives()
    pop_count = (item_clicks if sc.popularity_by == "clicks" else impressions).astype(np.float64)
    log_pop = np.log(pop_count + sc.popularity_floor)
    with timer.step("random_negatives"):
        w = (pop_count + sc.popularity_floor) ** sc.popularity_alpha
        q = w / w.sum()
        cdf = np.cumsum(q)

        def draw(n: int) -> np.ndarray:
            return np.minimum(_searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), n_items - 1)

        owner = np.repeat(np.arange(n_pos), sc.negatives_per_positive)
        items = draw(len(owner))
        ok, info = _resample_collisions(rng, pos_user[owner], items, clicked_keys, n_items,
                                        lambda i: draw(len(i)))
        negs.add("random", owner[ok], items[ok], np.log(q[items[ok]]), **info)

    h = sc.hard_negatives_per_positive
    skipped: dict[str, str] = {}
    with timer.step("hard_negatives"):
        if "exposed" in sources and h > 0 and exposed is not None:
            eu = _codes(exposed["user_id"], uids)
            ei = _codes(exposed["item_id"], catalog["item_id"])
            ok = ei >= 0
            ekeys = np.sort(eu[ok] * n_items + ei[ok])
            eu, ei = ekeys // n_items, ekeys % n_items
            start, count = _csr(eu, n_users)
            owner = np.repeat(np.arange(n_pos), h)
            ok, off = _draw_from_groups(rng, pos_user[owner], start, count)
            items = ei[off]
            negs.add("exposed", owner[ok], items, _log_freq(items, n_items),
                     candidates=int(len(eu)), positives_without_candidates=int((count[pos_user] == 0).sum()))
        if "same_category" in sources and h > 0:
            cat = catalog["item_category"].combine_chunks().dictionary_encode()
            cat_code = np.asarray(cat.indices.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
            n_cat = len(cat.dictionary)
            by_cat = np.argsort(cat_code, kind="stable")
            sorted_cat = cat_code[by_cat]
            start, count = _csr(sorted_cat, n_cat)
            owner = np.repeat(np.arange(n_pos), h)
            pcat = cat_code[pos_item[owner]]
            has = pcat >= 0
            owner, pcat = owner[has], pcat[has]
            ok, off = _draw_from_groups(rng, pcat, start, count)
            owner, pcat = owner[ok], pcat[ok]
            items = by_cat[off]

            def redraw(i: np.ndarray) -> np.ndarray:
                c = pcat[i]
                return by_cat[start[c] + (rng.random(len(i)) * count[c]).astype(np.int64)]

            keep_, info = _resample_collisions(rng, pos_user[owner], items, clicked_keys, n_items, redraw)
            items = items[keep_]
            negs.add("same_category", owner[keep_], items, _log_freq(items, n_items), **info)
        if "model" in sources and h > 0:
            if model_vectors is None:
                skipped["model"] = "no previous model vectors were given (first run or no model yet)"
                log.warning("hard-negative source 'model' skipped: %s", skipped["model"])
            else:
                with timer.step("model_negatives"):
                    negs_model = _model_source(rng, model_vectors, user_table, catalog, pos_user, clicked_keys,
                                               n_items, h, sc.model_hard_skip_top, sc.model_hard_pool)
                negs.add("model", *negs_model[:3], **negs_model[3])

    with timer.step("assemble"):
        owners = [np.arange(n_pos)]
        items_all = [pos_item]
        logq_all = [pos_log_q]
        src_all = [np.zeros(n_pos, np.int8)]
        for s in SOURCES[1:]:
            if s in negs.parts:
                o, it, lq = negs.parts[s]
                owners.append(o)
                items_all.append(it)
                logq_all.append(lq)
                src_all.append(np.full(len(o), SOURCES.index(s), np.int8))
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")  # each positive, then its negatives by source
        owner = owner[order]
        row_item = np.concatenate(items_all)[order]
        row_logq = np.concatenate(logq_all)[order].astype(np.float32)
        row_src = np.concatenate(src_all)[order]
        row_click = pos[owner]
        row_user = cu[row_click]
        cols: dict[str, pa.Array] = {
            "user_id": pa.DictionaryArray.from_arrays(pa.array(row_user.astype(np.int32)),
                                                      user_table["user_id"].combine_chunks()),
        }
        for name in user_feats:
            cols[name] = _dict_take(user_table[name], row_user)
        for name in context:
            cols[name] = _dict_take(clicks[name], row_click)
        cols["event_time"] = clicks["event_time"].combine_chunks().take(pa.array(row_click))
        cols["item_id"] = pa.DictionaryArray.from_arrays(pa.array(row_item.astype(np.int32)),
                                                         catalog["item_id"].combine_chunks())
        for name in item_feats:
            cols[name] = _dict_take(catalog[name], row_item)
        cols["label"] = pa.array((row_src == 0).astype(np.float32))
        cols["log_q"] = pa.array(row_logq)
        cols["source"] = pa.DictionaryArray.from_arrays(pa.array(row_src), pa.array(SOURCES))
        train = pa.table(cols)

    with timer.step("stats"):
        per_source = {"positive": _source_stats(pos_item, pos_log_q, log_pop, impressions, sc.cold_impressions)}
        for s in SOURCES[1:]:
            if s in negs.parts:
                _, it, lq = negs.parts[s]
                per_source[s] = {**_source_stats(it, lq, log_pop, impressions, sc.cold_impressions), **negs.info[s]}
        stats = {
            "events_in_window": events_in_window,
            "clicks_in_window": clicks_in_window,
            "clicks_on_items_outside_catalog": unknown_item_clicks,
            "candidate_positives": n_clicks,
            "dropped_by_subsampling": dropped_subsample,
            "dropped_by_cap": dropped_cap,
            "users_with_positives": n_users,
            "catalog_items": n_items,
            "catalog_cold_share": round(float((impressions < sc.cold_impressions).mean()), 4),
            "cold_impressions_below": sc.cold_impressions,
            "popularity": f"{sc.popularity_by} in the training window + {sc.popularity_floor:g}",
            "popularity_alpha": sc.popularity_alpha,
            "random_q_max": float(q.max()),
            "random_q_min": float(q.min()),
            "sources": per_source,
            "skipped_sources": skipped,
            "holdout_clicks": holdout.num_rows,
        }

    out = store.partition("samples", cur_date)
    rows = {"train": train.num_rows, "positives": n_pos,
            "negatives": train.num_rows - n_pos, "holdout": holdout.num_rows}
    with timer.step("write"), store.atomic_output(out) as tmp:
        # dictionary columns are written as Parquet dictionary pages; without the stored Arrow
        # schema a reader gets plain strings back
        pq.write_table(train, f"{tmp}/train.parquet", filesystem=store.fs, compression="zstd",
                       compression_level=1, store_schema=False)
        pq.write_table(holdout, f"{tmp}/holdout.parquet", filesystem=store.fs, compression="zstd")
        # every (user, item) clicked in the training window, before any down-sampling: the items
        # the evaluation must not count as new recommendations (tasks.retrieval.evaluate_two_tower)
        seen = pa.table({"user_id": clicks["user_id"], "item_id": clicks["item_id"]}).group_by(
            ["user_id", "item_id"]).aggregate([])
        pq.write_table(seen, f"{tmp}/seen.parquet", filesystem=store.fs, compression="zstd")
        manifest = make_manifest(
            "sample", cfg, cur_date,
            inputs={"logs": {d: hours[d] for d in sorted(hours)}, "users": store.partition("users", cur_date),
                    "catalog": catalog_path,
                    "model_vectors": (model_vectors.version or "given") if model_vectors is not None else None},
            rows=rows, timings=timer.timings, stats=stats,
            seed=[sc.seed, int(cur_date.replace("-", ""))],
            training_window={"days": sorted(hours), "excluded_hours_of_cur_date": holdout_hours},
        )
        manifest["timings_s"]["total"] = timer.total()
        manifest["events_per_s"] = round(events_in_window / max(timer.total(), 1e-9))
        store.write_json(f"{tmp}/_manifest.json", manifest)
    log.info("samples dt=%s: %d rows (%d positives, %s) + %d holdout clicks -> %s in %.2fs (%d events/s)",
             cur_date, train.num_rows, n_pos, {s: v["count"] for s, v in per_source.items() if s != "positive"},
             holdout.num_rows, out, timer.total(), events_in_window / max(timer.total(), 1e-9))
    return {"path": out, "train": f"{out}/train.parquet", "holdout": f"{out}/holdout.parquet",
            "rows": rows, "negatives_by_source": {s: v["count"] for s, v in per_source.items() if s != "positive"},
            "skipped_sources": skipped}


def _model_source(rng, mv: ModelVectors, user_table: pa.Table, catalog: pa.Table, pos_user: np.ndarray,
                  clicked_keys: np.ndarray, n_items: int, h: int, skip_top: int, pool: int):
    """Map the model's ids to this run's codes, rank, and give each positive ``h`` draws."""
    import pandas as pd

    n_users = user_table.num_rows
    u_row = pd.Index(np.asarray(mv.user_ids).astype(str)).get_indexer(
        np.asarray(user_table["user_id"].to_numpy(zero_copy_only=False)).astype(str))  # code -> model row
    i_code = pd.Index(np.asarray(catalog["item_id"].to_numpy(zero_copy_only=False)).astype(str)).get_indexer(
        np.asarray(mv.item_ids).astype(str))  # model item row -> catalog code
    users_in = np.flatnonzero(u_row >= 0)  # user codes known to the model
    items_in = np.flatnonzero(i_code >= 0)  # model item rows in the catalog
    sub_user = np.full(n_users, -1, np.int64)
    sub_user[users_in] = np.arange(len(users_in))
    sub_item = np.full(n_items, -1, np.int64)
    sub_item[i_code[items_in]] = np.arange(len(items_in))
    cu, ci = clicked_keys // n_items, clicked_keys % n_items
    pairs = np.stack([sub_user[cu], sub_item[ci]], axis=1)
    pairs = pairs[(pairs >= 0).all(axis=1)]
    uu, items, rank = model_hard_negatives(
        np.asarray(mv.user_vectors)[u_row[users_in]], np.asarray(mv.item_vectors)[items_in],
        i_code[items_in], pairs, pool, skip_top)
    user_code = users_in[uu]
    order = np.argsort(user_code, kind="stable")
    user_code, items, rank = user_code[order], np.asarray(items, np.int64)[order], rank[order]
    start, count = _csr(user_code, n_users)
    owner = np.repeat(np.arange(len(pos_user)), h)
    ok, off = _draw_from_groups(rng, pos_user[owner], start, count)
    chosen = items[off]
    info = {"model_version": mv.version, "users_known_to_model": int(len(users_in)),
            "items_known_to_model": int(len(items_in)), "pool_per_user": pool,
            "skip_top": skip_top, "min_rank": int(rank[off].min()) if len(off) else None}
    return owner[ok], chosen, _log_freq(chosen, n_items), info


def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    cli.run(lambda: select_samples(args.cur_date, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
