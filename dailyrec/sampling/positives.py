"""Positives: the training window's clicks on catalog items, hot items down-sampled and/or capped.

Down-sampling is word2vec's (Mikolov et al. 2013, "Distributed Representations of Words and
Phrases", eq. 5 in the form of the reference implementation): a click on item ``j`` is kept with
probability ``min(1, sqrt(t / f_j) + t / f_j)``, ``f_j`` the item's share of the clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dailyrec.sampling.arrays import KeySet, log_freq, unique_sorted


@dataclass
class Positives:
    """The kept positives, shuffled: ``click[P]`` (rows of the clicks table), ``user[P]`` (user
    codes), ``item[P]`` (catalog codes), ``log_q[P]`` (log in-batch frequency, float64);
    ``clicked_keys``: sorted unique ``user * n_items + item`` of *all* the window's clicks
    (``clicked_set``: the same as a :class:`~dailyrec.sampling.arrays.KeySet`, built on first use)."""

    click: np.ndarray
    user: np.ndarray
    item: np.ndarray
    log_q: np.ndarray
    clicked_keys: np.ndarray
    n_items: int
    candidates: int
    dropped_by_subsampling: int
    dropped_by_cap: int

    @property
    def n(self) -> int:
        return len(self.click)

    @cached_property
    def clicked_set(self) -> KeySet:
        return KeySet(self.clicked_keys)


def _subsample(rng: np.random.Generator, ci: np.ndarray, n_items: int, t: float | None) -> np.ndarray:
    """Kept mask of the word2vec down-sampling (all kept when ``t`` is None); one draw per click."""
    n_clicks = len(ci)
    keep = np.ones(n_clicks, dtype=bool)
    if t is not None and n_clicks:
        f = np.bincount(ci, minlength=n_items) / n_clicks
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(f > 0, t / np.where(f > 0, f, 1.0), 0.0)
        keep_prob = np.minimum(1.0, np.sqrt(r) + r)
        keep = rng.random(n_clicks) < keep_prob[ci]
    return keep


def _cap(rng: np.random.Generator, ci: np.ndarray, idx: np.ndarray, cap: int | None) -> np.ndarray:
    """At most ``cap`` of the clicks ``idx`` per item, a uniform random subset (sorted rows)."""
    if cap is None or not len(idx):
        return idx
    order = np.lexsort((rng.random(len(idx)), ci[idx]))
    s_items = ci[idx][order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_items)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(s_items)]))
    rank = np.arange(len(s_items)) - group_start
    return np.sort(idx[order][rank < cap])


def select_positives(rng: np.random.Generator, cu: np.ndarray, ci: np.ndarray, n_items: int,
                     subsample_t: float | None, cap_per_item: int | None) -> Positives:
    """Down-sample (``subsample_t``), cap (``cap_per_item``) and shuffle the clicks ``(cu, ci)``
    (``int64[C]`` user and catalog codes). Draws, in order: the down-sampling, the cap, the shuffle."""
    clicked_keys = unique_sorted(cu * n_items + ci)
    keep = _subsample(rng, ci, n_items, subsample_t)
    idx = np.flatnonzero(keep)
    kept = _cap(rng, ci, idx, cap_per_item)
    pos = kept[rng.permutation(len(kept))]  # shuffled positive slots -> rows of the clicks
    return Positives(click=pos, user=cu[pos], item=ci[pos], log_q=log_freq(ci[pos], n_items),
                     clicked_keys=clicked_keys, n_items=n_items, candidates=len(ci),
                     dropped_by_subsampling=int(len(ci) - keep.sum()), dropped_by_cap=int(len(idx) - len(kept)))
