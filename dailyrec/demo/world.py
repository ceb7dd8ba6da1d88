"""The demo world: users, publishers and placements (:class:`Universe`) and the item catalog of a day.

Everything here comes from ``demo.seed`` and the anchor date ``demo.start_date``, never from the
day simulated: ids and side features are the same on every day. ``demo.n_items`` items are live
on the anchor date; every later day adds ``n_items / ITEM_MEAN_LIFETIME_DAYS`` new items (ids
continue after the initial ones) and every item retires after ``ITEM_MIN_LIFETIME_DAYS`` plus an
exponential lifetime; a share of each day's new items is born during the day
(:mod:`dailyrec.demo.dynamics`, :func:`born_hours`). Results are cached (:func:`clear_caches` forgets them).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dailyrec.config import Config, DemoConfig
from dailyrec.contract import ITEM_SCHEMA, USER_SCHEMA
from dailyrec.dates import parse_date
from dailyrec.demo import strings
from dailyrec.demo.dynamics import HourlyItems, Trends, birth_hours, day_trends, hourly_items
from dailyrec.demo.params import (AFFINITY_EPS, C19_VALUES, C21_VALUES, EPOCH_ORDINAL, FRESH_BOOST,
                                  FRESH_DECAY_DAYS, ITEM_MEAN_LIFETIME_DAYS, ITEM_MIN_LIFETIME_DAYS, N_APPS,
                                  N_DEVICE_MODELS, N_SEGMENTS, N_SITES, NULL_APP, NULL_SITE, TAG_CONTEXT,
                                  TAG_ITEMS, TAG_PUBLISHERS, TAG_USERS, UNKNOWN_DEVICE_ID,
                                  USER_PREF_CONCENTRATION, USER_PREF_FLOOR, ZIPF_EXPONENT)
from dailyrec.demo.sampling import Categorical, RowAlias, rng, zipf_p, zipf_weights
from dailyrec.demo.strings import FixedStrings, hex_strings, ids


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
    user_segment: np.ndarray         # (U,) int32 segment index
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


def _hex_pool(r: np.random.Generator, n: int) -> list[str]:
    return hex_strings(r.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32), 8).to_pylist()


def _publishers(seed: int, n_items: int, C: int) -> dict:
    """Categories and publishers (stream ``TAG_PUBLISHERS``): the Universe fields ``category_*``, ``pub_*``."""
    rp = rng(seed, TAG_PUBLISHERS)
    out = {
        "category_names": ids("cat", np.arange(C), max(2, len(str(C - 1)))),
        "category_click": rp.normal(0, 0.2, C).astype(np.float32),
        "category_buy": rp.normal(0, 0.4, C).astype(np.float32),
        "category_c21": rp.choice(C21_VALUES, C).astype(np.int32),
        "category_mix": rp.dirichlet(np.full(C, 4.0)),
    }
    n_pub = max(5, n_items // 20)
    out["pub_category"] = rp.choice(C, n_pub, p=out["category_mix"]).astype(np.int32)
    out["pub_weights"] = zipf_weights(rp, n_pub, 0.8)
    count = rp.integers(1, 5, n_pub).astype(np.int32)
    out["pub_domain_count"] = count
    out["pub_domain_start"] = (np.cumsum(count) - count).astype(np.int32)
    return out


def _users(seed: int, U: int, C: int) -> dict:
    """Users (stream ``TAG_USERS``): demographics, category preference, propensities, device."""
    ru = rng(seed, TAG_USERS)
    gender = ru.choice(3, U, p=[0.48, 0.47, 0.05])
    age = ru.choice(7, U, p=[0.08, 0.22, 0.24, 0.18, 0.13, 0.09, 0.06]).astype(np.int32)
    seg_logits = ru.normal(0, 1.0, (3, 1, N_SEGMENTS)) + ru.normal(0, 1.0, (1, 7, N_SEGMENTS))
    segment = (seg_logits[gender, age] + ru.gumbel(size=(U, N_SEGMENTS))).argmax(axis=1)
    seg_profile = ru.dirichlet(np.full(C, 0.4), N_SEGMENTS)
    base = 0.75 * seg_profile[segment] + 0.25 / C
    g = ru.gamma(USER_PREF_CONCENTRATION * base) + 1e-12
    pref = g / g.sum(axis=1, keepdims=True)
    pref = ((1 - USER_PREF_FLOOR) * pref + USER_PREF_FLOOR / C).astype(np.float32)
    out = {"pref": pref, "log_affinity": np.log(C * pref + AFFINITY_EPS).astype(np.float32).ravel(),
           "activity": Categorical(ru.lognormal(0, 1.0, U)), "user_segment": segment.astype(np.int32),
           "user_click": ru.normal(0, 0.45, U).astype(np.float32),
           "user_buy": ru.normal(0, 0.6, U).astype(np.float32),
           "user_app": ru.beta(0.4, 0.6, U).astype(np.float32)}
    device_type = ru.choice(np.array([1, 0, 4, 5], dtype=np.int32), U, p=[0.92, 0.055, 0.02, 0.005])
    out["user_device_type"] = device_type
    out["user_c1"] = np.select([device_type == 0, device_type >= 4], [1002, 1010], 1005).astype(np.int32)
    out["user_conn"] = ru.choice(np.array([0, 2, 3, 5], dtype=np.int32), U, p=[0.86, 0.08, 0.055, 0.005])
    out["user_c20"] = np.where(ru.random(U) < 0.47, -1, 100000 + ru.integers(0, 250, U) * 3).astype(np.int32)
    models = _hex_pool(ru, N_DEVICE_MODELS)
    model_idx = ru.choice(N_DEVICE_MODELS, U, p=zipf_p(ru, N_DEVICE_MODELS, 1.1))
    out["user_device_model"] = FixedStrings(models).subset(model_idx)
    dev_ids = _hex_pool(ru, U)
    unknown = ru.random(U) < 0.6
    out["user_device_id"] = FixedStrings([UNKNOWN_DEVICE_ID if k else v for v, k in zip(dev_ids, unknown.tolist())])
    out["user_ips"] = FixedStrings(_hex_pool(ru, 2 * U))

    user_ids = ids("u", np.arange(U), max(5, len(str(U - 1))))
    out["user_ids"] = user_ids
    out["users_table"] = pa.Table.from_arrays(
        [user_ids.array(), pa.array(["F", "M", "U"]).take(pa.array(gender)), pa.array(age, pa.int32()),
         ids("seg", np.arange(N_SEGMENTS), 2).take(pa.array(segment))], schema=USER_SCHEMA)
    return out


def _placements(seed: int) -> dict:
    """Sites and apps with Zipf traffic and Avazu-style hashed ids (stream ``TAG_CONTEXT``)."""
    rc = rng(seed, TAG_CONTEXT)

    def placements(n: int, null: tuple[str, str, str]) -> tuple[tuple[FixedStrings, ...], Categorical]:
        pool = _hex_pool(rc, n)
        domains = _hex_pool(rc, max(2, n * 3 // 4))
        cats = _hex_pool(rc, 20)
        dom = [domains[i] for i in rc.integers(0, len(domains), n)]
        cat = [cats[i] for i in rc.choice(20, n, p=zipf_p(rc, 20, 1.0))]
        cols = (FixedStrings(pool + [null[0]]), FixedStrings(dom + [null[1]]), FixedStrings(cat + [null[2]]))
        return cols, Categorical(zipf_weights(rc, n, 1.2))

    site_cols, site_dist = placements(N_SITES, NULL_SITE)
    app_cols, app_dist = placements(N_APPS, NULL_APP)
    return {"site_cols": site_cols, "site_dist": site_dist, "app_cols": app_cols, "app_dist": app_dist}


@functools.lru_cache(maxsize=4)
def _universe_cached(seed: int, anchor: str, n_users: int, n_items: int, n_categories: int) -> Universe:
    users = _users(seed, n_users, n_categories)
    return Universe(
        seed=seed, anchor=parse_date(anchor), n_users=n_users, n_items=n_items, n_categories=n_categories,
        new_items_per_day=max(1, round(n_items / ITEM_MEAN_LIFETIME_DAYS)),
        item_id_width=max(6, len(str(n_items - 1)) + 2),
        pref_alias=RowAlias(users["pref"]), **users,
        **_publishers(seed, n_items, n_categories), **_placements(seed),
    )


def universe(demo: DemoConfig) -> Universe:
    """The users, publishers and placements of ``demo`` (cached; independent of the date)."""
    return _universe_cached(demo.seed, parse_date(demo.start_date).isoformat(), demo.n_users,
                            demo.n_items, demo.n_categories)


# ---- items: blocks of items created on the same day -----------------------------------------
@functools.lru_cache(maxsize=8192)
def _item_block(uni: Universe, block: int) -> dict[str, np.ndarray]:
    """Items of block ``block``: 0 = the catalog live on the anchor date, j >= 1 = created anchor + j."""
    r = rng(uni.seed, TAG_ITEMS, block)
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
        "popularity": zipf_weights(r, n, ZIPF_EXPONENT, 1.0 / uni.n_items),
        "quality": r.normal(0, 0.35, n).astype(np.float32),
        "buy": r.normal(0, 0.5, n).astype(np.float32),
        "C14": c14,
        "C17": (1000 + c14 // 8).astype(np.int32),
        "C19": r.choice(C19_VALUES, n).astype(np.int32),
        "C21": uni.category_c21[cat],
        "birth": birth_hours(uni.seed, block, n),
    }


@dataclass(eq=False)
class Catalog:
    """The items live on one day, with the samplers of that day."""

    ordinal: int
    items: dict[str, np.ndarray]     # per catalog row
    ids: FixedStrings
    table: pa.Table                  # the items/ snapshot (ITEM_SCHEMA)
    hourly: HourlyItems              # per hour: categories by popularity, the day's new items (births, bursts)
    in_category: RowAlias            # per category, items created before the day: slot -> catalog row via slot_item
    slot_item: np.ndarray            # (C * K,) catalog row of each slot (-1 = padding)


def _items_table(uni: Universe, items: dict[str, np.ndarray], item_ids: FixedStrings) -> pa.Table:
    """The ``items/`` snapshot (ITEM_SCHEMA) of the catalog rows ``items``."""
    pub_names = ids("pub", np.arange(len(uni.pub_weights)), 4)
    dom_pub = np.repeat(np.arange(len(uni.pub_weights)), uni.pub_domain_count)
    dom_k = np.arange(len(dom_pub)) - uni.pub_domain_start[dom_pub]
    dom_names = pa.array([f"p{p:04d}-{k}.example.com" for p, k in zip(dom_pub.tolist(), dom_k.tolist())])
    return pa.Table.from_arrays(
        [item_ids.array(), uni.category_names.take(items["category"]), dom_names.take(pa.array(items["domain"])),
         pub_names.take(items["publisher"]),
         pa.array(items["created"] - EPOCH_ORDINAL, pa.int32()).cast(pa.date32())],
        schema=ITEM_SCHEMA)


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
    new = items["created"] == ordinal
    hourly = hourly_items(weight, cat, new, items["birth"], C)
    weight = np.where(new, 0.0, weight)              # the day's new items are drawn by the hourly tables
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
    item_ids = ids("i", items["index"], uni.item_id_width)
    return Catalog(
        ordinal=ordinal, items=items, ids=item_ids, table=_items_table(uni, items, item_ids), hourly=hourly,
        in_category=RowAlias(padded_w.reshape(C, K)), slot_item=slot_item,
    )


def clear_caches() -> None:
    """Forget the cached universes, item blocks, catalogs and trends (tests; memory)."""
    _catalog_cached.cache_clear()
    _trends_cached.cache_clear()
    _item_block.cache_clear()
    _universe_cached.cache_clear()
    strings.offsets.cache_clear()


def catalog(cfg: Config, cur_date: str) -> Catalog:
    """The items live on ``cur_date`` (created on or before it, retiring after it).

    Raises ``ValueError`` when no item is live that day or the item ids outgrow their width.
    """
    return _catalog_cached(universe(cfg.demo), parse_date(cur_date).toordinal())


def retired_on(cfg: Config, cur_date: str) -> int:
    """How many items were live the day before ``cur_date`` and are not any more."""
    uni = universe(cfg.demo)
    o = parse_date(cur_date).toordinal()
    blocks = [_item_block(uni, b) for b in range(max(0, o - uni.anchor.toordinal()) + 1)]
    return int(sum(((b["retire"] == o) & (b["created"] < o)).sum() for b in blocks))


def born_hours(cfg: Config, cur_date: str) -> dict[str, int]:
    """The items created on ``cur_date`` (``item_created_dt`` == that day) -> their birth hour (0..23).

    An item is never impressed before its birth hour and bursts after it (docs/demo-data.md); hour 0
    for the items born at midnight (and for every new item of the anchor date or earlier). Lets a
    benchmark tell the items born during the day from the others without a contract change.
    """
    cat_ = catalog(cfg, cur_date)
    rows = np.flatnonzero(cat_.items["created"] == cat_.ordinal)
    return dict(zip(cat_.ids.subset(rows).array().to_pylist(), cat_.items["birth"][rows].tolist()))


@functools.lru_cache(maxsize=8)
def _trends_cached(uni: Universe, ordinal: int) -> Trends:
    return day_trends(uni.seed, ordinal, N_SEGMENTS, uni.category_mix)


def trends(cfg: Config, cur_date: str) -> Trends:
    """The hourly interest drift of ``cur_date``: per segment, the trending category of each hour
    (``Trends.intensity`` (24, N_SEGMENTS, n_categories) float32, 0..1)."""
    return _trends_cached(universe(cfg.demo), parse_date(cur_date).toordinal())
