"""Raw feature values -> embeddings, shared by the two-tower and the MMoE models.

A feature is described by a spec dict (``dailyrec.config.FeatureSpec.model_dump()``)::

    {"name": "item_id", "side": "item", "kind": "vocab", "buckets": 200000,
     "embedding_dim": 32, "dtype": "string"}

``kind``:
  * ``vocab``: ``StringLookup`` over a vocabulary computed by the features step (index 0 is the
    out-of-vocabulary row); falls back to hashing into ``buckets`` when no vocabulary is given;
  * ``hash``: ``Hashing`` (FarmHash fingerprint) of the string value into ``buckets`` bins;
  * ``int``: an integer value taken modulo ``buckets``;
  * ``numeric``: a float value, normalised (no embedding): ``t = transform(x)`` (``log1p``: the
    signed ``sign(x) * log1p(|x|)``, or none), ``z = clip((t - mean) / std, -clip, clip)``, a missing
    value (NaN) -> ``z = 0``; with ``missing_indicator`` a second column ``1.0`` where missing.
    ``mean`` / ``std`` are the statistics of ``t`` over the training window, computed by the
    features step (``sql/numeric_stats.sql``, ``features/dt=D/numeric_stats.json``) and put into
    the spec dict by :func:`attach_numeric_stats`, so they are part of the layer's config (the
    ``.keras`` file) and constants of the exported SavedModel: serving applies the same
    normalisation as training.

The lookups and the normalisation live inside the layer, so a model built on it takes raw values
at serving time. This module never imports Airflow.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


NUMERIC = "numeric"
STAT_KEYS = ("mean", "std")


def spec_dicts(specs: list[Any]) -> list[dict[str, Any]]:
    return [s.model_dump() if hasattr(s, "model_dump") else dict(s) for s in specs]


def feature_width(spec: dict[str, Any]) -> int:
    """Columns one feature contributes to the encoder output: ``embedding_dim``, or for a
    ``numeric`` feature 1 (2 with ``missing_indicator``)."""
    if spec["kind"] == NUMERIC:
        return 2 if spec.get("missing_indicator") else 1
    return int(spec["embedding_dim"])


def numeric_transform(values: np.ndarray, transform: str | None) -> np.ndarray:
    """``float64[n]``: the pre-normalisation transform of a numeric feature (``"log1p"``: signed
    ``sign(x) * log1p(|x|)``; ``"none"``/None: unchanged). NaN stays NaN."""
    x = np.asarray(values, dtype=np.float64)
    if transform == "log1p":
        return np.sign(x) * np.log1p(np.abs(x))
    if transform in (None, "none"):
        return x
    raise ValueError(f"unknown numeric transform {transform!r} (expected 'none' or 'log1p')")


def numeric_stats_from_arrays(arrays: dict[str, np.ndarray], specs: list[Any]) -> dict[str, dict[str, float]]:
    """``{feature: {"mean", "std", "count", "missing"}}`` of every ``numeric`` spec over in-memory
    columns (``float[n]``, NaN = missing): the same statistics as the features step's
    ``sql/numeric_stats.sql`` (mean and population standard deviation of the transformed,
    non-missing values; ``std`` 1.0 when it is 0 or undefined, ``mean`` 0.0 without a value).
    For benchmarks and tests that do not run the features step. ``KeyError`` names a missing column."""
    out: dict[str, dict[str, float]] = {}
    for s in spec_dicts(specs):
        if s["kind"] != NUMERIC:
            continue
        if s["name"] not in arrays:
            raise KeyError(f"numeric feature {s['name']!r}: no column; got {sorted(arrays)}")
        t = numeric_transform(arrays[s["name"]], s.get("transform"))
        ok = t[~np.isnan(t)]
        mean = float(ok.mean()) if len(ok) else 0.0
        std = float(ok.std()) if len(ok) else 0.0
        out[s["name"]] = {"mean": mean, "std": std if std > 0 else 1.0,
                          "count": int(len(ok)), "missing": int(len(t) - len(ok))}
    return out


def attach_numeric_stats(specs: list[Any], stats: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Spec dicts with each ``numeric`` feature's ``mean`` and ``std`` filled in from ``stats``
    (``{feature: {"mean": float, "std": float, ...}}``, the features step's ``numeric_stats.json``
    or :func:`numeric_stats_from_arrays`); other specs unchanged. A model built on the result
    stores the statistics in its config.

    Raises:
        KeyError: a numeric feature has no statistics (naming it and the features that have).
        ValueError: a ``std`` that is not > 0.
    """
    stats = stats or {}
    out = []
    for s in spec_dicts(specs):
        if s["kind"] == NUMERIC:
            if s["name"] not in stats:
                raise KeyError(f"numeric feature {s['name']!r}: no normalisation statistics (numeric_stats.json of "
                               f"the features step); statistics given for {sorted(stats)}")
            st = stats[s["name"]]
            if not float(st["std"]) > 0:
                raise ValueError(f"numeric feature {s['name']!r}: std must be > 0, got {st['std']}")
            s = {**s, "mean": float(st["mean"]), "std": float(st["std"])}
        out.append(s)
    return out


@keras.saving.register_keras_serializable(package="dailyrec")
class FeatureEncoder(keras.layers.Layer):
    """Embeds a dict of raw features.

    Args:
        specs: feature spec dicts (see module doc); the order is the concatenation order.
        vocabularies: ``{feature name: [id, ...]}`` for ``vocab`` features.

    Call:
        inputs: ``{name: Tensor[batch]}`` (``tf.string`` for string features, integer for ``int``
            features; or int64 row ids for string features, pre-encoded by
            ``dailyrec.stream.IdEncoder``; float32 for ``numeric`` features, NaN = missing);
            a ``[batch, 1]`` input is squeezed.
    Returns:
        ``Tensor[batch, output_dim]``: the concatenated embeddings and normalised numeric columns
        (float32; ``output_dim = sum(feature_width(spec))``).
    ``embed(inputs)`` returns ``{name: Tensor[batch, width]}`` instead.
    Raises:
        ValueError: a ``numeric`` spec without ``mean``/``std`` (see :func:`attach_numeric_stats`).
    """

    def __init__(self, specs: list[Any], vocabularies: dict[str, list[str]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.specs = spec_dicts(specs)
        self.vocabularies = {k: [str(v) for v in vals] for k, vals in (vocabularies or {}).items()}
        self.lookups: dict[str, keras.layers.Layer] = {}
        self.embeddings: dict[str, keras.layers.Embedding] = {}
        for s in self.specs:
            name = s["name"]
            if s["kind"] == NUMERIC:
                missing = [k for k in STAT_KEYS if s.get(k) is None]
                if missing:
                    raise ValueError(f"numeric feature {name!r}: the spec has no {missing}: build the model on "
                                     "models.features.attach_numeric_stats(specs, stats)")
                if not float(s["std"]) > 0:
                    raise ValueError(f"numeric feature {name!r}: std must be > 0, got {s['std']}")
                continue
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
        return int(sum(feature_width(s) for s in self.specs))

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

    def normalise(self, name: str, value: Any) -> Any:
        """A ``numeric`` feature's raw values ``float[B]`` (NaN = missing) -> ``float32[B, 1]``
        (``[B, 2]`` with the missing indicator): see the module doc for the formula."""
        spec = next(s for s in self.specs if s["name"] == name)
        x = ops.cast(value, "float32")
        if len(x.shape) == 2:
            x = ops.squeeze(x, axis=-1)
        missing = ops.isnan(x)
        x = ops.where(missing, ops.zeros_like(x), x)
        if spec.get("transform") == "log1p":
            x = ops.sign(x) * ops.log1p(ops.abs(x))
        z = (x - float(spec["mean"])) / float(spec["std"])
        if spec.get("clip") is not None:
            z = ops.clip(z, -float(spec["clip"]), float(spec["clip"]))
        z = ops.where(missing, ops.zeros_like(z), z)
        cols = [z]
        if spec.get("missing_indicator"):
            cols.append(ops.cast(missing, "float32"))
        return ops.stack(cols, axis=-1)

    def embed(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """``{name: Tensor[B, width]}``: each feature's embedding (``embedding_dim`` wide) or
        normalised numeric columns (:func:`feature_width`)."""
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise KeyError(f"{self.name}: missing input feature(s) {missing}; got {sorted(inputs)}")
        return {n: (self.normalise(n, inputs[n]) if n not in self.embeddings
                    else self.embeddings[n](self.index(n, inputs[n]))) for n in self.names}

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
        if name not in new.embeddings:  # numeric: no weights (the new day's statistics apply)
            continue
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
