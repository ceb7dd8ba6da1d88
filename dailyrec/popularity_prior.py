"""The popularity prior added back at retrieval: ``score(u, i) = u . v_i + beta * log q_i``.

The two-tower model is trained with the logQ correction (the in-batch softmax subtracts
``log q_i``, Yi et al. 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys): the learned score ``u . v`` is then popularity-free, which is right
for learning but leaves out what predicts most of the next clicks on real logs: what is popular
now. Serving adds the prior back ("popularity-adjusted" retrieval):

    score(u, i) = u . v_i + beta * log q_i,   q_i = (c_i + floor) / sum_j (c_j + floor)

with ``c_i`` the item's clicks over the last ``serving.popularity_window_days`` days (the
features step's ``clicks_<W>d`` counter of ``features/dt=D/catalog.parquet``), ``floor`` =
``sampling.popularity_floor`` (an unclicked item keeps ``q > 0``) and ``beta`` =
``serving.popularity_beta`` (cosine units: the towers are L2-normalised, so ``u . v`` is in
``[-1, 1]``; ``beta = training.temperature`` is the logit-scale ``+ log q`` of the training
softmax). ``beta = 0`` switches it off (plain ``u . v``, vectors unchanged).

So that FAISS inner-product search still returns the top items by this score, the prior lives in
the vectors: the index holds ``[v_i, beta * log q_i]`` (:func:`augment_items`, one more
dimension) and every query is ``[u, 1]`` (:func:`augment_queries`), hence
``[u, 1] . [v_i, beta * log q_i] = u . v_i + beta * log q_i`` exactly. The exported
``embeddings/dt=D/items.parquet`` keep the plain L2-normalised tower vectors; the index build
(:func:`dailyrec.ann.build_index`), serving (:mod:`dailyrec.serving`), the evaluation gate
(``tasks.retrieval.evaluate_two_tower``) and the MovieLens bench all score through this module.
The gate uses leak-free counts (:func:`leak_free_counts`: the held-out clicks are subtracted).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("dailyrec.popularity_prior")


def prior_on(cfg: Any) -> bool:
    """Whether ``cfg`` adds the prior (``serving.popularity_beta > 0``)."""
    return cfg.serving.popularity_beta > 0


def counter_column(cfg: Any) -> str:
    """The catalog counter the prior uses: ``clicks_<serving.popularity_window_days>d``."""
    return f"clicks_{cfg.serving.popularity_window_days}d"


def log_prior(counts: np.ndarray, floor: float = 1.0) -> np.ndarray:
    """``log q`` with ``q_i = (c_i + floor) / sum_j (c_j + floor)``: ``float32[n]`` from counts ``[n]``.

    Raises:
        ValueError: no item, a negative or non-finite count, or ``floor <= 0``.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError(f"log_prior needs a non-empty 1-d array of counts, got shape {c.shape}")
    if floor <= 0 or not np.isfinite(c).all() or (c < 0).any():
        raise ValueError(f"log_prior needs finite counts >= 0 and floor > 0 (floor={floor}, min={c.min()})")
    c = c + floor
    return np.log(c / c.sum()).astype(np.float32)


def leak_free_counts(catalog: Any, column: str, holdout: Any | None, cur_date: str) -> np.ndarray:
    """The catalog's ``column`` (``clicks_<W>d``, counting the W days ending with ``cur_date``) minus
    the clicks of ``holdout`` (a table with ``item_id``, ``event_time``) inside those W days:
    ``int64[n_items]`` in catalog order, what the training window knows (as the gate's popularity
    baseline, :func:`dailyrec.metrics.popularity_scores`).

    Raises:
        KeyError: the catalog has no ``column`` (names the available counters).
    """
    import datetime as dt

    import pandas as pd

    if column not in catalog.column_names:
        raise KeyError(f"catalog has no column {column!r} (serving.popularity_window_days must be one of "
                       f"features.counter_windows_days); columns: {catalog.column_names}")
    c = catalog.column(column).to_numpy(zero_copy_only=False).astype(np.int64)
    if holdout is None or holdout.num_rows == 0:
        return c
    w = int(column[len("clicks_"):-1])
    end = pd.Timestamp(dt.date.fromisoformat(cur_date) + dt.timedelta(days=1), tz="UTC")
    hold = holdout.select(["item_id", "event_time"]).to_pandas()
    inside = hold[pd.to_datetime(hold["event_time"], utc=True) >= end - pd.Timedelta(days=w)]
    pos = {it: i for i, it in enumerate(catalog.column("item_id").to_pylist())}
    idx = np.array([pos[i] for i in inside["item_id"] if i in pos], dtype=np.int64)
    return np.maximum(c - np.bincount(idx, minlength=len(c)), 0)


def catalog_log_prior(cfg: Any, catalog: Any, holdout: Any | None = None, cur_date: str | None = None
                      ) -> np.ndarray:
    """``log q`` (``float32[n_items]``, catalog order) of ``cfg``'s window and floor; with
    ``holdout`` and ``cur_date`` the held-out clicks are subtracted first (:func:`leak_free_counts`)."""
    counts = leak_free_counts(catalog, counter_column(cfg), holdout, cur_date or "")
    return log_prior(counts, cfg.sampling.popularity_floor)


def augment_items(vectors: np.ndarray, log_q: np.ndarray, beta: float) -> np.ndarray:
    """``[v_i, beta * log q_i]``: ``float32[n, d + 1]`` from item vectors ``[n, d]`` and ``log_q`` ``[n]``.

    Raises:
        ValueError: mismatched lengths, ``beta <= 0`` (the prior is off: use the vectors as they are).
    """
    v = np.asarray(vectors, dtype=np.float32)
    lq = np.asarray(log_q, dtype=np.float32).reshape(-1)
    if v.ndim != 2 or len(lq) != v.shape[0]:
        raise ValueError(f"augment_items: {v.shape} vectors but {lq.shape} log q values")
    if beta <= 0:
        raise ValueError(f"augment_items: beta must be > 0, got {beta} (beta 0 = no prior: plain vectors)")
    return np.ascontiguousarray(np.concatenate([v, (beta * lq)[:, None]], axis=1), dtype=np.float32)


def augment_queries(vectors: np.ndarray, index_dim: int) -> np.ndarray:
    """User vectors ``[m, d]`` as queries of an index of dimension ``index_dim``: unchanged when
    ``index_dim == d`` (no prior), ``[u, 1]`` when ``index_dim == d + 1`` (:func:`augment_items`).

    Raises:
        ValueError: any other dimension (a user tower that does not belong to the index).
    """
    u = np.ascontiguousarray(vectors, dtype=np.float32)
    d = u.shape[1]
    if index_dim == d:
        return u
    if index_dim == d + 1:
        return np.ascontiguousarray(np.concatenate([u, np.ones((u.shape[0], 1), np.float32)], axis=1))
    raise ValueError(f"user vectors of dimension {d} cannot query an index of dimension {index_dim} "
                     f"(expected {d}, or {d + 1} with the popularity prior)")


def prior_scorer(user_vectors: np.ndarray, item_vectors: np.ndarray, log_q: np.ndarray | None, beta: float):
    """A :data:`dailyrec.metrics.ScoreFn` of ``u . v_i + beta * log q_i`` computed through the same
    augmented vectors as the index (``log_q`` None or ``beta`` 0: plain ``u . v``)."""
    from dailyrec.metrics import dot_scorer

    if log_q is None or beta <= 0:
        return dot_scorer(user_vectors, item_vectors)
    v = augment_items(item_vectors, log_q, beta)
    return dot_scorer(augment_queries(user_vectors, v.shape[1]), v)


def index_embeddings(store: Any, cfg: Any, cur_date: str, emb: Any) -> tuple[Any, dict[str, Any]]:
    """The item vectors the FAISS index of ``cur_date`` holds: ``(embeddings, record)``.

    ``emb``: the day's :class:`dailyrec.embeddings.Embeddings`. With the prior on, a copy whose
    ``vectors`` are ``[v_i, beta * log q_i]`` (``float32[n, dim + 1]``, :func:`augment_items`), ``q``
    from the day's ``features/dt=D/catalog.parquet`` counter over the whole catalog; off, ``emb``
    itself. ``record``: :func:`describe` (for the index manifest).

    Without the day's catalog (embeddings written by hand: tests, benches) the index is built without
    the prior, with a warning, and ``record`` says so (``beta`` 0, ``configured_beta``, ``note``).

    Raises:
        KeyError: the catalog has no such counter column.
        ContractError: an exported item is not in the catalog.
    """
    import dataclasses

    import pyarrow.parquet as pq

    from dailyrec.errors import ContractError

    if not prior_on(cfg):
        return emb, describe(cfg)
    path = f"{store.partition('features', cur_date)}/catalog.parquet"
    if not store.exists(path):  # embeddings from elsewhere (tests, benches): no counters, no prior
        log.warning("serving.popularity_beta=%s but %s is missing: the index of %s is built WITHOUT the "
                    "popularity prior (run tasks.retrieval.features for that day to have it)",
                    cfg.serving.popularity_beta, path, cur_date)
        return emb, {"beta": 0.0, "configured_beta": cfg.serving.popularity_beta,
                     "note": f"no {path}: built without the popularity prior"}
    schema = pq.read_schema(path, filesystem=store.fs)
    catalog = pq.read_table(path, columns=["item_id"] + [c for c in [counter_column(cfg)] if c in schema.names],
                            filesystem=store.fs)
    lq_all = catalog_log_prior(cfg, catalog)
    pos = {it: i for i, it in enumerate(catalog.column("item_id").to_pylist())}
    missing = [i for i in emb.item_ids if i not in pos]
    if missing:
        raise ContractError(f"{emb.path}: {len(missing)} item(s) are not in {path}, e.g. {missing[:3]}")
    lq = lq_all[np.fromiter((pos[i] for i in emb.item_ids), np.int64, count=emb.n)]
    vectors = augment_items(emb.vectors, lq, cfg.serving.popularity_beta)
    return dataclasses.replace(emb, vectors=vectors), describe(cfg)


def describe(cfg: Any) -> dict[str, Any]:
    """What a manifest records about the prior: ``{"beta", "window_days", "column", "floor"}`` or ``{"beta": 0}``."""
    if not prior_on(cfg):
        return {"beta": 0.0}
    return {"beta": cfg.serving.popularity_beta, "window_days": cfg.serving.popularity_window_days,
            "column": counter_column(cfg), "floor": cfg.sampling.popularity_floor}
