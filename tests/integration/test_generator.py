"""The demo data generator (dailyrec/demo/): contract, determinism, realism, idempotence."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dailyrec.config import REPO_ROOT, load_config
from dailyrec.contract import ITEM_SCHEMA, LOG_SCHEMA, USER_SCHEMA, read_partition, validate_partition
from dailyrec.storage import open_store
from dailyrec import cli
from dailyrec.demo import generator as g, impressions, params, sampling, world

START = "2026-11-01"
DAYS = 3
SMALL = {"demo.events_per_day": 40_000, "demo.n_users": 1_000, "demo.n_items": 400,
         "demo.n_categories": 12, "demo.seed": 5, "demo.start_date": START}


def small_cfg(root, **extra):
    return load_config(overrides={"storage.data_root": str(root), **SMALL, **extra}, environ={})


def table_digest(t: pa.Table) -> str:
    h = hashlib.sha256()
    for batch in t.to_batches():
        for col in batch.columns:
            for buf in col.buffers():
                if buf is not None:
                    h.update(buf)
    return h.hexdigest()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cfg = small_cfg(root)
    summary = g.generate(cfg, START, DAYS)
    store = open_store(cfg)
    days = {d: {ds: read_partition(store, ds, d) for ds in ("logs", "users", "items")} for d in summary["dates"]}
    return cfg, store, summary, days


def with_category(day: dict[str, pa.Table]) -> dict[str, np.ndarray]:
    """Per-event numpy columns plus the item's category, joined from that day's items snapshot."""
    logs, items = day["logs"], day["items"]
    pos = pc.index_in(logs["item_id"], value_set=items["item_id"]).to_numpy(zero_copy_only=False)
    assert not np.isnan(pos.astype(float)).any(), "a logged item is not in that day's catalog"
    cats = np.asarray(items["item_category"].to_pylist())
    return {
        "user": logs["user_id"].to_numpy(zero_copy_only=False),
        "item": logs["item_id"].to_numpy(zero_copy_only=False),
        "cat": cats[pos.astype(int)],
        "click": logs["click"].to_numpy(),
        "conversion": logs["conversion"].to_numpy(),
        "pos": logs["banner_pos"].to_numpy(),
        "hour": pc.hour(logs["event_time"]).to_numpy(),
    }


# ---- determinism ---------------------------------------------------------------------------------
def test_same_seed_and_date_give_identical_tables(tmp_path):
    cfg = small_cfg(tmp_path)
    a = impressions.simulate_day(cfg, "2026-11-02")
    world.clear_caches()
    b = impressions.simulate_day(cfg, "2026-11-02")
    for k in ("logs", "users", "items"):
        assert a[k].equals(b[k]), k
    assert set(a) == {"logs", "users", "items"}
    assert a["logs"].schema.equals(LOG_SCHEMA)
    assert a["users"].schema.equals(USER_SCHEMA)
    assert a["items"].schema.equals(ITEM_SCHEMA)
    assert a["logs"].num_rows == SMALL["demo.events_per_day"]


def test_other_date_or_seed_differs(tmp_path):
    cfg = small_cfg(tmp_path)
    a = impressions.simulate_day(cfg, "2026-11-02")["logs"]
    b = impressions.simulate_day(cfg, "2026-11-03")["logs"]
    c = impressions.simulate_day(small_cfg(tmp_path, **{"demo.seed": 6}), "2026-11-02")["logs"]
    assert not a.equals(b) and not a.equals(c)
    assert not np.array_equal(a["user_id"].to_numpy(zero_copy_only=False), b["user_id"].to_numpy(zero_copy_only=False))
    # request ids are unique within and across days
    ids = pa.concat_arrays([a["request_id"].combine_chunks(), b["request_id"].combine_chunks()])
    assert pc.count_distinct(ids).as_py() == len(ids)


def test_output_does_not_depend_on_threads_or_scheduling(tmp_path, monkeypatch):
    cfg = small_cfg(tmp_path)
    monkeypatch.setattr(impressions, "CHUNK", 3000)           # 14 chunks
    monkeypatch.setattr(impressions, "THREADS", 1)
    a = impressions.simulate_day(cfg, "2026-11-02")["logs"]
    monkeypatch.setattr(impressions, "THREADS", 3)
    b = impressions.simulate_day(cfg, "2026-11-02")["logs"]
    assert a.equals(b)


def test_deterministic_across_processes(tmp_path):
    cfg = small_cfg(tmp_path)
    here = table_digest(impressions.simulate_day(cfg, "2026-11-02")["logs"])
    code = (
        "import json, sys; from dailyrec.config import load_config; from dailyrec.demo import impressions;"
        "from tests.integration.test_generator import table_digest;"
        "cfg = load_config(overrides=json.loads(sys.argv[1]), environ={});"
        "print(table_digest(impressions.simulate_day(cfg, '2026-11-02')['logs']))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps({"storage.data_root": str(tmp_path), **SMALL})],
                         capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == here


# ---- the contract --------------------------------------------------------------------------------
def test_every_written_partition_passes_the_contract(generated):
    cfg, store, summary, _ = generated
    assert summary["dates"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    total = 0
    for d in summary["dates"]:
        for h in range(24):
            rep = validate_partition(store, "logs", d, h, min_rows=1)
            total += rep.rows
            assert store.exists(f"{store.partition('logs', d, h)}/_SUCCESS")
            man = store.read_json(f"{store.partition('logs', d, h)}/_manifest.json")
            assert man["step"] == "generate_demo" and man["rows"]["logs"] == rep.rows and man["hour"] == h
            assert man["clicks"] == rep.stats["clicks"]
        assert validate_partition(store, "users", d).rows == cfg.demo.n_users
        assert validate_partition(store, "items", d).rows == summary["per_day"][summary["dates"].index(d)]["catalog"]
    assert total == summary["events"] == DAYS * cfg.demo.events_per_day
    assert set(summary) >= {"dates", "events", "clicks", "conversions", "ctr", "users", "items", "paths", "seconds"}


def test_events_are_time_ordered_and_hours_follow_a_diurnal_curve(generated):
    _, _, _, days = generated
    logs = days["2026-11-01"]["logs"]
    t = logs["event_time"].combine_chunks().cast(pa.int64()).to_numpy()
    assert (np.diff(t) >= 0).all()
    per_hour = np.bincount(pc.hour(logs["event_time"]).to_numpy(), minlength=24)
    assert per_hour.min() > 0
    assert per_hour[18:23].mean() > 2.5 * per_hour[2:6].mean()   # evening peak, night trough


# ---- realism -------------------------------------------------------------------------------------
def test_ctr_and_conversion_rates(generated):
    _, _, summary, days = generated
    assert 0.12 <= summary["ctr"] <= 0.22
    assert 0.03 <= summary["cvr"] <= 0.10
    for day in summary["per_day"]:
        assert 0.12 <= day["ctr"] <= 0.22
    for d in days.values():
        logs = d["logs"]
        conv_no_click = pc.sum(pc.and_(pc.equal(logs["conversion"], 1), pc.equal(logs["click"], 0))).as_py()
        assert conv_no_click == 0
        assert pc.sum(logs["conversion"]).as_py() > 0


def test_position_and_hour_effects(generated):
    _, _, _, days = generated
    ev = [with_category(d) for d in days.values()]
    click = np.concatenate([e["click"] for e in ev])
    pos = np.concatenate([e["pos"] for e in ev])
    hour = np.concatenate([e["hour"] for e in ev])
    assert set(np.unique(pos)) <= set(range(8)) and (pos <= 1).mean() > 0.9
    assert click[pos == 1].mean() > click[pos >= 2].mean() + 0.02
    evening, morning = click[(hour >= 18) & (hour <= 23)].mean(), click[(hour >= 6) & (hour <= 11)].mean()
    assert evening > morning + 0.01


def test_item_popularity_is_skewed(generated):
    _, _, _, days = generated
    for d in days.values():
        items = d["logs"]["item_id"].combine_chunks()
        counts = np.sort(pc.value_counts(items).field("counts").to_numpy())[::-1]
        n_catalog = d["items"].num_rows
        top = counts[: n_catalog // 10].sum() / counts.sum()
        assert top > 0.40, f"top 10% of items get {top:.2f} of impressions"
        assert counts[0] > 20 * np.median(counts)


def test_clicks_are_personal(generated):
    """A user's favourite category on day 1 predicts their day-2 clicks far above the global mix."""
    cfg, _, _, days = generated
    d1, d2 = with_category(days["2026-11-01"]), with_category(days["2026-11-02"])
    n_users, n_cats = cfg.demo.n_users, cfg.demo.n_categories

    def codes(e):
        return (np.char.lstrip(e["user"].astype(str), "u").astype(int),
                np.char.lstrip(e["cat"].astype(str), "cat").astype(int))

    u1, c1 = codes(d1)
    u2, c2 = codes(d2)
    k1 = d1["click"] == 1
    counts = np.bincount(u1[k1] * n_cats + c1[k1], minlength=n_users * n_cats).reshape(n_users, n_cats)
    known = counts.sum(axis=1) > 0
    favourite = counts.argmax(axis=1)
    k2 = (d2["click"] == 1) & known[u2]
    fav2 = favourite[u2[k2]]
    hit = (c2[k2] == fav2).mean()
    global_share = np.bincount(c2[k2], minlength=n_cats) / k2.sum()
    baseline = global_share[fav2].mean()
    assert hit > 3 * baseline and hit > 0.3, (hit, baseline)
    # clicks depend on the affinity, not only on exposure: CTR inside the favourite category is far higher
    seen = known[u2]
    in_fav = c2[seen] == favourite[u2[seen]]
    ctr_fav, ctr_other = d2["click"][seen][in_fav].mean(), d2["click"][seen][~in_fav].mean()
    assert ctr_fav > 2 * ctr_other, (ctr_fav, ctr_other)


def test_latent_preferences_drive_clicks(generated):
    cfg, _, _, days = generated
    uni = world.universe(cfg.demo)
    d = with_category(days["2026-11-01"])
    user_idx = np.char.lstrip(d["user"].astype(str), "u").astype(int)
    cat_idx = np.char.lstrip(d["cat"].astype(str), "cat").astype(int)
    top3 = np.argsort(-uni.pref, axis=1)[:, :3]
    in_top3 = (top3[user_idx] == cat_idx[:, None]).any(axis=1)
    clicked = d["click"] == 1
    share_clicks = in_top3[clicked].mean()
    # the share those same categories would get from the global click mix
    glob = np.bincount(cat_idx[clicked], minlength=cfg.demo.n_categories) / clicked.sum()
    baseline = glob[top3[user_idx[clicked]]].sum(axis=1).mean()
    assert share_clicks > 0.6 and share_clicks > 2 * baseline, (share_clicks, baseline)


# ---- universe and catalog over days ----------------------------------------------------------------
def test_users_and_items_are_stable_across_days(generated):
    _, _, _, days = generated
    u1, u3 = days["2026-11-01"]["users"], days["2026-11-03"]["users"]
    assert u1.equals(u3)
    assert u1["user_id"][0].as_py() == "u00000" and u1["user_id"][42].as_py() == "u00042"
    i1, i2 = days["2026-11-01"]["items"].to_pylist(), days["2026-11-02"]["items"].to_pylist()
    by_id = {r["item_id"]: r for r in i1}
    common = [r for r in i2 if r["item_id"] in by_id]
    assert len(common) > 0.8 * len(i2)
    assert all(by_id[r["item_id"]] == r for r in common)
    assert all(len(r["item_id"]) == 7 and r["item_id"][0] == "i" for r in i1)
    # each user keeps one device model across events and days
    logs = pa.concat_tables([d["logs"].select(["user_id", "device_model"]) for d in days.values()])
    pairs = logs.group_by("user_id").aggregate([("device_model", "count_distinct")])
    assert pc.max(pairs["device_model_count_distinct"]).as_py() == 1


def test_catalog_changes_over_days(generated):
    _, _, summary, days = generated
    for prev, cur in zip(summary["dates"], summary["dates"][1:]):
        before = set(days[prev]["items"]["item_id"].to_pylist())
        items = days[cur]["items"]
        after = set(items["item_id"].to_pylist())
        new, retired = after - before, before - after
        assert new and retired
        created = dict(zip(items["item_id"].to_pylist(), items["item_created_dt"].to_pylist()))
        assert all(created[i] == dt.date.fromisoformat(cur) for i in new)
        assert all(c <= dt.date.fromisoformat(cur) for c in created.values())
        # new items are impressed (and clicked) on their first day; retired items are not logged any more
        logged = set(pc.unique(days[cur]["logs"]["item_id"]).to_pylist())
        assert len(new & logged) > 0.8 * len(new)
        assert not (retired & logged)
        assert logged <= after
        day = summary["per_day"][summary["dates"].index(cur)]
        assert day["new_items"] == len(new) and day["retired_items"] == len(retired)


def test_avazu_style_columns_are_filled(generated):
    _, _, _, days = generated
    logs = days["2026-11-01"]["logs"]
    for c in ("C1", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21", "device_type", "device_conn_type"):
        assert logs[c].type == pa.int32() and logs[c].null_count == 0
    is_app = pc.equal(logs["site_id"], params.NULL_SITE[0])
    # app traffic has the placeholder site, web traffic the placeholder app
    assert pc.all(pc.equal(pc.filter(logs["app_id"], pc.invert(is_app)), params.NULL_APP[0])).as_py()
    assert 0.1 < pc.mean(is_app.cast(pa.int8())).as_py() < 0.9
    assert pc.count_distinct(logs["device_ip"]).as_py() > 1000
    assert set(pc.unique(logs["C1"]).to_pylist()) <= {1002, 1005, 1010}


# ---- writing -------------------------------------------------------------------------------------
def test_rerun_is_idempotent_and_touches_only_its_date(generated, tmp_path):
    cfg = small_cfg(tmp_path)
    g.generate(cfg, START, 2)
    store = open_store(cfg)
    first = {h: table_digest(read_partition(store, "logs", "2026-11-02", h)) for h in range(24)}
    other = store.partition("logs", "2026-11-01", 5) + "/part-00000.parquet"
    mtime = os.stat(other).st_mtime_ns
    summary = g.generate(cfg, "2026-11-02", 1)
    assert summary["dates"] == ["2026-11-02"]
    assert {h: table_digest(read_partition(store, "logs", "2026-11-02", h)) for h in range(24)} == first
    assert os.stat(other).st_mtime_ns == mtime
    assert store.list_partitions("logs") == ["2026-11-01", "2026-11-02"]
    hour_dir = store.partition("logs", "2026-11-02", 7)
    assert sorted(os.listdir(hour_dir)) == ["_SUCCESS", "_manifest.json", "part-00000.parquet"]
    assert not [p for p in os.listdir(store.partition("logs", "2026-11-02")) if p.startswith(".")]


def _cli(argv: list[str]) -> int:
    """Exit code of ``python -m dailyrec.demo.generator ARGV``, run in this process."""
    try:
        cli.main(g.generate_cli, argv=argv, render=g.print_summary)
    except SystemExit as exc:
        return exc.code
    return 0


def test_cli(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="dailyrec.generate_demo")
    rc = _cli(["--start-date", "2026-11-05", "--days", "1", "--events-per-day", "5000",
               "--set", f"storage.data_root={tmp_path}", "--set", "demo.n_users=300", "--set", "demo.n_items=100"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "5,000 events" in out and "2026-11-05" in out
    assert any("2026-11-05" in r.getMessage() for r in caplog.records)
    store = open_store(str(tmp_path))
    assert validate_partition(store, "logs", "2026-11-05", 12).rows > 0
    assert _cli(["--set", "demo.nope=1"]) == 2


# ---- the samplers --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [5, 300, 5000])
def test_alias_samplers_follow_their_weights(n):
    rng = np.random.default_rng(0)
    w = rng.random(n) ** 3
    w[rng.random(n) < 0.2] = 0.0
    w[0] = 1.0
    draws = sampling.Categorical(w).sample(rng, 2_000_000)
    freq = np.bincount(draws, minlength=n) / len(draws)
    p = w / w.sum()
    assert freq[p == 0].sum() == 0
    assert np.abs(freq - p).max() < 5 * np.sqrt(p.max() / len(draws)) + 1e-4


def test_row_alias_per_row():
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.full(6, 0.3), size=50)
    rows = rng.integers(0, 50, 500_000).astype(np.int32)
    out = sampling.RowAlias(w).sample(rows, rng.random(len(rows), dtype=np.float32))
    for r in (0, 17, 49):
        f = np.bincount(out[rows == r], minlength=6) / (rows == r).sum()
        assert np.abs(f - w[r]).max() < 0.02


# ---- intra-day dynamics (dailyrec/demo/dynamics.py) ------------------------------------------------
def _born_and_hours(cfg, day, d):
    """Per event: the birth hour of its item when the item was created on ``d`` (-1 otherwise), the hour."""
    born = world.born_hours(cfg, d)
    items = day["logs"]["item_id"].to_numpy(zero_copy_only=False)
    keys = np.array(list(born), dtype=object)
    pos = pc.index_in(day["logs"]["item_id"], value_set=pa.array(keys, pa.string())).to_numpy(zero_copy_only=False)
    pos = np.nan_to_num(pos.astype(float), nan=-1).astype(int)
    birth = np.where(pos >= 0, np.array(list(born.values()) + [-1])[pos], -1)
    assert len(items) == len(birth)
    return born, birth, pc.hour(day["logs"]["event_time"]).to_numpy()


def test_items_born_during_the_day_appear_from_their_birth_hour_with_a_burst(generated):
    cfg, _, _, days = generated
    early, late = [], []                                # impressions per unit of traffic, per born item
    for d in ("2026-11-02", "2026-11-03"):
        born, birth, hour = _born_and_hours(cfg, days[d], d)
        created = {r["item_id"] for r in days[d]["items"].to_pylist()
                   if r["item_created_dt"] == dt.date.fromisoformat(d)}
        assert set(born) == created                     # born_hours covers exactly the items created that day
        during = {i: b for i, b in born.items() if b > 0}
        assert during and set(during.values()) <= set(range(params.BIRTH_HOURS[0], params.BIRTH_HOURS[1] + 1))
        assert len(during) >= 0.3 * len(born)
        assert not (birth > hour).any(), "an item is impressed before its birth hour"
        traffic = np.bincount(hour, minlength=24).astype(float)
        item_ids = days[d]["logs"]["item_id"].to_numpy(zero_copy_only=False)
        for item, b in during.items():
            if b + 8 > 23:
                continue
            per_hour = np.bincount(hour[item_ids == item], minlength=24) / traffic
            early.append(per_hour[b:b + 2].mean())
            late.append(per_hour[b + 6:min(24, b + 12)].mean())
        # the new items of the day get impressions (and clicks) on their first day
        assert (birth >= 0).sum() > 0 and days[d]["logs"]["click"].to_numpy()[birth > 0].sum() > 0
    assert len(early) >= 5
    ratio = np.sum(early) / np.sum(late)
    assert ratio > 1.8, f"no burst after birth: early/late exposure ratio {ratio:.2f}"
    # the anchor date has no item born during the day (its catalog is the steady state)
    assert not any(world.born_hours(cfg, START).values())


def test_interests_drift_by_hour(generated):
    """Each segment's trending category of the hour gets a higher share of impressions and clicks
    than the same category gets from that segment at the hours it does not trend; trends differ by date."""
    cfg, _, _, days = generated
    uni = world.universe(cfg.demo)
    S, C = params.N_SEGMENTS, cfg.demo.n_categories
    for d in ("2026-11-01", "2026-11-02"):
        e = with_category(days[d])
        seg = uni.user_segment[np.char.lstrip(e["user"].astype(str), "u").astype(int)]
        cat = np.char.lstrip(e["cat"].astype(str), "cat").astype(int)
        key = (e["hour"] * S + seg) * C + cat
        for weights, margin in ((np.ones(len(key)), 0.06), (e["click"].astype(float), 0.06)):
            counts = np.bincount(key, weights=weights, minlength=24 * S * C).reshape(24, S, C)
            share = counts / np.maximum(counts.sum(axis=2, keepdims=True), 1)
            inten = world.trends(cfg, d).intensity
            # (segment, category) pairs that trend at some hour and not at others
            peak = (inten == 1.0)
            off = (inten == 0.0) & peak.any(axis=0, keepdims=True)
            lift = share[peak].mean() - np.mean([share[:, s, c][off[:, s, c]].mean()
                                                 for s, c in zip(*np.nonzero(peak.any(axis=0)))])
            assert lift > margin, f"{d}: the trending category gains only {lift:.3f} of the hour's share"
    a, b = world.trends(cfg, "2026-11-01"), world.trends(cfg, "2026-11-02")
    assert not np.array_equal(a.slot_cat, b.slot_cat)
    assert a.intensity.shape == (24, S, C) and np.allclose(a.intensity.sum(axis=2), 1.0)
    # smooth: between two consecutive hours a segment's trend moves by a bounded amount
    assert np.abs(np.diff(a.intensity, axis=0)).sum(axis=2).max() <= 2 * 0.85


def test_dynamics_are_deterministic(tmp_path):
    cfg = small_cfg(tmp_path)
    d = "2026-11-03"
    born, trend = world.born_hours(cfg, d), world.trends(cfg, d).intensity.copy()
    world.clear_caches()
    assert world.born_hours(cfg, d) == born
    assert np.array_equal(world.trends(cfg, d).intensity, trend)
    assert world.born_hours(cfg, "2026-11-02") != born
    other = small_cfg(tmp_path, **{"demo.seed": 6})
    assert not np.array_equal(world.trends(other, d).intensity, trend)
    assert params.knobs()["generator_version"] == params.GENERATOR_VERSION >= 2
    assert {"birth_share", "burst_boost", "burst_decay_hours", "trend_hours", "trend_share",
            "trend_logit"} <= set(params.knobs())
