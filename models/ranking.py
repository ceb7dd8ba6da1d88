"""The multi-task ranking model (any tasks; default click, conversion): MMoE or shared bottom over raw features.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018 (the layers are :mod:`models.mmoe`); the ESMM option from Ma et al.,
"Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click Conversion Rate",
SIGIR 2018.

Pieces (shapes in ``[...]``; ``B`` is the batch size):

* :class:`RankingModel` -- raw features -> ``FeatureEncoder`` (+ optional item x context cross)
  -> MMoE or shared bottom -> one tower per task -> sigmoid (binary task) or linear (regression).
  Outputs ``{task: [B, 1]}``; an ESMM task (``parent``) outputs ``p(parent) * p(task | parent)``.
  Tasks are :func:`task_specs` dicts (``dailyrec.config.RankingTaskConfig``); a bare name is a
  binary task.
* :class:`TaskLoss` -- one task's loss: BCE / MSE / Huber plus weighted extra losses
  (:func:`pairwise_auc_loss`).
* :func:`compile_ranking_model` / :func:`build_ranking_model` -- from ``RankingConfig`` /
  ``FeaturesConfig``, built and compiled (Adam with :class:`~models.optim.DecayWithFloor`).
* :func:`gate_diagnostics` -- mean gate weight per expert per task, normalised entropy, collapse.
* :func:`save_model` / :func:`load_model` -- the full Keras model (vocabularies included, they
  live in the ``FeatureEncoder`` config) for warm start; :func:`warm_start_from` -- id-matched
  embeddings + every other layer whose shapes match.

The SavedModel for serving is written by :func:`models.serving.export_ranking_model`.

Training batches (``tf.data``; the pipeline's are built by ``dailyrec.ranking.inputs.stream_dataset``,
``dailyrec.inputs.ranking_dataset`` builds them from in-memory arrays)::

    (features: {name: Tensor[B]}  raw values (tf.string for string features, int64 for int ones), or
                                  int64 embedding row ids (dailyrec.stream.IdEncoder) for any feature,
     labels:   {task: float32[B]}                       # one per task (default "click", "conversion")
     [, sample_weight: float32[B]])                      # optional, applies to every task

This module never imports Airflow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from models.features import FeatureEncoder, attach_numeric_stats, spec_dicts, warm_start_encoder
from models.ranking_tasks import TaskLoss, pairwise_auc_loss, task_specs  # noqa: F401  (re-exported)
from models.mmoe import MMoE, SharedBottom, matched_shared_bottom_units
from models.optim import DecayWithFloor, make_optimizer
from models.serving import dummy_features, input_signature, load_keras, row_batches, save_keras, to_tensors

TASKS: tuple[str, ...] = ("click", "conversion")
"""The default tasks (``dailyrec.config.RANKING_TASKS``)."""
@keras.saving.register_keras_serializable(package="dailyrec")
class RankingModel(keras.Model):
    """Multi-task ranker: raw features -> ``{task: probability [B, 1]}``.

    Args:
        specs: feature spec dicts (``FeatureSpec.model_dump()``), all sides (user, item, context).
        vocabularies: ``{feature: [id, ...]}`` for ``vocab`` features.
        kind: ``"mmoe"`` or ``"shared_bottom"``.
        num_experts, expert_units, task_specific_experts: the :class:`MMoE` layer.
        tower_units: per-task tower MLP widths (ReLU), followed by ``Dense(1)``: sigmoid for a
            binary task, linear for a regression task.
        use_cross: add the explicit "ad x device" cross: the mean of the item-side embeddings,
            each projected to ``cross_dim`` (no bias), times (element-wise) the same pooling of the
            context-side embeddings: ``[B, cross_dim]`` concatenated to the encoder output.
            Skipped (``cross_active`` False) when there is no item or no context feature.
        cross_dim: width of the cross.
        tasks: the tasks, one output each (:func:`task_specs`: names, dicts or
            ``RankingTaskConfig``). A binary task with ``parent`` (ESMM) outputs
            ``p(parent) * sigmoid(head)``: its head learns ``p(task | parent)`` (kept at
            :meth:`conditional`), its output is trained over every row.
        bottom_units: shared-bottom widths; ``None`` = :func:`matched_shared_bottom_units`
            (same parameter budget as the MMoE configured by the other arguments).

    Call:
        inputs: ``{name: Tensor[B]}`` raw values (see ``FeatureEncoder``).
    Returns:
        ``{task: Tensor[B, 1]}``: probabilities (binary) or values (regression).
    """

    def __init__(self, specs: list[Any], vocabularies: dict[str, list[str]] | None = None,
                 kind: str = "mmoe", num_experts: int = 4, expert_units: Sequence[int] = (64,),
                 task_specific_experts: int = 0, tower_units: Sequence[int] = (32,),
                 use_cross: bool = True, cross_dim: int = 16, tasks: Sequence[str] = TASKS,
                 bottom_units: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if kind not in ("mmoe", "shared_bottom"):
            raise ValueError(f"kind must be 'mmoe' or 'shared_bottom', got {kind!r}")
        self.kind = kind
        self.task_specs = task_specs(tasks)
        self.tasks = [t["name"] for t in self.task_specs]
        self.num_experts = int(num_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.task_specific_experts = int(task_specific_experts)
        self.tower_units = [int(u) for u in tower_units]
        self.use_cross = bool(use_cross)
        self.cross_dim = int(cross_dim)

        self.encoder = FeatureEncoder(spec_dicts(specs), vocabularies, name="encoder")
        specs_d = self.encoder.specs
        self.item_features = [s["name"] for s in specs_d if s["side"] == "item"]
        self.context_features = [s["name"] for s in specs_d if s["side"] == "context"]
        self.cross_active = self.use_cross and bool(self.item_features) and bool(self.context_features)
        self.cross_item = {n: keras.layers.Dense(self.cross_dim, use_bias=False, name=f"cross_item_{n}")
                           for n in (self.item_features if self.cross_active else [])}
        self.cross_context = {n: keras.layers.Dense(self.cross_dim, use_bias=False, name=f"cross_ctx_{n}")
                              for n in (self.context_features if self.cross_active else [])}
        self.input_dim = self.encoder.output_dim + (self.cross_dim if self.cross_active else 0)

        n_tasks = len(self.tasks)
        if kind == "mmoe":
            self.bottom_units = None
            self.mmoe = MMoE(self.num_experts, self.expert_units, n_tasks, self.task_specific_experts,
                             name="mmoe")
            self.bottom = None
        else:
            self.bottom_units = [int(u) for u in bottom_units] if bottom_units else \
                matched_shared_bottom_units(self.input_dim, self.num_experts, self.expert_units,
                                            n_tasks, self.task_specific_experts, self.tower_units)
            self.mmoe = None
            self.bottom = SharedBottom(self.bottom_units, n_tasks, name="shared_bottom")
        self.towers = {t: [keras.layers.Dense(u, activation="relu", name=f"tower_{t}_{i}")
                           for i, u in enumerate(self.tower_units)] for t in self.tasks}
        self.heads = {t["name"]: keras.layers.Dense(1, activation="sigmoid" if t["kind"] == "binary" else None,
                                                    name=f"head_{t['name']}")
                      for t in self.task_specs}
        self.parents = {t["name"]: t["parent"] for t in self.task_specs if t["parent"]}

    # -- forward -------------------------------------------------------------------------------

    def bottom_input(self, inputs: Mapping[str, Any]) -> Any:
        """Raw features -> ``[B, input_dim]``: embeddings (+ cross)."""
        embs = self.encoder.embed(inputs)
        x = ops.concatenate([embs[n] for n in self.encoder.names], axis=-1)
        if self.cross_active:
            item = ops.mean(ops.stack([self.cross_item[n](embs[n]) for n in self.item_features]), axis=0)
            ctx = ops.mean(ops.stack([self.cross_context[n](embs[n]) for n in self.context_features]),
                           axis=0)
            x = ops.concatenate([x, item * ctx], axis=-1)
        return x

    def heads_output(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``{task: Tensor[B, 1]}`` of every head before the ESMM products (an ESMM task's head is
        its conditional probability ``p(task | parent)``)."""
        x = self.bottom_input(inputs)
        reps = self.mmoe(x) if self.mmoe is not None else self.bottom(x)
        out = {}
        for t, h in zip(self.tasks, reps):
            for layer in self.towers[t]:
                h = layer(h)
            out[t] = self.heads[t](h)
        return out

    def call(self, inputs: Mapping[str, Any], training: bool | None = None) -> dict[str, Any]:
        out = self.heads_output(inputs)
        for t in self.tasks:  # parents come first (task_specs checks it)
            if t in self.parents:
                out[t] = out[self.parents[t]] * out[t]
        return out

    def conditional(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``{task: Tensor[B, 1]}`` ``p(task | parent)`` of the ESMM tasks (pCVR for conversion)."""
        heads = self.heads_output(inputs)
        return {t: heads[t] for t in self.parents}

    def gates(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``{task: Tensor[B, N + K]}`` gate weights (MMoE only)."""
        if self.mmoe is None:
            raise ValueError("gates: a shared-bottom model has no gates")
        g = self.mmoe.gates(self.bottom_input(inputs))
        return dict(zip(self.tasks, g))

    # -- helpers -------------------------------------------------------------------------------

    def dummy_batch(self, n: int = 2) -> dict[str, Any]:
        """``{name: Tensor[n]}`` of placeholder values (``""`` / 0), to build the model."""
        return dummy_features(self.encoder.specs, n)

    def input_signature(self) -> dict[str, tf.TensorSpec]:
        """``{name: tf.TensorSpec([None], tf.string | tf.int64, name)}`` of the raw features."""
        return input_signature(self.encoder.specs)

    def weight_layers(self) -> dict[str, keras.layers.Layer]:
        """Every trainable layer but the encoder, under a name stable across rebuilds."""
        out: dict[str, keras.layers.Layer] = {}
        out.update({f"cross_item/{n}": l for n, l in self.cross_item.items()})
        out.update({f"cross_ctx/{n}": l for n, l in self.cross_context.items()})
        if self.mmoe is not None:
            out["mmoe"] = self.mmoe
        if self.bottom is not None:
            out["shared_bottom"] = self.bottom
        for t in self.tasks:
            out.update({f"tower/{t}/{i}": l for i, l in enumerate(self.towers[t])})
            out[f"head/{t}"] = self.heads[t]
        return out

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, "specs": self.encoder.specs,
                "vocabularies": self.encoder.vocabularies, "kind": self.kind,
                "num_experts": self.num_experts, "expert_units": self.expert_units,
                "task_specific_experts": self.task_specific_experts, "tower_units": self.tower_units,
                "use_cross": self.use_cross, "cross_dim": self.cross_dim, "tasks": self.task_specs,
                "bottom_units": self.bottom_units}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "RankingModel":
        return cls(**config)

    # The inputs are a dict of string/int tensors, which Keras' shape-based build cannot
    # reproduce: building = one forward pass on a dummy batch.
    def build(self, input_shape: Any = None) -> None:
        if not self.built:
            with tf.init_scope():  # eager even when first called inside a tf.function
                self.call(self.dummy_batch(), training=False)
        self.built = True

    def get_build_config(self) -> dict[str, Any]:
        return {"dummy_batch": True}

    def build_from_config(self, config: dict[str, Any]) -> None:
        self.build()


def compile_ranking_model(model: RankingModel, optimizer: keras.optimizers.Optimizer | None = None,
                          loss_weights: Mapping[str, float] | None = None) -> RankingModel:
    """``optimizer`` (default Adam(:class:`DecayWithFloor`) of the default ``ranking.optimizer``),
    one :class:`TaskLoss` per task (its loss and extra losses) weighted by ``loss_weights``
    (default: each task spec's ``weight``), AUC per binary task, RMSE per regression task.

    Logged metric names: ``loss``, ``<task>_loss``, ``<task>_auc`` / ``<task>_rmse``.
    Raises ``ValueError`` when ``loss_weights`` does not name exactly the tasks.
    """
    weights = {t["name"]: t["weight"] for t in model.task_specs} if loss_weights is None else dict(loss_weights)
    if set(weights) != set(model.tasks):
        raise ValueError(f"loss_weights must name exactly the tasks {model.tasks}, got {sorted(weights)}")
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(DecayWithFloor(0.005, 0.9, 200, 1e-4)),
        loss={t["name"]: TaskLoss(t["loss"], t["huber_delta"], t["extra_losses"], name=f"{t['name']}_task_loss")
              for t in model.task_specs},
        loss_weights={t: float(weights[t]) for t in model.tasks},
        metrics={t["name"]: [keras.metrics.AUC(name="auc") if t["kind"] == "binary"
                             else keras.metrics.RootMeanSquaredError(name="rmse")] for t in model.task_specs},
        jit_compile=False,  # StringLookup / Hashing have no XLA kernels
    )
    return model


def build_ranking_model(rank_cfg: Any, features_cfg: Any, vocabularies: dict[str, list[str]],
                        kind: str = "mmoe", seed: int | None = None,
                        numeric_stats: dict[str, dict[str, Any]] | None = None) -> RankingModel:
    """Build (dummy batch) and compile a :class:`RankingModel` from the config.

    Args:
        rank_cfg: ``dailyrec.config.RankingConfig``.
        features_cfg: ``dailyrec.config.FeaturesConfig`` (``spec``: every side is used).
        vocabularies: ``{feature: [id, ...]}`` for ``vocab`` features.
        kind: ``"mmoe"`` or ``"shared_bottom"``.
        The tasks are ``rank_cfg.resolved_tasks()`` (``ranking.tasks`` with ``ranking.esmm`` and
        ``ranking.loss_weights`` applied).
        seed: if given, ``keras.utils.set_random_seed(seed)`` first (global!) for reproducible
            initialisation; pass ``rank_cfg.seed`` from a training task.
        numeric_stats: ``{feature: {"mean", "std"}}`` of the ``numeric`` features (the features
            step's ``numeric_stats.json``), stored in the model (:func:`models.features.attach_numeric_stats`;
            ``KeyError`` naming a numeric feature without them).
    """
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    model = RankingModel(
        specs=attach_numeric_stats(list(features_cfg.spec), numeric_stats), vocabularies=vocabularies, kind=kind,
        num_experts=rank_cfg.num_experts, expert_units=rank_cfg.expert_units,
        task_specific_experts=rank_cfg.task_specific_experts, tower_units=rank_cfg.tower_units,
        use_cross=rank_cfg.use_cross, tasks=rank_cfg.resolved_tasks(),
    )
    model(model.dummy_batch(), training=False)
    return compile_ranking_model(model, make_optimizer(rank_cfg.optimizer), rank_cfg.task_weights())


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------


def gate_diagnostics(model: RankingModel, features: Mapping[str, Any], batch_size: int = 8192,
                     collapse_threshold: float = 0.9) -> dict[str, Any]:
    """Gate usage of an MMoE :class:`RankingModel` on ``features`` (``{name: array[n]}``).

    Returns ``{task: {"experts": [label, ...], "mean_weight": [float] * n_seen,
    "entropy": float, "row_entropy": float, "collapsed": bool}}``:
    ``mean_weight`` is the gate averaged over rows; ``entropy`` its entropy / ``log(n_seen)``
    (1 = uniform use, 0 = one expert); ``row_entropy`` the same for each row's gate, averaged
    (low = confident per-row routing even if the mean is balanced); ``collapsed`` = one expert
    gets more than ``collapse_threshold`` of the mean weight (never with a single expert).
    """
    if model.mmoe is None:
        raise ValueError("gate_diagnostics: a shared-bottom model has no gates")
    n = len(next(iter(features.values())))
    if n == 0:
        raise ValueError("gate_diagnostics: no rows")
    sig = model.input_signature()
    sums = {t: None for t in model.tasks}
    ent_sums = {t: 0.0 for t in model.tasks}
    for part in row_batches(features, batch_size):
        g = model.gates(to_tensors(part, sig))
        for t in model.tasks:
            w = np.asarray(g[t], dtype=np.float64)
            s = w.sum(axis=0)
            sums[t] = s if sums[t] is None else sums[t] + s
            ent_sums[t] += float(-(w * np.log(np.clip(w, 1e-12, None))).sum())
    out: dict[str, Any] = {}
    for i, t in enumerate(model.tasks):
        mean = sums[t] / n
        k = mean.shape[0]
        norm = math.log(k) if k > 1 else 1.0
        ent = float(-(mean * np.log(np.clip(mean, 1e-12, None))).sum() / norm) if k > 1 else 0.0
        out[t] = {
            "experts": model.mmoe.expert_labels(i, model.tasks),
            "mean_weight": [float(x) for x in mean],
            "entropy": ent,
            "row_entropy": float(ent_sums[t] / n / norm) if k > 1 else 0.0,
            "collapsed": bool(k > 1 and mean.max() > collapse_threshold),
        }
    return out


# --------------------------------------------------------------------------------------------
# Save/load, warm start
# --------------------------------------------------------------------------------------------


def save_model(model: RankingModel, directory: str | os.PathLike[str]) -> str:
    """Save the full Keras model (config with vocabularies, weights, optimizer state) to
    ``directory/model.keras``; returns that path."""
    return save_keras(model, directory)


def load_model(directory: str | os.PathLike[str], compile: bool = True) -> RankingModel:
    """Load :func:`save_model` output (a directory or the ``.keras`` file itself)."""
    return load_keras(directory, compile=compile)


def warm_start_from(new: RankingModel, old: RankingModel) -> dict[str, Any]:
    """Initialise built ``new`` from ``old``.

    Embeddings via ``warm_start_encoder`` (vocab ids matched by id); every other layer
    (:meth:`RankingModel.weight_layers`: cross projections, MMoE / shared bottom, towers, heads)
    is copied whole when it exists in ``old`` with identical weight shapes, else left fresh
    (e.g. a changed feature set changes the MMoE input width, so the MMoE restarts).

    Returns ``{"encoder": {feature: {"kept", "new"}}, "layers": {name: "copied" | "missing" |
    "shape_mismatch"}, "copied": n, "skipped": m}``.
    """
    stats: dict[str, Any] = {"encoder": warm_start_encoder(new.encoder, old.encoder), "layers": {}}
    old_layers = old.weight_layers()
    for key, layer in new.weight_layers().items():
        src = old_layers.get(key)
        if src is None:
            stats["layers"][key] = "missing"
            continue
        nw, ow = layer.get_weights(), src.get_weights()
        if len(nw) == len(ow) and all(a.shape == b.shape for a, b in zip(nw, ow)):
            layer.set_weights(ow)
            stats["layers"][key] = "copied"
        else:
            stats["layers"][key] = "shape_mismatch"
    stats["copied"] = sum(v == "copied" for v in stats["layers"].values())
    stats["skipped"] = len(stats["layers"]) - stats["copied"]
    return stats
