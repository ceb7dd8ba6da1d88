"""MMoE multi-task ranking model (click, conversion) and a shared-bottom baseline.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018.

Pieces (shapes in ``[...]``; ``B`` is the batch size):

* :class:`MMoE` -- the layer: ``[B, d]`` -> one ``[B, expert_units[-1]]`` mixture per task.
* :class:`SharedBottom` -- the baseline layer with the same interface (one MLP, its output
  repeated per task).
* :class:`RankingModel` -- raw features -> ``FeatureEncoder`` (+ optional item x context cross)
  -> MMoE or shared bottom -> one tower per task -> sigmoid. Outputs
  ``{"click": [B, 1], "conversion": [B, 1]}`` probabilities.
* :class:`~models.optim.DecayWithFloor` -- exponential learning-rate decay with a floor (shared with the two-tower model).
* :func:`build_ranking_model` -- from ``RankingConfig`` / ``FeaturesConfig``, built and compiled.
* :func:`ranking_dataset` -- the training batch format (see below).
* :func:`gate_diagnostics` -- mean gate weight per expert per task, normalised entropy, collapse.
* :func:`export_ranking_model` / :func:`load_ranking_model` -- SavedModel with a raw-feature
  ``serving_default`` signature; :func:`save_model` / :func:`load_model` -- the full Keras model
  (vocabularies included, they live in the ``FeatureEncoder`` config) for warm start;
  :func:`warm_start_from` -- id-matched embeddings + every other layer whose shapes match.

Training batches (``tf.data``)::

    (features: {name: Tensor[B]}  raw values, tf.string for string features, int64 for int ones,
     labels:   {"click": float32[B], "conversion": float32[B]}
     [, sample_weight: float32[B]])                      # optional, applies to both tasks

This module never imports Airflow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from models.features import FeatureEncoder, spec_dicts, warm_start_encoder
from models.optim import DecayWithFloor, make_optimizer

TASKS: tuple[str, ...] = ("click", "conversion")
KERAS_FILE = "model.keras"


# --------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def _mlp_params(d_in: int, units: Sequence[int]) -> int:
    total, prev = 0, int(d_in)
    for u in units:
        total += (prev + 1) * int(u)
        prev = int(u)
    return total


def mmoe_param_count(d_in: int, num_experts: int, expert_units: Sequence[int], num_tasks: int,
                     task_specific_experts: int = 0) -> int:
    """Trainable parameters of :class:`MMoE` (experts + gates) for a ``[B, d_in]`` input."""
    n_total = num_experts + num_tasks * task_specific_experts
    n_seen = num_experts + task_specific_experts
    return n_total * _mlp_params(d_in, expert_units) + num_tasks * (d_in + 1) * n_seen


def towers_param_count(d_in: int, tower_units: Sequence[int], num_tasks: int) -> int:
    """Trainable parameters of ``num_tasks`` towers (MLP ``tower_units`` + a 1-unit head)."""
    last = int(tower_units[-1]) if tower_units else int(d_in)
    return num_tasks * (_mlp_params(d_in, tower_units) + last + 1)


def matched_shared_bottom_units(d_in: int, num_experts: int, expert_units: Sequence[int],
                                num_tasks: int, task_specific_experts: int = 0,
                                tower_units: Sequence[int] = ()) -> list[int]:
    """Widths of a shared-bottom MLP with about the parameter budget of the MMoE it replaces.

    The budget compared is everything above the input: MMoE (all experts + gates) + towers fed
    ``expert_units[-1]`` features, against shared MLP + the same towers fed its last width.
    The shared MLP keeps the experts' depth and shape: every width is ``expert_units`` scaled by
    one factor ``s``, found by bisection (parameters grow monotonically with ``s``), then the
    closest of the neighbouring integer widths is taken.
    """
    units = [int(u) for u in expert_units]
    if not units:
        raise ValueError("expert_units must not be empty")
    target = (mmoe_param_count(d_in, num_experts, units, num_tasks, task_specific_experts)
              + towers_param_count(units[-1], tower_units, num_tasks))

    def widths(s: float) -> list[int]:
        return [max(1, int(round(u * s))) for u in units]

    def params(w: list[int]) -> int:
        return _mlp_params(d_in, w) + towers_param_count(w[-1], tower_units, num_tasks)

    lo, hi = 0.0, 1.0
    while params(widths(hi)) < target:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if params(widths(mid)) < target:
            lo = mid
        else:
            hi = mid
    return min((widths(lo), widths(hi)), key=lambda w: abs(params(w) - target))


def _stacked_glorot(fan_in: int, fan_out: int) -> keras.initializers.Initializer:
    # Glorot-uniform of one [fan_in, fan_out] expert kernel; a 3-D Glorot would count the expert
    # axis as a receptive field and shrink the scale by the number of experts.
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(minval=-limit, maxval=limit)


@keras.saving.register_keras_serializable(package="dailyrec")
class MMoE(keras.layers.Layer):
    """Multi-gate mixture of experts.

    Args:
        num_experts: ``N`` experts shared by all tasks.
        expert_units: widths of every expert MLP (ReLU after each layer, last one included).
        num_tasks: ``T``.
        task_specific_experts: ``K`` extra experts per task, seen only by that task's gate.

    Experts are stored stacked (``expert_kernel_l``: ``[E, in, out]``, ``expert_bias_l``:
    ``[E, out]``, ``E = N + T*K``) and evaluated together (one matmul per layer). Expert ``e`` is:
    ``e < N`` shared; ``N + t*K + k`` the ``k``-th expert of task ``t``. Task ``t``'s gate
    (``gate_kernel_t``: ``[d, N + K]``, ``gate_bias_t``: ``[N + K]``) is a softmax over
    :meth:`seen_experts` ``(t)`` (shared first, then its own).

    Call:
        inputs: ``[B, d]`` float.
        return_gates: also return the gates.
    Returns:
        ``[Tensor[B, expert_units[-1]]] * T`` mixtures; with ``return_gates=True`` a pair
        ``(mixtures, gates)``, gates ``[Tensor[B, N + K]] * T`` (rows sum to one).
    """

    def __init__(self, num_experts: int, expert_units: Sequence[int], num_tasks: int = 2,
                 task_specific_experts: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if num_experts < 0 or task_specific_experts < 0 or num_experts + task_specific_experts < 1:
            raise ValueError("MMoE needs at least one expert per task "
                             f"(num_experts={num_experts}, task_specific_experts={task_specific_experts})")
        if num_tasks < 1 or not expert_units:
            raise ValueError("MMoE needs num_tasks >= 1 and non-empty expert_units")
        self.num_experts = int(num_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.num_tasks = int(num_tasks)
        self.task_specific_experts = int(task_specific_experts)
        self.total_experts = self.num_experts + self.num_tasks * self.task_specific_experts
        self.expert_kernels: list[Any] = []
        self.expert_biases: list[Any] = []
        self.gate_kernels: list[Any] = []
        self.gate_biases: list[Any] = []

    @property
    def output_dim(self) -> int:
        return self.expert_units[-1]

    def seen_experts(self, task: int) -> list[int]:
        """Indices (into the stacked experts) of the experts task ``task``'s gate mixes."""
        n, k = self.num_experts, self.task_specific_experts
        return list(range(n)) + list(range(n + task * k, n + (task + 1) * k))

    def expert_labels(self, task: int, task_names: Sequence[str] | None = None) -> list[str]:
        """Readable names of :meth:`seen_experts` ``(task)``: ``shared_i`` / ``<task>_k``."""
        name = task_names[task] if task_names else f"task{task}"
        return ([f"shared_{i}" for i in range(self.num_experts)]
                + [f"{name}_{k}" for k in range(self.task_specific_experts)])

    def build(self, input_shape: Any) -> None:
        d = int(input_shape[-1])
        prev = d
        for i, u in enumerate(self.expert_units):
            self.expert_kernels.append(self.add_weight(
                name=f"expert_kernel_{i}", shape=(self.total_experts, prev, u),
                initializer=_stacked_glorot(prev, u)))
            self.expert_biases.append(self.add_weight(
                name=f"expert_bias_{i}", shape=(self.total_experts, u), initializer="zeros"))
            prev = u
        n_seen = self.num_experts + self.task_specific_experts
        for t in range(self.num_tasks):
            self.gate_kernels.append(self.add_weight(
                name=f"gate_kernel_{t}", shape=(d, n_seen), initializer="glorot_uniform"))
            self.gate_biases.append(self.add_weight(
                name=f"gate_bias_{t}", shape=(n_seen,), initializer="zeros"))
        self.built = True

    def experts(self, inputs: Any) -> Any:
        """All expert outputs: ``[B, d]`` -> ``[B, E, expert_units[-1]]``."""
        if not self.built:
            self.build(tuple(inputs.shape))
        # First layer: one [B, d] x [d, E*u] matmul; deeper layers: batched matmuls over the
        # expert axis in [E, B, u] layout (both about twice as fast as einsum on CPU).
        x = ops.cast(inputs, self.compute_dtype)
        e = self.total_experts
        k0, b0 = self.expert_kernels[0], self.expert_biases[0]
        d, u = int(k0.shape[1]), int(k0.shape[2])
        h = ops.matmul(x, ops.reshape(ops.transpose(k0, (1, 0, 2)), (d, e * u)))
        h = ops.relu(ops.reshape(h, (-1, e, u)) + b0)  # [B, E, u]
        if len(self.expert_kernels) > 1:
            h = ops.transpose(h, (1, 0, 2))  # [E, B, u]
            for k, b in zip(self.expert_kernels[1:], self.expert_biases[1:]):
                h = ops.relu(ops.matmul(h, k) + ops.expand_dims(b, 1))
            h = ops.transpose(h, (1, 0, 2))
        return h

    def gates(self, inputs: Any) -> list[Any]:
        """Gate weights: ``[B, d]`` -> ``[Tensor[B, N + K]] * T`` (softmax, rows sum to one)."""
        if not self.built:
            self.build(tuple(inputs.shape))
        x = ops.cast(inputs, self.compute_dtype)
        return [ops.softmax(ops.matmul(x, k) + b, axis=-1)
                for k, b in zip(self.gate_kernels, self.gate_biases)]

    def call(self, inputs: Any, return_gates: bool = False) -> Any:
        h = self.experts(inputs)
        gates = self.gates(inputs)
        n, k = self.num_experts, self.task_specific_experts
        outputs = []
        for t, g in enumerate(gates):
            if k == 0:
                seen = h
            else:
                own = h[:, n + t * k:n + (t + 1) * k, :]
                seen = own if n == 0 else ops.concatenate([h[:, :n, :], own], axis=1)
            outputs.append(ops.sum(ops.expand_dims(g, -1) * seen, axis=1))
        return (outputs, gates) if return_gates else outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_experts": self.num_experts,
                "expert_units": self.expert_units, "num_tasks": self.num_tasks,
                "task_specific_experts": self.task_specific_experts}


@keras.saving.register_keras_serializable(package="dailyrec")
class SharedBottom(keras.layers.Layer):
    """Shared-bottom baseline: one MLP (``units``, ReLU), its output handed to every task.

    Call: ``[B, d]`` -> ``[Tensor[B, units[-1]]] * num_tasks`` (the same tensor ``num_tasks``
    times, so it is a drop-in replacement for :class:`MMoE`).
    """

    def __init__(self, units: Sequence[int], num_tasks: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        if not units:
            raise ValueError("SharedBottom needs non-empty units")
        self.units = [int(u) for u in units]
        self.num_tasks = int(num_tasks)
        self.dense = [keras.layers.Dense(u, activation="relu", name=f"{self.name}_dense_{i}")
                      for i, u in enumerate(self.units)]

    @property
    def output_dim(self) -> int:
        return self.units[-1]

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for layer in self.dense:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        self.built = True

    def call(self, inputs: Any) -> list[Any]:
        h = inputs
        for layer in self.dense:
            h = layer(h)
        return [h] * self.num_tasks

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "num_tasks": self.num_tasks}


# --------------------------------------------------------------------------------------------
# Ranking model
# --------------------------------------------------------------------------------------------


def _string_array(values: Any) -> np.ndarray:
    """Any 1-D column -> an array ``tf.constant`` turns into ``tf.string`` (bytes kept as bytes,
    other objects through ``str``)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "SU":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(v, (str, bytes)) for v in arr.ravel()):
        return arr
    return np.array([str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)


def _tf_dtype(spec: Mapping[str, Any]) -> tf.DType:
    return tf.string if spec.get("dtype", "string") == "string" else tf.int64


@keras.saving.register_keras_serializable(package="dailyrec")
class RankingModel(keras.Model):
    """Multi-task ranker: raw features -> ``{task: probability [B, 1]}``.

    Args:
        specs: feature spec dicts (``FeatureSpec.model_dump()``), all sides (user, item, context).
        vocabularies: ``{feature: [id, ...]}`` for ``vocab`` features.
        kind: ``"mmoe"`` or ``"shared_bottom"``.
        num_experts, expert_units, task_specific_experts: the :class:`MMoE` layer.
        tower_units: per-task tower MLP widths (ReLU), followed by ``Dense(1, sigmoid)``.
        use_cross: add the explicit "ad x device" cross: the mean of the item-side embeddings,
            each projected to ``cross_dim`` (no bias), times (element-wise) the same pooling of the
            context-side embeddings: ``[B, cross_dim]`` concatenated to the encoder output.
            Skipped (``cross_active`` False) when there is no item or no context feature.
        cross_dim: width of the cross.
        tasks: task names, one output each.
        bottom_units: shared-bottom widths; ``None`` = :func:`matched_shared_bottom_units`
            (same parameter budget as the MMoE configured by the other arguments).

    Call:
        inputs: ``{name: Tensor[B]}`` raw values (see ``FeatureEncoder``).
    Returns:
        ``{task: Tensor[B, 1]}`` probabilities.
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
        self.tasks = [str(t) for t in tasks]
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
        self.heads = {t: keras.layers.Dense(1, activation="sigmoid", name=f"head_{t}")
                      for t in self.tasks}

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

    def call(self, inputs: Mapping[str, Any], training: bool | None = None) -> dict[str, Any]:
        x = self.bottom_input(inputs)
        reps = self.mmoe(x) if self.mmoe is not None else self.bottom(x)
        out = {}
        for t, h in zip(self.tasks, reps):
            for layer in self.towers[t]:
                h = layer(h)
            out[t] = self.heads[t](h)
        return out

    def gates(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``{task: Tensor[B, N + K]}`` gate weights (MMoE only)."""
        if self.mmoe is None:
            raise ValueError("gates: a shared-bottom model has no gates")
        g = self.mmoe.gates(self.bottom_input(inputs))
        return dict(zip(self.tasks, g))

    # -- helpers -------------------------------------------------------------------------------

    def dummy_batch(self, n: int = 2) -> dict[str, Any]:
        """``{name: Tensor[n]}`` of placeholder values (``""`` / 0), to build the model."""
        return {s["name"]: (tf.constant([""] * n) if _tf_dtype(s) == tf.string
                            else tf.zeros([n], tf.int64)) for s in self.encoder.specs}

    def input_signature(self) -> dict[str, tf.TensorSpec]:
        """``{name: tf.TensorSpec([None], tf.string | tf.int64, name)}`` of the raw features."""
        return {s["name"]: tf.TensorSpec([None], _tf_dtype(s), name=s["name"]) for s in self.encoder.specs}

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
                "use_cross": self.use_cross, "cross_dim": self.cross_dim, "tasks": self.tasks,
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
    per-task BCE weighted by ``loss_weights``, AUC per task.

    Logged metric names: ``loss``, ``<task>_loss``, ``<task>_auc``.
    """
    weights = {t: 1.0 for t in model.tasks} if loss_weights is None else dict(loss_weights)
    if set(weights) != set(model.tasks):
        raise ValueError(f"loss_weights must name exactly the tasks {model.tasks}, got {sorted(weights)}")
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(DecayWithFloor(0.005, 0.9, 200, 1e-4)),
        loss={t: keras.losses.BinaryCrossentropy() for t in model.tasks},
        loss_weights={t: float(weights[t]) for t in model.tasks},
        metrics={t: [keras.metrics.AUC(name="auc")] for t in model.tasks},
        jit_compile=False,  # StringLookup / Hashing have no XLA kernels
    )
    return model


def build_ranking_model(rank_cfg: Any, features_cfg: Any, vocabularies: dict[str, list[str]],
                        kind: str = "mmoe", seed: int | None = None) -> RankingModel:
    """Build (dummy batch) and compile a :class:`RankingModel` from the config.

    Args:
        rank_cfg: ``dailyrec.config.RankingConfig``.
        features_cfg: ``dailyrec.config.FeaturesConfig`` (``spec``: every side is used).
        vocabularies: ``{feature: [id, ...]}`` for ``vocab`` features.
        kind: ``"mmoe"`` or ``"shared_bottom"``.
        seed: if given, ``keras.utils.set_random_seed(seed)`` first (global!) for reproducible
            initialisation; pass ``rank_cfg.seed`` from a training task.
    """
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    model = RankingModel(
        specs=list(features_cfg.spec), vocabularies=vocabularies, kind=kind,
        num_experts=rank_cfg.num_experts, expert_units=rank_cfg.expert_units,
        task_specific_experts=rank_cfg.task_specific_experts, tower_units=rank_cfg.tower_units,
        use_cross=rank_cfg.use_cross, tasks=TASKS,
    )
    model(model.dummy_batch(), training=False)
    return compile_ranking_model(model, make_optimizer(rank_cfg.optimizer), rank_cfg.loss_weights)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def ranking_dataset(features: Mapping[str, Any], labels: Mapping[str, Any],
                    sample_weight: Any | None = None, batch_size: int = 2048, shuffle: bool = True,
                    seed: int | None = None, specs: list[Any] | None = None) -> tf.data.Dataset:
    """Column arrays -> batched ``tf.data`` in the training format (see module doc).

    Args:
        features: ``{name: array[n]}`` raw values (strings, or integers).
        labels: ``{task: array[n]}`` of 0/1 (cast to float32).
        sample_weight: optional ``array[n]``.
        specs: if given, string features are cast to ``str`` and int features to int64.
    """
    feats = {}
    kinds = {s["name"]: s.get("dtype", "string") for s in spec_dicts(specs)} if specs else {}
    for name, col in features.items():
        arr = np.asarray(col)
        if kinds.get(name) == "string" or (not kinds and arr.dtype.kind in "OUS"):
            arr = _string_array(arr)
        elif kinds.get(name) == "int" or arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        feats[name] = arr
    labs = {t: np.asarray(v, dtype=np.float32) for t, v in labels.items()}
    parts: tuple[Any, ...] = (feats, labs)
    if sample_weight is not None:
        parts += (np.asarray(sample_weight, dtype=np.float32),)
    n = len(next(iter(labs.values())))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        ds = ds.shuffle(min(n, 100_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def synthetic_ranking_data(specs: list[Any], n: int, seed: int = 0,
                           vocabularies: Mapping[str, list[str]] | None = None,
                           id_cardinality: int = 500) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Learnable synthetic rows for tests and throughput checks (not for model quality claims).

    Each feature takes values from a small set (vocabulary ids when given, else ``id_cardinality``
    strings ``"<name>_<i>"`` / integers ``0..buckets``); every value carries a hidden random
    score, ``click ~ Bernoulli(sigmoid(sum of scores - 1))`` and ``conversion`` = click and a
    second Bernoulli driven by another score. Returns ``(features [n], labels [n])``.
    """
    rng = np.random.default_rng(seed)
    feats: dict[str, np.ndarray] = {}
    s_click = np.zeros(n)
    s_conv = np.zeros(n)
    for s in spec_dicts(specs):
        name = s["name"]
        if s.get("dtype", "string") == "string":
            vocab = (vocabularies or {}).get(name) or [f"{name}_{i}" for i in range(id_cardinality)]
            idx = rng.integers(0, len(vocab), size=n)
            feats[name] = np.asarray(vocab, dtype=object)[idx]
            card = len(vocab)
        else:
            card = int(s["buckets"])
            idx = rng.integers(0, card, size=n)
            feats[name] = idx.astype(np.int64)
        s_click += rng.normal(0, 0.6, size=card)[idx]
        s_conv += rng.normal(0, 0.6, size=card)[idx]
    p_click = 1 / (1 + np.exp(-(s_click - 1.0)))
    click = (rng.random(n) < p_click).astype(np.float32)
    p_conv = 1 / (1 + np.exp(-(s_conv + 0.5 * s_click - 0.5)))
    conv = click * (rng.random(n) < p_conv).astype(np.float32)
    return feats, {"click": click, "conversion": conv}


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------


def _slice_features(features: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {k: v[start:stop] for k, v in features.items()}


def _to_tensors(features: Mapping[str, Any], signature: Mapping[str, tf.TensorSpec]) -> dict[str, Any]:
    out = {}
    for name, spec in signature.items():
        if name not in features:
            raise KeyError(f"missing input feature {name!r}; got {sorted(features)}")
        v = features[name]
        if spec.dtype == tf.string:
            v = v if tf.is_tensor(v) else tf.constant(_string_array(v))
        else:
            v = tf.cast(v, spec.dtype)
        out[name] = tf.reshape(v, [-1])
    return out


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
    for start in range(0, n, batch_size):
        g = model.gates(_to_tensors(_slice_features(features, start, start + batch_size), sig))
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
# Export, save/load, warm start
# --------------------------------------------------------------------------------------------


def export_ranking_model(model: RankingModel, directory: str | os.PathLike[str]) -> str:
    """Write a SavedModel whose ``serving_default`` takes raw features.

    Signature inputs: one ``tf.TensorSpec([None], tf.string | tf.int64)`` per feature, named after
    it; outputs ``{task: float32[B]}`` probabilities. Returns the directory.
    """
    sig = model.input_signature()
    tasks = list(model.tasks)

    def serve(features: dict[str, Any]) -> dict[str, Any]:
        out = model(features, training=False)
        return {t: tf.reshape(out[t], [-1]) for t in tasks}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[sig])
    archive.write_out(str(directory), verbose=False)
    return str(directory)


class LoadedRanker:
    """A loaded :func:`export_ranking_model` SavedModel, callable ``{name: array[B]}`` ->
    ``{task: np.ndarray[B]}``; extra input keys are ignored, inputs are cast to the signature."""

    def __init__(self, path: str | os.PathLike[str]):
        self._loaded = tf.saved_model.load(str(path))  # keeps the resources alive
        self._fn = self._loaded.signatures["serving_default"]
        self.input_signature: dict[str, tf.TensorSpec] = dict(self._fn.structured_input_signature[1])
        self.feature_names = sorted(self.input_signature)
        self.tasks = sorted(self._fn.structured_outputs)

    def __call__(self, features: Mapping[str, Any], batch_size: int = 65536) -> dict[str, np.ndarray]:
        n = len(next(iter(features.values())))
        chunks: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        for start in range(0, max(n, 1), batch_size):
            part = _to_tensors(_slice_features(features, start, start + batch_size), self.input_signature)
            out = self._fn(**part)
            for t in self.tasks:
                chunks[t].append(out[t].numpy())
        return {t: np.concatenate(v) for t, v in chunks.items()}


def load_ranking_model(path: str | os.PathLike[str]) -> LoadedRanker:
    """Load :func:`export_ranking_model` output; returns a callable dict -> dict of np arrays."""
    return LoadedRanker(path)


def save_model(model: RankingModel, directory: str | os.PathLike[str]) -> str:
    """Save the full Keras model (config with vocabularies, weights, optimizer state) to
    ``directory/model.keras``; returns that path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / KERAS_FILE
    model.save(str(path))
    return str(path)


def load_model(directory: str | os.PathLike[str], compile: bool = True) -> RankingModel:
    """Load :func:`save_model` output (a directory or the ``.keras`` file itself)."""
    p = Path(directory)
    if p.is_dir():
        p = p / KERAS_FILE
    return keras.saving.load_model(str(p), compile=compile)


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
