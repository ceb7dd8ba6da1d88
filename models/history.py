"""The user's click history as a user-tower input: masked mean pooling of item embeddings.

Input ``history_item_ids`` (:data:`HISTORY_COLUMN`), shape ``[B, N]``: raw item ids
(``tf.string``, ``""`` = padding; the serving path) or int32/int64 row ids of the history table
(``dailyrec.history.HistoryEncoder``; the training path), most recent first. Lookup: a
``StringLookup(num_oov_indices=1)`` over the ``item_id`` vocabulary, so row 0 is both padding and
out-of-vocabulary, and both are **masked out** of the pooling. Output ``float32[B, E]``:

    pooled = sum_j m_j e_j / sum_j m_j      (m_j = 1 for a real, known item)
    pooled = empty                          (a learned vector) when sum_j m_j = 0

so a new user with no (known) click gets a trained default instead of a zero row. The table is
the user tower's own (``E = features.user_history.embedding_dim`` columns over the same
``item_id`` vocabulary as the item tower): exporting one SavedModel per tower keeps each tower
self-contained, at the cost of not sharing the item tower's ``item_id`` rows (YouTube DNN,
Covington et al. 2016, "watch vector" = average of the watched videos' embeddings).

This module never imports Airflow or dailyrec storage.
"""

from __future__ import annotations

from typing import Any

import keras
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
        pooling: ``"mean"`` (the only one implemented).
    """

    def __init__(self, vocabulary: list[str], embedding_dim: int = 32, length: int = 20, pooling: str = "mean",
                 **kwargs: Any):
        super().__init__(**kwargs)
        if not vocabulary:
            raise ValueError(f"{HISTORY_COLUMN}: the history needs the item_id vocabulary (features step)")
        if pooling != "mean":
            raise ValueError(f"{HISTORY_COLUMN}: pooling {pooling!r} is not implemented (mean)")
        self.vocabulary = [str(v) for v in vocabulary]
        self.embedding_dim, self.length, self.pooling = int(embedding_dim), int(length), pooling
        self.encoder = FeatureEncoder([history_spec(length, embedding_dim)], {HISTORY_COLUMN: self.vocabulary},
                                      name="history_encoder")
        self.empty = self.add_weight(shape=(self.embedding_dim,), initializer="zeros", name="empty_history")

    def build(self, input_shape: Any = None) -> None:
        self.encoder.embeddings[HISTORY_COLUMN].build()
        self.encoder.built = True
        self.built = True

    def ids(self, values: Any) -> Any:
        """``[B, N]`` raw strings -> int64 row ids (0 = padding/OOV); integer ids pass through."""
        if "int" in keras.backend.standardize_dtype(values.dtype):
            return ops.cast(values, "int64")
        return self.encoder.lookups[HISTORY_COLUMN](values)

    def call(self, values: Any) -> Any:
        ids = self.ids(values)
        emb = self.encoder.embeddings[HISTORY_COLUMN](ids)              # [B, N, E]
        mask = ops.expand_dims(ops.cast(ops.not_equal(ids, 0), "float32"), -1)  # [B, N, 1]
        count = ops.sum(mask, axis=1)                                   # [B, 1]
        mean = ops.sum(emb * mask, axis=1) / ops.maximum(count, 1.0)    # [B, E]
        return ops.where(count > 0, mean, ops.expand_dims(self.empty, 0))

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
