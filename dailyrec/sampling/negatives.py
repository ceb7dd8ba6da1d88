"""Negatives of each source for the positives of :mod:`dailyrec.sampling.positives`.

* ``random``: ``negatives_per_positive`` per positive from the whole catalog with
  ``q_j ∝ (count_j + floor) ** alpha`` (:func:`popularity_q`; the sampled-softmax correction
  ``log q_j`` of Yi et al. 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
  Recommendations"), never an item the user clicked (collisions redrawn up to
  :data:`RESAMPLE_ROUNDS` times, then dropped).
* ``exposed``: a uniform item impressed to the user and never clicked.
* ``same_category``: a uniform catalog item of the positive's category the user did not click.

Each source adds ``(owner positive slot, item code, log_q)`` rows to a :class:`Negatives`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from dailyrec.sampling.arrays import InverseCdf, KeySet, codes, csr, draw_from_groups, log_freq
from dailyrec.sampling.positives import Positives

RESAMPLE_ROUNDS = 8
"""Redraws of a negative that collides with a click of its user before it is dropped."""


class Negatives:
    """Collects the negative rows of each source: owner (positive slot), item, log_q; and per-source info."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def add(self, source: str, owner: np.ndarray, items: np.ndarray, log_q: np.ndarray, **info: Any) -> None:
        self.parts[source] = (np.asarray(owner, np.int64), np.asarray(items, np.int64), np.asarray(log_q, np.float64))
        self.info[source] = info


def resample_collisions(rng: np.random.Generator, owner_user: np.ndarray, items: np.ndarray,
                        clicked: KeySet, n_items: int,
                        redraw: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, dict[str, int]]:
    """Redraw (in place) items that the owner user clicked (``clicked``: the ``user * n_items +
    item`` keys of the clicks; ``redraw(rows) -> new items``), at most :data:`RESAMPLE_ROUNDS`
    times; returns the kept mask and ``{collisions, redraws, dropped}``."""
    resampled = 0
    coll = clicked.contains(owner_user * n_items + items)
    first = int(coll.sum())
    for _ in range(RESAMPLE_ROUNDS):
        if not coll.any():
            break
        idx = np.flatnonzero(coll)
        resampled += len(idx)
        items[idx] = redraw(idx)
        coll = np.zeros(len(items), dtype=bool)
        coll[idx] = clicked.contains(owner_user[idx] * n_items + items[idx])
    return ~coll, {"collisions": first, "redraws": resampled, "dropped": int(coll.sum())}


def popularity_q(pop_count: np.ndarray, floor: float, alpha: float) -> np.ndarray:
    """``float64[I]``: ``q_j = (pop_count_j + floor) ** alpha / sum`` (sums to 1)."""
    w = (pop_count + floor) ** alpha
    return w / w.sum()


def random_negatives(rng: np.random.Generator, negs: Negatives, pos: Positives, q: np.ndarray, per_positive: int) -> None:
    """``per_positive`` draws from ``q`` per positive (inverse CDF through a guide table,
    :class:`~dailyrec.sampling.arrays.InverseCdf`: one ``rng.random`` per draw, in owner order),
    collisions redrawn from ``q``."""
    cdf = np.cumsum(q)
    n_items = pos.n_items
    icdf = InverseCdf(cdf)

    def draw(n: int) -> np.ndarray:
        u = rng.random(n)
        u *= cdf[-1]
        return np.minimum(icdf(u), n_items - 1).astype(np.int64)

    owner = np.repeat(np.arange(pos.n), per_positive)
    items = draw(len(owner))
    ok, info = resample_collisions(rng, pos.user[owner], items, pos.clicked_set, n_items, lambda i: draw(len(i)))
    if info["dropped"]:
        owner, items = owner[ok], items[ok]
    negs.add("random", owner, items, np.log(q)[items], **info)


def exposed_negatives(rng: np.random.Generator, negs: Negatives, pos: Positives, exposed: pa.Table,
                      user_ids: pa.Array, item_ids: pa.ChunkedArray, h: int) -> None:
    """``h`` uniform draws per positive among the ``(user_id, item_id)`` rows of ``exposed``
    (impressed, never clicked) of the positive's user; users without any give none."""
    n_items, n_users = pos.n_items, len(user_ids)
    eu = codes(exposed["user_id"], user_ids)
    ei = codes(exposed["item_id"], item_ids)
    ok = ei >= 0
    ekeys = np.sort(eu[ok] * n_items + ei[ok])
    eu, ei = ekeys // n_items, ekeys % n_items
    start, count = csr(eu, n_users)
    owner = np.repeat(np.arange(pos.n), h)
    ok, off = draw_from_groups(rng, pos.user[owner], start, count)
    items = ei[off]
    negs.add("exposed", owner[ok], items, log_freq(items, n_items),
             candidates=int(len(eu)), positives_without_candidates=int((count[pos.user] == 0).sum()))


def same_category_negatives(rng: np.random.Generator, negs: Negatives, pos: Positives,
                            categories: pa.ChunkedArray, h: int) -> None:
    """``h`` uniform draws per positive among the catalog items of its category (``categories``:
    the catalog's ``item_category`` column); positives without a category give none."""
    n_items = pos.n_items
    cat = categories.combine_chunks().dictionary_encode()
    cat_code = np.asarray(cat.indices.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
    by_cat = np.argsort(cat_code, kind="stable")
    start, count = csr(cat_code[by_cat], len(cat.dictionary))
    owner = np.repeat(np.arange(pos.n), h)
    pcat = cat_code[pos.item[owner]]
    has = pcat >= 0
    owner, pcat = owner[has], pcat[has]
    ok, off = draw_from_groups(rng, pcat, start, count)
    owner, pcat = owner[ok], pcat[ok]
    items = by_cat[off]

    def redraw(i: np.ndarray) -> np.ndarray:
        c = pcat[i]
        return by_cat[start[c] + (rng.random(len(i)) * count[c]).astype(np.int64)]

    keep, info = resample_collisions(rng, pos.user[owner], items, pos.clicked_set, n_items, redraw)
    items = items[keep]
    negs.add("same_category", owner[keep], items, log_freq(items, n_items), **info)
