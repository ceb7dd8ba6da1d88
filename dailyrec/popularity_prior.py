"""The popularity prior added back at retrieval: ``score(u, i) = u . v_i + beta * log q_i``.

The two-tower model is trained with the logQ correction (the in-batch softmax subtracts
``log q_i``, Yi et al. 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys): the learned score ``u . v`` is then popularity-free, which is right
for learning but leaves out what predicts most of the next clicks on real logs: what is popular
now. Serving adds the prior back ("popularity-adjusted" retrieval):

    score(u, i) = u . v_i + beta * log q_i,   q_i = (c_i + floor) / sum_j (c_j + floor)

with ``c_i`` the item's clicks over the last ``serving.popularity_window_days`` days (default: the
shortest counter window of at least a week; the
features step's ``clicks_<W>d`` counter of ``features/dt=D/catalog.parquet``), ``floor`` =
``sampling.popularity_floor`` (an unclicked item keeps ``q > 0``) and ``beta`` =
``serving.popularity_beta`` (cosine units: the towers are L2-normalised, so ``u . v`` is in
``[-1, 1]``; ``beta = training.temperature`` is the logit-scale ``+ log q`` of the training
softmax). ``beta = 0`` switches it off (plain ``u . v``, vectors unchanged).

How much popularity helps depends on the log (MovieLens-100K: most of the next clicks go to what
is popular now; the demo logs: any beta > 0 costs recall), so by default beta is chosen per day:
the evaluation step scores the new model on its holdout for every beta of
``serving.popularity_beta_grid`` and the best one serves (:func:`gate_choice`, recorded in
``eval/two_tower/dt=D/report.json``, read by the index build through :func:`served_beta`); the
gate's own figures are cross-fitted (:func:`choose_beta`). An empty grid serves the fixed
``serving.popularity_beta``.

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


def auto_beta(cfg: Any) -> bool:
    """Whether the evaluation step chooses beta on the day's holdout (``serving.popularity_beta_grid``
    has a beta > 0)."""
    return any(b > 0 for b in cfg.serving.popularity_beta_grid)


def prior_on(cfg: Any) -> bool:
    """Whether ``cfg`` may add the prior (a fixed ``serving.popularity_beta > 0`` or a grid)."""
    return cfg.serving.popularity_beta > 0 or auto_beta(cfg)


def choose_beta(per_user: dict[float, np.ndarray], seed: Any) -> dict[str, Any]:
    """The beta of the grid with the best mean per-user metric, and a 2-fold cross-fitted assignment.

    ``per_user``: ``{beta: float[n_users]}`` (the gate metric of every user under each beta, the
    same users in the same order). The users are split in two halves (``numpy.random.default_rng(seed)``);
    each half gets the beta that is best on the *other* half (cross-fitting, Chernozhukov et al. 2018,
    "Double/debiased machine learning": the choice never sees the users it is scored on), so the
    scores under ``assign`` are not inflated by the choice. Ties go to the smaller beta.

    Returns ``{"beta": best on all users, "grid": {str(beta): mean}, "fold_betas": [b0, b1],
    "assign": float64[n_users] (each user's beta)}``. ``ValueError`` without betas or users.
    """
    betas = sorted(per_user)
    if not betas or len(per_user[betas[0]]) == 0:
        raise ValueError("choose_beta needs at least one beta and one user")
    n = len(per_user[betas[0]])

    def best(rows: np.ndarray) -> float:
        return max(betas, key=lambda b: (float(np.mean(per_user[b][rows])), -b))

    every = np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    halves = [perm[: n // 2], perm[n // 2:]]
    assign = np.empty(n, np.float64)
    fold_betas = []
    for f in (0, 1):
        other = halves[1 - f] if len(halves[1 - f]) else every
        fold_betas.append(best(other))
        assign[halves[f]] = fold_betas[-1]
    return {"beta": best(every), "grid": {str(b): round(float(np.mean(per_user[b])), 6) for b in betas},
            "fold_betas": fold_betas, "assign": assign}


def gate_choice(cfg: Any, cur_date: str, by_beta: dict[str, dict[float, np.ndarray]], truth: Any, n_truth: Any,
                metric: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The evaluation gate's beta: ``(report's popularity_prior record, top-K per ranker)``.

    ``by_beta``: ``{ranker: {beta: int64[n_users, K] top-K}}`` (``"new"`` among the rankers; the
    others, e.g. the previous model as it was served, with one beta each); ``truth``/``n_truth``: as
    :func:`dailyrec.metrics.per_user_metrics`. ``new`` with one beta: it. Several: the beta with the
    best mean ``metric`` for ``new`` on all users serves (:func:`choose_beta`, seeded with
    ``(training.seed, cur_date)``), and ``new``'s top-K is cross-fitted (each half of the users under
    the beta the other half chose), so the gate's figures do not profit from the choice.
    """
    from dailyrec.metrics import per_user_metrics

    betas = sorted(by_beta["new"])
    topks = {n: next(iter(t.values())) for n, t in by_beta.items() if n != "new"}
    if len(betas) == 1:
        return describe(cfg, betas[0]), {**topks, "new": by_beta["new"][betas[0]]}
    ks = cfg.evaluation.ks
    per_user = {b: per_user_metrics(by_beta["new"][b], truth, n_truth, ks)[metric] for b in betas}
    choice = choose_beta(per_user, [cfg.training.seed, int(cur_date.replace("-", "")), 3])
    assign = choice.pop("assign")
    topks["new"] = np.empty_like(by_beta["new"][betas[0]])
    for b in set(assign.tolist()):
        topks["new"][assign == b] = by_beta["new"][b][assign == b]
    return {**describe(cfg, choice["beta"]), "beta": choice["beta"], "chosen_on": "holdout", "metric": metric,
            "grid": choice["grid"], "cross_fitted_betas": choice["fold_betas"]}, topks


def served_beta(store: Any, cfg: Any, cur_date: str) -> tuple[float, dict[str, Any]]:
    """The beta the index of ``cur_date`` holds, with its manifest record: the evaluation report's
    choice (``eval/two_tower/dt=D/report.json``, ``popularity_prior.beta``) when ``cfg`` has a grid,
    else ``serving.popularity_beta``. With a grid but no report (the evaluation did not run) it falls
    back to ``serving.popularity_beta`` with a warning, and the record says so."""
    from dailyrec.registry import eval_report_path

    if not auto_beta(cfg):
        return cfg.serving.popularity_beta, describe(cfg)
    path = eval_report_path(store, "two_tower", cur_date)
    chosen = (store.read_json(path).get("popularity_prior") or {}) if store.exists(path) else {}
    if "beta" not in chosen:
        log.warning("serving.popularity_beta_grid is set but %s has no chosen beta: the index of %s uses "
                    "serving.popularity_beta=%s", path, cur_date, cfg.serving.popularity_beta)
        return cfg.serving.popularity_beta, {**describe(cfg), "note": f"no choice in {path}: serving.popularity_beta"}
    beta = float(chosen["beta"])
    return beta, {**describe(cfg, beta), "chosen_by": path}


def window_days(cfg: Any) -> int:
    """``serving.popularity_window_days``, or when None the shortest of ``features.counter_windows_days``
    of at least 7 days (else the longest)."""
    if cfg.serving.popularity_window_days is not None:
        return int(cfg.serving.popularity_window_days)
    w = sorted(cfg.features.counter_windows_days)
    return next((d for d in w if d >= 7), w[-1])


def counter_column(cfg: Any) -> str:
    """The catalog counter the prior uses: ``clicks_<window_days(cfg)>d``."""
    return f"clicks_{window_days(cfg)}d"


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

    beta, record = served_beta(store, cfg, cur_date)
    if beta <= 0:
        return emb, record
    path = f"{store.partition('features', cur_date)}/catalog.parquet"
    if not store.exists(path):  # embeddings from elsewhere (tests, benches): no counters, no prior
        log.warning("popularity beta %s but %s is missing: the index of %s is built WITHOUT the "
                    "popularity prior (run tasks.retrieval.features for that day to have it)", beta, path, cur_date)
        return emb, {"beta": 0.0, "configured_beta": beta, "note": f"no {path}: built without the popularity prior"}
    schema = pq.read_schema(path, filesystem=store.fs)
    catalog = pq.read_table(path, columns=["item_id"] + [c for c in [counter_column(cfg)] if c in schema.names],
                            filesystem=store.fs)
    lq_all = catalog_log_prior(cfg, catalog)
    pos = {it: i for i, it in enumerate(catalog.column("item_id").to_pylist())}
    missing = [i for i in emb.item_ids if i not in pos]
    if missing:
        raise ContractError(f"{emb.path}: {len(missing)} item(s) are not in {path}, e.g. {missing[:3]}")
    lq = lq_all[np.fromiter((pos[i] for i in emb.item_ids), np.int64, count=emb.n)]
    vectors = augment_items(emb.vectors, lq, beta)
    return dataclasses.replace(emb, vectors=vectors), record


def describe(cfg: Any, beta: float | None = None) -> dict[str, Any]:
    """What a manifest records about the prior: ``{"beta", "window_days", "column", "floor"}`` or
    ``{"beta": 0.0}`` (``beta``: the one used, default ``serving.popularity_beta``)."""
    beta = cfg.serving.popularity_beta if beta is None else float(beta)
    if beta <= 0:
        return {"beta": 0.0}
    return {"beta": beta, "window_days": window_days(cfg),
            "column": counter_column(cfg), "floor": cfg.sampling.popularity_floor}
