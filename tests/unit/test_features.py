"""Feature preparation (tasks/retrieval/features.py + sql/*.sql) on small synthetic partitions
(built with the shared builders of tests/helpers.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dailyrec.dates import date_range
from dailyrec.contract import ITEM_SCHEMA, write_partition
from dailyrec.errors import ContractError
from dailyrec.storage import open_store
from tests.helpers import (DAY0, config, make_events, make_items, make_users, random_day, read, validate_day,
                           write_day, write_logs)


# ---- counters and catalog -----------------------------------------------------------------
def test_counters_and_catalog_match_a_hand_computation(tmp_path):
    from tasks.retrieval.features import step as build_features

    cfg = config(tmp_path, **{"features.counter_windows_days": [1, 3], "sampling.window_days": 2})
    store = open_store(cfg)
    days = date_range(DAY0, 4)
    all_items = [f"i{i}" for i in range(30)]  # i25..i29 never occur in the logs
    frames = []
    for k, day in enumerate(days):
        ev = random_day(day, 400, n_users=40, n_items=25, seed=k)
        write_day(store, day, ev, make_users([f"u{u}" for u in range(45)]), make_items(all_items))
        frames.append(ev.to_pandas().assign(dt=pd.Timestamp(day).date()))
    cur = days[-1]
    res = build_features(cur, cfg)
    assert res["days"] == days[1:]  # max(3, 2) days
    out = store.partition("features", cur)
    logs = pd.concat(frames)

    def expected(key: str) -> pd.DataFrame:
        res = None
        for w in (1, 3):
            lo = (pd.Timestamp(cur) - pd.Timedelta(days=w - 1)).date()
            win = logs[logs.dt >= lo]
            g = win.groupby(key).agg(imp=("click", "size"), clk=("click", "sum"))
            p = g.clk.sum() / g.imp.sum()
            g[f"impressions_{w}d"] = g.imp
            g[f"clicks_{w}d"] = g.clk
            g[f"ctr_{w}d"] = (g.clk + cfg.features.ctr_prior_strength * p) / (g.imp + cfg.features.ctr_prior_strength)
            g = g.drop(columns=["imp", "clk"])
            res = g if res is None else res.join(g, how="outer")
        win3 = logs[logs.dt >= (pd.Timestamp(cur) - pd.Timedelta(days=2)).date()]
        res["last_seen_dt"] = win3.groupby(key).dt.max()
        res["recency_days"] = [(pd.Timestamp(cur).date() - d).days for d in res.last_seen_dt]
        for c in res.columns:
            if c.startswith(("impressions_", "clicks_")):
                res[c] = res[c].fillna(0).astype("int64")
        return res

    for key, fname in (("item_id", "item_counters.parquet"), ("user_id", "user_counters.parquet")):
        got = read(f"{out}/{fname}").set_index(key)
        exp = expected(key)
        assert list(got.index) == sorted(exp.index)
        exp = exp.loc[got.index]
        for c in exp.columns:
            if c.startswith("ctr_"):
                # an id absent from the 1-day window: smoothed CTR of zero impressions = prior
                e = exp[c].fillna(exp[c.replace("ctr", "clicks")].sum() / exp[c.replace("ctr", "impressions")].sum())
                np.testing.assert_allclose(got[c].to_numpy(), e.to_numpy(), rtol=1e-9, err_msg=c)
            else:
                assert list(got[c]) == list(exp[c]), (key, c)

    cat = read(f"{out}/catalog.parquet")
    assert list(cat.item_id) == sorted(all_items)  # every snapshot item, seen or not
    assert set(ITEM_SCHEMA.names) <= set(cat.columns)
    unseen = cat[cat.item_id.isin([f"i{i}" for i in range(25, 30)])]
    assert (unseen.impressions_3d == 0).all() and (unseen.clicks_1d == 0).all()
    assert unseen.last_seen_dt.isna().all()
    ic = read(f"{out}/item_counters.parquet").set_index("item_id")
    seen = cat.set_index("item_id").loc[ic.index]
    assert (seen.impressions_3d.to_numpy() == ic.impressions_3d.to_numpy()).all()
    assert res["rows"]["catalog"] == 30

    man = json.loads((tmp_path / "data" / "features" / f"dt={cur}" / "_manifest.json").read_text())
    assert man["step"] == "features" and man["rows"]["catalog"] == 30
    assert sorted(man["inputs"]["logs"]) == days[1:] and man["catalog_unseen_items"] == 5
    assert {"inputs", "item_counters", "user_counters", "catalog", "vocabularies"} <= set(man["timings_s"])


def test_missing_day_fails_naming_the_partition(tmp_path):
    from tasks.retrieval.features import step as build_features

    cfg = config(tmp_path)
    store = open_store(cfg)
    write_day(store, DAY0, random_day(DAY0, 50, 5, 5, 0), make_users(["u0"]), make_items(["i0"]))
    with pytest.raises(FileNotFoundError, match=r"logs/dt=2026-11-02"):
        build_features("2026-11-02", cfg)
    # a day with logs but no users snapshot: its validation names the snapshot partition, and
    # features refuses the day with that reason
    write_logs(store, "2026-11-02", random_day("2026-11-02", 50, 5, 5, 1))
    with pytest.raises(FileNotFoundError, match=r"users/dt=2026-11-02"):
        validate_day(store, "2026-11-02")
    with pytest.raises(ContractError, match=r"2026-11-02 failed validation: .*users/dt=2026-11-02"):
        build_features("2026-11-02", cfg)


def test_failure_leaves_the_previous_output(tmp_path):
    from tasks.retrieval.features import step as build_features

    cfg = config(tmp_path)
    store = open_store(cfg)
    write_day(store, DAY0, random_day(DAY0, 80, 8, 6, 0), make_users([f"u{i}" for i in range(8)]),
              make_items([f"i{i}" for i in range(6)]))
    res = build_features(DAY0, cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "data" / "features" / f"dt={DAY0}").iterdir()}
    # break the items snapshot: a duplicate id violates the contract -> the day fails validation,
    # and the step refuses it
    write_partition(store, "items", make_items(["i0", "i0"]), DAY0)
    with pytest.raises(ContractError, match="duplicate"):
        validate_day(store, DAY0)
    with pytest.raises(ContractError, match="duplicate"):
        build_features(DAY0, cfg)
    after = {p.name: p.read_bytes() for p in (tmp_path / "data" / "features" / f"dt={DAY0}").iterdir()}
    assert after == before and res["rows"]["catalog"] == 6
    leftovers = [p.name for p in (tmp_path / "data" / "features").iterdir() if p.name.startswith(".")]
    assert leftovers == []


# ---- vocabularies -------------------------------------------------------------------------
def test_vocab_min_count_and_eviction_over_three_chained_days(tmp_path):
    from tasks.retrieval.features import step as build_features

    cfg = config(tmp_path, **{"features.min_count": 2, "features.evict_after_days": 1,
                              "sampling.window_days": 1, "features.counter_windows_days": [1]})
    store = open_store(cfg)
    d1, d2, d3 = date_range(DAY0, 3)
    users = make_users(["a", "b", "c", "d"])
    items = make_items(["x", "y", "z"])
    # day 1: a twice (admitted), b once (below min_count)
    write_day(store, d1, make_events(d1, ["a", "a", "b"], ["x", "x", "y"], [1, 0, 0]), users, items)
    # day 2: only c twice; a is unseen for 1 day (kept), b once again (still below min_count)
    write_day(store, d2, make_events(d2, ["c", "c", "b"], ["y", "y", "x"], [0, 0, 0]), users, items)
    # day 3: c once (kept: last seen 1 day ago), d twice (admitted); a unseen 2 days > 1 (evicted)
    write_day(store, d3, make_events(d3, ["c", "d", "d"], ["x", "x", "z"], [0, 1, 0]), users, items)

    vocab = {}
    for d in (d1, d2, d3):
        res = build_features(d, cfg)
        vocab[d] = json.loads(open(res["vocabularies"]).read())
    assert vocab[d1]["user_id"] == ["a"]
    assert vocab[d2]["user_id"] == ["a", "c"]
    assert vocab[d3]["user_id"] == ["c", "d"]
    assert vocab[d1]["item_id"] == ["x"]
    assert vocab[d2]["item_id"] == ["x", "y"]          # y admitted (2), x seen once but kept
    assert vocab[d3]["item_id"] == ["x", "y"]          # x admitted (3); y last seen d2, kept; z once
    state = read(store.partition("features", d3) + "/vocab_state.parquet")
    c = state[(state.feature == "user_id") & (state.id == "c")].iloc[0]
    assert c.total_count == 3 and str(c.last_seen_dt) == d3  # 2 on d2 + 1 on d3, no double count
    x = state[(state.feature == "item_id") & (state.id == "x")].iloc[0]
    assert x.total_count == 2 + 1 + 2
    # without the previous state (no chaining) day 3 only has its own admissions
    store.delete_dir(store.partition("features", d2))
    res = build_features(d3, cfg)
    assert json.loads(open(res["vocabularies"]).read())["user_id"] == ["d"]


# ---- numeric feature statistics -----------------------------------------------------------
NUMERIC_SPEC = [
    {"name": "user_id", "side": "user", "kind": "vocab", "buckets": 100, "embedding_dim": 4},
    {"name": "user_age_bucket", "side": "user", "kind": "numeric", "dtype": "float", "missing_indicator": True},
    {"name": "banner_pos", "side": "context", "kind": "numeric", "dtype": "float", "clip": 3.0},
    {"name": "item_id", "side": "item", "kind": "vocab", "buckets": 100, "embedding_dim": 4},
    {"name": "clicks_3d", "side": "item", "kind": "numeric", "dtype": "float", "transform": "log1p"},
]


def test_numeric_stats_are_computed_over_the_training_window(tmp_path):
    """numeric_stats.json (sql/numeric_stats.sql) holds, per numeric feature, the mean and the
    population std of its (log1p-transformed) value over the impressions of the training window
    (sampling.window_days up to cur_date, without the held-out last hours), equal to the in-memory
    formula of models.features; values of users missing from the snapshot count as missing; a
    re-run writes the same bytes."""
    from models.features import numeric_stats_from_arrays
    from tasks.retrieval.features import step as build_features

    cfg = config(tmp_path, **{"features.counter_windows_days": [1, 3], "sampling.window_days": 2,
                              "training.holdout_hours": 3, "features.spec": NUMERIC_SPEC})
    store = open_store(cfg)
    days = date_range(DAY0, 3)
    frames = []
    for k, day in enumerate(days):
        ev = random_day(day, 500, n_users=40, n_items=25, seed=10 + k)
        # u35..u39 are not in the users snapshot: their user_age_bucket is missing
        write_day(store, day, ev, make_users([f"u{u}" for u in range(35)]), make_items([f"i{i}" for i in range(25)]))
        frames.append(ev.to_pandas().assign(dt=day))
    cur = days[-1]
    res = build_features(cur, cfg)
    out = store.partition("features", cur)
    got = json.loads((tmp_path / "data" / "features" / f"dt={cur}" / "numeric_stats.json").read_text())
    assert res["numeric_stats"].endswith("numeric_stats.json") and sorted(got) == ["banner_pos", "clicks_3d",
                                                                                 "user_age_bucket"]

    logs = pd.concat(frames)
    hour = pd.to_datetime(logs.event_time).dt.hour
    win = logs[logs.dt.isin(days[1:]) & ~((logs.dt == cur) & (hour >= 21))]
    users = make_users([f"u{u}" for u in range(35)]).to_pandas().set_index("user_id")
    cat = read(f"{out}/catalog.parquet").set_index("item_id")
    arrays = {"banner_pos": win.banner_pos.to_numpy(np.float64),
              "user_age_bucket": win.user_id.map(users.user_age_bucket).to_numpy(np.float64),
              "clicks_3d": win.item_id.map(cat.clicks_3d).to_numpy(np.float64)}
    want = numeric_stats_from_arrays(arrays, NUMERIC_SPEC)
    for name, w in want.items():
        assert got[name]["rows"] == len(win), name
        assert (got[name]["count"], got[name]["missing"]) == (w["count"], w["missing"]), name
        np.testing.assert_allclose([got[name]["mean"], got[name]["std"]], [w["mean"], w["std"]], rtol=1e-9,
                                   err_msg=name)
    assert got["user_age_bucket"]["missing"] > 0 and got["clicks_3d"]["transform"] == "log1p"
    before = (tmp_path / "data" / "features" / f"dt={cur}" / "numeric_stats.json").read_bytes()
    build_features(cur, cfg)
    assert (tmp_path / "data" / "features" / f"dt={cur}" / "numeric_stats.json").read_bytes() == before


def test_numeric_feature_without_a_source_column_is_named(tmp_path):
    from tasks.retrieval.features import step as build_features

    spec = [*NUMERIC_SPEC[:2], {"name": "price", "side": "item", "kind": "numeric", "dtype": "float"}]
    cfg = config(tmp_path, **{"sampling.window_days": 1, "features.spec": spec})
    store = open_store(cfg)
    write_day(store, DAY0, random_day(DAY0, 200, 20, 10, seed=1), make_users([f"u{u}" for u in range(20)]),
              make_items([f"i{i}" for i in range(10)]))
    with pytest.raises(ValueError, match="numeric feature 'price' \\(side item\\) is not a catalog column"):
        build_features(DAY0, cfg)
