"""Intra-day dynamics of the demo: items born during the day with a popularity burst, and user
interests that drift by hour (see docs/demo-data.md, "Intra-day dynamics").

Both make **freshness** matter: a model updated every hour (issue 10's passes) can learn an item
born at 14:00 from its clicks of 14:00-15:00 and a segment's trending category of the afternoon
from the morning, while a model trained once a day cannot.

* **Births** (:func:`birth_hours`): a share ``BIRTH_SHARE`` of the items created on a day after the
  anchor get a birth hour uniform in ``BIRTH_HOURS``; the others are born at hour 0. An item is never
  impressed before its birth hour.
* **Bursts** (:func:`hourly_items`): on its creation day an item born at hour ``b`` has, in hour
  ``h >= b``, the exposure weight ``w * (1 + BURST_BOOST * exp(-(h - b) / BURST_DECAY_HOURS))`` where
  ``w`` is its daily weight (popularity x fresh boost); zero before ``b``. Older items keep their
  daily weight every hour. A draw "item of category c in hour h" is a mixture: with probability
  ``new_mass[h, c] / (old_mass[c] + new_mass[h, c])`` it comes from the day's new items (a per-(hour,
  category) alias table), otherwise from the older items (the per-category table of the catalog).
* **Drift** (:func:`day_trends`): every user segment has a trending category per slot of
  ``TREND_HOURS`` hours, drawn per date (so yesterday does not predict it); consecutive slots cross
  fade (smoothstep). A share ``TREND_SHARE`` of the preference-driven draws go to the trending
  category of the hour, and its click logit gets ``TREND_LOGIT * intensity`` (intensity in 0..1).

Pure numpy on arrays (no config, no world): :mod:`dailyrec.demo.world` builds these per catalog/date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dailyrec.demo.params import (BIRTH_HOURS, BIRTH_SHARE, BURST_BOOST, BURST_DECAY_HOURS, TAG_BIRTH,
                                  TAG_TREND, TREND_HOURS, TREND_LOGIT)
from dailyrec.demo.sampling import RowAlias, rng

HOURS = 24


def birth_hours(seed: int, block: int, n: int) -> np.ndarray:
    """Birth hour (int32, 0..23) of the ``n`` items of item block ``block`` (stream ``(seed, TAG_BIRTH, block)``).

    Block 0 (the catalog live on the anchor date) is all 0; later blocks: ``BIRTH_SHARE`` of the
    items get an hour uniform in ``BIRTH_HOURS`` (inclusive), the rest 0.
    """
    if block == 0:
        return np.zeros(n, dtype=np.int32)
    r = rng(seed, TAG_BIRTH, block)
    during = r.random(n) < BIRTH_SHARE
    hour = r.integers(BIRTH_HOURS[0], BIRTH_HOURS[1] + 1, n)
    return np.where(during, hour, 0).astype(np.int32)


def burst_factor(hours: np.ndarray, birth: np.ndarray) -> np.ndarray:
    """Exposure multiplier (float64) of an item born at ``birth`` in hour ``hours`` of its creation day
    (broadcast): ``1 + BURST_BOOST * exp(-(h - b) / BURST_DECAY_HOURS)`` for ``h >= b``, else 0."""
    age = np.asarray(hours, dtype=np.float64) - birth
    return np.where(age >= 0, 1.0 + BURST_BOOST * np.exp(-np.clip(age, 0, None) / BURST_DECAY_HOURS), 0.0)


@dataclass(eq=False)
class HourlyItems:
    """Per-hour samplers of one day's catalog (rows are ``hour * C + category``)."""

    category_dist: RowAlias      # 24 rows over C: the category of a popularity draw in hour h
    has_items: np.ndarray        # (24 * C,) bool: the category has an item live in hour h
    new_frac: np.ndarray         # (24 * C,) float32: share of an (h, c) item draw going to the day's new items
    new_alias: RowAlias          # (24 * C) rows over K slots: a new item of category c in hour h
    new_k: int                   # K
    new_slot_item: np.ndarray    # (C * K,) int32 catalog row of each slot (-1 = padding)


def hourly_items(weight: np.ndarray, category: np.ndarray, new: np.ndarray, birth: np.ndarray,
                 n_categories: int) -> HourlyItems:
    """The hourly samplers of a catalog: ``weight`` (float64, daily exposure weight per catalog row),
    ``category`` (int32), ``new`` (bool: created that day), ``birth`` (int32 birth hour).

    Raises ``ValueError`` when some hour has no live item at all.
    """
    C = n_categories
    old_mass = np.bincount(category[~new], weights=weight[~new], minlength=C)
    rows = np.flatnonzero(new).astype(np.int32)
    cat = category[rows]
    w_h = weight[rows][None, :] * burst_factor(np.arange(HOURS)[:, None], birth[rows][None, :])   # (24, Nn)
    counts = np.bincount(cat, minlength=C)
    K = max(1, int(counts.max()) if len(cat) else 1)
    order = np.argsort(cat, kind="stable")
    slot = np.arange(len(cat)) - np.repeat(np.cumsum(counts) - counts, counts)
    where = cat[order] * K + slot
    padded = np.zeros((HOURS, C * K))
    padded[:, where] = w_h[:, order]
    slot_item = np.full(C * K, -1, dtype=np.int32)
    slot_item[where] = rows[order]
    new_mass = padded.reshape(HOURS, C, K).sum(axis=2)
    total = old_mass[None, :] + new_mass
    empty = np.flatnonzero(total.sum(axis=1) <= 0)
    if len(empty):
        raise ValueError(f"no item is live in hour {int(empty[0])}")
    frac = np.divide(new_mass, total, out=np.zeros_like(total), where=total > 0)
    return HourlyItems(category_dist=RowAlias(total), has_items=(total > 0).ravel(),
                       new_frac=frac.astype(np.float32).ravel(), new_alias=RowAlias(padded.reshape(HOURS * C, K)),
                       new_k=K, new_slot_item=slot_item)


@dataclass(eq=False)
class Trends:
    """The trending category of every (slot, segment) of one date and how hours blend slots."""

    slot_cat: np.ndarray         # (n_slots * S,) int32: trending category of (slot, segment)
    first: np.ndarray            # (24,) int32: slot k of hour h (the other one is k + 1)
    mix: np.ndarray              # (24,) float32: weight of slot k + 1 in hour h (smoothstep)
    intensity: np.ndarray        # (24, S, C) float32: trend intensity of a category for a segment, 0..1
    logit: np.ndarray            # (24 * S * C,) float32: TREND_LOGIT * intensity, flat


def day_trends(seed: int, ordinal: int, n_segments: int, category_mix: np.ndarray) -> Trends:
    """Trends of the date ``ordinal`` (stream ``(seed, TAG_TREND, ordinal)``): per slot of
    ``TREND_HOURS`` hours and segment, a category drawn from ``category_mix`` (C,)."""
    S, C = n_segments, len(category_mix)
    n_slots = (HOURS - 1) // TREND_HOURS + 2
    r = rng(seed, TAG_TREND, ordinal)
    slot_cat = r.choice(C, (n_slots, S), p=category_mix / category_mix.sum()).astype(np.int32)
    x = np.arange(HOURS) / TREND_HOURS
    first = np.floor(x).astype(np.int32)
    f = x - first
    mix = (f * f * (3 - 2 * f)).astype(np.float32)
    intensity = np.zeros((HOURS, S, C), dtype=np.float32)
    h, s = np.meshgrid(np.arange(HOURS), np.arange(S), indexing="ij")
    np.add.at(intensity, (h, s, slot_cat[first][:, :]), (1 - mix)[:, None])
    np.add.at(intensity, (h, s, slot_cat[first + 1][:, :]), mix[:, None])
    return Trends(slot_cat=slot_cat.ravel(), first=first, mix=mix, intensity=intensity,
                  logit=(np.float32(TREND_LOGIT) * intensity).ravel())
