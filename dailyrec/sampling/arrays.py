"""Vectorised numpy/Arrow helpers of the sampler: sorted-key membership, CSR groups, codes.

All of them are exact (no sampling) except :func:`draw_from_groups`, which draws one uniform
``rng.random`` per kept owner, in owner order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def searchsorted(a: np.ndarray, v: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted(a, v)`` with the queries sorted first (several times faster on large
    unsorted ``v``: numpy's binary search reuses the previous bound on sorted keys)."""
    if len(v) < 4096:
        return np.searchsorted(a, v, side=side)
    order = np.argsort(v)
    out = np.empty(len(v), dtype=np.int64)
    out[order] = np.searchsorted(a, v[order], side=side)
    return out


def unique_sorted(x: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort-based; faster than ``np.unique`` on large int arrays)."""
    s = np.sort(x)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``bool[len(keys)]``: ``keys`` in ``sorted_keys`` (unique, ascending), elementwise."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = searchsorted(sorted_keys, keys)
    pos[pos == len(sorted_keys)] = 0
    return sorted_keys[pos] == keys


def csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start offset and count of each value ``0..n-1`` in the sorted array ``keys``."""
    r = np.arange(n)
    start = np.searchsorted(keys, r, side="left")
    return start, np.searchsorted(keys, r, side="right") - start


def draw_from_groups(rng: np.random.Generator, owner_group: np.ndarray, start: np.ndarray,
                     count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A uniform member offset of each owner's group; returns ``(kept mask, offsets)`` (owners
    of an empty group are not kept)."""
    c = count[owner_group]
    ok = c > 0
    off = start[owner_group[ok]] + (rng.random(int(ok.sum())) * c[ok]).astype(np.int64)
    return ok, off


def log_freq(items: np.ndarray, n_items: int) -> np.ndarray:
    """``float64``: log of each entry's item frequency within ``items``."""
    if len(items) == 0:
        return np.zeros(0)
    cnt = np.bincount(items, minlength=n_items)
    return np.log(cnt[items] / len(items))


def codes(values: pa.ChunkedArray | pa.Array, value_set: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Position of each value in ``value_set`` (int64, -1 when absent): Arrow hashing."""
    vs = value_set.combine_chunks() if isinstance(value_set, pa.ChunkedArray) else value_set
    idx = pc.fill_null(pc.index_in(values, value_set=vs), -1)
    return np.asarray(idx.to_numpy(), dtype=np.int64)


def dict_take(col: pa.ChunkedArray | pa.Array, idx: np.ndarray) -> pa.Array:
    """``col[idx]``; strings go through a dictionary so the take copies indices only."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.dictionary_encode()
    return arr.take(pa.array(idx))
