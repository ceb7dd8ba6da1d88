"""One simulated day of the demo: impressions, their context columns, clicks and conversions.

* **Impressions.** Each event picks a user by activity and an hour by a diurnal curve; with
  probability ``POPULAR_SHARE`` the item comes from the hour's global popularity over the day's
  catalog (fresh items get a boost), otherwise a category is drawn from the user's preference --
  or, with probability ``TREND_SHARE``, the trending category of the user's segment in that hour
  (:mod:`dailyrec.demo.dynamics`) -- and the item by the hour's popularity inside that category
  (the day's new items only from their birth hour on, with a burst that decays over hours).
* **Clicks.** ``logit = b + AFFINITY_WEIGHT * log(C * pref[user, category] + AFFINITY_EPS) +
  trend bonus(hour, segment, category) + user clickiness + item quality + category bias +
  position effect + hour effect``; ``b`` is calibrated per day so the day's CTR is about ``CTR_TARGET``.
* **Conversions** happen only after a click, with a logit of its own (affinity, purchase
  propensity, item conversion quality, category), calibrated to ``CVR_TARGET`` of the clicks.

The day is simulated in chunks of :data:`CHUNK` events on :data:`THREADS` threads, each chunk
filling its slice of preallocated columns. A day is deterministic given the config and the date:
its random streams are ``numpy.random.default_rng([seed, tag, date ordinal, chunk])``, whatever the
number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dailyrec.config import Config
from dailyrec.contract import LOG_SCHEMA
from dailyrec.dates import parse_date
from dailyrec.demo.params import (AFFINITY_WEIGHT, BANNER_POS_P, BANNER_SIZE_P, BANNER_SIZES, C18_P,
                                  CTR_DAILY_JITTER, CTR_TARGET, CVR_TARGET, DIURNAL, EPOCH_ORDINAL,
                                  HOUR_LOGIT, N_APPS, N_SEGMENTS, N_SITES, POPULAR_SHARE, POS_LOGIT, TAG_CLICK,
                                  TAG_DAY, TREND_SHARE, US_PER_HOUR)
from dailyrec.demo.sampling import RowAlias, calibrate, rng, sigmoid, splitmix64
from dailyrec.demo.strings import HEX4, FixedStrings, string_column
from dailyrec.demo.dynamics import Trends
from dailyrec.demo.world import Catalog, Universe, catalog, trends, universe
from dailyrec.storage import Timer

CHUNK = 1 << 20
"""Events per unit of work. Every chunk has its own random stream (seed, date, chunk number), so
the output does not depend on how many threads run the chunks."""
THREADS = max(1, min(4, os.cpu_count() or 1))
"""Threads that simulate chunks (numpy releases the GIL in the heavy calls)."""

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_INT_COLUMNS = ("C1", "banner_pos", "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18",
                "C19", "C20", "C21")
f32, i32 = np.float32, np.int32


def _run(fn: Callable[[int], None], n: int) -> None:
    """``fn(0) .. fn(n - 1)``, on a pool of :data:`THREADS` threads when that is more than one."""
    global _POOL
    if THREADS <= 1 or n <= 1:
        for i in range(n):
            fn(i)
        return
    if _POOL is None or _POOL[0] != THREADS:
        _POOL = (THREADS, ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="generate_demo"))
    for f in [_POOL[1].submit(fn, i) for i in range(n)]:
        f.result()


def _event_times(r: np.random.Generator, counts: np.ndarray, day_start_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Hour of each event (int32) and its timestamp (int64 us since the epoch), sorted: uniform within the hour."""
    hour = np.repeat(np.arange(24, dtype=np.int32), counts)
    us = np.empty(int(counts.sum()), dtype=np.int64)
    start = 0
    for h, c in enumerate(counts.tolist()):
        part = us[start:start + c]
        part[:] = r.integers(0, US_PER_HOUR, c, dtype=np.int64)
        part.sort()
        part += day_start_us + h * US_PER_HOUR
        start += c
    return hour, us


@dataclass(eq=False)
class _Day:
    """One day being simulated: the world and the preallocated columns the chunks fill (length E)."""

    uni: Universe
    cat: Catalog
    trends: Trends
    seed: int
    ordinal: int
    hour: np.ndarray                 # int32 hour of each event
    user: np.ndarray                 # int32 user index
    category: np.ndarray             # int32 category index
    item: np.ndarray                 # int32 catalog row
    z: np.ndarray | None             # float32 click logit without the day's offset
    ints: dict[str, np.ndarray]      # int32 contract columns
    strs: dict[str, np.ndarray]      # fixed-width string rows of the string columns
    request_id: np.ndarray           # (E, 4) uint32: 16 hex chars
    seed_key: np.uint64
    pos_alias: RowAlias
    size_alias: RowAlias
    c18_alias: RowAlias

    @classmethod
    def allocate(cls, uni: Universe, cat: Catalog, trends_: Trends, seed: int, ordinal: int,
                 hour: np.ndarray) -> "_Day":
        E = len(hour)

        def strings(dictionary: FixedStrings) -> np.ndarray:
            return np.empty(E, dtype=dictionary.rows.dtype)

        strs = {
            "user_id": strings(uni.user_ids), "item_id": strings(cat.ids),
            "site_id": strings(uni.site_cols[0]), "site_domain": strings(uni.site_cols[1]),
            "site_category": strings(uni.site_cols[2]), "app_id": strings(uni.app_cols[0]),
            "app_domain": strings(uni.app_cols[1]), "app_category": strings(uni.app_cols[2]),
            "device_id": strings(uni.user_device_id), "device_ip": strings(uni.user_ips),
            "device_model": strings(uni.user_device_model),
        }
        user, category, item = (np.empty(E, i32) for _ in range(3))
        return cls(uni=uni, cat=cat, trends=trends_, seed=seed, ordinal=ordinal, hour=hour, user=user,
                   category=category, item=item, z=np.empty(E, f32),
                   ints={c: np.empty(E, i32) for c in _INT_COLUMNS}, strs=strs,
                   request_id=np.empty((E, 4), np.uint32),
                   seed_key=splitmix64(np.array([seed % (1 << 63)], dtype=np.uint64))[0],
                   pos_alias=RowAlias(BANNER_POS_P), size_alias=RowAlias(BANNER_SIZE_P), c18_alias=RowAlias(C18_P))

    @property
    def n_chunks(self) -> int:
        return -(-len(self.hour) // CHUNK)

    def bounds(self, i: int) -> tuple[int, int]:
        return i * CHUNK, min(len(self.hour), (i + 1) * CHUNK)


def _impressions(day: _Day, r: np.random.Generator, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """Who, which item (the user's categories, the segment's trend of the hour or the hour's global
    popularity, then the hour's popularity within the category: older items or the day's new items
    born by then), which position; fills ``user``, ``category``, ``item`` and the click logit ``z``."""
    uni, cat_, tr, hourly, n = day.uni, day.cat, day.trends, day.cat.hourly, hi - lo
    C = i32(uni.n_categories)

    def unif(size: int = n) -> np.ndarray:
        return r.random(size, dtype=f32)

    h = day.hour[lo:hi]
    u = uni.activity.sample(r, n)
    seg = uni.user_segment[u]
    c = uni.pref_alias.sample(u, unif())
    drift = np.flatnonzero(unif() < f32(TREND_SHARE))       # the segment's trending category of the hour
    hd = h[drift]
    slot_ = tr.first[hd] + (unif(len(drift)) < tr.mix[hd])
    slot_ *= i32(N_SEGMENTS)
    slot_ += seg[drift]
    c[drift] = tr.slot_cat[slot_]
    hc = h * C
    popular = unif() < f32(POPULAR_SHARE)
    popular |= ~hourly.has_items[hc + c]
    pop = np.flatnonzero(popular)
    c[pop] = hourly.category_dist.sample(h[pop], unif(len(pop)))
    hc += c
    slot = cat_.in_category.sample(c, unif())
    slot += c * np.int32(cat_.in_category.k)
    it = cat_.slot_item[slot]
    new = np.flatnonzero(unif() < hourly.new_frac[hc])     # the day's new items, by their hourly burst
    slot = hourly.new_alias.sample(hc[new], unif(len(new)))
    slot += c[new] * i32(hourly.new_k)
    it[new] = hourly.new_slot_item[slot]
    p = day.pos_alias.sample(None, unif())
    day.user[lo:hi], day.category[lo:hi], day.item[lo:hi] = u, c, it
    # click logit without the day's offset
    uc = u * i32(uni.n_categories)
    uc += c
    zc = day.z[lo:hi]
    np.multiply(uni.log_affinity[uc], f32(AFFINITY_WEIGHT), out=zc)
    zc += uni.user_click[u]
    zc += cat_.items["quality"][it]
    zc += uni.category_click[c]
    zc += POS_LOGIT[p]
    zc += HOUR_LOGIT[h]
    hc -= c
    hc *= i32(N_SEGMENTS)                                    # (hour, segment, category) of the trend table
    seg *= C
    hc += seg
    hc += c
    zc += tr.logit[hc]
    return u, it, p


def _context(day: _Day, r: np.random.Generator, lo: int, hi: int, u: np.ndarray, it: np.ndarray,
             p: np.ndarray) -> None:
    """The context columns of events ``lo:hi``: web or app placement, device, banner, C* columns."""
    uni, n = day.uni, hi - lo

    def unif() -> np.ndarray:
        return r.random(n, dtype=f32)

    is_app = unif() < uni.user_app[u]
    site = uni.site_dist.sample(r, n)
    site[is_app] = N_SITES                       # the null site
    app = uni.app_dist.sample(r, n)
    app[~is_app] = N_APPS                        # the null app
    ip = u * i32(2)
    ip += unif() < f32(0.15)                     # the second IP (mobile network) now and then
    conn = uni.user_conn[u]
    conn[unif() < f32(0.1)] = 2
    size = day.size_alias.sample(None, unif())
    c18 = day.c18_alias.sample(None, unif())
    items, ints, strs = day.cat.items, day.ints, day.strs
    for name, idx, src in (
        ("C1", u, uni.user_c1), ("device_type", u, uni.user_device_type), ("C20", u, uni.user_c20),
        ("C14", it, items["C14"]), ("C17", it, items["C17"]), ("C19", it, items["C19"]),
        ("C21", it, items["C21"]), ("C15", size, BANNER_SIZES[:, 0]), ("C16", size, BANNER_SIZES[:, 1]),
    ):
        np.take(src, idx, out=ints[name][lo:hi])
    ints["banner_pos"][lo:hi] = p
    ints["device_conn_type"][lo:hi] = conn
    ints["C18"][lo:hi] = c18
    for name, idx, fs in (
        ("user_id", u, uni.user_ids), ("item_id", it, day.cat.ids), ("device_id", u, uni.user_device_id),
        ("device_model", u, uni.user_device_model), ("device_ip", ip, uni.user_ips),
        ("site_id", site, uni.site_cols[0]), ("site_domain", site, uni.site_cols[1]),
        ("site_category", site, uni.site_cols[2]), ("app_id", app, uni.app_cols[0]),
        ("app_domain", app, uni.app_cols[1]), ("app_category", app, uni.app_cols[2]),
    ):
        np.take(fs.rows, idx, out=strs[name][lo:hi])


def _request_ids(day: _Day, lo: int, hi: int) -> None:
    """Request ids of events ``lo:hi``: a bijective hash of (date, event number) mixed with the seed, in hex."""
    key = np.arange(lo, hi, dtype=np.uint64)
    key |= np.uint64(day.ordinal) << np.uint64(40)
    key ^= day.seed_key
    np.take(HEX4, splitmix64(key).view(np.uint16).reshape(hi - lo, 4)[:, ::-1], out=day.request_id[lo:hi])


def _chunk(day: _Day, i: int) -> None:
    """Events of chunk ``i``, from the chunk's own stream ``(seed, TAG_DAY, ordinal, i + 1)``."""
    lo, hi = day.bounds(i)
    r = rng(day.seed, TAG_DAY, day.ordinal, i + 1)
    u, it, p = _impressions(day, r, lo, hi)
    _context(day, r, lo, hi, u, it, p)
    _request_ids(day, lo, hi)


def _labels(day: _Day, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clicks and conversions (int8, length E); ``r`` is the day's stream. Frees ``day.z``."""
    z, E = day.z, len(day.hour)
    target = CTR_TARGET * (1 + CTR_DAILY_JITTER * r.standard_normal())
    b = f32(calibrate(z, target))
    click = np.empty(E, np.int8)

    def clicks(i: int) -> None:
        lo, hi = day.bounds(i)
        zc = z[lo:hi]
        zc += b
        click[lo:hi] = rng(day.seed, TAG_CLICK, day.ordinal, i).random(hi - lo, dtype=f32) < sigmoid(zc)

    _run(clicks, day.n_chunks)
    day.z = z = None
    uni, C = day.uni, day.uni.n_categories
    clicked = np.flatnonzero(click)
    uc, ic, cc = day.user[clicked], day.item[clicked], day.category[clicked]
    zb = f32(0.5) * uni.log_affinity[uc * i32(C) + cc]
    zb += uni.user_buy[uc]
    zb += day.cat.items["buy"][ic]
    zb += uni.category_buy[cc]
    zb += f32(calibrate(zb, CVR_TARGET))
    conversion = np.zeros(E, dtype=np.int8)
    conversion[clicked] = r.random(len(clicked), dtype=f32) < sigmoid(zb)
    return click, conversion


def _logs_table(day: _Day, event_us: np.ndarray, click: np.ndarray, conversion: np.ndarray) -> pa.Table:
    E = len(day.hour)
    cols: dict[str, Any] = {
        "event_time": pa.array(event_us, pa.timestamp("us", tz="UTC")),
        "request_id": string_column(E, 16, day.request_id),
        "click": pa.array(click),
        "conversion": pa.array(conversion),
    }
    cols.update({k: pa.array(v) for k, v in day.ints.items()})
    cols.update({k: string_column(E, v.dtype.itemsize, v) for k, v in day.strs.items()})
    return pa.Table.from_arrays([cols[f.name] for f in LOG_SCHEMA], schema=LOG_SCHEMA)


def simulate_day(cfg: Config, cur_date: str, timer: Timer | None = None) -> dict[str, pa.Table]:
    """One day of logs plus the user and item snapshots: ``{"logs", "users", "items"}``.

    ``logs`` has ``demo.events_per_day`` rows in LOG_SCHEMA, sorted by ``event_time`` (UTC, us);
    ``users``/``items`` are the USER_SCHEMA/ITEM_SCHEMA snapshots of that day. Deterministic in
    (``cfg.demo``, ``cur_date``); nothing is written. ``timer`` (optional) receives the time of
    each phase. Raises ``ValueError`` for a bad date or a day without live items.
    """
    timer = timer or Timer()
    d = parse_date(cur_date)
    demo = cfg.demo
    with timer.step("universe"):
        uni, cat_, trends_ = universe(demo), catalog(cfg, cur_date), trends(cfg, cur_date)
    E, seed, ordinal = int(demo.events_per_day), demo.seed, d.toordinal()
    r = rng(seed, TAG_DAY, ordinal)
    with timer.step("events"):
        counts = 1 + r.multinomial(E - 24, DIURNAL / DIURNAL.sum())
        hour, event_us = _event_times(r, counts, (ordinal - EPOCH_ORDINAL) * 24 * US_PER_HOUR)
        day = _Day.allocate(uni, cat_, trends_, seed, ordinal, hour)
        _run(lambda i: _chunk(day, i), day.n_chunks)
    with timer.step("labels"):
        click, conversion = _labels(day, r)
    with timer.step("arrow"):
        logs = _logs_table(day, event_us, click, conversion)
    return {"logs": logs, "users": uni.users_table, "items": cat_.table}
