"""The ranking model's tasks and their losses (pure Keras; used by :mod:`models.ranking`).

* :func:`task_specs` -- task descriptions (names, dicts, ``dailyrec.config.RankingTaskConfig``) ->
  normalised dicts: kind (binary / regression), loss, weight, extra losses, ESMM parent, label
  column, calibration;
* :class:`TaskLoss` -- one task's loss: BCE / MSE / Huber plus weighted batch-level extra losses;
* :func:`pairwise_auc_loss` -- the pairwise logistic (RankNet) surrogate of ``1 - AUC``.

This module never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

TASK_KEYS = ("name", "kind", "loss", "huber_delta", "weight", "extra_losses", "parent", "label", "calibration")
LOGIT_EPS = 1e-7


def task_specs(tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """Task descriptions -> dicts ``{"name", "kind": "binary" | "regression", "loss": "bce" | "mse" |
    "huber", "huber_delta", "weight", "extra_losses": [{"name", "weight"}], "parent", "label",
    "calibration": "click" | "post_click" | "none"}``.

    Accepts names (a binary BCE task of that name, calibrated ``click`` if named ``click``,
    ``post_click`` if named ``conversion``), dicts (missing keys take those defaults) and
    ``dailyrec.config.RankingTaskConfig`` objects (their resolved loss and calibration).
    Raises ``ValueError`` for a duplicate name or a parent that is not an earlier binary task.
    """
    out: list[dict[str, Any]] = []
    for t in tasks:
        if hasattr(t, "model_dump"):
            d = {**t.model_dump(mode="json"), "loss": t.loss_name, "label": t.label_column,
                 "calibration": t.calibration_mode}
        elif isinstance(t, str):
            d = {"name": t}
        else:
            d = dict(t)
        name = str(d["name"])
        kind = d.get("kind") or "binary"
        label = d.get("label") or name
        cal = d.get("calibration") or "auto"
        if cal == "auto":
            cal = ("click" if label == "click" and kind == "binary"
                   else "post_click" if (label == "conversion" or d.get("parent")) else "none")
        spec = {"name": name, "kind": kind, "loss": d.get("loss") or ("bce" if kind == "binary" else "mse"),
                "huber_delta": float(d.get("huber_delta", 1.0)), "weight": float(d.get("weight", 1.0)),
                "extra_losses": [{"name": e["name"], "weight": float(e["weight"])} for e in d.get("extra_losses") or []],
                "parent": d.get("parent"), "label": label, "calibration": cal}
        if any(o["name"] == name for o in out):
            raise ValueError(f"duplicate ranking task {name!r}")
        if spec["parent"] is not None:
            parent = next((o for o in out if o["name"] == spec["parent"]), None)
            if parent is None or parent["kind"] != "binary" or kind != "binary":
                raise ValueError(f"task {name!r}: parent {spec['parent']!r} must be an earlier binary task, "
                                 "and the task binary (ESMM)")
        out.append(spec)
    return out


def _logit(p: Any) -> Any:
    p = ops.clip(ops.cast(p, "float32"), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return ops.log(p) - ops.log1p(-p)


def pairwise_auc_loss(y_true: Any, y_pred: Any) -> Any:
    """Pairwise logistic (RankNet) surrogate of ``1 - AUC`` over a batch (Burges et al., ICML 2005,
    "Learning to Rank using Gradient Descent"): the mean over every (positive i, negative j) pair
    of ``softplus(-(logit(p_i) - logit(p_j)))``; 0 when the batch lacks a class.

    Args: ``y_true`` 0/1 ``[B]`` or ``[B, 1]``; ``y_pred`` probabilities, same shape.
    Returns: ``float32[]``. Memory ``O(B^2)`` (a 2048-row batch: 16 MB).
    """
    y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    z = ops.reshape(_logit(y_pred), (-1,))
    pos = ops.expand_dims(y, 1) * ops.expand_dims(1.0 - y, 0)  # [B, B]: i positive, j negative
    diff = ops.expand_dims(z, 1) - ops.expand_dims(z, 0)
    n = ops.sum(pos)
    return ops.sum(pos * ops.softplus(-diff)) / ops.maximum(n, 1.0)


EXTRA_LOSSES = {"pairwise_auc": pairwise_auc_loss}
"""Batch-level extra losses by name (``ranking.tasks[*].extra_losses[*].name``)."""


@keras.saving.register_keras_serializable(package="dailyrec")
class TaskLoss(keras.losses.Loss):
    """One task's training loss: ``main(y, p) + sum_k weight_k * extra_k(y, p)``.

    ``loss``: ``bce`` (binary cross-entropy of the probability), ``mse``, or ``huber``
    (``huber_delta``) for regression; ``extra``: ``[{"name": "pairwise_auc", "weight": w}]``
    (:data:`EXTRA_LOSSES`; batch-level, added to every row's loss so the batch mean gains
    ``w * extra``). Call: ``y_true [B]`` / ``[B, 1]``, ``y_pred [B, 1]`` -> per-row ``[B]``.
    """

    def __init__(self, loss: str = "bce", huber_delta: float = 1.0, extra: Sequence[Mapping[str, Any]] = (),
                 name: str = "task_loss", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if loss not in ("bce", "mse", "huber"):
            raise ValueError(f"TaskLoss: loss must be bce, mse or huber, got {loss!r}")
        unknown = [e["name"] for e in extra if e["name"] not in EXTRA_LOSSES]
        if unknown:
            raise ValueError(f"TaskLoss: unknown extra loss(es) {unknown}; known {sorted(EXTRA_LOSSES)}")
        self.loss_name, self.huber_delta = loss, float(huber_delta)
        self.extra = [{"name": str(e["name"]), "weight": float(e["weight"])} for e in extra]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        p = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        if self.loss_name == "bce":
            q = ops.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
            per_row = -(y * ops.log(q) + (1.0 - y) * ops.log1p(-q))
        elif self.loss_name == "mse":
            per_row = ops.square(p - y)
        else:
            err = ops.abs(p - y)
            quad = ops.minimum(err, self.huber_delta)
            per_row = 0.5 * ops.square(quad) + self.huber_delta * (err - quad)
        for e in self.extra:
            per_row = per_row + e["weight"] * EXTRA_LOSSES[e["name"]](y, p)
        return per_row

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "loss": self.loss_name, "huber_delta": self.huber_delta, "extra": self.extra}
