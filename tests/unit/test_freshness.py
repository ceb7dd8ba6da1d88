"""Item freshness features (dailyrec.freshness): leak-free by construction, one definition for
training rows (train.parquet of the sample step) and the catalog as of a time (gate, export)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.config import ConfigError, load_config
from dailyrec.freshness import (AGE, US_PER_DAY, US_PER_HOUR, ClickLog, catalog_freshness, day_start_us,
                                is_freshness, item_freshness, lookback_days, row_as_of, window_hours)
from dailyrec.storage import open_store
from tests.helpers import config, make_events, make_items, make_users, write_day

pytestmark = pytest.mark.unit

DAY = "2026-11-02"
T0 = day_start_us(DAY)
NAMES = [AGE, "item_clicks_1h", "item_clicks_3h"]


def _brute(items, times, since, item, as_of, h):
    """Reference count: the clicks of ``item`` in ``[as_of - h, as_of)``, NaN when that starts before ``since``."""
    lo = as_of - h * US_PER_HOUR
    if lo < since:
        return np.nan
    return float(np.sum((items == item) & (times >= lo) & (times < as_of)))


def _log(seed=0, n=400, n_items=5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, n), T0 + rng.integers(0, 24 * US_PER_HOUR, n)


def test_counts_match_the_definition():
    items, times = _log()
    clicks = ClickLog(items, times, since=T0)
    rng = np.random.default_rng(1)
    q_item = rng.integers(0, 5, 300)
    q_time = T0 + rng.integers(0, 24 * US_PER_HOUR, 300)
    q_time[:5] = times[:5]  # rows exactly at a click's time: that click is not counted
    got = item_freshness(NAMES[1:], clicks, q_item, q_time, None)
    for name in NAMES[1:]:
        want = [_brute(items, times, T0, i, t, window_hours(name)) for i, t in zip(q_item, q_time)]
        np.testing.assert_array_equal(got[name], np.asarray(want, np.float32))
    assert np.isnan(got["item_clicks_3h"][q_time < T0 + 3 * US_PER_HOUR]).all()


def test_no_event_at_or_after_t_moves_a_row_at_t():
    """The leak test: clicks at or after a row's time (any item, any number) leave its features as they were."""
    items, times = _log(seed=2)
    rng = np.random.default_rng(3)
    q_item = rng.integers(0, 5, 200)
    q_time = T0 + rng.integers(4 * US_PER_HOUR, 20 * US_PER_HOUR, 200)
    created = np.full(5, (dt.date(2026, 11, 1) - dt.date(1970, 1, 1)).days, np.float64)
    before = item_freshness(NAMES, ClickLog(items, times, T0), q_item, q_time, created[q_item])
    cut = int(np.median(q_time))
    late_items = rng.integers(0, 5, 500)
    late_times = cut + rng.integers(0, 4 * US_PER_HOUR, 500)
    late_times[:50] = cut  # exactly at the cut
    more = ClickLog(np.r_[items, late_items], np.r_[times, late_times], T0)
    after = item_freshness(NAMES, more, q_item, q_time, created[q_item])
    early = q_time <= cut
    assert early.sum() > 50 and (~early).sum() > 50
    for name in NAMES:
        np.testing.assert_array_equal(after[name][early], before[name][early])
    moved = after["item_clicks_1h"][~early] != before["item_clicks_1h"][~early]
    assert moved.any(), "later rows must see the added clicks (the check above is not vacuous)"


def test_age_in_days_from_the_creation_date():
    created = np.array([(dt.date(2026, 11, 1) - dt.date(1970, 1, 1)).days, np.nan,
                        (dt.date(2026, 11, 3) - dt.date(1970, 1, 1)).days])
    as_of = T0 + 6 * US_PER_HOUR
    got = item_freshness([AGE], ClickLog([], [], T0), np.arange(3), as_of, created)[AGE]
    assert got[0] == pytest.approx((as_of - day_start_us("2026-11-01")) / US_PER_DAY)
    assert np.isnan(got[1])
    assert got[2] == 0.0  # created after as_of: clipped


def test_names_and_lookback():
    assert is_freshness("item_clicks_24h") and is_freshness(AGE) and not is_freshness("clicks_7d")
    assert lookback_days([AGE, "item_clicks_3h"]) == 1 and lookback_days(["item_clicks_48h"]) == 2
    assert lookback_days([AGE]) == 0
    with pytest.raises(ValueError, match="outside"):
        window_hours("item_clicks_0h")


def _spec(cfg, names, side="item"):
    spec = [f.model_dump() for f in cfg.features.spec]
    return spec + [{"name": n, "side": side, "kind": "numeric", "dtype": "float", "transform": "log1p"} for n in names]


def test_config_rules(tmp_path):
    cfg = config(tmp_path)
    ok = cfg.with_overrides({"features.spec": _spec(cfg, NAMES)}, source="test")
    assert [f.name for f in ok.features.spec][-3:] == NAMES
    with pytest.raises((ConfigError, ValueError), match="side 'item'"):
        cfg.with_overrides({"features.spec": _spec(cfg, ["item_clicks_3h"], side="user")}, source="test")
    with pytest.raises((ConfigError, ValueError), match="hourly passes"):
        load_config(overrides={"features.spec": _spec(cfg, NAMES), "passes.enabled": True}, environ={})


def _two_days(tmp_path, cfg):
    """Two days of logs on 6 items (one created on DAY) with clicks all day."""
    store = open_store(cfg)
    users = [f"u{i}" for i in range(40)]
    items = make_items([f"i{i}" for i in range(6)])
    created = items.column("item_created_dt").to_pylist()
    created[5] = dt.date(2026, 11, 2)
    items = items.set_column(items.column_names.index("item_created_dt"), "item_created_dt",
                             pa.array(created, pa.date32()))
    rng = np.random.default_rng(5)
    for k, day in enumerate(("2026-11-01", DAY)):
        n = 1500
        ev = make_events(day, rng.choice(users, n), [f"i{i}" for i in rng.integers(0, 6, n)],
                         (rng.random(n) < 0.3).astype(np.int8), seed=k)
        write_day(store, day, ev, make_users(users), items)
    return store


def _raw_clicks(store, days, ids):
    t = pa.concat_tables([pq.read_table(f"{store.partition('logs', d, h)}")
                          for d in days for h in range(24)])
    t = t.filter(pa.compute.equal(t["click"], 1))
    pos = {v: i for i, v in enumerate(ids)}
    items = np.array([pos[v] for v in t["item_id"].to_pylist()])
    times = t["event_time"].cast(pa.int64()).to_numpy()
    return items, times


@pytest.mark.parametrize("mode", ["day_start", "event_time"])
def test_train_rows_and_catalog_follow_the_definition(tmp_path, mode):
    """The sample step's rows carry the features as of their positive's event_time; the catalog as of
    a time (gate, export) the same definition; both against a brute-force count over the raw logs."""
    from tasks.retrieval.features import step as features
    from tasks.retrieval.sample import step as sample

    base = config(tmp_path, **{"sampling.positive_subsample_t": None, "features.min_count": 1,
                               "features.freshness_as_of": mode})
    cfg = base.with_overrides({"features.spec": _spec(base, NAMES)}, source="test")
    store = _two_days(tmp_path, cfg)
    for day in ("2026-11-01", DAY):
        features(day, cfg)
    sample(DAY, cfg)
    stats = store.read_json(f"{store.partition('features', DAY)}/numeric_stats.json")
    assert set(NAMES) <= set(stats) and all(stats[n]["std"] > 0 for n in NAMES)
    catalog = pq.read_table(f"{store.partition('features', DAY)}/catalog.parquet")
    ids = catalog.column("item_id").to_pylist()
    items, times = _raw_clicks(store, ["2026-11-01", DAY], ids)
    since = day_start_us("2026-11-01")
    train = pq.read_table(f"{store.partition('samples', DAY)}/train.parquet").to_pandas()
    assert len(train) > 100
    t_us = train["event_time"].astype("int64").to_numpy() // 1000 if str(train["event_time"].dtype).endswith(
        "ns, UTC]") else train["event_time"].astype("int64").to_numpy()
    it = np.array([ids.index(v) for v in train["item_id"]])
    t_us = row_as_of(t_us, mode)
    assert (t_us == (t_us // US_PER_DAY) * US_PER_DAY).all() == (mode == "day_start")
    for name in NAMES[1:]:
        want = np.array([_brute(items, times, since, i, t, window_hours(name)) for i, t in zip(it, t_us)])
        np.testing.assert_array_equal(train[name].to_numpy(np.float64, na_value=np.nan), want)
    as_of = day_start_us("2026-11-03")
    cat = catalog_freshness(store, cfg, DAY, catalog, as_of)
    want = [_brute(items, times, since, i, as_of, 3) for i in range(len(ids))]
    np.testing.assert_array_equal(cat["item_clicks_3h"].to_numpy(zero_copy_only=False), np.asarray(want))
    ages = cat[AGE].to_pylist()
    assert ages[ids.index("i5")] == 1.0 and ages[ids.index("i0")] == pytest.approx(33.0)


def test_ranking_refuses_freshness_features_by_name(tmp_path):
    from dailyrec.ranking.samples import feature_columns

    base = config(tmp_path)
    cfg = base.with_overrides({"features.spec": _spec(base, ["item_clicks_3h"])}, source="test")
    with pytest.raises(ValueError, match="item_clicks_3h .an item freshness feature"):
        feature_columns(cfg, ["item_id", "item_category", "item_domain", "item_publisher"])
