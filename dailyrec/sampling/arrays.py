"""Vectorised numpy/Arrow helpers of the sampler: sorted-key membership, CSR groups, codes.

All of them are exact (no sampling) except :func:`draw_from_groups`, which draws one uniform
``rng.random`` per kept owner, in owner order. :class:`KeySet` and :class:`InverseCdf` are the
sort-free (hash / guide-table) forms of :func:`member` and of ``searchsorted`` over a CDF: same
results, no ``argsort`` of the queries.
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


class KeySet:
    """A set of int64 keys (e.g. ``user * n_items + item``) for fast elementwise membership.

    ``contains(keys)`` equals :func:`member` on the sorted unique keys, but it first looks each
    key up in a byte table of ``2 ** bits`` entries marked at a multiplicative hash of the set's
    keys (``bits`` so that about 1/16 of the entries are marked, at most ``2 ** 26``): a key whose
    entry is unmarked is absent, and only the others (the members and a few % false hits) go
    through the exact binary search. No sort of the queries; memory ``2 ** bits`` bytes (<= 64 MB).
    """

    _MULT = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, sorted_keys: np.ndarray) -> None:
        self.keys = np.asarray(sorted_keys, dtype=np.int64)
        self.bits = int(min(26, max(10, np.ceil(np.log2(max(len(self.keys), 1) * 16)))))
        self._table = np.zeros(2 ** self.bits, dtype=bool)
        self._table[self._hash(self.keys)] = True

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((keys.astype(np.uint64) * self._MULT) >> np.uint64(64 - self.bits)).astype(np.intp)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """``bool[len(keys)]``: each key is in the set (exact)."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(self.keys) == 0 or len(keys) == 0:
            return np.zeros(len(keys), dtype=bool)
        hit = self._table[self._hash(keys)]
        cand = np.flatnonzero(hit)
        if len(cand):
            hit[cand] = member(self.keys, keys[cand])
        return hit


class InverseCdf:
    """``np.searchsorted(cdf, x, side="right")`` for many ``x`` in ``[0, cdf[-1])``, through a guide
    table of ``buckets`` equal slices of ``[0, cdf[-1])`` (Chen and Asau 1974): a query whose
    neighbouring slices hold no CDF step is answered by one table read, the others (about
    ``3 * len(cdf) / buckets`` of them) by the binary search. Exactly the binary search's result.
    """

    def __init__(self, cdf: np.ndarray, buckets: int | None = None) -> None:
        self.cdf = np.asarray(cdf, dtype=np.float64)
        self.total = float(self.cdf[-1])
        self.k = int(buckets or max(1024, 1 << int(np.ceil(np.log2(len(self.cdf) * 32)))))
        edges = np.arange(self.k + 1, dtype=np.float64) * (self.total / self.k)
        guide = np.searchsorted(self.cdf, edges, side="right")
        at = np.arange(self.k + 1)
        # bounds of a query in slice b: the count at edge b-1 and at edge b+2 (clipped), as tables
        self._lo = guide[np.maximum(at - 1, 0)].astype(np.int32)
        self._hi = guide[np.minimum(at + 2, self.k)].astype(np.int32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``int32[len(x)]``: the number of CDF values ``<= x`` for each ``x``."""
        x = np.asarray(x, dtype=np.float64)
        b = np.multiply(x, self.k / self.total).astype(np.int32)
        np.minimum(b, self.k, out=b)
        out = self._lo[b]
        amb = np.flatnonzero(out != self._hi[b])
        if len(amb):
            out[amb] = np.searchsorted(self.cdf, x[amb], side="right")
        return out


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
