"""Raw feature values -> embeddings, shared by the two-tower and the MMoE models.

A feature is described by a spec dict (``dailyrec.config.FeatureSpec.model_dump()``)::

    {"name": "item_id", "side": "item", "kind": "vocab", "buckets": 200000,
     "embedding_dim": 32, "dtype": "string"}

``kind``:
  * ``vocab``: ``StringLookup`` over a vocabulary computed by the features step (index 0 is the
    out-of-vocabulary row); falls back to hashing into ``buckets`` when no vocabulary is given;
  * ``hash``: ``Hashing`` (FarmHash fingerprint) of the string value into ``buckets`` bins;
  * ``int``: an integer value taken modulo ``buckets``.

The lookups live inside the layer, so a model built on it takes raw values at serving time.
This module never imports Airflow.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


def spec_dicts(specs: list[Any]) -> list[dict[str, Any]]:
    return [s.model_dump() if hasattr(s, "model_dump") else dict(s) for s in specs]


@keras.saving.register_keras_serializable(package="dailyrec")
class FeatureEncoder(keras.layers.Layer):
    """Embeds a dict of raw features.

    Args:
        specs: feature spec dicts (see module doc); the order is the concatenation order.
        vocabularies: ``{feature name: [id, ...]}`` for ``vocab`` features.

    Call:
        inputs: ``{name: Tensor[batch]}`` (``tf.string`` for string features, integer for ``int``
            features; or int64 row ids for string features, pre-encoded by
            ``dailyrec.stream.IdEncoder``); a ``[batch, 1]`` input is squeezed.
    Returns:
        ``Tensor[batch, sum(embedding_dim)]``: the concatenated embeddings (float32).
    ``embed(inputs)`` returns ``{name: Tensor[batch, embedding_dim]}`` instead.
    """

    def __init__(self, specs: list[Any], vocabularies: dict[str, list[str]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.specs = spec_dicts(specs)
        self.vocabularies = {k: [str(v) for v in vals] for k, vals in (vocabularies or {}).items()}
        self.lookups: dict[str, keras.layers.Layer] = {}
        self.embeddings: dict[str, keras.layers.Embedding] = {}
        for s in self.specs:
            name = s["name"]
            vocab = self.vocabularies.get(name) if s["kind"] == "vocab" else None
            if vocab:
                lookup = keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=1, mask_token=None,
                                                   name=f"lookup_{name}")
                rows = len(vocab) + 1
            elif s["kind"] in ("vocab", "hash"):
                lookup = keras.layers.Hashing(num_bins=int(s["buckets"]), name=f"hash_{name}")
                rows = int(s["buckets"])
            else:
                lookup = None
                rows = int(s["buckets"])
            if lookup is not None:
                self.lookups[name] = lookup
            self.embeddings[name] = keras.layers.Embedding(
                rows, int(s["embedding_dim"]), name=f"emb_{name}",
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.05))

    @property
    def output_dim(self) -> int:
        return int(sum(s["embedding_dim"] for s in self.specs))

    @property
    def names(self) -> list[str]:
        return [s["name"] for s in self.specs]

    def index(self, name: str, value: Any) -> Any:
        """Values of feature ``name`` -> integer row ids of its embedding table.

        ``value`` is either raw (strings for ``vocab``/``hash``, integers for ``int``: looked up
        here, the serving path) or, for a ``vocab``/``hash`` feature, integer row ids already
        computed outside the graph by ``dailyrec.stream.IdEncoder`` (the training path: only
        integers reach TensorFlow), which are used as they are.
        """
        spec = next(s for s in self.specs if s["name"] == name)
        if len(value.shape) == 2:
            value = ops.squeeze(value, axis=-1)
        if name in self.lookups:
            if "int" in keras.backend.standardize_dtype(value.dtype):
                return value  # pre-encoded ids (int32 or int64, both taken by Embedding)
            return self.lookups[name](value)
        buckets = int(spec["buckets"])
        return ops.mod(ops.abs(ops.cast(value, "int64")), buckets)

    def embed(self, inputs: dict[str, Any]) -> dict[str, Any]:
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise KeyError(f"{self.name}: missing input feature(s) {missing}; got {sorted(inputs)}")
        return {n: self.embeddings[n](self.index(n, inputs[n])) for n in self.names}

    def call(self, inputs: dict[str, Any]) -> Any:
        embs = self.embed(inputs)
        return ops.concatenate([embs[n] for n in self.names], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "specs": self.specs, "vocabularies": self.vocabularies}


def warm_start_encoder(new: FeatureEncoder, old: FeatureEncoder) -> dict[str, dict[str, int]]:
    """Copy embedding rows from ``old`` into ``new`` (both built).

    ``vocab`` features are matched by id: ids known to ``old`` keep their rows, new ids keep their
    fresh initialisation, the OOV row is copied. Hash/int features with the same table shape are
    copied whole. Returns per-feature counts ``{"kept": n, "new": m}``.
    """
    stats: dict[str, dict[str, int]] = {}
    for s in new.specs:
        name = s["name"]
        if name not in old.embeddings:
            stats[name] = {"kept": 0, "new": int(new.embeddings[name].input_dim)}
            continue
        new_w = np.array(new.embeddings[name].embeddings.numpy())
        old_w = np.asarray(old.embeddings[name].embeddings.numpy())
        if new_w.shape[1] != old_w.shape[1]:
            stats[name] = {"kept": 0, "new": new_w.shape[0]}
            continue
        new_vocab = new.vocabularies.get(name)
        old_vocab = old.vocabularies.get(name)
        if new_vocab is not None and old_vocab is not None:
            old_pos = {v: i + 1 for i, v in enumerate(old_vocab)}
            src = np.array([old_pos.get(v, -1) for v in new_vocab], dtype=np.int64)
            known = src >= 0
            dst_rows = np.nonzero(known)[0] + 1
            new_w[dst_rows] = old_w[src[known]]
            new_w[0] = old_w[0]
            stats[name] = {"kept": int(known.sum()), "new": int((~known).sum())}
        elif new_w.shape == old_w.shape and new_vocab is None and old_vocab is None:
            new_w = old_w.copy()
            stats[name] = {"kept": new_w.shape[0], "new": 0}
        else:
            stats[name] = {"kept": 0, "new": new_w.shape[0]}
        new.embeddings[name].embeddings.assign(new_w)
    return stats
