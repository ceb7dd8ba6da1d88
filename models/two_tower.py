"""Two-tower retrieval model: towers, training model, save/load, warm start.

Shapes: ``B`` batch rows, ``D = TrainingConfig.output_dim``.

* :class:`UserTower`: raw user + context features ``{name: [B]}`` -> ``FeatureEncoder`` (+ with
  ``history``: :class:`models.history.HistoryPooling` of ``history_item_ids[B, N]``) ->
  ``Dense(user_hidden, relu)...`` -> ``Dense(D)`` -> L2 normalisation -> ``float32[B, D]``.
* :class:`ItemTower`: raw item features ``{name: [B]}`` -> same structure -> ``float32[B, D]``.
* :class:`TwoTowerModel`: both towers with a custom ``train_step``/``test_step`` so that
  ``model.fit(tf.data.Dataset)`` works on batches of the form::

      {
        <every user, context and item feature>: Tensor[B]  (tf.string, or integer for dtype=int),
        "label":  float32[B]   1 = positive (clicked) pair, 0 = sampled negative pair,
        "log_q":  float32[B]   log sampling probability of the row's item (for positives, log of
                               its frequency among positives),
        "source": string[B]    optional, ignored by the model (e.g. "click", "popularity"),
      }

  The loss is ``TrainingConfig.loss``: ``"bce"`` (:func:`models.losses.pointwise_bce_loss`) or
  ``"softmax"`` (:func:`models.losses.in_batch_softmax_loss`, mixed negatives, logQ correction,
  accidental-hit masking). ``fit`` logs ``loss`` and ``recall_at_10`` (in-batch: share of
  positive rows whose item is in the top 10 of the batch's items by cosine, estimated on at most
  ``RECALL_MAX_QUERIES`` positives per batch) per epoch.

Export for serving: :func:`models.serving.export_towers` writes one SavedModel per tower whose
``serving_default`` signature takes one ``[None]`` tensor per raw feature and returns
``{"embedding": [B, D]}``; :func:`models.serving.load_tower` reads one back as a
``dict -> np.ndarray`` callable. :func:`save_model`/:func:`load_model` keep the whole model
(Keras archive) for warm start, and :func:`warm_start_from` copies what still applies from a
previous model.

This module never imports Airflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from models import losses
from models.features import FeatureEncoder, attach_numeric_stats, spec_dicts, warm_start_encoder
from models.history import HISTORY_COLUMN, HistoryPooling, history_args, warm_start_history, with_history
from models.optim import make_optimizer
from models.serving import KERAS_FILE, dummy_features, ids_signature, input_signature, load_keras, save_keras

LABEL_KEY = "label"
LOG_Q_KEY = "log_q"
RECALL_K = 10
RECALL_MAX_QUERIES = 64  # the training metric scores at most this many positives per batch (cost: 64 x B dot products)
MODEL_FILE = KERAS_FILE
VOCAB_FILE = "vocabularies.json"
META_FILE = "two_tower.json"


# --------------------------------------------------------------------------- towers


def _own_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Keras config without the base ``Model`` keys our constructors do not take."""
    return {k: v for k, v in config.items() if k not in ("trainable", "dtype")}


class _Tower(keras.Model):
    """FeatureEncoder -> MLP (relu) -> Dense(output_dim) -> L2 normalise.

    Args:
        specs: feature spec dicts (``FeatureSpec.model_dump()``) of the features this tower sees.
        vocabularies: ``{feature: [id, ...]}``; entries for features not in ``specs`` are dropped.
        hidden_units: widths of the relu layers.
        output_dim: ``D``.
    Call:
        ``{name: Tensor[B]}`` raw features (extra keys are ignored) -> ``float32[B, D]``, unit norm.
    """

    def __init__(self, specs: list[Any], vocabularies: dict[str, list[str]] | None = None,
                 hidden_units: list[int] | tuple[int, ...] = (128, 64), output_dim: int = 64,
                 history: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.specs = spec_dicts(specs)
        self.history_config = dict(history) if history else None
        names = {s["name"] for s in self.specs} | ({HISTORY_COLUMN} if history else set())
        self.vocabularies = {k: list(v) for k, v in (vocabularies or {}).items() if k in names}
        self.history = HistoryPooling(self.vocabularies.get(HISTORY_COLUMN), name="history",
                                      **self.history_config) if history else None
        self.hidden_units = [int(h) for h in hidden_units]
        self.output_dim = int(output_dim)
        self.encoder = FeatureEncoder(self.specs, self.vocabularies, name="encoder")
        self.hidden = [keras.layers.Dense(h, activation="relu", name=f"hidden_{i}")
                       for i, h in enumerate(self.hidden_units)]
        self.projection = keras.layers.Dense(self.output_dim, name="projection")

    @property
    def feature_names(self) -> list[str]:
        """The spec features, then ``history_item_ids`` when the tower has a history."""
        return [s["name"] for s in self.specs] + ([HISTORY_COLUMN] if self.history is not None else [])

    def input_signature(self) -> dict[str, tf.TensorSpec]:
        """``{name: tf.TensorSpec([None], tf.string | tf.int64, name=name)}`` of the raw features
        (``history_item_ids``: ``tf.string[None, None]``, ``""`` = padding)."""
        return with_history(input_signature(self.specs), self.history, tf.string)

    def ids_signature(self) -> dict[str, tf.TensorSpec]:
        """The ``embed_ids`` endpoint's inputs (``models.serving.ids_signature``; history: ``int64[None, None]``)."""
        return with_history(ids_signature(self.specs), self.history, tf.int64)

    def dummy_inputs(self) -> dict[str, tf.Tensor]:
        """A placeholder batch of 2 rows (history: ``[2, length]`` of padding)."""
        return with_history(dummy_features(self.specs), self.history, None)

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        x = self.encoder({s["name"]: inputs[s["name"]] for s in self.specs})
        if self.history is not None:
            if HISTORY_COLUMN not in inputs:
                raise KeyError(f"{self.name}: no {HISTORY_COLUMN!r} input (dailyrec.history.attach_history)")
            x = ops.concatenate([x, self.history(inputs[HISTORY_COLUMN], x)], axis=-1)  # x: attention's query
        for layer in self.hidden:
            x = layer(x)
        x = self.projection(x)
        return tf.math.l2_normalize(x, axis=-1, epsilon=1e-12)

    def build_dummy(self) -> None:
        self(self.dummy_inputs())

    def get_build_config(self) -> dict[str, Any]:
        return {"dummy": True}

    def build_from_config(self, config: dict[str, Any]) -> None:
        self.build_dummy()

    def dense_layers(self) -> list[keras.layers.Dense]:
        return [*self.hidden, self.projection]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "specs": self.specs, "vocabularies": self.vocabularies,
                "hidden_units": self.hidden_units, "output_dim": self.output_dim, "history": self.history_config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "_Tower":
        return cls(**_own_config(config))


@keras.saving.register_keras_serializable(package="dailyrec")
class UserTower(_Tower):
    """User tower: user + context feature specs. See :class:`_Tower` for arguments and shapes."""


@keras.saving.register_keras_serializable(package="dailyrec")
class ItemTower(_Tower):
    """Item tower: item feature specs. See :class:`_Tower` for arguments and shapes."""


# --------------------------------------------------------------------------- training model


@keras.saving.register_keras_serializable(package="dailyrec")
class TwoTowerModel(keras.Model):
    """Both towers plus the training loss (see the module doc for the batch format).

    Args:
        user_tower, item_tower: the towers (same ``output_dim``).
        loss_name: ``"bce"`` or ``"softmax"``.
        temperature: ``T``; softmax logits and the BCE logit are ``cosine / T``.
        logq_correction: subtract ``log_q`` from the softmax logits.
        item_id_feature: the raw item feature that identifies an item (accidental-hit masking and
            the in-batch recall metric).
    Call:
        batch dict -> ``{"user": float32[B, D], "item": float32[B, D]}``.
    """

    def __init__(self, user_tower: UserTower, item_tower: ItemTower, loss_name: str = "softmax",
                 temperature: float = 0.05, logq_correction: bool = True, item_id_feature: str = "item_id",
                 **kwargs: Any):
        super().__init__(**kwargs)
        if loss_name not in ("bce", "softmax"):
            raise ValueError(f"loss_name must be 'bce' or 'softmax', got {loss_name!r}")
        if user_tower.output_dim != item_tower.output_dim:
            raise ValueError(f"tower output dims differ: {user_tower.output_dim} != {item_tower.output_dim}")
        if item_id_feature not in item_tower.feature_names:
            raise ValueError(f"item_id_feature {item_id_feature!r} is not an item feature "
                             f"({item_tower.feature_names})")
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.loss_name = loss_name
        self.temperature = float(temperature)
        self.logq_correction = bool(logq_correction)
        self.item_id_feature = item_id_feature
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recall_tracker = keras.metrics.Mean(name=f"recall_at_{RECALL_K}")

    # -- structure
    @property
    def vocabularies(self) -> dict[str, list[str]]:
        return {**self.user_tower.vocabularies, **self.item_tower.vocabularies}

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> dict[str, Any]:
        return {"user": self.user_tower(inputs, training=training),
                "item": self.item_tower(inputs, training=training)}

    def build_dummy(self) -> None:
        self({**self.item_tower.dummy_inputs(), **self.user_tower.dummy_inputs()})

    def get_build_config(self) -> dict[str, Any]:
        return {"dummy": True}

    def build_from_config(self, config: dict[str, Any]) -> None:
        self.build_dummy()

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.recall_tracker]

    # -- loss
    def item_keys(self, inputs: dict[str, Any]) -> Any:
        """``int64[B]`` identity of each row's item: the 64-bit fingerprint of a string id, or the
        pre-encoded row id itself (``dailyrec.stream.IdEncoder``; out-of-vocabulary items share id 0)."""
        ids = tf.reshape(inputs[self.item_id_feature], [-1])
        if ids.dtype == tf.string:
            return tf.strings.to_hash_bucket_fast(ids, np.iinfo(np.int64).max)
        return tf.cast(ids, tf.int64)

    def compute_two_tower_loss(self, inputs: dict[str, Any], training: bool = False) -> tuple[Any, Any]:
        """Batch dict -> ``(loss float32[], in-batch recall@10 float32[])``.

        With the softmax loss only the positive rows are queries, so the user tower runs on those
        ``P`` rows alone (the item tower on all ``B``); the BCE loss needs both towers on every row.
        """
        labels = tf.cast(tf.reshape(inputs[LABEL_KEY], [-1]), tf.float32)
        keys = self.item_keys(inputs)
        query_cols = losses.query_rows(labels)
        item_emb = self.item_tower(inputs, training=training)
        if self.loss_name == "softmax":
            if self.logq_correction and LOG_Q_KEY not in inputs:
                raise KeyError(f"logq_correction is on but the batch has no {LOG_Q_KEY!r}; got {sorted(inputs)}")
            query_inputs = {n: tf.gather(inputs[n], query_cols) for n in self.user_tower.feature_names}
            query_emb = self.user_tower(query_inputs, training=training)
            loss = losses.softmax_loss_for_queries(query_emb, query_cols, item_emb, keys, inputs.get(LOG_Q_KEY),
                                                   self.temperature, self.logq_correction)
        else:
            user_emb = self.user_tower(inputs, training=training)
            loss = losses.pointwise_bce_loss(user_emb, item_emb, labels, self.temperature)
            query_emb = tf.gather(user_emb, query_cols)
        n = RECALL_MAX_QUERIES
        recall = losses.recall_at_k_for_queries(tf.stop_gradient(query_emb[:n]), query_cols[:n],
                                                tf.stop_gradient(item_emb), keys, RECALL_K)
        return loss, recall

    def train_step(self, data: dict[str, Any]) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            loss, recall = self.compute_two_tower_loss(data, training=True)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.recall_tracker.update_state(recall)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: dict[str, Any]) -> dict[str, Any]:
        loss, recall = self.compute_two_tower_loss(data, training=False)
        self.loss_tracker.update_state(loss)
        self.recall_tracker.update_state(recall)
        return {m.name: m.result() for m in self.metrics}

    def fit(self, x: Any = None, *args: Any, shuffle: bool | None = None, **kwargs: Any) -> Any:
        """``keras.Model.fit``; ``shuffle`` defaults to False for a ``tf.data.Dataset`` (shuffle
        it upstream), which keeps Keras from warning that it ignores ``shuffle=True``."""
        if shuffle is None:
            shuffle = not isinstance(x, tf.data.Dataset)
        return super().fit(x, *args, shuffle=shuffle, **kwargs)

    def predict_step(self, data: dict[str, Any]) -> dict[str, Any]:
        return self(data, training=False)

    # -- serialisation
    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(),
                "user_tower": keras.saving.serialize_keras_object(self.user_tower),
                "item_tower": keras.saving.serialize_keras_object(self.item_tower),
                "loss_name": self.loss_name, "temperature": self.temperature,
                "logq_correction": self.logq_correction, "item_id_feature": self.item_id_feature}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TwoTowerModel":
        config = _own_config(config)
        config["user_tower"] = keras.saving.deserialize_keras_object(config["user_tower"])
        config["item_tower"] = keras.saving.deserialize_keras_object(config["item_tower"])
        return cls(**config)


def build_two_tower(train_cfg: Any, features_cfg: Any, vocabularies: dict[str, list[str]] | None = None,
                    item_id_feature: str = "item_id", numeric_stats: dict[str, Any] | None = None) -> TwoTowerModel:
    """Build (on a dummy batch) and compile a :class:`TwoTowerModel`.

    Args:
        train_cfg: ``dailyrec.config.TrainingConfig`` (loss, temperature, logq_correction,
            user_hidden, item_hidden, output_dim, learning rate schedule).
        features_cfg: ``dailyrec.config.FeaturesConfig``; user + context specs feed the user tower,
            item specs the item tower.
        vocabularies: ``{feature name: [id, ...]}`` for ``vocab`` features.
        numeric_stats: the ``numeric`` features' ``{name: {"mean", "std"}}`` (``numeric_stats.json``), stored in the
            towers (:func:`models.features.attach_numeric_stats`: ``KeyError`` for a numeric feature without them).
    """
    vocabularies = vocabularies or {}
    user_specs = attach_numeric_stats(features_cfg.by_side("user") + features_cfg.by_side("context"), numeric_stats)
    item_specs = attach_numeric_stats(features_cfg.by_side("item"), numeric_stats)
    if not user_specs or not item_specs:
        raise ValueError("features.spec needs at least one user/context feature and one item feature")
    vocabularies, history = history_args(features_cfg, vocabularies)
    user = UserTower(user_specs, vocabularies, train_cfg.user_hidden, train_cfg.output_dim, history=history,
                     name="user_tower")
    item = ItemTower(item_specs, vocabularies, train_cfg.item_hidden, train_cfg.output_dim, name="item_tower")
    model = TwoTowerModel(user, item, loss_name=train_cfg.loss, temperature=train_cfg.temperature,
                          logq_correction=train_cfg.logq_correction, item_id_feature=item_id_feature,
                          name="two_tower")
    model.build_dummy()
    model.compile(optimizer=make_optimizer(train_cfg.optimizer), jit_compile=False)
    return model


# --------------------------------------------------------------------------- save / load / warm start


def save_model(model: TwoTowerModel, directory: str | os.PathLike[str]) -> dict[str, str]:
    """Keep the whole model for warm start: ``<dir>/model.keras`` (Keras archive: config, weights,
    optimizer state), ``<dir>/vocabularies.json`` and ``<dir>/two_tower.json`` (loss settings and
    feature specs, for humans and other steps). Returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"model": str(directory / MODEL_FILE), "vocabularies": str(directory / VOCAB_FILE),
             "meta": str(directory / META_FILE)}
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # so that load_model restores its slots cleanly
    save_keras(model, directory)
    Path(paths["vocabularies"]).write_text(json.dumps(model.vocabularies))
    meta = {"loss_name": model.loss_name, "temperature": model.temperature,
            "logq_correction": model.logq_correction, "item_id_feature": model.item_id_feature,
            "output_dim": model.user_tower.output_dim, "user_history": model.user_tower.history_config,
            "user_specs": model.user_tower.specs, "item_specs": model.item_tower.specs,
            "user_hidden": model.user_tower.hidden_units, "item_hidden": model.item_tower.hidden_units}
    Path(paths["meta"]).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return paths


def load_model(directory: str | os.PathLike[str], compile: bool = True) -> TwoTowerModel:
    """Read back a model written by :func:`save_model`."""
    return load_keras(directory, compile=compile, expect=TwoTowerModel)


def _copy_dense(new: keras.layers.Dense, old: keras.layers.Dense) -> bool:
    new_w, old_w = new.get_weights(), old.get_weights()
    if len(new_w) != len(old_w) or any(a.shape != b.shape for a, b in zip(new_w, old_w)):
        return False
    new.set_weights(old_w)
    return True


def warm_start_from(new_model: TwoTowerModel, old_model: TwoTowerModel) -> dict[str, Any]:
    """Initialise ``new_model`` (built) from ``old_model`` where it still applies.

    Embedding rows go through :func:`models.features.warm_start_encoder` (ids known to the old
    model keep their rows, new ids keep their fresh initialisation); the dense layers of each tower
    are copied position by position when their weight shapes match. Returns::

        {"embeddings": {"user_tower": {feature: {"kept": n, "new": m}}, "item_tower": {...}},
         "dense": {"user_tower": {"copied": [names], "skipped": [names]}, "item_tower": {...}},
         "kept_ids": n, "new_ids": m, "dense_copied": k, "dense_skipped": s}

    ``kept_ids``/``new_ids`` sum over the features with a vocabulary (ids matched by value);
    hash/int tables show up per feature as wholly kept (same shape) or wholly new.
    """
    stats: dict[str, Any] = {"embeddings": {}, "dense": {}}
    for tower in ("user_tower", "item_tower"):
        new_t: _Tower = getattr(new_model, tower)
        old_t: _Tower = getattr(old_model, tower)
        stats["embeddings"][tower] = warm_start_encoder(new_t.encoder, old_t.encoder)
        stats["embeddings"][tower].update(warm_start_history(new_t.history, old_t.history))  # rows by item id
        copied, skipped = [], []
        for i, layer in enumerate(new_t.dense_layers()):
            # hidden layers pair by position, the projection with the projection
            old_layer = old_t.projection if layer is new_t.projection else (
                old_t.hidden[i] if i < len(old_t.hidden) else None)
            if old_layer is not None and _copy_dense(layer, old_layer):
                copied.append(layer.name)
            else:
                skipped.append(layer.name)
        stats["dense"][tower] = {"copied": copied, "skipped": skipped}
    vocab_stats = [st for tower in ("user_tower", "item_tower")
                   for name, st in stats["embeddings"][tower].items()
                   if name in getattr(new_model, tower).vocabularies]
    stats["kept_ids"] = int(sum(v["kept"] for v in vocab_stats))
    stats["new_ids"] = int(sum(v["new"] for v in vocab_stats))
    stats["dense_copied"] = int(sum(len(d["copied"]) for d in stats["dense"].values()))
    stats["dense_skipped"] = int(sum(len(d["skipped"]) for d in stats["dense"].values()))
    return stats
