"""Serving a delta version with FAISS: the base's index, untouched, plus an overlay of the chain.

**Choice: an overlay, not an index edited in place.** :class:`OverlayIndex` searches the base
version's index (exactly as it was built, gated and serialised: Flat, IVF, HNSW or any factory
string) for its best ``k`` items among those the chain does not mask (``m`` base items replaced by an
upsert or deleted: on a Flat, IVF or HNSW base a faiss ``IDSelector`` excludes them inside the search,
with the base's nprobe/efSearch; on any other index the search over-fetches ``k + m`` and drops
them), searches a small exact ``IndexFlatIP`` of the chain's upserts for ``k``, and merges both lists
by score. Why:

* it works for every base index: ``remove_ids`` is not supported by HNSW, and on a Flat index it
  renumbers the labels (an ``IndexIDMap2`` wrapper would be needed); ``add_with_ids`` needs an
  ID-mapped wrapper except on IVF;
* the load costs what the chain changed (a flat index of the upserts, a mask), not the catalog: no
  ``remove_ids`` pass over every inverted list, no copy of the base's codes;
* the merge is exact: the base part is what the base index returns over the unmasked items (the
  selector, or over-fetching by ``m``: at least ``k`` unmasked results remain), the upserts are found
  exactly. The selector keeps ``k`` as it is (bench/delta_publish: 200k x 64 IVF, m = 2,450: the same
  labels as over-fetching, ~3x faster); over-fetching costs a larger ``k`` while a chain grows. The
  daily full publish restarts the chain (``m = 0``).

Labels: ``0 .. n_base-1`` are the base's (``ids[label]`` as in the base's id map; masked ones are never
returned), ``n_base + j`` is the ``j``-th upsert. :func:`overlay_recall` measures recall@K of the
overlay against exact search over the merged vectors (the publish's gate, docs/redis-layout.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dailyrec.publishing.chain import TOMBSTONE


class OverlayIndex:
    """``search(x, k) -> (scores, labels)`` like a faiss inner-product index, over a base index with
    ``masked`` base labels (int64) hidden and ``upserts`` (``float32[u, d]``) added as labels
    ``n_base .. n_base+u-1``. ``ntotal``: the served item count. ``x``: ``float32[q, d]``; rows with
    fewer than ``k`` items get label ``-1`` and score ``-inf`` (as faiss)."""

    def __init__(self, base: Any, masked: np.ndarray, upserts: np.ndarray) -> None:
        import faiss

        self.base, self.d = base, base.d
        self.n_base = int(base.ntotal)
        self.masked = np.unique(np.asarray(masked, dtype=np.int64))
        self.flat = faiss.IndexFlatIP(self.d)
        if len(upserts):
            self.flat.add(np.ascontiguousarray(upserts, dtype=np.float32))
        self.ntotal = self.n_base - len(self.masked) + int(self.flat.ntotal)
        self.params, self._keep = _excluding(base, self.masked) if len(self.masked) else (None, None)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32[q, k], labels int64[q, k])``, best first, for queries ``x`` (``float32[q, d]``)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts_d, parts_i = [], []
        kb = min(k if self.params is not None else k + len(self.masked), self.n_base)
        if kb > 0:
            d, i = self.base.search(x, kb, params=self.params) if self.params is not None else self.base.search(x, kb)
            drop = (i < 0) if self.params is not None else (i < 0) | np.isin(i, self.masked)
            parts_d.append(np.where(drop, -np.inf, d).astype(np.float32))
            parts_i.append(np.where(drop, -1, i))
        ku = min(k, int(self.flat.ntotal))
        if ku > 0:
            d, i = self.flat.search(x, ku)
            parts_d.append(d)
            parts_i.append(np.where(i < 0, -1, i + self.n_base))
        if not parts_d:
            return np.full((len(x), k), -np.inf, np.float32), np.full((len(x), k), -1, np.int64)
        d, i = np.concatenate(parts_d, axis=1), np.concatenate(parts_i, axis=1)
        order = np.argsort(-d, axis=1, kind="stable")[:, :k]
        d, i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
        i = np.where(np.isfinite(d), i, -1)
        if d.shape[1] < k:  # fewer items than k in all
            pad = k - d.shape[1]
            d = np.pad(d, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return d, i


def _excluding(base: Any, masked: np.ndarray) -> tuple[Any, Any]:
    """faiss search parameters excluding the ``masked`` labels inside the search (an ``IDSelectorNot`` of an
    ``IDSelectorBatch``) with the base's own nprobe / efSearch, for a Flat, IVF or HNSW base; ``(None, None)``
    for another index type (the search then over-fetches ``k + m``). Also returns the selectors, which must
    outlive the parameters."""
    import faiss

    ix = faiss.downcast_index(base)
    batch = faiss.IDSelectorBatch(masked)
    sel = faiss.IDSelectorNot(batch)
    if isinstance(ix, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=sel, nprobe=ix.nprobe, max_codes=ix.max_codes)
    elif isinstance(ix, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=ix.hnsw.efSearch)
    elif isinstance(ix, faiss.IndexFlat):
        params = faiss.SearchParameters(sel=sel)
    else:
        return None, None
    return params, (batch, sel)


def build_overlay(base_index: Any, base_ids: np.ndarray, merged: dict[str, bytes], dim: int
                  ) -> tuple[OverlayIndex, np.ndarray, np.ndarray]:
    """``(index, ids, to_served)`` serving base + ``merged`` (``{item_id: vector bytes | TOMBSTONE}``,
    :func:`dailyrec.publishing.chain.read_chain`): ``ids[label]`` is a label's item id (object array);
    ``to_served[label]`` its row among the served items (base items in label order, then the
    upserts; ``-1`` for a masked label). ``ValueError`` if a value is neither ``dim * 4`` bytes nor a
    tombstone."""
    pos = {item: i for i, item in enumerate(base_ids.tolist())} if merged else {}
    masked = np.array(sorted(pos[item] for item in merged if item in pos), dtype=np.int64)
    up_ids = sorted(item for item, v in merged.items() if v != TOMBSTONE)
    for item in up_ids:
        if len(merged[item]) != dim * 4:
            raise ValueError(f"delta vector of {item!r} has {len(merged[item])} bytes, expected {dim * 4}")
    ups = (np.frombuffer(b"".join(merged[i] for i in up_ids), dtype="<f4").reshape(len(up_ids), dim)
           .astype(np.float32) if up_ids else np.zeros((0, dim), np.float32))
    if base_index.d == dim + 1:  # the base holds [v, beta log q] (dailyrec.popularity_prior): upserts too
        ups = np.concatenate([ups, _prior_column(base_index, [pos.get(i) for i in up_ids])[:, None]], axis=1)
    index = OverlayIndex(base_index, masked, ups)
    ids = np.concatenate([np.asarray(base_ids, dtype=object), np.array(up_ids, dtype=object)])
    keep = np.ones(index.n_base, dtype=bool)
    keep[masked] = False
    to_served = np.full(len(ids), -1, dtype=np.int64)
    to_served[:index.n_base][keep] = np.arange(int(keep.sum()))
    to_served[index.n_base:] = int(keep.sum()) + np.arange(len(up_ids))
    return index, ids, to_served


def _prior_column(base_index: Any, labels: list[int | None]) -> np.ndarray:
    """``float32[len(labels)]``: the popularity-prior coordinate (``beta * log q``, the last one) the
    base index stores for each base label; a new item (``None``) gets the smallest one, the prior of
    an unclicked item. ``ValueError`` on a lossy base index (no exact stored vectors)."""
    vecs = stored_vectors(base_index)
    if vecs is None:
        raise ValueError("a delta on a lossy base index with the popularity prior: its prior column cannot be read")
    col = vecs[:, -1]
    low = float(col.min()) if len(col) else 0.0
    return np.array([col[lab] if lab is not None else low for lab in labels], dtype=np.float32)


def stored_vectors(index: Any) -> np.ndarray | None:
    """``float32[n, d]``: the vectors a Flat, IVF-Flat or HNSW-Flat index stores (exactly the vectors it
    was built from, in label order), or ``None`` for an index that stores them lossily (PQ, SQ, ...).
    An IVF index gets a direct map (in memory, for the reconstruction)."""
    import faiss

    ix = faiss.downcast_index(index)
    if isinstance(ix, faiss.IndexIVFFlat):
        ix.make_direct_map()
    elif not isinstance(ix, (faiss.IndexFlat, faiss.IndexHNSWFlat)):
        return None
    return np.ascontiguousarray(ix.reconstruct_n(0, ix.ntotal), dtype=np.float32)


def served_vectors(base_vectors: np.ndarray, index: OverlayIndex) -> np.ndarray:
    """The served items' vectors in :func:`build_overlay`'s ``to_served`` order (``base_vectors``:
    ``float32[n_base, d]`` in base label order)."""
    keep = np.ones(index.n_base, dtype=bool)
    keep[index.masked] = False
    ups = index.flat.reconstruct_n(0, index.flat.ntotal) if index.flat.ntotal else np.zeros((0, index.d), np.float32)
    return np.ascontiguousarray(np.concatenate([base_vectors[keep], ups]), dtype=np.float32)


def overlay_recall(index: OverlayIndex, to_served: np.ndarray, vectors: np.ndarray, k: int, queries: int,
                   seed: int = 0) -> dict[str, Any]:
    """recall@K of ``index`` against exact inner-product search over ``vectors`` (the served items,
    ``served_vectors``), ``K = min(k, ntotal)``: the mean over queries of |overlay top-K ∩ exact top-K| / K
    (docs/redis-layout.md, "Recall gate"). Queries: up to ``queries`` sampled served vectors plus Gaussian
    noise (:func:`dailyrec.ann.fallback_queries`), half of them from the upserts when there are any.
    Returns ``{"recall_at_k", "recall_k", "recall_queries": "fallback", "queries"}``."""
    from dailyrec.ann import exact_index, fallback_queries, recall_at_k

    n = len(vectors)
    kk = min(k, n)
    if kk == 0:
        return {"recall_at_k": 1.0, "recall_k": 0, "recall_queries": "fallback", "queries": 0}
    u = int(index.flat.ntotal)
    q_up = fallback_queries(vectors[n - u:], min(u, queries // 2), seed=seed) if u else np.zeros((0, index.d), np.float32)
    q = np.concatenate([q_up, fallback_queries(vectors, max(1, queries - len(q_up)), seed=seed + 1)])
    _, exact = exact_index(vectors).search(q, kk)
    _, got = index.search(q, kk)
    served = np.where(got >= 0, to_served[np.maximum(got, 0)], -1)
    return {"recall_at_k": round(recall_at_k(served, exact, kk), 4), "recall_k": kk, "recall_queries": "fallback",
            "queries": len(q)}
