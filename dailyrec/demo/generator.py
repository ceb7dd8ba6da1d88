"""Synthetic, realistic demo logs in the log contract (see docs/demo-data.md).

For each date it simulates one day of ad/recommendation impressions and writes

* ``logs/dt=YYYY-MM-DD/hour=HH`` (24 hourly partitions, ``_SUCCESS`` + ``_manifest.json``),
* ``users/dt=YYYY-MM-DD`` (the user universe, the same every day),
* ``items/dt=YYYY-MM-DD`` (the catalog of that day: the items active that day).

The model behind it, in short:

* **Universe.** Users and the initial items are drawn once from ``demo.seed`` (never from the
  date), so ids and side features are the same on every day. ``demo.start_date`` is the anchor of
  the item timeline: ``demo.n_items`` items are live on that date, every later day adds new items
  (ids continue after the initial ones) and every item retires after a random lifetime.
* **Users** have a gender, an age bucket and a segment (the segment depends on gender and age) and
  a sparse Dirichlet preference over the item categories whose base measure is their segment's
  category profile, a heavy-tailed activity level, a click and a purchase propensity, one device
  (model, type, connection), one device id, two IPs and an app-vs-web habit.
* **Items** have one category, a publisher (publishers specialise in a category) and one of the
  publisher's domains, a Zipf-like popularity, a latent click quality and conversion quality.
* **Impressions.** Each event picks a user by activity and an hour by a diurnal curve; with
  probability :data:`POPULAR_SHARE` the item comes from global popularity over the day's catalog
  (fresh items get a boost), otherwise a category is drawn from the user's preference and the
  item by popularity inside that category.
* **Clicks.** ``logit = b + AFFINITY_WEIGHT * log(C * pref[user, category] + AFFINITY_EPS) +
  user clickiness + item quality + category bias + position effect + hour effect``; ``b`` is
  calibrated per day so the day's CTR is about :data:`CTR_TARGET`.
* **Conversions** happen only after a click, with a logit of its own (affinity, purchase
  propensity, item conversion quality, category), calibrated to :data:`CVR_TARGET` of the clicks.

Everything is vectorised (no per-event Python): categorical draws use Walker alias tables built
for many distributions at once (per-user category tables, per-category item tables); a string
column is a numpy gather from a small dictionary of equal-width ids (:class:`FixedStrings`) wrapped
as an Arrow ``string`` array; request ids are hex strings built through a 65536-entry lookup
table. The day is simulated in chunks of :data:`CHUNK` events on :data:`THREADS` threads, each chunk
filling its slice of preallocated columns. A day is deterministic given the config and the date:
its random streams are ``numpy.random.default_rng([seed, tag, date ordinal, chunk])``, whatever the
number of threads; users and items use streams of the seed alone.

CLI::

    python -m dailyrec.demo.generator --start-date 2026-11-01 --days 3 [--events-per-day N] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dailyrec.config import Config, ConfigError, DemoConfig, load_config, parse_set_args
from dailyrec.dates import date_range, parse_date
from dailyrec.contract import ITEM_SCHEMA, LOG_SCHEMA, USER_SCHEMA, write_partition
from dailyrec.storage import Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.generate_demo")

STEP = "generate_demo"
GENERATOR_VERSION = 1

# ---- knobs that are not (yet) in DemoConfig ------------------------------------------------
CTR_TARGET = 0.17
"""Average click-through rate of a day (Avazu: ~0.17)."""
CTR_DAILY_JITTER = 0.03
"""Relative day-to-day noise of the CTR target (the day's target is CTR_TARGET * (1 + N(0, .)))."""
CVR_TARGET = 0.06
"""Average conversion rate after a click."""
ITEM_MEAN_LIFETIME_DAYS = 30.0
"""Mean lifetime of an item; new items per day = n_items / ITEM_MEAN_LIFETIME_DAYS (steady catalog)."""
ITEM_MIN_LIFETIME_DAYS = 3
"""An item stays live at least this many days (lifetime = this + an exponential)."""
ZIPF_EXPONENT = 0.9
"""Item popularity ~ rank^-s (weights u^-s, u uniform)."""
FRESH_BOOST = 1.5
FRESH_DECAY_DAYS = 2.0
"""Exposure boost of new items: popularity * (1 + FRESH_BOOST * exp(-age_days / FRESH_DECAY_DAYS))."""
POPULAR_SHARE = 0.35
"""Share of impressions drawn from global popularity (the rest from the user's categories)."""
USER_PREF_CONCENTRATION = 1.0
"""Total Dirichlet concentration of a user's category preference (small = sparse, few categories)."""
USER_PREF_FLOOR = 0.02
"""Share of a user's preference spread uniformly over all categories (exploration)."""
AFFINITY_WEIGHT = 0.8
AFFINITY_EPS = 0.15
N_SEGMENTS = 8
N_SITES = 400
N_APPS = 400
N_DEVICE_MODELS = 600

# Hour-of-day traffic shape (UTC, arbitrary units) and the CTR effect of the hour (logit).
DIURNAL = np.array([0.55, 0.40, 0.30, 0.25, 0.25, 0.32, 0.50, 0.75, 0.95, 1.00, 1.00, 1.05,
                    1.15, 1.10, 1.00, 1.00, 1.05, 1.15, 1.30, 1.45, 1.55, 1.50, 1.20, 0.85])
HOUR_LOGIT = (0.12 * np.cos(2 * np.pi * (np.arange(24) - 21) / 24)).astype(np.float32)
# banner_pos: Avazu is almost only 0 and 1; deeper positions are rarer and click less.
BANNER_POS_P = np.array([0.72, 0.26, 0.005, 0.005, 0.004, 0.003, 0.002, 0.001])
POS_LOGIT = np.array([0.0, 0.12, -0.35, -0.45, -0.55, -0.65, -0.75, -0.85], dtype=np.float32)
# C15 x C16 banner sizes.
BANNER_SIZES = np.array([[320, 50], [300, 250], [728, 90], [216, 36], [300, 50], [480, 320]], dtype=np.int32)
BANNER_SIZE_P = np.array([0.93, 0.035, 0.02, 0.008, 0.005, 0.002])
C18_P = np.array([0.42, 0.07, 0.15, 0.36])
C19_VALUES = np.array([35, 39, 161, 163, 167, 175, 297, 303, 431, 687, 1063, 1327], dtype=np.int32)
C21_VALUES = np.array([23, 32, 33, 42, 46, 48, 51, 52, 61, 69, 71, 79, 91, 100, 117, 157, 159,
                       171, 204, 212, 221, 229], dtype=np.int32)
# Avazu's placeholder values of the site columns on app traffic and of the app columns on web.
NULL_SITE = ("85f751fd", "c4e18dd6", "50e219e0")
NULL_APP = ("ecad2386", "7801e8d9", "07d7df22")
UNKNOWN_DEVICE_ID = "a99f214a"

_TAG_USERS, _TAG_ITEMS, _TAG_DAY, _TAG_CONTEXT, _TAG_PUBLISHERS, _TAG_CLICK = 1, 2, 3, 4, 5, 6
_US_PER_HOUR = 3_600_000_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def knobs() -> dict[str, Any]:
    """The module-level generator parameters (recorded in every manifest)."""
    return {
        "ctr_target": CTR_TARGET, "cvr_target": CVR_TARGET,
        "item_mean_lifetime_days": ITEM_MEAN_LIFETIME_DAYS, "item_min_lifetime_days": ITEM_MIN_LIFETIME_DAYS,
        "zipf_exponent": ZIPF_EXPONENT, "popular_share": POPULAR_SHARE,
        "user_pref_concentration": USER_PREF_CONCENTRATION, "affinity_weight": AFFINITY_WEIGHT,
        "fresh_boost": FRESH_BOOST, "generator_version": GENERATOR_VERSION,
    }


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed % (1 << 63), *tags])


# ---- vectorised categorical sampling ---------------------------------------------------------
def _alias_build(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias tables for every row of ``weights`` (R x K) at once.

    Each of the K-1 rounds pairs, in every row, its smallest unfinished entry (scaled weight < 1)
    with its largest; cost O(R * K^2), meant for K up to a few thousand.
    """
    w = np.asarray(weights, dtype=np.float64)
    r_, k_ = w.shape
    tot = w.sum(axis=1, keepdims=True)
    p = np.where(tot > 0, w * (k_ / np.where(tot > 0, tot, 1.0)), 1.0)
    prob = np.ones((r_, k_), dtype=np.float64)
    alias = np.broadcast_to(np.arange(k_, dtype=np.int32), (r_, k_)).copy()
    done = np.zeros((r_, k_), dtype=bool)
    rows = np.arange(r_)
    for _ in range(k_ - 1):
        ps = np.where(done, np.inf, p)
        s = ps.argmin(axis=1)
        act = ps[rows, s] < 1.0 - 1e-12
        if not act.any():
            break
        l = np.where(done, -np.inf, p).argmax(axis=1)
        r, s, l = rows[act], s[act], l[act]
        prob[r, s] = p[r, s]
        alias[r, s] = l
        done[r, s] = True
        p[r, l] -= 1.0 - p[r, s]
    return prob.astype(np.float32).ravel(), alias.ravel()


class RowAlias:
    """R categorical distributions over 0..K-1; ``sample(rows, u)`` draws one value per row index."""

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        self.rows, self.k = weights.shape
        self.prob, self.alias = _alias_build(weights)

    def sample(self, rows: np.ndarray | None, u: np.ndarray) -> np.ndarray:
        """One draw per entry of ``u`` (uniform float32 in [0, 1)), from row ``rows[i]`` (or row 0)."""
        x = u * np.float32(self.k)
        jf = np.floor(x)
        x -= jf                                  # the fractional part is the alias coin
        j = jf.astype(np.int32)
        del jf
        np.minimum(j, self.k - 1, out=j)
        if rows is None:
            k = j
        else:
            k = rows * np.int32(self.k)
            k += j
        out = self.alias[k]
        np.copyto(out, j, where=x < self.prob[k])
        return out


class Categorical:
    """One categorical distribution over 0..n-1 (n up to millions): two-level alias tables."""

    BLOCK = 64
    MAX_FLAT = 2048

    def __init__(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        self.n = len(w)
        if self.n <= self.MAX_FLAT:
            self.top, self.rows = None, RowAlias(w)
            return
        nb = -(-self.n // self.BLOCK)
        padded = np.zeros(nb * self.BLOCK)
        padded[: self.n] = w
        padded = padded.reshape(nb, self.BLOCK)
        self.rows = RowAlias(padded)
        self.top = Categorical(padded.sum(axis=1))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.top is None:
            return self.rows.sample(None, rng.random(size, dtype=np.float32))
        block = self.top.sample(rng, size)
        out = self.rows.sample(block, rng.random(size, dtype=np.float32))
        out += block * np.int32(self.BLOCK)
        return out


# ---- strings ---------------------------------------------------------------------------------
_HEX4 = np.frombuffer(b"".join(f"{i:04x}".encode() for i in range(1 << 16)), dtype=np.uint32)


def hex_strings(values: np.ndarray, width: int = 16) -> pa.StringArray:
    """Fixed-width lowercase hex strings of unsigned ints (16 chars: uint64, 8 chars: uint32)."""
    if width not in (8, 16):
        raise ValueError("width must be 8 or 16")
    v = np.ascontiguousarray(values, dtype=np.uint64 if width == 16 else np.uint32)
    n = len(v)
    if n * width >= 1 << 31:
        raise ValueError("too many strings for one Arrow string array")
    chars = _HEX4[v.view(np.uint16).reshape(n, width // 4)[:, ::-1]]
    return pa.StringArray.from_buffers(n, _offsets(n, width), pa.py_buffer(chars))


class FixedStrings:
    """A small dictionary of equal-width ASCII strings; ``take(indices)`` builds a string column.

    The column is a numpy gather of fixed-width rows (one memcpy-sized element per row) wrapped as
    an Arrow ``string`` array with arithmetic offsets: no per-row Python, no per-row allocation.
    """

    def __init__(self, values: list[str]) -> None:
        data = [v.encode("ascii") for v in values]
        self.width = len(data[0]) if data else 1
        if any(len(b) != self.width for b in data):
            raise ValueError("FixedStrings needs strings of one width")
        rows = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(len(data), self.width)
        self.rows = rows.view(f"V{self.width}").ravel()

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: np.ndarray) -> "FixedStrings":
        """A new dictionary whose entry i is entry ``indices[i]`` of this one."""
        out = object.__new__(FixedStrings)
        out.width, out.rows = self.width, self.rows[indices]
        return out

    def array(self) -> pa.StringArray:
        return self.take(np.arange(len(self.rows)))

    def take(self, indices: np.ndarray) -> pa.StringArray:
        n = len(indices)
        if n * self.width >= 1 << 31:
            raise ValueError("too many strings for one Arrow string array")
        data = self.rows[indices]
        return pa.StringArray.from_buffers(n, _offsets(n, self.width), pa.py_buffer(data.view(np.uint8)))


@functools.lru_cache(maxsize=4)
def _offsets(n: int, width: int) -> pa.Buffer:
    """The offsets buffer of ``n`` strings of ``width`` bytes (shared by the columns of a table)."""
    return pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int32))


def _ids(prefix: str, idx: np.ndarray, width: int) -> FixedStrings:
    return FixedStrings([f"{prefix}{int(i):0{width}d}" for i in idx])


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _zipf_weights(rng: np.random.Generator, n: int, s: float, floor: float | None = None) -> np.ndarray:
    """Weights u^-s (u uniform, at least ``floor``, default 1/n): a rank-frequency curve ~ rank^-s."""
    return rng.random(n).clip(floor or 1.0 / n, None) ** -s


def _zipf_p(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    w = _zipf_weights(rng, n, s)
    return w / w.sum()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _calibrate(z: np.ndarray, target: float, max_sample: int = 200_000) -> float:
    """The offset ``b`` with mean(sigmoid(b + z)) == target (on a strided subsample of ``z``)."""
    if len(z) == 0:
        return float(np.log(target / (1 - target)))
    zs = z[:: max(1, len(z) // max_sample)].astype(np.float64)
    lo, hi = -30.0, 30.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if _sigmoid(mid + zs).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ---- the universe: users, publishers, placements (from the seed only) --------------------------
@dataclass(eq=False)
class Universe:
    seed: int
    anchor: dt.date
    n_users: int
    n_items: int
    n_categories: int
    new_items_per_day: int
    item_id_width: int               # digits of the item ids, fixed per universe (stable ids)
    # users
    user_ids: FixedStrings
    users_table: pa.Table
    pref: np.ndarray                 # (U, C) float32, rows sum to 1
    pref_alias: RowAlias             # per-user category draws
    log_affinity: np.ndarray         # (U*C,) float32: log(C * pref + eps)
    activity: Categorical
    user_click: np.ndarray
    user_buy: np.ndarray
    user_app: np.ndarray
    user_device_type: np.ndarray
    user_conn: np.ndarray
    user_c1: np.ndarray
    user_c20: np.ndarray
    user_device_id: FixedStrings
    user_device_model: FixedStrings
    user_ips: FixedStrings           # 2 per user: [u*2], [u*2+1]
    # categories and publishers
    category_names: FixedStrings
    category_click: np.ndarray
    category_buy: np.ndarray
    category_c21: np.ndarray
    category_mix: np.ndarray         # category shares of new items
    pub_category: np.ndarray
    pub_weights: np.ndarray
    pub_domain_start: np.ndarray
    pub_domain_count: np.ndarray
    # placements
    site_cols: tuple[FixedStrings, FixedStrings, FixedStrings]   # last entry = the null site
    app_cols: tuple[FixedStrings, FixedStrings, FixedStrings]    # last entry = the null app
    site_dist: Categorical
    app_dist: Categorical


def _hex_pool(rng: np.random.Generator, n: int) -> list[str]:
    return hex_strings(rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32), 8).to_pylist()


@functools.lru_cache(maxsize=4)
def _universe_cached(seed: int, anchor: str, n_users: int, n_items: int, n_categories: int) -> Universe:
    C = n_categories
    # categories and publishers
    rp = _rng(seed, _TAG_PUBLISHERS)
    category_names = _ids("cat", np.arange(C), max(2, len(str(C - 1))))
    category_click = rp.normal(0, 0.2, C).astype(np.float32)
    category_buy = rp.normal(0, 0.4, C).astype(np.float32)
    category_c21 = rp.choice(C21_VALUES, C).astype(np.int32)
    category_mix = rp.dirichlet(np.full(C, 4.0))
    n_pub = max(5, n_items // 20)
    pub_category = rp.choice(C, n_pub, p=category_mix).astype(np.int32)
    pub_weights = _zipf_weights(rp, n_pub, 0.8)
    pub_domain_count = rp.integers(1, 5, n_pub).astype(np.int32)
    pub_domain_start = (np.cumsum(pub_domain_count) - pub_domain_count).astype(np.int32)

    # users
    ru = _rng(seed, _TAG_USERS)
    U = n_users
    gender = ru.choice(3, U, p=[0.48, 0.47, 0.05])
    age = ru.choice(7, U, p=[0.08, 0.22, 0.24, 0.18, 0.13, 0.09, 0.06]).astype(np.int32)
    seg_logits = ru.normal(0, 1.0, (3, 1, N_SEGMENTS)) + ru.normal(0, 1.0, (1, 7, N_SEGMENTS))
    segment = (seg_logits[gender, age] + ru.gumbel(size=(U, N_SEGMENTS))).argmax(axis=1)
    seg_profile = ru.dirichlet(np.full(C, 0.4), N_SEGMENTS)
    base = 0.75 * seg_profile[segment] + 0.25 / C
    g = ru.gamma(USER_PREF_CONCENTRATION * base) + 1e-12
    pref = g / g.sum(axis=1, keepdims=True)
    pref = ((1 - USER_PREF_FLOOR) * pref + USER_PREF_FLOOR / C).astype(np.float32)
    log_aff = np.log(C * pref + AFFINITY_EPS).astype(np.float32).ravel()
    activity = ru.lognormal(0, 1.0, U)
    user_click = ru.normal(0, 0.45, U).astype(np.float32)
    user_buy = ru.normal(0, 0.6, U).astype(np.float32)
    user_app = ru.beta(0.4, 0.6, U).astype(np.float32)
    device_type = ru.choice(np.array([1, 0, 4, 5], dtype=np.int32), U, p=[0.92, 0.055, 0.02, 0.005])
    c1 = np.select([device_type == 0, device_type >= 4], [1002, 1010], 1005).astype(np.int32)
    conn = ru.choice(np.array([0, 2, 3, 5], dtype=np.int32), U, p=[0.86, 0.08, 0.055, 0.005])
    c20 = np.where(ru.random(U) < 0.47, -1, 100000 + ru.integers(0, 250, U) * 3).astype(np.int32)
    models = _hex_pool(ru, N_DEVICE_MODELS)
    model_idx = ru.choice(N_DEVICE_MODELS, U, p=_zipf_p(ru, N_DEVICE_MODELS, 1.1))
    device_model = FixedStrings(models).subset(model_idx)
    dev_ids = _hex_pool(ru, U)
    unknown = ru.random(U) < 0.6
    device_id = FixedStrings([UNKNOWN_DEVICE_ID if k else v for v, k in zip(dev_ids, unknown.tolist())])
    ips = FixedStrings(_hex_pool(ru, 2 * U))

    width = max(5, len(str(U - 1)))
    user_ids = _ids("u", np.arange(U), width)
    gender_names = pa.array(["F", "M", "U"])
    seg_names = _ids("seg", np.arange(N_SEGMENTS), 2)
    users_table = pa.Table.from_arrays(
        [user_ids.array(), gender_names.take(pa.array(gender)), pa.array(age, pa.int32()),
         seg_names.take(pa.array(segment))], schema=USER_SCHEMA)

    # placements: sites and apps with Zipf traffic; Avazu-style hashed ids
    rc = _rng(seed, _TAG_CONTEXT)

    def placements(n: int, null: tuple[str, str, str]) -> tuple[tuple[FixedStrings, ...], Categorical]:
        ids = _hex_pool(rc, n)
        domains = _hex_pool(rc, max(2, n * 3 // 4))
        cats = _hex_pool(rc, 20)
        dom = [domains[i] for i in rc.integers(0, len(domains), n)]
        cat = [cats[i] for i in rc.choice(20, n, p=_zipf_p(rc, 20, 1.0))]
        cols = (FixedStrings(ids + [null[0]]), FixedStrings(dom + [null[1]]), FixedStrings(cat + [null[2]]))
        return cols, Categorical(_zipf_weights(rc, n, 1.2))

    site_cols, site_dist = placements(N_SITES, NULL_SITE)
    app_cols, app_dist = placements(N_APPS, NULL_APP)

    return Universe(
        seed=seed, anchor=parse_date(anchor), n_users=U, n_items=n_items, n_categories=C,
        new_items_per_day=max(1, round(n_items / ITEM_MEAN_LIFETIME_DAYS)),
        item_id_width=max(6, len(str(n_items - 1)) + 2),
        user_ids=user_ids, users_table=users_table, pref=pref, pref_alias=RowAlias(pref),
        log_affinity=log_aff, activity=Categorical(activity), user_click=user_click, user_buy=user_buy,
        user_app=user_app, user_device_type=device_type, user_conn=conn, user_c1=c1, user_c20=c20,
        user_device_id=device_id, user_device_model=device_model, user_ips=ips,
        category_names=category_names, category_click=category_click, category_buy=category_buy,
        category_c21=category_c21, category_mix=category_mix, pub_category=pub_category,
        pub_weights=pub_weights, pub_domain_start=pub_domain_start, pub_domain_count=pub_domain_count,
        site_cols=site_cols, app_cols=app_cols, site_dist=site_dist, app_dist=app_dist,
    )


def universe(demo: DemoConfig) -> Universe:
    """The users, publishers and placements of ``demo`` (cached; independent of the date)."""
    return _universe_cached(demo.seed, parse_date(demo.start_date).isoformat(), demo.n_users,
                            demo.n_items, demo.n_categories)


# ---- items: blocks of items created on the same day -----------------------------------------
@functools.lru_cache(maxsize=8192)
def _item_block(uni: Universe, block: int) -> dict[str, np.ndarray]:
    """Items of block ``block``: 0 = the catalog live on the anchor date, j >= 1 = created anchor + j."""
    r = _rng(uni.seed, _TAG_ITEMS, block)
    anchor = uni.anchor.toordinal()
    m, mu = ITEM_MIN_LIFETIME_DAYS, ITEM_MEAN_LIFETIME_DAYS - ITEM_MIN_LIFETIME_DAYS
    if block == 0:
        # the catalog of a steady state: lifetime L = m + Exp(mu), a live item's age has density
        # P(L > age); its remaining life is (m - age) + Exp(mu) when age < m, else Exp(mu)
        n, first = uni.n_items, 0
        young = r.random(n) < m / (m + mu)
        age = np.where(young, r.random(n) * m, m + r.exponential(mu, n))
        rest = np.where(young, m - age, 0.0) + r.exponential(mu, n)
        created = anchor - np.floor(age)
        retire = anchor + np.maximum(1, np.ceil(rest))
    else:
        n, first = uni.new_items_per_day, uni.n_items + (block - 1) * uni.new_items_per_day
        created = np.full(n, anchor + block)
        retire = created + m + np.floor(r.exponential(mu, n))
    C = uni.n_categories
    pub = r.choice(len(uni.pub_weights), n, p=uni.pub_weights / uni.pub_weights.sum()).astype(np.int32)
    cat = np.where(r.random(n) < 0.6, uni.pub_category[pub], r.choice(C, n, p=uni.category_mix)).astype(np.int32)
    domain = uni.pub_domain_start[pub] + (r.random(n) * uni.pub_domain_count[pub]).astype(np.int32)
    c14 = r.integers(15000, 24500, n).astype(np.int32)
    return {
        "index": np.arange(first, first + n, dtype=np.int64),
        "created": created.astype(np.int32),
        "retire": retire.astype(np.int32),
        "category": cat,
        "publisher": pub,
        "domain": domain.astype(np.int32),
        "popularity": _zipf_weights(r, n, ZIPF_EXPONENT, 1.0 / uni.n_items),
        "quality": r.normal(0, 0.35, n).astype(np.float32),
        "buy": r.normal(0, 0.5, n).astype(np.float32),
        "C14": c14,
        "C17": (1000 + c14 // 8).astype(np.int32),
        "C19": r.choice(C19_VALUES, n).astype(np.int32),
        "C21": uni.category_c21[cat],
    }


@dataclass(eq=False)
class Catalog:
    """The items live on one day, with the samplers of that day."""

    ordinal: int
    items: dict[str, np.ndarray]     # per catalog row
    ids: FixedStrings
    table: pa.Table                  # the items/ snapshot (ITEM_SCHEMA)
    category_dist: RowAlias          # global popularity over categories
    category_has_items: np.ndarray   # (C,) bool
    in_category: RowAlias            # per category: slot -> catalog row via slot_item
    slot_item: np.ndarray            # (C * K,) catalog row of each slot (-1 = padding)


@functools.lru_cache(maxsize=8)
def _catalog_cached(uni: Universe, ordinal: int) -> Catalog:
    last_block = max(0, ordinal - uni.anchor.toordinal())
    blocks = [_item_block(uni, b) for b in range(last_block + 1)]
    allb = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    live = (allb["created"] <= ordinal) & (allb["retire"] > ordinal)
    items = {k: v[live] for k, v in allb.items()}
    n = len(items["index"])
    if n == 0:
        raise ValueError(f"no item is live on {dt.date.fromordinal(ordinal)}")
    age = (ordinal - items["created"]).astype(np.float64)
    weight = items["popularity"] * (1 + FRESH_BOOST * np.exp(-age / FRESH_DECAY_DAYS))
    items["weight"] = weight
    C = uni.n_categories
    cat = items["category"]
    counts = np.bincount(cat, minlength=C)
    K = int(counts.max())
    order = np.argsort(cat, kind="stable")
    starts = np.cumsum(counts) - counts
    slot = np.arange(n) - np.repeat(starts, counts)
    slot_item = np.full(C * K, -1, dtype=np.int32)
    slot_item[cat[order] * K + slot] = order
    padded_w = np.zeros(C * K)
    padded_w[cat[order] * K + slot] = weight[order]
    if int(items["index"].max()) >= 10 ** uni.item_id_width:
        raise ValueError(f"item ids exceed {uni.item_id_width} digits on {dt.date.fromordinal(ordinal)}")
    ids = _ids("i", items["index"], uni.item_id_width)
    pub_names = _ids("pub", np.arange(len(uni.pub_weights)), 4)
    dom_pub = np.repeat(np.arange(len(uni.pub_weights)), uni.pub_domain_count)
    dom_k = np.arange(len(dom_pub)) - uni.pub_domain_start[dom_pub]
    dom_names = pa.array([f"p{p:04d}-{k}.example.com" for p, k in zip(dom_pub.tolist(), dom_k.tolist())])
    table = pa.Table.from_arrays(
        [ids.array(), uni.category_names.take(cat), dom_names.take(pa.array(items["domain"])),
         pub_names.take(items["publisher"]),
         pa.array(items["created"] - _EPOCH_ORDINAL, pa.int32()).cast(pa.date32())],
        schema=ITEM_SCHEMA)
    return Catalog(
        ordinal=ordinal, items=items, ids=ids, table=table,
        category_dist=RowAlias(np.bincount(cat, weights=weight, minlength=C)),
        category_has_items=counts > 0, in_category=RowAlias(padded_w.reshape(C, K)), slot_item=slot_item,
    )


def clear_caches() -> None:
    """Forget the cached universes, item blocks and catalogs (tests; memory)."""
    _catalog_cached.cache_clear()
    _item_block.cache_clear()
    _universe_cached.cache_clear()
    _offsets.cache_clear()


def catalog(cfg: Config, cur_date: str) -> Catalog:
    """The items live on ``cur_date`` (created on or before it, retiring after it)."""
    return _catalog_cached(universe(cfg.demo), parse_date(cur_date).toordinal())


def retired_on(cfg: Config, cur_date: str) -> int:
    """How many items were live the day before ``cur_date`` and are not any more."""
    uni = universe(cfg.demo)
    o = parse_date(cur_date).toordinal()
    blocks = [_item_block(uni, b) for b in range(max(0, o - uni.anchor.toordinal()) + 1)]
    return int(sum(((b["retire"] == o) & (b["created"] < o)).sum() for b in blocks))


# ---- one day -----------------------------------------------------------------------------------
def _event_times(rng: np.random.Generator, counts: np.ndarray, day_start_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Hour of each event and its timestamp (us), sorted: uniform within the hour."""
    hour = np.repeat(np.arange(24, dtype=np.int32), counts)
    us = np.empty(int(counts.sum()), dtype=np.int64)
    start = 0
    for h, c in enumerate(counts.tolist()):
        part = us[start:start + c]
        part[:] = rng.integers(0, _US_PER_HOUR, c, dtype=np.int64)
        part.sort()
        part += day_start_us + h * _US_PER_HOUR
        start += c
    return hour, us


CHUNK = 1 << 20
"""Events per unit of work. Every chunk has its own random stream (seed, date, chunk number), so
the output does not depend on how many threads run the chunks."""
THREADS = max(1, min(4, os.cpu_count() or 1))
"""Threads that simulate chunks (numpy releases the GIL in the heavy calls)."""

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _run(fn: Any, n: int) -> None:
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


def _string_column(n: int, width: int, rows: np.ndarray) -> pa.StringArray:
    return pa.StringArray.from_buffers(n, _offsets(n, width), pa.py_buffer(rows.view(np.uint8)))


def simulate_day(cfg: Config, cur_date: str, timer: Timer | None = None) -> dict[str, pa.Table]:
    """One day of logs plus the user and item snapshots: ``{"logs", "users", "items"}``.

    Deterministic in (``cfg.demo``, ``cur_date``); nothing is written. ``timer`` (optional)
    receives the time of each phase.
    """
    timer = timer or Timer()
    d = parse_date(cur_date)
    demo = cfg.demo
    with timer.step("universe"):
        uni = universe(demo)
        cat_ = _catalog_cached(uni, d.toordinal())
    E = int(demo.events_per_day)
    C = uni.n_categories
    K = np.int32(cat_.in_category.k)
    seed, ordinal = demo.seed, d.toordinal()
    rng = _rng(seed, _TAG_DAY, ordinal)
    f32, i32 = np.float32, np.int32
    pos_alias, size_alias, c18_alias = RowAlias(BANNER_POS_P), RowAlias(BANNER_SIZE_P), RowAlias(C18_P)
    items = cat_.items
    n_chunks = -(-E // CHUNK)
    seed_key = _splitmix64(np.array([seed % (1 << 63)], dtype=np.uint64))[0]

    def strings(dictionary: FixedStrings) -> np.ndarray:
        return np.empty(E, dtype=dictionary.rows.dtype)

    with timer.step("events"):
        counts = 1 + rng.multinomial(E - 24, DIURNAL / DIURNAL.sum())
        day_start_us = (ordinal - _EPOCH_ORDINAL) * 24 * _US_PER_HOUR
        hour, event_us = _event_times(rng, counts, day_start_us)
        user, category, item = (np.empty(E, i32) for _ in range(3))
        z = np.empty(E, f32)
        ints = {c: np.empty(E, i32) for c in ("C1", "banner_pos", "device_type", "device_conn_type", "C14",
                                              "C15", "C16", "C17", "C18", "C19", "C20", "C21")}
        strs = {
            "user_id": strings(uni.user_ids), "item_id": strings(cat_.ids),
            "site_id": strings(uni.site_cols[0]), "site_domain": strings(uni.site_cols[1]),
            "site_category": strings(uni.site_cols[2]), "app_id": strings(uni.app_cols[0]),
            "app_domain": strings(uni.app_cols[1]), "app_category": strings(uni.app_cols[2]),
            "device_id": strings(uni.user_device_id), "device_ip": strings(uni.user_ips),
            "device_model": strings(uni.user_device_model),
        }
        request_id = np.empty((E, 4), np.uint32)     # 16 hex chars

        def chunk(i: int) -> None:
            lo, hi = i * CHUNK, min(E, (i + 1) * CHUNK)
            n = hi - lo
            r = _rng(seed, _TAG_DAY, ordinal, i + 1)

            def unif() -> np.ndarray:
                return r.random(n, dtype=f32)

            # who, and the impressed item: the user's categories or global popularity, then
            # popularity within the category
            u = uni.activity.sample(r, n)
            c = uni.pref_alias.sample(u, unif())
            popular = unif() < f32(POPULAR_SHARE)
            popular |= ~cat_.category_has_items[c]
            c[popular] = cat_.category_dist.sample(None, r.random(int(popular.sum()), dtype=f32))
            slot = cat_.in_category.sample(c, unif())
            slot += c * K
            it = cat_.slot_item[slot]
            p = pos_alias.sample(None, unif())
            user[lo:hi], category[lo:hi], item[lo:hi] = u, c, it
            # click logit without the day's offset
            uc = u * i32(C)
            uc += c
            zc = z[lo:hi]
            np.multiply(uni.log_affinity[uc], f32(AFFINITY_WEIGHT), out=zc)
            zc += uni.user_click[u]
            zc += items["quality"][it]
            zc += uni.category_click[c]
            zc += POS_LOGIT[p]
            zc += HOUR_LOGIT[hour[lo:hi]]
            # context: web or app placement, device, banner
            is_app = unif() < uni.user_app[u]
            site = uni.site_dist.sample(r, n)
            site[is_app] = N_SITES                       # the null site
            app = uni.app_dist.sample(r, n)
            app[~is_app] = N_APPS                        # the null app
            ip = u * i32(2)
            ip += unif() < f32(0.15)                     # the second IP (mobile network) now and then
            conn = uni.user_conn[u]
            conn[unif() < f32(0.1)] = 2
            size = size_alias.sample(None, unif())
            c18 = c18_alias.sample(None, unif())
            # the columns
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
                ("user_id", u, uni.user_ids), ("item_id", it, cat_.ids), ("device_id", u, uni.user_device_id),
                ("device_model", u, uni.user_device_model), ("device_ip", ip, uni.user_ips),
                ("site_id", site, uni.site_cols[0]), ("site_domain", site, uni.site_cols[1]),
                ("site_category", site, uni.site_cols[2]), ("app_id", app, uni.app_cols[0]),
                ("app_domain", app, uni.app_cols[1]), ("app_category", app, uni.app_cols[2]),
            ):
                np.take(fs.rows, idx, out=strs[name][lo:hi])
            # request ids: a bijective hash of (date, event number) mixed with the seed, in hex
            key = np.arange(lo, hi, dtype=np.uint64)
            key |= np.uint64(ordinal) << np.uint64(40)
            key ^= seed_key
            np.take(_HEX4, _splitmix64(key).view(np.uint16).reshape(n, 4)[:, ::-1], out=request_id[lo:hi])

        _run(chunk, n_chunks)

    with timer.step("labels"):
        target = CTR_TARGET * (1 + CTR_DAILY_JITTER * rng.standard_normal())
        b = f32(_calibrate(z, target))
        click = np.empty(E, np.int8)

        def clicks(i: int) -> None:
            lo, hi = i * CHUNK, min(E, (i + 1) * CHUNK)
            zc = z[lo:hi]
            zc += b
            click[lo:hi] = _rng(seed, _TAG_CLICK, ordinal, i).random(hi - lo, dtype=f32) < _sigmoid(zc)

        _run(clicks, n_chunks)
        del z
        clicked = np.flatnonzero(click)
        uc, ic, cc = user[clicked], item[clicked], category[clicked]
        zb = f32(0.5) * uni.log_affinity[uc * i32(C) + cc]
        zb += uni.user_buy[uc]
        zb += items["buy"][ic]
        zb += uni.category_buy[cc]
        zb += f32(_calibrate(zb, CVR_TARGET))
        conversion = np.zeros(E, dtype=np.int8)
        conversion[clicked] = rng.random(len(clicked), dtype=f32) < _sigmoid(zb)

    with timer.step("arrow"):
        cols: dict[str, pa.Array] = {
            "event_time": pa.array(event_us, pa.timestamp("us", tz="UTC")),
            "request_id": _string_column(E, 16, request_id),
            "click": pa.array(click),
            "conversion": pa.array(conversion),
        }
        cols.update({k: pa.array(v) for k, v in ints.items()})
        cols.update({k: _string_column(E, v.dtype.itemsize, v) for k, v in strs.items()})
        logs = pa.Table.from_arrays([cols[f.name] for f in LOG_SCHEMA], schema=LOG_SCHEMA)
    return {"logs": logs, "users": uni.users_table, "items": cat_.table}


# ---- writing -------------------------------------------------------------------------------------
def _hour_slices(logs: pa.Table, cur_date: str) -> list[tuple[int, int]]:
    d = parse_date(cur_date)
    start = (d.toordinal() - _EPOCH_ORDINAL) * 24 * _US_PER_HOUR
    ts = logs.column("event_time").combine_chunks().cast(pa.int64()).to_numpy()
    bounds = np.searchsorted(ts, start + np.arange(25, dtype=np.int64) * _US_PER_HOUR)
    return [(int(bounds[h]), int(bounds[h + 1] - bounds[h])) for h in range(24)]


def _inputs(cfg: Config) -> dict[str, Any]:
    return {"generator": "dailyrec.demo.generator", "seed": cfg.demo.seed,
            "anchor_date": parse_date(cfg.demo.start_date).isoformat(), "params": knobs()}


def _count(col: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(col).as_py() or 0)


def write_day(cfg: Config, cur_date: str, tables: dict[str, pa.Table], timer: Timer | None = None) -> list[str]:
    """Write one simulated day: 24 hourly log partitions, the users and the items snapshots.

    Each partition is replaced atomically (``write_partition``) with its manifest; returns the paths.
    """
    timer = timer or Timer()
    store = open_store(cfg)
    inputs = _inputs(cfg)
    logs = tables["logs"]
    paths = []
    for h, (off, n) in enumerate(_hour_slices(logs, cur_date)):
        part = logs.slice(off, n)
        manifest = make_manifest(STEP, cfg, cur_date, inputs, {"logs": n}, dict(timer.timings), hour=h,
                                 clicks=_count(part.column("click")), conversions=_count(part.column("conversion")))
        paths.append(write_partition(store, "logs", part, cur_date, h, manifest=manifest))
    for ds in ("users", "items"):
        t = tables[ds]
        manifest = make_manifest(STEP, cfg, cur_date, inputs, {ds: t.num_rows}, dict(timer.timings))
        paths.append(write_partition(store, ds, t, cur_date, manifest=manifest))
    return paths


def generate(cfg: Config, start_date: str, days: int) -> dict[str, Any]:
    """Simulate and write ``days`` days from ``start_date``; every partition atomically.

    Re-running a date replaces exactly that date's partitions (24 hours of logs, users, items).
    Returns a summary: dates, events, clicks, conversions, ctr, cvr, users, items, per_day, paths,
    seconds.
    """
    t0 = time.perf_counter()
    store = open_store(cfg)
    dates = date_range(start_date, days)
    per_day: list[dict[str, Any]] = []
    seen_items = np.zeros(0, dtype=np.int64)
    for d in dates:
        timer = Timer()
        with timer.step("simulate"):
            tables = simulate_day(cfg, d, timer)
        logs = tables["logs"]
        with timer.step("write"):
            write_day(cfg, d, tables, timer)
        clicks, convs = _count(logs.column("click")), _count(logs.column("conversion"))
        cat_ = catalog(cfg, d)
        new = int((cat_.items["created"] == cat_.ordinal).sum())
        retired = retired_on(cfg, d)
        seen_items = np.union1d(seen_items, cat_.items["index"])
        day = {"date": d, "events": logs.num_rows, "clicks": clicks, "conversions": convs,
               "ctr": round(clicks / logs.num_rows, 4), "catalog": len(cat_.ids), "new_items": new,
               "retired_items": retired, "seconds": timer.total()}
        per_day.append(day)
        log.info("%s: %d events, %d clicks (ctr %.4f), %d conversions (cvr %.4f), %d users, "
                 "catalog %d items (+%d new, -%d retired) in %.2fs (simulate %.2fs, write %.2fs)",
                 d, logs.num_rows, clicks, clicks / logs.num_rows, convs, convs / max(clicks, 1),
                 tables["users"].num_rows, len(cat_.ids), new, retired, timer.total(),
                 timer.timings["simulate"], timer.timings["write"])
        del tables, logs
    events = sum(p["events"] for p in per_day)
    clicks = sum(p["clicks"] for p in per_day)
    convs = sum(p["conversions"] for p in per_day)
    return {
        "dates": dates,
        "events": events,
        "clicks": clicks,
        "conversions": convs,
        "ctr": round(clicks / events, 4) if events else 0.0,
        "cvr": round(convs / clicks, 4) if clicks else 0.0,
        "users": cfg.demo.n_users,
        "items": len(seen_items),
        "per_day": per_day,
        "paths": {ds: store.path(ds) for ds in ("logs", "users", "items")},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dailyrec.demo.generator", description=__doc__.split("\n")[0])
    ap.add_argument("--start-date", help="first date to write (default: demo.start_date)")
    ap.add_argument("--days", type=int, help="number of days (default: demo.days)")
    ap.add_argument("--events-per-day", type=int, help="sets demo.events_per_day")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set demo.n_users=20000 (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the full summary as JSON")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = parse_set_args(args.sets)
        if args.events_per_day is not None:
            overrides["demo.events_per_day"] = args.events_per_day
        cfg = load_config(overrides=overrides)
        start = parse_date(args.start_date or cfg.demo.start_date).isoformat()
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    days = args.days if args.days is not None else cfg.demo.days
    if days < 1:
        print("error: --days must be >= 1", file=sys.stderr)
        return 2
    s = generate(cfg, start, days)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"generated {s['events']:,} events over {len(s['dates'])} day(s) {s['dates'][0]}..{s['dates'][-1]}: "
              f"{s['clicks']:,} clicks (ctr {s['ctr']:.4f}), {s['conversions']:,} conversions "
              f"(cvr {s['cvr']:.4f}), {s['users']:,} users, {s['items']:,} items; "
              f"{s['seconds']:.1f}s -> {s['paths']['logs'].rsplit('/', 1)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
