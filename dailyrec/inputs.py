"""Arrow tables -> model inputs: raw feature arrays and tf.data pipelines (no layers here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NULL_STRING = ""


def feature_arrays(table: pa.Table, specs: list[Any], extra: dict[str, str] | None = None,
                   where: str = "table") -> dict[str, np.ndarray]:
    """``{feature: np.ndarray}`` for every spec (strings as object arrays, ints as int64, floats of
    ``numeric`` features as float32), typed by the models' one dtype rule (``models.serving.feature_dtype``).

    Nulls become ``""`` (strings), ``0`` (ints) or NaN (floats: the model's missing value). ``extra`` maps further columns to a numpy dtype
    (``{"label": "float32"}``). A missing column raises ``KeyError`` naming it and ``where``; an int
    feature over a non-integer column raises ``TypeError``.
    """
    from models.serving import feature_dtype

    out: dict[str, np.ndarray] = {}
    for s in specs:
        name, dtype = (s.name if hasattr(s, "name") else s["name"]), feature_dtype(s)
        if name not in table.column_names:
            raise KeyError(f"{where}: column '{name}' (feature spec) is missing; columns: {table.column_names}")
        col = table.column(name)
        if dtype == "int":
            if not pa.types.is_integer(col.type):
                raise TypeError(f"{where}: column '{name}' has type {col.type}, the feature spec says int")
            out[name] = pc.fill_null(col, 0).to_numpy().astype(np.int64, copy=False)
        elif dtype == "float":
            out[name] = float_column(col, name, where)
        else:
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                col = pc.cast(col, pa.string())
            out[name] = pc.fill_null(col, NULL_STRING).to_numpy(zero_copy_only=False).astype(object)
    for name, dtype in (extra or {}).items():
        if name not in table.column_names:
            raise KeyError(f"{where}: column '{name}' is missing")
        out[name] = table.column(name).to_numpy(zero_copy_only=False).astype(dtype)
    return out


def float_column(col: pa.Array | pa.ChunkedArray, name: str, where: str = "table") -> np.ndarray:
    """A numeric (integer, float or decimal) Arrow column -> ``float32[n]``, nulls -> NaN.

    Raises ``TypeError`` naming the column and ``where`` for any other type."""
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)):
        raise TypeError(f"{where}: column '{name}' has type {t}, the feature spec says float (kind numeric)")
    return pc.fill_null(pc.cast(col, pa.float32()), np.float32("nan")).to_numpy(zero_copy_only=False).astype(
        np.float32, copy=False)


def dataset(arrays: dict[str, np.ndarray], batch_size: int, shuffle_seed: int | None = None,
            drop_remainder: bool = False) -> Any:
    """A batched ``tf.data.Dataset`` of dicts (the two-tower training format).

    ``arrays``: ``{column: array[n]}`` (e.g. from :func:`feature_arrays`); each column goes through
    ``models.serving.raw_column`` (strings/objects -> ``tf.string``, integers -> int64, floats
    unchanged). Shuffled once with ``shuffle_seed`` (a numpy permutation: deterministic).
    """
    import tensorflow as tf

    from models.serving import raw_column

    n = len(next(iter(arrays.values())))
    if shuffle_seed is not None:
        perm = np.random.default_rng(shuffle_seed).permutation(n)
        arrays = {k: v[perm] for k, v in arrays.items()}
    tensors = {k: tf.constant(raw_column(v)) for k, v in arrays.items()}
    ds = tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def ranking_dataset(features: dict[str, Any], labels: dict[str, Any], sample_weight: Any | None = None,
                    batch_size: int = 2048, shuffle: bool = True, seed: int | None = None,
                    specs: list[Any] | None = None) -> Any:
    """Column arrays -> batched ``tf.data`` in the ranking training format (``models.ranking``)::

        (features: {name: Tensor[B]}  tf.string / int64 raw values,
         labels:   {task: float32[B]}
         [, sample_weight: float32[B]])

    Args:
        features: ``{name: array[n]}`` raw values (strings, or integers).
        labels: ``{task: array[n]}`` of 0/1 (cast to float32).
        sample_weight: optional ``array[n]`` (float32), applies to every task.
        seed: seed of the ``tf.data`` shuffle (buffer ``min(n, 100_000)``, reshuffled each epoch).
        specs: if given, each feature is cast by ``models.serving.tf_dtype`` of its spec; without,
            by its array's dtype (``models.serving.raw_column``).
    """
    import tensorflow as tf

    from models.features import spec_dicts
    from models.serving import raw_column, tf_dtype

    dtypes = {s["name"]: tf_dtype(s) for s in spec_dicts(specs)} if specs else {}
    feats = {name: raw_column(col, dtypes.get(name)) for name, col in features.items()}
    labs = {t: np.asarray(v, dtype=np.float32) for t, v in labels.items()}
    parts: tuple[Any, ...] = (feats, labs)
    if sample_weight is not None:
        parts += (np.asarray(sample_weight, dtype=np.float32),)
    n = len(next(iter(labs.values())))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        ds = ds.shuffle(min(n, 100_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict_in_batches(fn: Any, arrays: dict[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
    """Apply a ``dict -> np.ndarray`` model function over arrays in batches; concatenate."""
    n = len(next(iter(arrays.values())))
    if n == 0:
        raise ValueError("nothing to predict: 0 rows")
    parts = [fn({k: v[i:i + batch_size] for k, v in arrays.items()}) for i in range(0, n, batch_size)]
    return np.concatenate(parts, axis=0)
