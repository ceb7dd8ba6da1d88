"""The ``model`` hard-negative source: items the previous model ranks high for a user, who did
not click them, below the top ranks (the top ones are likely unseen true positives: "false
negatives"). In the spirit of the hard-negative mining of Huang et al. 2020, "Embedding-based
Retrieval in Facebook Search", sec. 4.2 (skip the very top, sample from the ranks below).

:func:`previous_model_vectors` computes :class:`ModelVectors` from the newest gate-passed two-tower
model before ``cur_date`` (its towers on this day's active users and catalog).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dailyrec.config import Config
from dailyrec.sampling.arrays import csr, draw_from_groups, log_freq, member, unique_sorted
from dailyrec.sampling.negatives import Negatives
from dailyrec.sampling.positives import Positives
from dailyrec.storage import Store

log = logging.getLogger("dailyrec.sample")

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
    Raises:
        ValueError: the vector shapes or the id count do not match.
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
    ckeys = unique_sorted(clicked[:, 0] * n_items + clicked[:, 1])
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
        is_clicked = member(ckeys, keys).reshape(cand.shape)
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


def model_negatives(rng: np.random.Generator, negs: Negatives, mv: ModelVectors, user_ids: pa.ChunkedArray,
                    catalog_ids: pa.ChunkedArray, pos: Positives, h: int, skip_top: int, pool: int) -> None:
    """Map the model's ids to this run's user/catalog codes, rank (:func:`model_hard_negatives`,
    ``pool`` per user), and give each positive ``h`` uniform draws from its user's pool."""
    import pandas as pd

    n_users, n_items = len(user_ids), pos.n_items
    u_row = pd.Index(np.asarray(mv.user_ids).astype(str)).get_indexer(
        np.asarray(user_ids.to_numpy(zero_copy_only=False)).astype(str))  # code -> model row
    i_code = pd.Index(np.asarray(catalog_ids.to_numpy(zero_copy_only=False)).astype(str)).get_indexer(
        np.asarray(mv.item_ids).astype(str))  # model item row -> catalog code
    users_in = np.flatnonzero(u_row >= 0)  # user codes known to the model
    items_in = np.flatnonzero(i_code >= 0)  # model item rows in the catalog
    sub_user = np.full(n_users, -1, np.int64)
    sub_user[users_in] = np.arange(len(users_in))
    sub_item = np.full(n_items, -1, np.int64)
    sub_item[i_code[items_in]] = np.arange(len(items_in))
    cu, ci = pos.clicked_keys // n_items, pos.clicked_keys % n_items
    pairs = np.stack([sub_user[cu], sub_item[ci]], axis=1)
    pairs = pairs[(pairs >= 0).all(axis=1)]
    uu, items, rank = model_hard_negatives(
        np.asarray(mv.user_vectors)[u_row[users_in]], np.asarray(mv.item_vectors)[items_in],
        i_code[items_in], pairs, pool, skip_top)
    user_code = users_in[uu]
    order = np.argsort(user_code, kind="stable")
    user_code, items, rank = user_code[order], np.asarray(items, np.int64)[order], rank[order]
    start, count = csr(user_code, n_users)
    owner = np.repeat(np.arange(pos.n), h)
    ok, off = draw_from_groups(rng, pos.user[owner], start, count)
    chosen = items[off]
    negs.add("model", owner[ok], chosen, log_freq(chosen, n_items),
             model_version=mv.version, users_known_to_model=int(len(users_in)),
             items_known_to_model=int(len(items_in)), pool_per_user=pool,
             skip_top=skip_top, min_rank=int(rank[off].min()) if len(off) else None)


def previous_model_vectors(store: Store, cfg: Config, cur_date: str,
                           history: "pa.Table | None" = None) -> ModelVectors | None:
    """:class:`ModelVectors` of the newest gate-passed two-tower model before ``cur_date``: its user
    tower on this day's active users (latest context), its item tower on ``features/dt=D/catalog``;
    ``None`` when there is no such model. ``FileNotFoundError`` when the day's logs are missing.
    ``history``: ``user_id -> history_item_ids`` as of the end of ``cur_date``
    (:func:`dailyrec.history.day_histories`), attached when ``features.user_history.enabled``."""
    import pyarrow.parquet as pq

    from dailyrec.embeddings import tower_vectors
    from dailyrec.events import active_user_rows
    from dailyrec.freshness import catalog_freshness, day_start_us, freshness_names, next_day
    from dailyrec.registry import warm_start_source

    src = warm_start_source(store, "two_tower", cur_date)
    if src is None:
        return None
    rows = active_user_rows(store, cfg, cur_date)
    if cfg.features.user_history.enabled:
        from dailyrec.history import attach_history

        rows = attach_history(rows, history)
    catalog = pq.read_table(f"{store.partition('features', cur_date)}/catalog.parquet", filesystem=store.fs)
    # item freshness features as that model serves them: as of the end of its day (dailyrec.freshness)
    if freshness_names(cfg):
        catalog = catalog_freshness(store, cfg, cur_date, catalog, day_start_us(next_day(src[0][:10])))
    u = tower_vectors(f"{src[1]}/user_tower", rows, cfg.features.spec)
    v = tower_vectors(f"{src[1]}/item_tower", catalog, cfg.features.spec)
    log.info("model hard negatives from the model of %s: %d users x %d items", src[0], len(u), len(v))
    return ModelVectors(user_ids=rows.column("user_id").to_numpy(zero_copy_only=False), user_vectors=u,
                        item_ids=catalog.column("item_id").to_numpy(zero_copy_only=False), item_vectors=v,
                        version=src[0])


def model_info(mv: ModelVectors | None) -> Any:
    """What the manifest records of the model vectors: their version, ``"given"`` or ``None``."""
    return (mv.version or "given") if mv is not None else None
