"""The ranking model's shared pieces: calibration, features, down-sampling, label statistics,
metrics and the artifacts of the MMoE / shared-bottom models.

Used by the ranking steps (``tasks/ranking/*``, ``tasks/serving/score_check``), the scorer
(:mod:`dailyrec.scoring`) and ``bench/mmoe.py``. Light at import (numpy only): pyarrow and
TensorFlow are imported inside the functions that need them. See docs/ranking.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "mmoe"
"""The ranking model's name in the store: ``models/mmoe``, ``eval/mmoe``, ``registry/mmoe``."""
BASELINE = "shared_bottom"
"""The baseline's kind (``models.ranking.RankingModel(kind=...)``) and its sub-folder of the model dir."""
KINDS = ("mmoe", BASELINE)
TASKS = ("click", "conversion")
KERAS_DIR = "model"
SAVED_MODEL_DIR = "saved_model"
LOGLOSS_EPS = 1e-7
CALIBRATION_FORMULA = "p_true = p / (p + (1 - p) / negative_downsample_rate) (dailyrec.ranking.calibrate)"


# ---- calibration of down-sampled predictions ----------------------------------------------------
def calibrate(p: Any, rate: float) -> np.ndarray:
    """Undo negative down-sampling on a predicted click probability.

    A model trained on data where negatives were kept with probability ``rate`` (positives all
    kept) predicts ``p = q / (q + (1 - q) * rate)`` for a true probability ``q``; the inverse is
    ``q = p / (p + (1 - p) / rate)`` (He et al., "Practical Lessons from Predicting Clicks on Ads
    at Facebook", ADKDD 2014, section 6.3 "Model re-calibration").

    Args:
        p: predicted probabilities, any shape (array-like of floats in [0, 1]).
        rate: the negatives' keep probability, in (0, 1]; ``1`` returns ``p`` unchanged.
    Returns:
        float64 array of ``p``'s shape.
    Raises:
        ValueError: ``rate`` is not in (0, 1].
    """
    if not 0 < rate <= 1:
        raise ValueError(f"down-sample rate must be in (0, 1], got {rate!r}")
    p = np.asarray(p, dtype=np.float64)
    if rate == 1:
        return p
    return p / (p + (1.0 - p) / rate)


def calibrate_conversion(p_conversion: Any, p_click: Any, rate: float) -> np.ndarray:
    """Undo negative down-sampling on a predicted per-impression conversion probability.

    Conversions only follow clicks, so every conversion positive was kept, and the negatives
    dropped were non-click impressions: the down-sampled data over-represents conversions by
    ``1 / (c + (1 - c) * rate)`` where ``c`` is the true click probability of the row. With
    ``c = calibrate(p_click, rate)`` (``p_click`` the click head's raw prediction on the same
    row) the true conversion probability is ``p_conversion * (c + (1 - c) * rate)`` (the
    derivation is in docs/ranking.md, "Calibration").

    Args:
        p_conversion, p_click: raw predictions of the two heads on the same rows, same shape.
        rate: the negatives' keep probability, in (0, 1].
    Returns:
        float64 array of ``p_conversion``'s shape.
    Raises:
        ValueError: ``rate`` is not in (0, 1].
    """
    c = calibrate(p_click, rate)
    return np.asarray(p_conversion, dtype=np.float64) * (c + (1.0 - c) * rate)


# ---- inputs and samples -------------------------------------------------------------------------
def features_manifest_path(store: Any, cur_date: str) -> str:
    """``<root>/features/dt=D/_manifest.json``: written last by the retrieval DAG's features step."""
    from dailyrec.storage import MANIFEST

    return f"{store.partition('features', cur_date)}/{MANIFEST}"


def feature_columns(cfg: Any, catalog_columns: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(user, context, item) feature names of ``features.spec`` other than the two ids, checked
    against where they come from (users snapshot, log columns / ``hour_of_day``, catalog).

    Raises:
        ValueError: a feature is not a column of its source, naming each.
    """
    from dailyrec.contract import LOG_SCHEMA, USER_SCHEMA

    fc = cfg.features
    user = [f.name for f in fc.by_side("user") if f.name != "user_id"]
    context = [f.name for f in fc.by_side("context")]
    item = [f.name for f in fc.by_side("item") if f.name != "item_id"]
    bad = ([f"{n} (user side: not a users column)" for n in user if n not in USER_SCHEMA.names]
           + [f"{n} (context: not a log column)" for n in context
              if n not in LOG_SCHEMA.names and n != "hour_of_day"]
           + [f"{n} (item side: not a catalog column)" for n in item if n not in catalog_columns])
    if bad:
        raise ValueError(f"features.spec: {bad}")
    return user, context, item


def impression_rows(store: Any, cur_date: str, cfg: Any, timer: Any) -> tuple[Any, dict[str, Any]]:
    """Every impression of the ranking window with both labels and the features of ``features.spec``.

    Runs ``sql/ranking_label_check.sql`` then ``sql/ranking_impressions.sql`` (DuckDB) over the
    hourly logs of the ``sampling.window_days`` days ending at ``cur_date`` (``YYYY-MM-DD``), the
    users snapshot of ``cur_date`` and ``features/dt=D/catalog.parquet``; ``timer`` (a
    :class:`dailyrec.storage.Timer`) records the phases.

    Returns:
        ``(rows, info)``: an Arrow table sorted as the SQL sorts it (labels int, ``is_holdout``,
        ``in_catalog``, ``in_users`` bools, the feature columns) and ``{"catalog": path, "hours":
        {day: [hours read]}, "features": {"user", "context", "item"}}``.
    Raises:
        ContractError: a conversion without a click in the window (the count per day named).
        ValueError: a feature of the spec is not a column of its source (:func:`feature_columns`).
    """
    import pyarrow.parquet as pq

    from dailyrec import sql
    from dailyrec.contract import ITEM_SCHEMA
    from dailyrec.dates import window
    from dailyrec.errors import ContractError
    from dailyrec.events import log_inputs, open_events, read_snapshot

    window_days, holdout_hours = cfg.sampling.window_days, cfg.training.holdout_hours
    with timer.step("inputs"):
        catalog_path = f"{store.partition('features', cur_date)}/catalog.parquet"
        with store.fs.open_input_file(catalog_path) as fh:
            catalog = pq.read_table(fh)
        user_feats, context, item_feats = feature_columns(cfg, catalog.column_names)
        files, hours = log_inputs(store, window(cur_date, window_days), cur_date)
        users = read_snapshot(store, "users", cur_date)
        con = open_events(store, files, users, catalog.select(ITEM_SCHEMA.names))
        sql.register_arrow(con, "catalog", catalog)
    params = {"cur_date": cur_date, "window_days": window_days, "holdout_hours": holdout_hours}
    with timer.step("sql_label_check"):
        bad = sql.query_arrow(con, "ranking_label_check", params)
    if bad.num_rows:
        per_day = {str(d): int(n) for d, n in zip(bad["dt"].to_pylist(), bad["bad_rows"].to_pylist())}
        con.close()
        raise ContractError(
            f"ranking samples {cur_date}: column 'conversion' is 1 where 'click' is 0 on {sum(per_day.values())} "
            f"impression(s) of the window (per day: {per_day}); a conversion must follow a click. "
            f"Fix the logs (the day validation, tasks.ingest.validate_day, rejects them as well).")
    with timer.step("sql_impressions"):
        rows = sql.query_arrow(con, "ranking_impressions", params,
                                 {"user_features": user_feats, "context": context, "item_features": item_feats})
    con.close()
    return rows, {"catalog": catalog_path, "hours": hours,
                  "features": {"user": user_feats, "context": context, "item": item_feats}}


def downsample_negatives(click: np.ndarray, is_holdout: np.ndarray, rate: float,
                         seed: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep every training click and each training non-click with probability ``rate``.

    One uniform draw per training row (``~is_holdout``), in the rows' order, from
    ``np.random.default_rng(seed)``: the same rows and seed give the same sample.

    Args:
        click: int/bool ``[n]`` click labels.
        is_holdout: bool ``[n]``, True for the held-out rows (never down-sampled).
        rate: the non-clicks' keep probability, in (0, 1].
        seed: anything ``np.random.default_rng`` takes (the step uses ``[ranking.seed, yyyymmdd]``).
    Returns:
        ``(kept, keep_prob, holdout)``: int64 indices of the kept training rows (ascending),
        float32 ``[len(kept)]`` keep probability of each (1 for clicks, ``rate`` otherwise), and
        int64 indices of the holdout rows.
    """
    train_idx = np.flatnonzero(~is_holdout)
    hold_idx = np.flatnonzero(is_holdout)
    u = np.random.default_rng(seed).random(len(train_idx))
    keep = (click[train_idx] == 1) | (u < rate)
    kept = train_idx[keep]
    keep_prob = np.where(click[kept] == 1, 1.0, rate).astype(np.float32)
    return kept, keep_prob, hold_idx


def sample_tables(rows: Any, rate: float, seed: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Split :func:`impression_rows` into the down-sampled training rows and the holdout rows.

    Both tables drop ``is_holdout`` and gain ``sample_weight`` and ``downsample_rate`` (float32;
    the keep probability and its inverse, 1 for clicks and holdout rows) — see
    :func:`downsample_negatives` for the draw.

    Returns:
        ``(train, holdout, stats)``; ``stats`` holds :func:`label_stats` of the training window
        before (``train_before_downsampling``) and after (``train``) down-sampling, of the
        ``holdout``, the per-``labels`` view (:func:`per_label`), and the counts of rows whose
        item left the catalog / whose user is missing from the snapshot.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    click = np.asarray(rows["click"].to_numpy(zero_copy_only=False), dtype=np.int8)
    conv = np.asarray(rows["conversion"].to_numpy(zero_copy_only=False), dtype=np.int8)
    is_hold = np.asarray(rows["is_holdout"].to_numpy(zero_copy_only=False), dtype=bool)
    kept, keep_prob, hold_idx = downsample_negatives(click, is_hold, rate, seed)
    train_idx = np.flatnonzero(~is_hold)
    before = label_stats(click[train_idx], conv[train_idx])
    after = label_stats(click[kept], conv[kept], 1.0 / keep_prob)
    holdout_stats = label_stats(click[hold_idx], conv[hold_idx])
    base = rows.drop_columns(["is_holdout"])
    train = base.take(pa.array(kept)).append_column(
        "sample_weight", pa.array(1.0 / keep_prob, pa.float32())).append_column(
        "downsample_rate", pa.array(keep_prob, pa.float32()))
    ones = np.ones(len(hold_idx), np.float32)
    holdout = base.take(pa.array(hold_idx)).append_column(
        "sample_weight", pa.array(ones)).append_column("downsample_rate", pa.array(ones))
    stats = {
        "train_before_downsampling": before, "train": after, "holdout": holdout_stats,
        "labels": per_label(before, after, holdout_stats),
        "rows_with_item_outside_catalog": int(pc.sum(pc.invert(rows["in_catalog"])).as_py() or 0),
        "rows_with_user_missing_from_snapshot": int(pc.sum(pc.invert(rows["in_users"])).as_py() or 0),
    }
    return train, holdout, stats


def label_stats(click: np.ndarray, conversion: np.ndarray, weight: np.ndarray | None = None) -> dict[str, Any]:
    """Rows, clicks, conversions and their rates (rounded to 6 digits; ``None`` when undefined);
    with ``weight`` (float ``[n]``, inverse keep probabilities) also the weighted estimates."""
    n = int(len(click))
    clicks, convs = int(click.sum()), int(conversion.sum())
    out: dict[str, Any] = {
        "rows": n, "clicks": clicks, "conversions": convs,
        "ctr": round(clicks / n, 6) if n else None,
        "conversion_rate": round(convs / n, 6) if n else None,
        "cvr_after_click": round(convs / clicks, 6) if clicks else None,
    }
    if weight is not None and n:
        w = weight.astype(np.float64)
        out["weighted_rows"] = round(float(w.sum()), 1)
        out["weighted_ctr"] = round(float((w * click).sum() / w.sum()), 6)
        out["weighted_conversion_rate"] = round(float((w * conversion).sum() / w.sum()), 6)
    return out


def per_label(before: dict[str, Any], after: dict[str, Any], holdout: dict[str, Any]) -> dict[str, Any]:
    """Statistics by label (from three :func:`label_stats`): positives and rates before/after
    down-sampling, and in the holdout."""
    out = {}
    for label, count, rate in (("click", "clicks", "ctr"), ("conversion", "conversions", "conversion_rate")):
        out[label] = {
            "positives_before": before[count], "rate_before": before[rate],
            "positives_after": after[count], "rate_after": after[rate],
            "weighted_rate_after": after.get(f"weighted_{rate}"),
            "holdout_positives": holdout[count], "holdout_rate": holdout[rate],
        }
    return out


# ---- metrics ------------------------------------------------------------------------------------
def auc(labels: Any, scores: Any) -> float | None:
    """ROC AUC as the Mann-Whitney U statistic (Hanley & McNeil, Radiology 1982), ties get average
    ranks; ``None`` without both classes. ``labels`` 0/1 ``[n]``, ``scores`` float ``[n]``."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(len(s))
    ranks[order] = avg_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: Any, probs: Any) -> float:
    """Mean binary cross-entropy in nats; probabilities clipped to [1e-7, 1 - 1e-7]."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def task_metrics(labels: dict[str, np.ndarray], calibrated: dict[str, np.ndarray],
                 raw: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Flat ``{<task>_<metric>: value}`` for every task of :data:`TASKS`: ``auc``, ``logloss``,
    ``calibration`` (mean calibrated prediction / mean label; 1 is perfect), ``mean_pred``,
    ``mean_label``, ``mean_raw_pred`` (the uncalibrated mean). Arrays are float ``[n]`` per task."""
    out: dict[str, float | None] = {}
    for t in TASKS:
        y, p = labels[t], calibrated[t]
        a = auc(y, p)
        mean_label = float(y.mean())
        out[f"{t}_auc"] = round(a, 6) if a is not None else None
        out[f"{t}_logloss"] = round(log_loss(y, p), 6)
        out[f"{t}_calibration"] = round(float(p.mean()) / mean_label, 4) if mean_label > 0 else None
        out[f"{t}_mean_pred"] = round(float(p.mean()), 6)
        out[f"{t}_mean_label"] = round(mean_label, 6)
        out[f"{t}_mean_raw_pred"] = round(float(raw[t].mean()), 6)
    return out


def format_table(table: dict[str, dict[str, Any]]) -> str:
    """The evaluation table (model x AUC / log loss / calibration per task) as fixed-width text."""
    keys = [f"{t}_{m}" for t in TASKS for m in ("auc", "logloss", "calibration")]
    lines = [f"{'model':<14}" + "".join(f"{k:>24}" for k in keys)]
    for name, m in table.items():
        lines.append(f"{name:<14}" + "".join(f"{m[k]:>24.4f}" if m[k] is not None else f"{'-':>24}" for k in keys))
    return "\n".join(lines)


def auc_gate_reasons(new: dict[str, Any], previous: dict[str, Any], max_drop: float, previous_date: str) -> list[str]:
    """Why the new model fails the gate: per task, its AUC more than ``max_drop`` below the
    previous model's (:func:`task_metrics` dicts of both); a task without an AUC is left out."""
    reasons = []
    for t in TASKS:
        new_auc, old_auc = new[f"{t}_auc"], previous[f"{t}_auc"]
        if new_auc is None or old_auc is None:
            continue
        if new_auc < old_auc - max_drop:
            reasons.append(f"{t} AUC {new_auc:.4f} is more than {max_drop} below the previous model's "
                           f"{old_auc:.4f} ({previous_date})")
    return reasons


def collapsed_gate_warnings(diag: dict[str, Any]) -> list[str]:
    """One warning per task whose MMoE gate collapsed (``models.ranking.gate_diagnostics`` output)."""
    out = []
    for task, d in diag.items():
        if d["collapsed"]:
            w = d["mean_weight"]
            top = int(np.argmax(w))
            out.append(f"MMoE gate of task '{task}' collapsed: expert {d['experts'][top]} takes {w[top]:.0%} of "
                       f"the mean gate weight (normalised entropy {d['entropy']:.2f}); the task barely uses "
                       f"the other experts")
    return out


# ---- model artifacts ----------------------------------------------------------------------------
def model_version(cur_date: str, cfg: Any) -> str:
    """``mmoe-<cur_date>-<first 8 hex digits of the config digest>``."""
    return f"{NAME}-{cur_date}-{cfg.digest()[:8]}"


def artifact_dirs(root: str, role: str = "main") -> tuple[str, str]:
    """(Keras model dir, SavedModel dir) inside a ``models/mmoe/dt=D`` folder: ``role`` "main" is
    the model that is evaluated and published, "baseline" the shared-bottom comparison.

    Raises:
        ValueError: ``role`` is neither "main" nor "baseline".
    """
    if role not in ("main", "baseline"):
        raise ValueError(f"role must be 'main' or 'baseline', got {role!r}")
    base = root if role == "main" else f"{root}/{BASELINE}"
    return f"{base}/{KERAS_DIR}", f"{base}/{SAVED_MODEL_DIR}"


def model_rate(store: Any, mdir: str) -> float:
    """The negative down-sample rate a model was trained with (its manifest; 1 when absent)."""
    from dailyrec.storage import MANIFEST

    man = store.read_json(f"{mdir}/{MANIFEST}")
    return float(man.get("negative_downsample_rate", 1.0))


def signature_specs(ranker: Any) -> list[dict[str, str]]:
    """Feature spec dicts (name, dtype "string" | "int") of a loaded SavedModel's serving signature."""
    import tensorflow as tf

    return [{"name": n, "dtype": "string" if spec.dtype == tf.string else "int"}
            for n, spec in sorted(ranker.input_signature.items())]


def predict_calibrated(ranker: Any, table: Any, rate: float, where: str = "rows") -> tuple[dict, dict]:
    """Raw and calibrated ``{task: float64[n]}`` of a loaded ranker on an Arrow table of ``n`` rows.

    ``rate`` is the model's training down-sample rate (:func:`model_rate`).
    Raises:
        KeyError / TypeError: a feature of the model's signature is missing / of the wrong type.
    """
    from dailyrec.inputs import feature_arrays

    feats = feature_arrays(table, signature_specs(ranker), where=where)
    raw = {t: np.asarray(v, dtype=np.float64).reshape(-1) for t, v in ranker(feats).items()}
    cal = {"click": calibrate(raw["click"], rate),
           "conversion": calibrate_conversion(raw["conversion"], raw["click"], rate)}
    return raw, cal
