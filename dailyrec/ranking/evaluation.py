"""Evaluation of ranking models on the holdout rows: calibrated predictions of a loaded SavedModel,
per task AUC / log loss / calibration (binary) or RMSE / MAE / calibration (regression), the
evaluation table, the publish gate's reasons and the MMoE gate-collapse warnings. The tasks are
task spec dicts (``models.ranking.task_specs``, recorded in each model's manifest as ``tasks``;
a model without them has the default click and conversion). TensorFlow and the models are
imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dailyrec.ranking.artifacts import artifact_dirs, model_rate
from dailyrec.ranking.calibration import calibrate, calibrate_conversion

DEFAULT_TASKS: list[dict[str, Any]] = [
    {"name": "click", "kind": "binary", "label": "click", "calibration": "click"},
    {"name": "conversion", "kind": "binary", "label": "conversion", "calibration": "post_click"},
]
"""The task specs of a model whose manifest names none (``dailyrec.config.RANKING_TASKS``)."""
BINARY_METRICS = ("auc", "logloss", "calibration")
REGRESSION_METRICS = ("rmse", "mae", "calibration")


def tasks_of(manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The task spec dicts a ranking model was trained with (its manifest's ``tasks``), or :data:`DEFAULT_TASKS`."""
    tasks = (manifest or {}).get("tasks")
    return [dict(t) for t in tasks] if tasks else [dict(t) for t in DEFAULT_TASKS]


def gate_metric(task: dict[str, Any]) -> str:
    """The gated metric of a task: ``<task>_auc`` (binary) or ``<task>_rmse`` (regression)."""
    return f"{task['name']}_{'auc' if task.get('kind', 'binary') == 'binary' else 'rmse'}"




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


def rmse(labels: Any, preds: Any) -> float:
    """Root mean squared error (float64)."""
    d = np.asarray(preds, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def task_metrics(labels: dict[str, np.ndarray], calibrated: dict[str, np.ndarray],
                 raw: dict[str, np.ndarray], tasks: list[dict[str, Any]] | None = None) -> dict[str, float | None]:
    """Flat ``{<task>_<metric>: value}`` for every task (default :data:`DEFAULT_TASKS`).

    Binary tasks: ``auc``, ``logloss``; regression tasks: ``rmse``, ``mae``; every task:
    ``calibration`` (mean calibrated prediction / mean label; 1 is perfect), ``mean_pred``,
    ``mean_label``, ``mean_raw_pred`` (the uncalibrated mean). Arrays are float ``[n]`` per task.
    """
    out: dict[str, float | None] = {}
    for task in tasks or DEFAULT_TASKS:
        t = task["name"]
        y, p = labels[t], calibrated[t]
        mean_label = float(y.mean())
        if task.get("kind", "binary") == "binary":
            a = auc(y, p)
            out[f"{t}_auc"] = round(a, 6) if a is not None else None
            out[f"{t}_logloss"] = round(log_loss(y, p), 6)
        else:
            out[f"{t}_rmse"] = round(rmse(y, p), 6)
            out[f"{t}_mae"] = round(float(np.mean(np.abs(p - y))), 6)
        out[f"{t}_calibration"] = round(float(p.mean()) / mean_label, 4) if mean_label > 0 else None
        out[f"{t}_mean_pred"] = round(float(p.mean()), 6)
        out[f"{t}_mean_label"] = round(mean_label, 6)
        out[f"{t}_mean_raw_pred"] = round(float(raw[t].mean()), 6)
    return out


def format_table(table: dict[str, dict[str, Any]], tasks: list[dict[str, Any]] | None = None) -> str:
    """The evaluation table (model x AUC / log loss / calibration per binary task, RMSE / MAE /
    calibration per regression task) as fixed-width text; a model without a metric shows ``-``."""
    keys = [f"{t['name']}_{m}" for t in tasks or DEFAULT_TASKS
            for m in (BINARY_METRICS if t.get("kind", "binary") == "binary" else REGRESSION_METRICS)]
    lines = [f"{'model':<14}" + "".join(f"{k:>24}" for k in keys)]
    for name, m in table.items():
        lines.append(f"{name:<14}" + "".join(f"{m[k]:>24.4f}" if m.get(k) is not None else f"{'-':>24}" for k in keys))
    return "\n".join(lines)


def auc_gate_reasons(new: dict[str, Any], previous: dict[str, Any], max_drop: float, previous_date: str,
                     tasks: list[dict[str, Any]] | None = None, max_rmse_rise: float = 0.02) -> list[str]:
    """Why the new model fails the gate (:func:`task_metrics` dicts of both models): per binary task,
    its AUC more than ``max_drop`` below the previous model's; per regression task, its RMSE more
    than ``max_rmse_rise`` (a fraction) above the previous model's. A task either model lacks a
    value for (no positives, or the previous model has no such task) is left out."""
    reasons = []
    for task in tasks or DEFAULT_TASKS:
        t, key = task["name"], gate_metric(task)
        new_v, old_v = new.get(key), previous.get(key)
        if new_v is None or old_v is None:
            continue
        if task.get("kind", "binary") == "binary":
            if new_v < old_v - max_drop:
                reasons.append(f"{t} AUC {new_v:.4f} is more than {max_drop} below the previous model's "
                               f"{old_v:.4f} ({previous_date})")
        elif new_v > old_v * (1 + max_rmse_rise):
            reasons.append(f"{t} RMSE {new_v:.4f} is more than {max_rmse_rise:.0%} above the previous model's "
                           f"{old_v:.4f} ({previous_date})")
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


def calibrate_tasks(raw: dict[str, np.ndarray], tasks: list[dict[str, Any]], rate: float) -> dict[str, np.ndarray]:
    """Calibrated ``{task: float64[n]}`` from raw predictions, by each task's ``calibration``:
    ``click`` -> :func:`calibrate`; ``post_click`` -> :func:`calibrate_conversion` with the
    (first) ``click`` task's raw prediction; ``none`` -> as predicted.

    Raises ``ValueError`` for a ``post_click`` task without a ``click`` task."""
    click = next((t["name"] for t in tasks if t.get("calibration") == "click"), None)
    out = {}
    for t in tasks:
        mode, p = t.get("calibration", "none"), raw[t["name"]]
        if mode == "click":
            out[t["name"]] = calibrate(p, rate)
        elif mode == "post_click":
            if click is None:
                raise ValueError(f"task {t['name']!r} is calibrated post_click but no task is calibrated click")
            out[t["name"]] = calibrate_conversion(p, raw[click], rate)
        else:
            out[t["name"]] = np.asarray(p, dtype=np.float64)
    return out


def predict_calibrated(ranker: Any, table: pa.Table, rate: float, where: str = "rows",
                       tasks: list[dict[str, Any]] | None = None) -> tuple[dict, dict]:
    """Raw and calibrated ``{task: float64[n]}`` of a loaded ranker on an Arrow table of ``n`` rows.

    ``rate`` is the model's training down-sample rate (:func:`model_rate`); ``tasks`` its task
    specs (:func:`tasks_of` its manifest; default :data:`DEFAULT_TASKS`), calibrated by
    :func:`calibrate_tasks`.
    Raises:
        KeyError / TypeError: a feature of the model's signature is missing / of the wrong type.
    """
    from dailyrec.inputs import feature_arrays

    feats = feature_arrays(table, signature_specs(ranker), where=where)
    raw = {t: np.asarray(v, dtype=np.float64).reshape(-1) for t, v in ranker(feats).items()}
    return raw, calibrate_tasks(raw, tasks or DEFAULT_TASKS, rate)


# ---- the evaluation step's pieces (tasks.ranking.evaluate_mmoe) --------------------------------
def holdout_labels(holdout: pa.Table, tasks: list[dict[str, Any]] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """``{task: float64[n]}`` labels of the holdout rows (each task's ``label`` column), and a
    warning per binary task without a positive (its AUC is undefined and the gate ignores it)."""
    tasks = tasks or DEFAULT_TASKS
    labels = {t["name"]: holdout.column(t.get("label") or t["name"]).to_numpy(zero_copy_only=False).astype(np.float64)
              for t in tasks}
    warnings = [f"the holdout has no {t['name']} positive: {t['name']} AUC is undefined and the gate ignores it"
                for t in tasks if t.get("kind", "binary") == "binary" and labels[t["name"]].sum() == 0]
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
    each calibrated with its own training rate (:func:`model_rate`) and scored on its own tasks
    (:func:`tasks_of` its manifest) that ``labels`` has; one timing per model in ``run``.

    Returns:
        ``(table, rates, warnings)``: ``{name: metrics}``, ``{name: rate}``, and a warning when the
        ``previous`` model cannot score the rows (another feature set): it is then left out.
    Raises:
        KeyError / TypeError: the day's models cannot score the rows (:func:`predict_calibrated`).
    """
    from dailyrec.storage import MANIFEST
    from models.serving import load_ranking_model

    table: dict[str, dict[str, Any]] = {}
    rates: dict[str, float] = {}
    warnings: list[str] = []
    for name, mdir, role in models:
        with run.timer.step(name):
            rate = model_rate(run.store, mdir)
            tasks = [t for t in tasks_of(run.store.read_json(f"{mdir}/{MANIFEST}")) if t["name"] in labels]
            try:
                ranker = load_ranking_model(artifact_dirs(mdir, role)[1])
                raw, cal = predict_calibrated(ranker, holdout, rate, where=where, tasks=tasks)
            except (KeyError, TypeError, ValueError) as exc:  # a model of another feature set cannot score today's rows
                if name != "previous":
                    raise
                warnings.append(f"the previous model ({previous_date}) cannot score these rows: {exc}; "
                                "the gate has nothing to compare with")
                continue
            table[name] = task_metrics(labels, cal, raw, tasks)
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


def publish_gate(table: dict[str, dict[str, Any]], max_drop: float, previous_date: str | None,
                 tasks: list[dict[str, Any]] | None = None, max_rmse_rise: float = 0.02) -> dict[str, Any]:
    """The gate's verdict: it fails when a binary task's AUC of ``new`` is more than ``max_drop``
    below ``previous``'s, or a regression task's RMSE more than ``max_rmse_rise`` above it
    (:func:`auc_gate_reasons`); it passes without a scored previous model.

    Returns:
        ``{"passed", "reasons", "metrics", "max_auc_drop_vs_previous", "max_rmse_rise_vs_previous",
        "previous_model"}``.
    """
    tasks = tasks or DEFAULT_TASKS
    scored = "previous" in table
    reasons = (auc_gate_reasons(table["new"], table["previous"], max_drop, previous_date, tasks, max_rmse_rise)
               if scored else [])
    return {"passed": not reasons, "reasons": reasons, "metrics": [gate_metric(t) for t in tasks],
            "max_auc_drop_vs_previous": max_drop, "max_rmse_rise_vs_previous": max_rmse_rise,
            "previous_model": previous_date if scored else None}
