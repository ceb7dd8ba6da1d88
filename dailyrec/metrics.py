"""Top-K retrieval metrics: Recall@K, HitRate@K and NDCG@K, computed the same way for every ranker.

A ranker is a function from a batch of user row numbers to a score matrix over the candidate
items (``[batch, n_candidates]``). Items the user must not be recommended (their own training
items) are excluded per user; ground-truth items outside the candidate set stay in the
denominator of recall (they can never be hit), so every ranker is judged on the same users,
candidates and truth. Used by the daily evaluation gate (:func:`holdout_eval_set`,
:func:`gate_decision`) and by the MovieLens benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dailyrec.errors import NothingToEvaluate

ScoreFn = Callable[[np.ndarray], np.ndarray]


def top_k(
    score_fn: ScoreFn,
    n_users: int,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """``[n_users, k]`` candidate indices, best first; ``exclude[u]`` indices are never returned."""
    out = np.empty((n_users, k), dtype=np.int64)
    for start in range(0, n_users, batch_size):
        rows = np.arange(start, min(n_users, start + batch_size))
        scores = np.array(score_fn(rows), dtype=np.float32, copy=True)
        if scores.ndim != 2 or scores.shape[0] != len(rows):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected ({len(rows)}, n_candidates)")
        kk = min(k, scores.shape[1])
        if exclude is not None:
            for i, u in enumerate(rows):
                ex = exclude[u]
                if len(ex):
                    scores[i, ex] = -np.inf
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
        if kk < k:
            best = np.pad(best, ((0, 0), (0, k - kk)), constant_values=-1)
        out[rows] = best
    return out


def metrics_from_topk(topk: np.ndarray, truth: Sequence[np.ndarray], n_truth: Sequence[int], ks: Sequence[int]
                      ) -> dict[str, float]:
    """Average Recall@K, HitRate@K, NDCG@K over users.

    ``truth[u]``: the user's ground-truth items that are candidates (indices); ``n_truth[u]``: the
    number of the user's distinct ground-truth items, candidates or not (the recall denominator).
    """
    n = len(truth)
    if n == 0:
        raise ValueError("no evaluation users")
    discounts = 1.0 / np.log2(np.arange(2, topk.shape[1] + 2))
    res: dict[str, float] = {}
    for k in ks:
        rec = hit = ndcg = 0.0
        for u in range(n):
            if n_truth[u] == 0:
                continue
            hits = np.isin(topk[u, :k], truth[u])
            nh = hits.sum()
            rec += nh / n_truth[u]
            hit += float(nh > 0)
            ideal = discounts[: min(n_truth[u], k)].sum()
            ndcg += (discounts[:k][hits].sum() / ideal) if ideal > 0 else 0.0
        res[f"recall_at_{k}"] = float(rec / n)
        res[f"hitrate_at_{k}"] = float(hit / n)
        res[f"ndcg_at_{k}"] = float(ndcg / n)
    res["users"] = n
    return res


def evaluate_ranker(score_fn: ScoreFn, truth: Sequence[np.ndarray], n_truth: Sequence[int],
                    exclude: Sequence[np.ndarray] | None, ks: Sequence[int]) -> dict[str, float]:
    topk = top_k(score_fn, len(truth), max(ks), exclude)
    return metrics_from_topk(topk, truth, n_truth, ks)


def dot_scorer(user_vectors: np.ndarray, item_vectors: np.ndarray) -> ScoreFn:
    """Inner-product scores (cosine for the L2-normalised tower outputs)."""
    u = np.ascontiguousarray(user_vectors, dtype=np.float32)
    v = np.ascontiguousarray(item_vectors, dtype=np.float32)
    return lambda rows: u[rows] @ v.T


def constant_scorer(item_scores: np.ndarray) -> ScoreFn:
    """The same scores for every user (popularity baselines)."""
    s = np.asarray(item_scores, dtype=np.float32)
    return lambda rows: np.broadcast_to(s, (len(rows), s.shape[0]))


# ---- the daily evaluation of the two-tower model ---------------------------------------------------

def popularity_column(columns: list[str]) -> str:
    """The catalog's click counter over its longest window (``clicks_<W>d``); ``KeyError`` if none."""
    cands = [c for c in columns if c.startswith("clicks_") and c.endswith("d") and c[7:-1].isdigit()]
    if not cands:
        raise KeyError(f"catalog has no clicks_<W>d counter column; columns: {columns}")
    return max(cands, key=lambda c: int(c[7:-1]))


def holdout_eval_set(store: Any, cfg: Any, cur_date: str) -> dict[str, Any]:
    """The users, candidates and truth every ranker of ``cur_date`` is judged on.

    Users: those with a click in ``samples/dt=D/holdout.parquet`` (at most
    ``evaluation.max_eval_users``, a sample seeded with ``(training.seed, cur_date)``), each with
    the row of their first held-out click (``user_rows``, for the user tower). Candidates: the
    catalog. ``truth[u]``: catalog rows of the user's distinct held-out clicks (``n_truth[u]`` counts
    them all); ``exclude[u]``: catalog rows the user clicked in the training window (``seen.parquet``).

    Raises:
        ValueError: the holdout has no click.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sdir = store.partition("samples", cur_date)
    holdout = pq.read_table(f"{sdir}/holdout.parquet", filesystem=store.fs)
    seen_t = pq.read_table(f"{sdir}/seen.parquet", filesystem=store.fs)
    catalog = pq.read_table(f"{store.partition('features', cur_date)}/catalog.parquet", filesystem=store.fs)
    if holdout.num_rows == 0:
        raise NothingToEvaluate(f"{sdir}/holdout.parquet has no clicks: nothing to evaluate, the day is too "
                                f"sparse (training.holdout_hours={cfg.training.holdout_hours})")
    pos = {it: i for i, it in enumerate(catalog.column("item_id").to_pylist())}
    hold = holdout.to_pandas()
    users = np.array(sorted(hold["user_id"].unique()))
    if len(users) > cfg.evaluation.max_eval_users:
        rng = np.random.default_rng([cfg.training.seed, int(cur_date.replace("-", ""))])
        users = np.sort(rng.choice(users, cfg.evaluation.max_eval_users, replace=False))
    hold = hold[hold["user_id"].isin(set(users))].sort_values(["user_id", "event_time"], kind="stable")
    first = hold.drop_duplicates("user_id", keep="first").set_index("user_id").loc[users].reset_index()
    truth_items = hold.groupby("user_id")["item_id"].apply(lambda s: sorted(set(s)))
    truth = [np.array([pos[i] for i in truth_items[u] if i in pos], dtype=np.int64) for u in users]
    n_truth = [len(truth_items[u]) for u in users]
    tr = seen_t.to_pandas()
    tr = tr[tr["user_id"].isin(set(users))]
    seen = tr.groupby("user_id")["item_id"].apply(lambda s: sorted(set(s)))
    exclude = [np.array([pos[i] for i in seen.get(u, []) if i in pos], dtype=np.int64) for u in users]
    return {"users": users, "user_rows": pa.Table.from_pandas(first, preserve_index=False), "catalog": catalog,
            "truth": truth, "n_truth": n_truth, "exclude": exclude, "holdout_rows": holdout.num_rows}


def gate_decision(table: dict[str, dict[str, float]], ev: Any, previous_date: str | None) -> dict[str, Any]:
    """The evaluation gate (``evaluation.*``) on ``table`` (``{"new", ["previous"], "popularity"}``).

    The new model fails when its ``gate_metric`` is more than ``max_drop_vs_previous`` below the
    previous model's, or (``require_beat_popularity``) below popularity's. Returns ``{"passed",
    "metric", "reasons", "previous_model"}``; ``ValueError`` when the metric was not computed.
    """
    metric = ev.gate_metric
    if metric not in table["new"]:
        raise ValueError(f"evaluation.gate_metric {metric!r} is not computed; choose one of {sorted(table['new'])}")
    new, reasons = table["new"][metric], []
    if "previous" in table and new < table["previous"][metric] - ev.max_drop_vs_previous:
        reasons.append(f"{metric} {new:.4f} is more than {ev.max_drop_vs_previous} below the "
                       f"previous model's {table['previous'][metric]:.4f} ({previous_date})")
    if ev.require_beat_popularity and new < table["popularity"][metric]:
        reasons.append(f"{metric} {new:.4f} is below popularity's {table['popularity'][metric]:.4f}")
    return {"passed": not reasons, "metric": metric, "reasons": reasons, "previous_model": previous_date}


def format_table(table: dict[str, dict[str, float]], ks: Sequence[int]) -> str:
    """A fixed-width text table: one row per ranker, recall/hitrate/ndcg at each K."""
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "hitrate", "ndcg")]
    keys = [f"{m}_at_{k}" for k in ks for m in ("recall", "hitrate", "ndcg")]
    lines = [f"{'model':<12}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in table.items():
        lines.append(f"{name:<12}" + "".join(f"{m[k]:>12.4f}" for k in keys))
    return "\n".join(lines)
