"""Evaluation of ranking models on the holdout rows: calibrated predictions of a loaded SavedModel,
AUC / log loss / calibration per task, the evaluation table, the publish gate's reasons and the
MMoE gate-collapse warnings. TensorFlow and the models are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dailyrec.config import RANKING_TASKS
from dailyrec.ranking.artifacts import artifact_dirs, model_rate
from dailyrec.ranking.calibration import calibrate, calibrate_conversion

if TYPE_CHECKING:
    import pyarrow as pa

    from dailyrec.step import StepRun

LOGLOSS_EPS = 1e-7


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
    """Flat ``{<task>_<metric>: value}`` for every task of :data:`dailyrec.config.RANKING_TASKS`: ``auc``,
    ``logloss``, ``calibration`` (mean calibrated prediction / mean label; 1 is perfect), ``mean_pred``,
    ``mean_label``, ``mean_raw_pred`` (the uncalibrated mean). Arrays are float ``[n]`` per task."""
    out: dict[str, float | None] = {}
    for t in RANKING_TASKS:
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
    keys = [f"{t}_{m}" for t in RANKING_TASKS for m in ("auc", "logloss", "calibration")]
    lines = [f"{'model':<14}" + "".join(f"{k:>24}" for k in keys)]
    for name, m in table.items():
        lines.append(f"{name:<14}" + "".join(f"{m[k]:>24.4f}" if m[k] is not None else f"{'-':>24}" for k in keys))
    return "\n".join(lines)


def auc_gate_reasons(new: dict[str, Any], previous: dict[str, Any], max_drop: float, previous_date: str) -> list[str]:
    """Why the new model fails the gate: per task, its AUC more than ``max_drop`` below the
    previous model's (:func:`task_metrics` dicts of both); a task without an AUC is left out."""
    reasons = []
    for t in RANKING_TASKS:
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


def signature_specs(ranker: Any) -> list[dict[str, str]]:
    """Feature spec dicts (name, dtype "string" | "int" | "float") of a loaded SavedModel's serving signature."""
    import tensorflow as tf

    return [{"name": n, "dtype": "string" if spec.dtype == tf.string else ("float" if spec.dtype.is_floating else "int")}
            for n, spec in sorted(ranker.input_signature.items())]


def predict_calibrated(ranker: Any, table: pa.Table, rate: float, where: str = "rows") -> tuple[dict, dict]:
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


# ---- the evaluation step's pieces (tasks.ranking.evaluate_mmoe) --------------------------------
def holdout_labels(holdout: pa.Table) -> tuple[dict[str, np.ndarray], list[str]]:
    """``{task: float64[n]}`` labels of the holdout rows, and a warning per task without a positive
    (its AUC is undefined and the gate ignores it)."""
    labels = {t: holdout.column(t).to_numpy(zero_copy_only=False).astype(np.float64) for t in RANKING_TASKS}
    warnings = [f"the holdout has no {t} positive: {t} AUC is undefined and the gate ignores it"
                for t in RANKING_TASKS if labels[t].sum() == 0]
    return labels, warnings


def candidates(new_dir: str, new_manifest: dict[str, Any],
               previous: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The ``(name, model dir, role)`` to evaluate: ``new``; ``shared_bottom`` when the day's baseline
    was trained (``artifacts`` of its manifest); ``previous`` (``previous`` is
    :func:`dailyrec.registry.published_before`'s record, or None)."""
    out = [("new", new_dir, "main")]
    if "baseline" in (new_manifest.get("artifacts") or {}):
        out.append(("shared_bottom", new_dir, "baseline"))
    if previous is not None:
        out.append(("previous", previous["model_dir"], "main"))
    return out


def score_models(run: StepRun, holdout: pa.Table, where: str, labels: dict[str, np.ndarray],
                 models: list[tuple[str, str, str]],
                 previous_date: str | None) -> tuple[dict[str, dict[str, Any]], dict[str, float], list[str]]:
    """:func:`task_metrics` of each ``(name, model dir, role)`` of ``models`` on the holdout rows,
    each calibrated with its own training rate (:func:`model_rate`); one timing per model in ``run``.

    Returns:
        ``(table, rates, warnings)``: ``{name: metrics}``, ``{name: rate}``, and a warning when the
        ``previous`` model cannot score the rows (another feature set): it is then left out.
    Raises:
        KeyError / TypeError: the day's models cannot score the rows (:func:`predict_calibrated`).
    """
    from models.serving import load_ranking_model

    table: dict[str, dict[str, Any]] = {}
    rates: dict[str, float] = {}
    warnings: list[str] = []
    for name, mdir, role in models:
        with run.timer.step(name):
            rate = model_rate(run.store, mdir)
            try:
                ranker = load_ranking_model(artifact_dirs(mdir, role)[1])
                raw, cal = predict_calibrated(ranker, holdout, rate, where=where)
            except (KeyError, TypeError) as exc:  # a model of another feature set cannot score today's rows
                if name != "previous":
                    raise
                warnings.append(f"the previous model ({previous_date}) cannot score these rows: {exc}; "
                                "the gate has nothing to compare with")
                continue
            table[name] = task_metrics(labels, cal, raw)
            rates[name] = rate
    return table, rates, warnings


def gate_diagnostics(run: StepRun, new_dir: str, holdout: pa.Table, where: str) -> dict[str, Any]:
    """``models.ranking.gate_diagnostics`` (mean gate weight per expert per task, entropies) of the
    MMoE in ``new_dir`` on the holdout rows; timed as ``gate_diagnostics`` in ``run``."""
    from dailyrec.inputs import feature_arrays
    from models.ranking import gate_diagnostics as model_gate_diagnostics
    from models.ranking import load_model

    with run.timer.step("gate_diagnostics"):
        keras_model = load_model(artifact_dirs(new_dir, "main")[0], compile=False)
        feats = feature_arrays(holdout, list(keras_model.encoder.specs), where=where)
        return model_gate_diagnostics(keras_model, feats)


def publish_gate(table: dict[str, dict[str, Any]], max_drop: float, previous_date: str | None) -> dict[str, Any]:
    """The gate's verdict: it fails when a task's AUC of ``new`` is more than ``max_drop`` below
    ``previous``'s (:func:`auc_gate_reasons`); it passes without a scored previous model.

    Returns:
        ``{"passed", "reasons", "metrics", "max_auc_drop_vs_previous", "previous_model"}``.
    """
    scored = "previous" in table
    reasons = auc_gate_reasons(table["new"], table["previous"], max_drop, previous_date) if scored else []
    return {"passed": not reasons, "reasons": reasons, "metrics": [f"{t}_auc" for t in RANKING_TASKS],
            "max_auc_drop_vs_previous": max_drop, "previous_model": previous_date if scored else None}
