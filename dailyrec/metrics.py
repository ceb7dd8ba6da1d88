"""Top-K retrieval metrics: Recall@K, HitRate@K and NDCG@K, computed the same way for every ranker.

A ranker is a function from a batch of user row numbers to a score matrix over the candidate
items (``[batch, n_candidates]``). Items the user must not be recommended (their own training
items) are excluded per user; ground-truth items outside the candidate set stay in the
denominator of recall (they can never be hit), so every ranker is judged on the same users,
candidates and truth. Used by the daily evaluation gate and by the MovieLens benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

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
