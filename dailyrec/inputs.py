"""Arrow tables -> model inputs: raw feature arrays and tf.data pipelines (no layers here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NULL_STRING = ""


def feature_arrays(table: pa.Table, specs: list[Any], extra: dict[str, str] | None = None,
                   where: str = "table") -> dict[str, np.ndarray]:
    """``{feature: np.ndarray}`` for every spec (strings as object arrays, ints as int64).

    Nulls become ``""`` (strings) or ``0`` (ints). ``extra`` maps further columns to a numpy dtype
    (``{"label": "float32"}``). A missing column raises ``KeyError`` naming it and ``where``.
    """
    out: dict[str, np.ndarray] = {}
    for s in specs:
        name, dtype = (s.name, s.dtype) if hasattr(s, "name") else (s["name"], s.get("dtype", "string"))
        if name not in table.column_names:
            raise KeyError(f"{where}: column '{name}' (feature spec) is missing; columns: {table.column_names}")
        col = table.column(name)
        if dtype == "int":
            if not pa.types.is_integer(col.type):
                raise TypeError(f"{where}: column '{name}' has type {col.type}, the feature spec says int")
            out[name] = pc.fill_null(col, 0).to_numpy().astype(np.int64, copy=False)
        else:
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                col = pc.cast(col, pa.string())
            out[name] = pc.fill_null(col, NULL_STRING).to_numpy(zero_copy_only=False).astype(object)
    for name, dtype in (extra or {}).items():
        if name not in table.column_names:
            raise KeyError(f"{where}: column '{name}' is missing")
        out[name] = table.column(name).to_numpy(zero_copy_only=False).astype(dtype)
    return out


def dataset(arrays: dict[str, np.ndarray], batch_size: int, shuffle_seed: int | None = None,
            drop_remainder: bool = False) -> Any:
    """A batched ``tf.data.Dataset`` of dicts; shuffled with ``shuffle_seed`` (deterministic)."""
    import tensorflow as tf

    n = len(next(iter(arrays.values())))
    if shuffle_seed is not None:
        perm = np.random.default_rng(shuffle_seed).permutation(n)
        arrays = {k: v[perm] for k, v in arrays.items()}
    tensors = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
    ds = tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_in_batches(fn: Any, arrays: dict[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
    """Apply a ``dict -> np.ndarray`` model function over arrays in batches; concatenate."""
    n = len(next(iter(arrays.values())))
    if n == 0:
        raise ValueError("nothing to predict: 0 rows")
    parts = [fn({k: v[i:i + batch_size] for k, v in arrays.items()}) for i in range(0, n, batch_size)]
    return np.concatenate(parts, axis=0)
