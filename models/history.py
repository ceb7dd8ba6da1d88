"""The user's click history as a user-tower input: masked mean pooling of item embeddings.

Input ``history_item_ids`` (:data:`HISTORY_COLUMN`), shape ``[B, N]``: raw item ids
(``tf.string``, ``""`` = padding; the serving path) or int32/int64 row ids of the history table
(``dailyrec.history.HistoryEncoder``; the training path), most recent first. Lookup: a
``StringLookup(num_oov_indices=1)`` over the ``item_id`` vocabulary, so row 0 is both padding and
out-of-vocabulary, and both are **masked out** of the pooling. Output ``float32[B, E]``:

    pooled = sum_j m_j e_j / sum_j m_j      (m_j = 1 for a real, known item)
    pooled = empty                          (a learned vector) when sum_j m_j = 0

so a new user with no (known) click gets a trained default instead of a zero row. With
``pooling="attention"`` the mean becomes a weighted one, ``w = softmax_j(m_j, (W q) . e_j / sqrt(E))``
over the real entries, where ``q`` is the tower's other features (their encoder output, ``[B, F]``)
and ``W`` a learned ``[F, E]`` projection: DIN-style attention (Zhou et al. 2018, "Deep Interest
Network") with the user's own context as the query instead of the candidate item, which a two-tower
model cannot see. The table is
the user tower's own (``E = features.user_history.embedding_dim`` columns over the same
``item_id`` vocabulary as the item tower): exporting one SavedModel per tower keeps each tower
self-contained, at the cost of not sharing the item tower's ``item_id`` rows (YouTube DNN,
Covington et al. 2016, "watch vector" = average of the watched videos' embeddings).

This module never imports Airflow or dailyrec storage.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from models.features import FeatureEncoder

HISTORY_COLUMN = "history_item_ids"
"""Same name as ``dailyrec.history.HISTORY_COLUMN`` (the train.parquet column)."""


def history_spec(length: int, embedding_dim: int, buckets: int = 1) -> dict[str, Any]:
    """The feature spec dict of the history's lookup table (kind ``vocab``)."""
    return {"name": HISTORY_COLUMN, "side": "user", "kind": "vocab", "buckets": int(buckets),
            "embedding_dim": int(embedding_dim), "dtype": "string", "length": int(length)}


@keras.saving.register_keras_serializable(package="dailyrec")
class HistoryPooling(keras.layers.Layer):
    """``[B, N]`` item ids -> ``float32[B, E]`` masked mean of their embeddings (module doc).

    Args:
        vocabulary: the ``item_id`` vocabulary (features step); required (``ValueError`` without).
        embedding_dim: ``E``.
        length: ``N`` (the placeholder batch width; any width is accepted at call time).
        pooling: ``"mean"`` or ``"attention"`` (then ``call`` needs ``query``, ``float32[B, F]``).
    """

    def __init__(self, vocabulary: list[str], embedding_dim: int = 32, length: int = 20, pooling: str = "mean",
                 **kwargs: Any):
        super().__init__(**kwargs)
        if not vocabulary:
            raise ValueError(f"{HISTORY_COLUMN}: the history needs the item_id vocabulary (features step)")
        if pooling not in ("mean", "attention"):
            raise ValueError(f"{HISTORY_COLUMN}: pooling {pooling!r} is not implemented (mean, attention)")
        self.vocabulary = [str(v) for v in vocabulary]
        self.embedding_dim, self.length, self.pooling = int(embedding_dim), int(length), pooling
        self.encoder = FeatureEncoder([history_spec(length, embedding_dim)], {HISTORY_COLUMN: self.vocabulary},
                                      name="history_encoder")
        self.empty = self.add_weight(shape=(self.embedding_dim,), initializer="zeros", name="empty_history")
        self.query = keras.layers.Dense(self.embedding_dim, use_bias=False, name="history_query") \
            if pooling == "attention" else None

    def build(self, input_shape: Any = None) -> None:
        self.encoder.embeddings[HISTORY_COLUMN].build()
        self.encoder.built = True
        self.built = True

    def ids(self, values: Any) -> Any:
        """``[B, N]`` raw strings -> int64 row ids (0 = padding/OOV); integer ids pass through."""
        if "int" in keras.backend.standardize_dtype(values.dtype):
            return ops.cast(values, "int64")
        return self.encoder.lookups[HISTORY_COLUMN](values)

    def call(self, values: Any, query: Any = None) -> Any:
        ids = self.ids(values)
        emb = self.encoder.embeddings[HISTORY_COLUMN](ids)              # [B, N, E]
        mask = ops.expand_dims(ops.cast(ops.not_equal(ids, 0), "float32"), -1)  # [B, N, 1]
        count = ops.sum(mask, axis=1)                                   # [B, 1]
        weights = mask
        if self.query is not None:  # masked softmax of (W q) . e_j / sqrt(E) over the real entries
            logits = ops.sum(emb * ops.expand_dims(self.query(query), 1), axis=-1, keepdims=True)
            logits = ops.where(mask > 0, logits / float(np.sqrt(self.embedding_dim)), -1e9)
            weights = ops.exp(logits - ops.max(logits, axis=1, keepdims=True)) * mask
        pooled = ops.sum(emb * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1e-9)  # [B, E]
        return ops.where(count > 0, pooled, ops.expand_dims(self.empty, 0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocabulary": self.vocabulary, "embedding_dim": self.embedding_dim,
                "length": self.length, "pooling": self.pooling}


def with_history(sig: dict[str, Any], history: HistoryPooling | None, dtype: Any) -> dict[str, Any]:
    """``sig`` plus the history input when the tower has one: a ``TensorSpec([None, None], dtype)``,
    or with ``dtype=None`` a placeholder ``[2, length]`` batch of padding."""
    import tensorflow as tf

    if history is None:
        return sig
    if dtype is None:
        return {**sig, HISTORY_COLUMN: tf.fill([2, history.length], "")}
    return {**sig, HISTORY_COLUMN: tf.TensorSpec([None, None], dtype, name=HISTORY_COLUMN)}


def history_args(features_cfg: Any, vocabularies: dict[str, list[str]]) -> tuple[dict[str, list[str]], Any]:
    """``(vocabularies, history)`` for :class:`models.two_tower.UserTower`: with
    ``features_cfg.user_history.enabled``, the vocabularies gain ``history_item_ids`` (= the
    ``item_id`` vocabulary) and ``history`` is ``{"length", "embedding_dim", "pooling"}``; else
    unchanged and None."""
    h = getattr(features_cfg, "user_history", None)
    if h is None or not h.enabled:
        return vocabularies, None
    return ({**vocabularies, HISTORY_COLUMN: vocabularies.get("item_id") or []},
            {"length": h.length, "embedding_dim": h.embedding_dim, "pooling": h.pooling})


def warm_start_history(new: HistoryPooling | None, old: HistoryPooling | None) -> dict[str, dict[str, int]]:
    """Copy what applies from ``old`` into ``new`` (both built): the table's rows by item id
    (:func:`models.features.warm_start_encoder`), the empty-history vector, the attention query
    projection when the shapes match. ``{}`` when either is None."""
    from models.features import warm_start_encoder

    if new is None or old is None:
        return {}
    stats = warm_start_encoder(new.encoder, old.encoder)
    if new.empty.shape == old.empty.shape:
        new.empty.assign(old.empty)
    if new.query is not None and old.query is not None and new.query.kernel.shape == old.query.kernel.shape:
        new.query.kernel.assign(old.query.kernel)
    return stats
