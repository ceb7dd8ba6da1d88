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


def per_user_metrics(topk: np.ndarray, truth: Sequence[np.ndarray], n_truth: Sequence[int], ks: Sequence[int]
                     ) -> dict[str, np.ndarray]:
    """Per-user Recall@K, HitRate@K, NDCG@K: ``{"recall_at_K": float64[n_users], ...}``.

    ``truth[u]``: the user's ground-truth items that are candidates (indices); ``n_truth[u]``: the
    number of the user's distinct ground-truth items, candidates or not (the recall denominator).
    A user with ``n_truth[u] == 0`` scores 0 everywhere. NDCG: binary gains, ideal DCG of
    ``min(n_truth, K)`` hits (Järvelin & Kekäläinen 2002).
    """
    n = len(truth)
    discounts = 1.0 / np.log2(np.arange(2, topk.shape[1] + 2))
    out = {f"{m}_at_{k}": np.zeros(n, dtype=np.float64) for k in ks for m in ("recall", "hitrate", "ndcg")}
    for u in range(n):
        if n_truth[u] == 0:
            continue
        for k in ks:
            hits = np.isin(topk[u, :k], truth[u])
            nh = hits.sum()
            out[f"recall_at_{k}"][u] = nh / n_truth[u]
            out[f"hitrate_at_{k}"][u] = float(nh > 0)
            ideal = discounts[: min(n_truth[u], k)].sum()
            out[f"ndcg_at_{k}"][u] = (discounts[:k][hits].sum() / ideal) if ideal > 0 else 0.0
    return out


def metrics_from_topk(topk: np.ndarray, truth: Sequence[np.ndarray], n_truth: Sequence[int], ks: Sequence[int]
                      ) -> dict[str, float]:
    """Average Recall@K, HitRate@K, NDCG@K over users (the means of :func:`per_user_metrics`);
    ``ValueError`` without users."""
    n = len(truth)
    if n == 0:
        raise ValueError("no evaluation users")
    per = per_user_metrics(topk, truth, n_truth, ks)
    res: dict[str, float] = {}
    for k in ks:
        for m in ("recall", "hitrate", "ndcg"):
            res[f"{m}_at_{k}"] = float(sum(per[f"{m}_at_{k}"].tolist(), 0.0) / n)
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


def popularity_scores(catalog: Any, holdout: Any, cur_date: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Leak-free popularity of the catalog's items as a strict order: ``(float32[n_items] scores, info)``.

    The catalog's counters (``clicks_<W>d``, features step) count all of the W days ending with
    ``cur_date``, held-out hours included; the clicks of ``holdout`` (``samples/dt=D/holdout.parquet``:
    ``item_id``, ``event_time``) inside each window are subtracted, so popularity only knows what the
    training window knows. Items are ranked by the clicks of the longest window, ties broken by the
    clicks of the shortest (the more recent), then by ``item_id`` (ascending); the score is
    ``n_items - rank``, so no two items tie and every ranker sees the same order (a tie at the K
    boundary would otherwise be resolved by ``argpartition``'s arbitrary order). ``KeyError`` when
    the catalog has no ``clicks_<W>d`` column.
    """
    import datetime as dt

    import pandas as pd

    cols = catalog.column_names
    longest = popularity_column(cols)
    windows = sorted(int(c[7:-1]) for c in cols if c.startswith("clicks_") and c.endswith("d") and c[7:-1].isdigit())
    shortest = f"clicks_{windows[0]}d"
    ids = np.asarray(catalog.column("item_id").to_pylist(), dtype=object)
    pos = {it: i for i, it in enumerate(ids)}
    end = pd.Timestamp(dt.date.fromisoformat(cur_date) + dt.timedelta(days=1), tz="UTC")
    hold = holdout.select(["item_id", "event_time"]).to_pandas() if holdout.num_rows else None
    clean = {}
    subtracted = {}
    for col in dict.fromkeys([longest, shortest]):
        w = int(col[7:-1])
        c = catalog.column(col).to_numpy(zero_copy_only=False).astype(np.int64)
        if hold is not None:
            inside = hold[pd.to_datetime(hold["event_time"], utc=True) >= end - pd.Timedelta(days=w)]
            idx = np.array([pos[i] for i in inside["item_id"] if i in pos], dtype=np.int64)
            held = np.bincount(idx, minlength=len(ids)).astype(np.int64)
            c = np.maximum(c - held, 0)
            subtracted[col] = int(held.sum())
        clean[col] = c
    id_rank = np.empty(len(ids), np.int64)
    id_rank[np.argsort(ids.astype(str), kind="stable")] = np.arange(len(ids))
    order = np.lexsort((id_rank, -clean[shortest], -clean[longest]))  # primary key last
    scores = np.empty(len(ids), np.float32)
    scores[order] = np.arange(len(ids), 0, -1, dtype=np.float32)
    info = {"column": longest, "tie_break": ([shortest] if shortest != longest else []) + ["item_id"], "held_out_clicks_subtracted": subtracted,
            "distinct_values": int(len(np.unique(clean[longest])))}
    return scores, info


def holdout_eval_set(store: Any, cfg: Any, cur_date: str, fresh_since: str | None = None) -> dict[str, Any]:
    """The users, candidates and truth every ranker of ``cur_date`` is judged on.

    Users: those with a click in ``samples/dt=D/holdout.parquet`` (at most
    ``evaluation.max_eval_users``, a sample seeded with ``(training.seed, cur_date)``), each with
    the row of their first held-out click (``user_rows``, for the user tower). Candidates: the
    catalog. ``truth[u]``: catalog rows of the user's distinct held-out clicks (``n_truth[u]`` counts
    them all); ``exclude[u]``: catalog rows the user clicked in the training window (``seen.parquet``)
    when ``serving.exclude_seen`` (as serving filters them), else nothing is excluded.
    ``holdout``: the span the sample step chose (samples manifest ``holdout``,
    :mod:`dailyrec.holdout`). ``fresh`` (only with ``fresh_since``, an ISO timestamp): the same
    users restricted to held-out clicks at or after it: ``{"rows": positions in users, "truth",
    "n_truth", "since"}`` (the part of the holdout a model trained up to ``fresh_since`` never saw).

    Raises:
        NothingToEvaluate: the holdout has no click.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    sdir = store.partition("samples", cur_date)
    holdout = pq.read_table(f"{sdir}/holdout.parquet", filesystem=store.fs)
    seen_t = pq.read_table(f"{sdir}/seen.parquet", filesystem=store.fs)
    catalog = pq.read_table(f"{store.partition('features', cur_date)}/catalog.parquet", filesystem=store.fs)
    manifest = store.read_json(f"{sdir}/_manifest.json") if store.exists(f"{sdir}/_manifest.json") else {}
    if holdout.num_rows == 0:
        raise NothingToEvaluate(f"{sdir}/holdout.parquet has no clicks: nothing to evaluate, the day is too "
                                f"sparse (training.holdout_hours={cfg.training.holdout_hours}, extended up to "
                                f"evaluation.max_holdout_days={cfg.evaluation.max_holdout_days})")
    pos = {it: i for i, it in enumerate(catalog.column("item_id").to_pylist())}
    hold = holdout.to_pandas()
    span = dict(manifest.get("holdout") or _span_of(hold, cfg, cur_date))
    ev = cfg.evaluation  # the minimums of this evaluation's config decide (the span was chosen with the sample's)
    span.update(min_users=ev.min_holdout_users, min_clicks=ev.min_holdout_clicks,
                enough=span["users"] >= ev.min_holdout_users and span["clicks"] >= ev.min_holdout_clicks)
    users = np.array(sorted(hold["user_id"].unique()))
    if len(users) > cfg.evaluation.max_eval_users:
        rng = np.random.default_rng([cfg.training.seed, int(cur_date.replace("-", ""))])
        users = np.sort(rng.choice(users, cfg.evaluation.max_eval_users, replace=False))
    hold = hold[hold["user_id"].isin(set(users))].sort_values(["user_id", "event_time"], kind="stable")
    first = hold.drop_duplicates("user_id", keep="first").set_index("user_id").loc[users].reset_index()
    truth, n_truth = _truth(hold, users, pos)
    exclude: list[np.ndarray] | None = None
    if cfg.serving.exclude_seen:
        tr = seen_t.to_pandas()
        tr = tr[tr["user_id"].isin(set(users))]
        seen = tr.groupby("user_id")["item_id"].apply(lambda s: sorted(set(s)))
        exclude = [np.array([pos[i] for i in seen.get(u, []) if i in pos], dtype=np.int64) for u in users]
    out = {"users": users, "user_rows": pa.Table.from_pandas(first, preserve_index=False), "catalog": catalog,
           "truth": truth, "n_truth": n_truth, "exclude": exclude, "holdout_rows": holdout.num_rows,
           "holdout_table": holdout, "holdout": span}
    if fresh_since is not None:
        fresh = hold[pd.to_datetime(hold["event_time"], utc=True) >= pd.Timestamp(fresh_since)]
        fusers = np.array(sorted(fresh["user_id"].unique()))
        ft, fn = _truth(fresh, fusers, pos)
        out["fresh"] = {"rows": np.searchsorted(users, fusers), "truth": ft, "n_truth": fn, "since": fresh_since,
                        "clicks": len(fresh)}
    return out


def _truth(hold: Any, users: np.ndarray, pos: dict[str, int]) -> tuple[list[np.ndarray], list[int]]:
    """Per user of ``users`` (sorted): catalog rows of their distinct clicked items in ``hold``, and how many
    distinct items they clicked (catalog or not)."""
    items = hold.groupby("user_id")["item_id"].apply(lambda s: sorted(set(s)))
    truth = [np.array([pos[i] for i in items[u] if i in pos], dtype=np.int64) for u in users]
    return truth, [len(items[u]) for u in users]


def _span_of(hold: Any, cfg: Any, cur_date: str) -> dict[str, Any]:
    """The ``holdout`` dict of samples written before the holdout was recorded (fixed ``training.holdout_hours``)."""
    from dailyrec.holdout import span_bounds

    h, ev = cfg.training.holdout_hours, cfg.evaluation
    users, clicks = int(hold["user_id"].nunique()), len(hold)
    start, end = span_bounds(cur_date, h)
    return {"hours": h, "configured_hours": h, "max_hours": h, "users": users, "clicks": clicks, "start": start,
            "end": end, "extended": False, "enough": users >= ev.min_holdout_users and clicks >= ev.min_holdout_clicks,
            "min_users": ev.min_holdout_users, "min_clicks": ev.min_holdout_clicks,
            "reason": "samples written before the holdout span was recorded: the configured hours"}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int, confidence: float, seed: Any) -> dict[str, Any]:
    """Percentile bootstrap interval of ``mean(a - b)`` over paired per-user values (Efron &
    Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13): users are resampled with
    replacement ``samples`` times from ``numpy.random.default_rng(seed)`` (deterministic), the
    interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    resampled means. ``a``, ``b``: float ``[n_users]``, the same users in the same order.

    Returns ``{"mean_diff", "ci": [lo, hi], "users", "confidence", "samples"}``; ``ValueError``
    when the shapes differ or there is no user.
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if np.shape(a) != np.shape(b) or d.ndim != 1 or len(d) == 0:
        raise ValueError(f"paired_bootstrap needs two equal 1-d arrays with users, got {np.shape(a)}, {np.shape(b)}")
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(samples, np.float64)
    per = max(1, 4_000_000 // n)  # resamples per block: bounded memory (~32 MB of indices)
    for s in range(0, samples, per):
        m = min(per, samples - s)
        means[s:s + m] = d[rng.integers(0, n, size=(m, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"mean_diff": round(float(d.mean()), 6), "ci": [round(float(lo), 6), round(float(hi), 6)],
            "users": n, "confidence": confidence, "samples": samples}


def comparison_verdict(cmp: dict[str, Any], margin: float) -> str:
    """``worse`` (the whole interval is more than ``margin`` below 0: blocks), ``better`` (the
    interval is above 0), ``not distinguishable`` (the mean is more than ``margin`` below 0 but the
    interval reaches above ``-margin``), else ``level`` (within the margin)."""
    lo, hi = cmp["ci"]
    if hi < -margin:
        return "worse"
    if lo > 0:
        return "better"
    if cmp["mean_diff"] < -margin:
        return "not distinguishable"
    return "level"


def gate_decision(table: dict[str, dict[str, float]], ev: Any, previous_date: str | None,
                  paired: dict[str, dict[str, Any]] | None = None, holdout: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The evaluation gate (``evaluation.*``) on ``table`` (``{"new", ["previous"], "popularity"}``).

    Without ``paired`` (point estimates only): the new model fails when its ``gate_metric`` is more
    than ``max_drop_vs_previous`` below the previous model's, or (``require_beat_popularity``)
    below popularity's.

    With ``paired`` (``{"previous"|"popularity": paired_bootstrap(new, other) + optional "note"}``,
    the daily gate): noise-aware. A comparison blocks only when the new model is worse by more than
    the margin (``max_drop_vs_previous``; 0 vs popularity, which only counts with
    ``require_beat_popularity``) with ``confidence``: the whole interval lies below ``-margin``. A
    mean below the margin whose interval does not exclude it is *not distinguishable*: the gate
    passes with a note. A ``holdout`` (:mod:`dailyrec.holdout`) below the minimum size is
    *undecided*: with ``when_undecided == "pass"`` the gate passes with a note and the comparisons
    are only reported, with ``"block"`` it fails.

    Returns ``{"passed", "verdict", "metric", "reasons", "notes", "previous_model", ["comparisons",
    "holdout"]}``; ``verdict`` is ``pass``, ``pass: not distinguishable``, ``block`` or ``undecided:
    holdout too small``. ``ValueError`` when the metric was not computed.
    """
    metric = ev.gate_metric
    if metric not in table["new"]:
        raise ValueError(f"evaluation.gate_metric {metric!r} is not computed; choose one of {sorted(table['new'])}")
    new, reasons, notes = table["new"][metric], [], []
    if paired is None:
        if "previous" in table and new < table["previous"][metric] - ev.max_drop_vs_previous:
            reasons.append(f"{metric} {new:.4f} is more than {ev.max_drop_vs_previous} below the "
                           f"previous model's {table['previous'][metric]:.4f} ({previous_date})")
        if ev.require_beat_popularity and new < table["popularity"][metric]:
            reasons.append(f"{metric} {new:.4f} is below popularity's {table['popularity'][metric]:.4f}")
        return {"passed": not reasons, "verdict": "pass" if not reasons else "block", "metric": metric,
                "reasons": reasons, "notes": notes, "previous_model": previous_date}
    comparisons: dict[str, dict[str, Any]] = {}
    pct = f"{round(100 * ev.confidence)}%"
    for name, margin, counts in (("previous", ev.max_drop_vs_previous, True),
                                 ("popularity", 0.0, ev.require_beat_popularity)):
        if name not in paired:
            continue
        cmp = dict(paired[name])
        cmp["margin"] = margin
        cmp["verdict"] = comparison_verdict(cmp, margin)
        cmp["blocks"] = bool(counts and cmp["verdict"] == "worse" and not cmp.get("undecided"))
        comparisons[name] = cmp
        other = f"the previous model ({previous_date})" if name == "previous" else "popularity"
        what = (f"{metric} of the new model minus {other}: {cmp['mean_diff']:+.4f}, {pct} interval "
                f"[{cmp['ci'][0]:+.4f}, {cmp['ci'][1]:+.4f}] over {cmp['users']} users (margin {margin})")
        if cmp.get("note"):
            notes.append(cmp["note"])
        if cmp["blocks"]:
            reasons.append(f"worse than {other} by more than the margin with {pct} confidence: {what}")
        elif cmp["verdict"] == "not distinguishable" and counts:
            notes.append(f"not distinguishable from noise: {what}")
        elif cmp["verdict"] == "worse":
            notes.append(f"worse with {pct} confidence, not blocking"
                         + (" (evaluation.require_beat_popularity is off)" if name == "popularity"
                            else " (too few users to decide)") + f": {what}")
    verdict = "block" if reasons else ("pass: not distinguishable" if any(
        c["verdict"] == "not distinguishable" for c in comparisons.values()) else "pass")
    if holdout is not None and not holdout.get("enough", True):
        short = (f"{holdout['users']} users < {holdout['min_users']}" if holdout["users"] < holdout["min_users"]
                 else f"{holdout['clicks']} clicks < {holdout['min_clicks']}")
        msg = f"holdout too small: {short} ({holdout.get('reason', '')})"
        if ev.when_undecided == "pass":
            notes.insert(0, msg + "; not decidable, the gate passes (evaluation.when_undecided=pass)"
                         + ("; would have blocked: " + "; ".join(reasons) if reasons else ""))
            reasons = []
        else:
            reasons.insert(0, msg + "; the gate blocks (evaluation.when_undecided=block)")
        verdict = "undecided: holdout too small"
    return {"passed": not reasons, "verdict": verdict, "metric": metric, "reasons": reasons, "notes": notes,
            "previous_model": previous_date, "comparisons": comparisons, "holdout": holdout}


def format_table(table: dict[str, dict[str, float]], ks: Sequence[int]) -> str:
    """A fixed-width text table: one row per ranker, recall/hitrate/ndcg at each K."""
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "hitrate", "ndcg")]
    keys = [f"{m}_at_{k}" for k in ks for m in ("recall", "hitrate", "ndcg")]
    lines = [f"{'model':<12}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in table.items():
        lines.append(f"{name:<12}" + "".join(f"{m[k]:>12.4f}" for k in keys))
    return "\n".join(lines)
