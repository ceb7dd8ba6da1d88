"""Retrieval sample selection (tasks/sample.py + sql/sample_*.sql): statistical and exact checks
on small synthetic partitions (built with the helpers of tests/test_features.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dailyrec.config import load_config
from dailyrec.dates import date_range
from dailyrec.storage import open_store
from tests.helpers import DAY0, make_items, make_users, random_day, write_day

DAYS = date_range(DAY0, 2)
CUR = DAYS[-1]
N_LOG_ITEMS, N_CATALOG, N_USERS = 60, 70, 150  # items i60..i69 are in the catalog, never in the logs
HOLDOUT = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two days of logs, snapshots and the features of CUR, built once for the module."""
    from tasks.retrieval.features import step as build_features

    root = tmp_path_factory.mktemp("sampling")
    base = {"storage.data_root": str(root / "data"), "sampling.window_days": 2,
            "training.holdout_hours": HOLDOUT,  # a holdout of exactly HOLDOUT hours (not extended)
            "evaluation.min_holdout_users": 1, "evaluation.min_holdout_clicks": 1}
    cfg = load_config(overrides=base, environ={})
    store = open_store(cfg)
    frames = []
    for k, day in enumerate(DAYS):
        ev = random_day(day, 3000, N_USERS, N_LOG_ITEMS, seed=100 + k, ctr=0.2, zipf=1.0)
        write_day(store, day, ev, make_users([f"u{i}" for i in range(N_USERS)]),
                  make_items([f"i{i}" for i in range(N_CATALOG)]))
        frames.append(ev.to_pandas())
    build_features(CUR, cfg)
    logs = pd.concat(frames, ignore_index=True)
    logs["day"] = logs.event_time.dt.strftime("%Y-%m-%d")
    logs["hour"] = logs.event_time.dt.hour
    holdout = (logs.day == CUR) & (logs.hour >= 24 - HOLDOUT)
    train_logs = logs[~holdout]
    return {"base": base, "store": store, "logs": logs, "train_logs": train_logs,
            "holdout_logs": logs[holdout]}


def run(world, **overrides):
    """select_samples with the module's data and ``overrides``; returns (result, train df, manifest)."""
    from tasks.retrieval.sample import step as select_samples

    cfg = load_config(overrides={**world["base"], **overrides}, environ={})
    res = select_samples(CUR, cfg)
    train = pq.read_table(res["train"]).to_pandas()
    man = json.loads(open(f"{res['path']}/_manifest.json").read())
    return res, train, man


def clicked_pairs(world) -> set[tuple[str, str]]:
    t = world["train_logs"]
    t = t[t.click == 1]
    return set(zip(t.user_id, t.item_id))


def with_group(train: pd.DataFrame) -> pd.DataFrame:
    """Each row's positive: rows of a positive follow it, so the group is a running count."""
    train = train.copy()
    train["group"] = (train.label == 1).cumsum() - 1
    pos = train[train.label == 1].set_index("group")
    train["pos_item"] = pos.item_id.reindex(train.group).to_numpy()
    train["pos_category"] = pos.item_category.reindex(train.group).to_numpy()
    train["pos_user"] = pos.user_id.reindex(train.group).to_numpy()
    return train


# ---- positives ----------------------------------------------------------------------------
def test_positive_cap_holds(world):
    _, train, man = run(world, **{"sampling.positive_cap_per_item": 5, "sampling.positive_subsample_t": None})
    pos = train[train.label == 1]
    per_item = pos.item_id.value_counts()
    assert per_item.max() == 5
    clicks = world["train_logs"].query("click == 1").item_id.value_counts()
    assert per_item.to_dict() == {i: min(5, c) for i, c in clicks.items()}
    st = man["stats"]
    assert st["dropped_by_cap"] == int((clicks - 5).clip(lower=0).sum()) and st["dropped_by_subsampling"] == 0
    assert (pos.source == "positive").all()
    # log_q of a positive = log of its item's frequency among the kept positives
    freq = per_item / len(pos)
    np.testing.assert_allclose(pos.log_q, np.log(freq.reindex(pos.item_id).to_numpy()), rtol=1e-5)


def test_positive_subsampling_follows_the_word2vec_keep_probability(world):
    t = 0.01
    _, train, man = run(world, **{"sampling.positive_subsample_t": t})
    clicks = world["train_logs"].query("click == 1").item_id.value_counts()
    f = clicks / clicks.sum()
    p = np.minimum(1.0, np.sqrt(t / f) + t / f)
    kept = train[train.label == 1].item_id.value_counts().reindex(clicks.index, fill_value=0)
    assert (p < 0.5).any() and (kept[p == 1.0] == clicks[p == 1.0]).all()
    sd = np.sqrt(clicks * p * (1 - p))
    assert (np.abs(kept - clicks * p) <= 4 * sd + 1).all(), pd.DataFrame({"kept": kept, "exp": clicks * p})
    assert man["stats"]["dropped_by_subsampling"] == int(clicks.sum() - kept.sum())


# ---- random negatives -----------------------------------------------------------------------
def test_random_negatives_follow_popularity_alpha(world):
    alpha, npp = 0.5, 40
    _, train, man = run(world, **{"sampling.positive_subsample_t": None, "sampling.negatives_per_positive": npp,
                                  "sampling.popularity_alpha": alpha})
    catalog = [f"i{i}" for i in range(N_CATALOG)]
    clicks = world["train_logs"].query("click == 1").item_id.value_counts().reindex(catalog, fill_value=0)
    q = (clicks + 1.0) ** alpha
    q = q / q.sum()
    rnd = train[train.source == "random"]
    np.testing.assert_allclose(rnd.log_q, np.log(q.reindex(rnd.item_id).to_numpy()), rtol=1e-5)
    assert rnd.label.eq(0).all()
    # expected counts: q restricted to the items the row's user did not click (collisions redrawn)
    cl = world["train_logs"].query("click == 1").groupby("user_id").item_id.agg(set)
    rows_per_user = rnd.user_id.value_counts()
    expected = pd.Series(0.0, index=catalog)
    qv = q.to_numpy()
    for u, n in rows_per_user.items():
        mask = ~np.isin(catalog, list(cl.get(u, set())))
        expected += n * qv * mask / (qv * mask).sum()
    got = rnd.item_id.value_counts().reindex(catalog, fill_value=0)
    assert got.sum() == len(rnd) and len(rnd) >= 0.99 * npp * (train.label == 1).sum()
    ok = expected >= 5
    chi2 = float((((got - expected) ** 2) / expected)[ok].sum())
    dof = int(ok.sum()) - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)
    top = expected.sort_values(ascending=False).index[:5]
    np.testing.assert_allclose(got[top], expected[top], rtol=0.1)
    # cold catalog items (never in the logs) are drawn too
    cold = [f"i{i}" for i in range(N_LOG_ITEMS, N_CATALOG)]
    assert got[cold].sum() > 0
    assert man["stats"]["sources"]["random"]["cold_share"] > 0


def test_no_negative_equals_a_positive_of_the_same_user(world):
    _, train, man = run(world, **{"sampling.hard_negative_sources": ["exposed", "same_category"],
                                  "sampling.hard_negatives_per_positive": 2,
                                  "sampling.negatives_per_positive": 8})
    clicked = clicked_pairs(world)
    neg = train[train.label == 0]
    assert set(neg.source) == {"random", "exposed", "same_category"}
    bad = [p for p in zip(neg.user_id, neg.item_id) if p in clicked]
    assert bad == []
    assert man["stats"]["sources"]["random"]["collisions"] > 0  # the check had something to do


# ---- hard negatives -------------------------------------------------------------------------
def test_exposed_and_same_category_negatives(world):
    _, train, man = run(world, **{"sampling.hard_negative_sources": ["exposed", "same_category"],
                                  "sampling.hard_negatives_per_positive": 2})
    train = with_group(train)
    tl = world["train_logs"]
    impressed = set(zip(tl.user_id, tl.item_id))
    clicked = clicked_pairs(world)
    exp = train[train.source == "exposed"]
    assert len(exp) > 0 and exp.label.eq(0).all()
    assert (exp.user_id == exp.pos_user).all()
    assert all(p in impressed and p not in clicked for p in zip(exp.user_id, exp.item_id))
    same = train[train.source == "same_category"]
    assert len(same) > 0 and (same.item_category == same.pos_category).all()
    assert (same.item_id != same.pos_item).all()
    n_pos = int((train.label == 1).sum())
    assert len(same) <= 2 * n_pos and len(exp) <= 2 * n_pos
    # a negative copies the context of its positive
    pos = train[train.label == 1].set_index("group")
    for col in ("device_model", "banner_pos", "hour_of_day", "event_time"):
        assert (train[col].to_numpy() == pos[col].reindex(train.group).to_numpy()).all(), col
    st = man["stats"]["sources"]
    assert st["exposed"]["count"] == len(exp) and st["same_category"]["count"] == len(same)


def test_model_hard_negatives_skip_the_top_ranks():
    from dailyrec.sampling import model_hard_negatives

    rng = np.random.default_rng(3)
    U, I, D, k, skip = 23, 40, 8, 4, 3
    uv, iv = rng.normal(size=(U, D)), rng.normal(size=(I, D))
    ids = np.array([f"it{j}" for j in range(I)])
    clicked = np.stack([rng.integers(0, U, 60), rng.integers(0, I, 60)], axis=1)
    users, items, ranks = model_hard_negatives(uv, iv, ids, clicked, k, skip, block=5 * I)  # 5 users a block
    cset = set(map(tuple, clicked.tolist()))
    for u in range(U):
        order = np.argsort(-(uv[u] @ iv.T).astype(np.float32), kind="stable")
        want = [j for r, j in enumerate(order) if r >= skip and (u, j) not in cset][:k]
        got = items[users == u]
        assert list(got) == [ids[j] for j in want], u
        assert (ranks[users == u] >= skip).all()
        top = {ids[j] for j in order[:skip]}
        assert not top & set(got)
    # everything skipped when the catalog is smaller than skip_top
    assert len(model_hard_negatives(uv, iv[:2], ids[:2], clicked[:0], k, 5)[0]) == 0


def test_model_source_uses_given_vectors_and_is_skipped_without(world):
    from dailyrec.sampling import ModelVectors, select_samples

    over = {**world["base"], "sampling.hard_negative_sources": ["model"], "sampling.hard_negatives_per_positive": 2,
            "sampling.model_hard_skip_top": 2}
    cfg = load_config(overrides=over, environ={})
    res = select_samples(CUR, cfg)
    man = json.loads(open(f"{res['path']}/_manifest.json").read())
    assert "model" in man["stats"]["skipped_sources"] and "model" not in man["stats"]["sources"]
    assert res["skipped_sources"] == man["stats"]["skipped_sources"]

    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in range(N_USERS)])
    items = np.array([f"i{i}" for i in range(N_CATALOG + 5)])  # i70.. are unknown to the catalog
    mv = ModelVectors(users, rng.normal(size=(N_USERS, 6)), items, rng.normal(size=(len(items), 6)), version="m1")
    res = select_samples(CUR, cfg, model_vectors=mv)
    train = with_group(pq.read_table(res["train"]).to_pandas())
    model = train[train.source == "model"]
    assert len(model) > 0 and model.label.eq(0).all()
    assert set(model.item_id) <= {f"i{i}" for i in range(N_CATALOG)}
    clicked = clicked_pairs(world)
    assert not any(p in clicked for p in zip(model.user_id, model.item_id))
    # each is outside the top 2 of the user's model ranking
    uv = dict(zip(mv.user_ids, mv.user_vectors))
    cat_vecs = mv.item_vectors[:N_CATALOG]
    for u, it in zip(model.user_id, model.item_id):
        scores = cat_vecs @ uv[u]
        rank = int((scores > scores[int(it[1:])]).sum())
        assert rank >= 2
    man = json.loads(open(f"{res['path']}/_manifest.json").read())
    assert man["stats"]["sources"]["model"]["model_version"] == "m1" and man["inputs"]["model_vectors"] == "m1"


# ---- holdout, determinism, manifest -----------------------------------------------------------
def test_holdout_hours_are_not_in_train(world):
    res, train, man = run(world)
    ts = pd.to_datetime(train.event_time)
    on_cur = ts.dt.strftime("%Y-%m-%d") == CUR
    assert (ts[on_cur].dt.hour < 24 - HOLDOUT).all() and on_cur.any()
    assert (train.hour_of_day == ts.dt.hour).all()
    hold = pq.read_table(res["holdout"]).to_pandas()
    exp = world["holdout_logs"].query("click == 1")
    assert len(hold) == len(exp) > 0 and sorted(hold.item_id) == sorted(exp.item_id)
    assert (pd.to_datetime(hold.event_time).dt.hour >= 24 - HOLDOUT).all()
    assert {"user_id", "user_gender", "user_age_bucket", "user_segment", "device_model", "hour_of_day",
            "item_id", "in_catalog"} <= set(hold.columns)
    assert hold.in_catalog.all() and hold.user_segment.notna().all()
    # positives = the training-window clicks only
    assert man["stats"]["clicks_in_window"] == int(world["train_logs"].click.sum())


def test_a_sparse_holdout_is_extended_and_never_overlaps_training(world):
    """Minimums the last HOLDOUT hours cannot meet: the holdout takes more hours of CUR (the
    fewest that reach them) and the training window loses exactly those hours (leak-free)."""
    logs = world["logs"].query("click == 1")
    on_cur = logs[logs.day == CUR]
    need_users = on_cur[on_cur.hour >= 24 - HOLDOUT].user_id.nunique() + 20
    res, train, man = run(world, **{"evaluation.min_holdout_users": need_users})
    span = man["holdout"]
    h = span["hours"]
    assert span["extended"] and span["enough"] and HOLDOUT < h <= 24 and "extended to" in span["reason"]
    # the fewest hours that reach the minimum
    assert on_cur[on_cur.hour >= 24 - h].user_id.nunique() >= need_users
    assert on_cur[on_cur.hour >= 24 - (h - 1)].user_id.nunique() < need_users
    assert span["users"] == on_cur[on_cur.hour >= 24 - h].user_id.nunique()
    assert span["clicks"] == int((on_cur.hour >= 24 - h).sum())
    assert span["start"] == f"{CUR}T{24 - h:02d}:00:00+00:00"
    hold = pq.read_table(res["holdout"]).to_pandas()
    assert len(hold) == span["clicks"] and (pd.to_datetime(hold.event_time) >= pd.Timestamp(span["start"])).all()
    ts = pd.to_datetime(train.event_time)
    assert (ts < pd.Timestamp(span["start"])).all(), "a training row inside the extended holdout"
    kept = world["logs"][pd.to_datetime(world["logs"].event_time) < pd.Timestamp(span["start"])]
    assert man["stats"]["clicks_in_window"] == int(kept.click.sum())
    assert man["training_window"]["excluded_last_hours"] == h


def test_holdout_extension_is_bounded_and_reported_too_small(world):
    """Unreachable minimums: the holdout takes the most allowed (all of CUR with a 2-day window, the
    training window keeps its first day) and says it is still too small."""
    _, train, man = run(world, **{"evaluation.min_holdout_users": 10_000, "evaluation.max_eval_users": 10_000})
    span = man["holdout"]
    assert span["hours"] == span["max_hours"] == 24 and not span["enough"] and "still too small" in span["reason"]
    assert (pd.to_datetime(train.event_time).dt.strftime("%Y-%m-%d") < CUR).all()


def test_same_seed_same_samples_other_seed_different(world):
    over = {"sampling.hard_negative_sources": ["exposed", "same_category"]}
    _, a, _ = run(world, **over)
    _, b, _ = run(world, **over)
    _, c, _ = run(world, **over, **{"sampling.seed": 8})
    pd.testing.assert_frame_equal(a, b)
    assert len(a) != len(c) or not a.item_id.equals(c.item_id)


def test_manifest_statistics(world):
    res, train, man = run(world, **{"sampling.hard_negative_sources": ["exposed", "same_category", "model"]})
    st = man["stats"]
    assert man["step"] == "sample" and man["cur_date"] == CUR
    assert man["rows"]["train"] == len(train) and man["rows"]["holdout"] == res["rows"]["holdout"]
    for s, n in train.source.value_counts().items():
        assert st["sources"][s]["count"] == n
        assert st["sources"][s]["distinct_items"] == train[train.source == s].item_id.nunique()
        for key in ("mean_log_popularity", "cold_share", "mean_log_q"):
            assert key in st["sources"][s]
    # popularity skew: the word2vec subsampling and alpha < 1 flatten the negatives
    assert st["sources"]["random"]["mean_log_popularity"] < st["sources"]["positive"]["mean_log_popularity"] + 1
    assert st["events_in_window"] == len(world["train_logs"]) and st["catalog_items"] == N_CATALOG
    assert st["skipped_sources"] == {"model": st["skipped_sources"]["model"]}
    assert {"sql_clicks", "random_negatives", "assemble", "total"} <= set(man["timings_s"])
    assert man["seed"][0] == 7


def test_missing_catalog_fails_clearly(tmp_path):
    from tasks.retrieval.sample import step as select_samples

    cfg = load_config(overrides={"storage.data_root": str(tmp_path / "data")}, environ={})
    with pytest.raises(FileNotFoundError, match=r"features/dt=2026-11-02/catalog\.parquet"):
        select_samples(CUR, cfg)


# ---- the vectorised helpers and the streamed write -------------------------------------------
def test_keyset_and_inverse_cdf_give_the_binary_search_results():
    from dailyrec.sampling.arrays import InverseCdf, KeySet, member, unique_sorted

    rng = np.random.default_rng(3)
    keys = unique_sorted(rng.integers(0, 10**9, 5000))
    q = np.r_[rng.integers(0, 10**9, 20000), keys[::3], keys[0], keys[-1], -1]
    got = KeySet(keys).contains(q)
    assert (got == member(keys, q)).all() and got.sum() >= len(keys[::3])
    assert not KeySet(np.zeros(0, np.int64)).contains(q).any()
    w = rng.zipf(1.5, 300).astype(float)
    cdf = np.cumsum(w / w.sum())
    # random queries, the CDF steps themselves and the values just below them
    x = np.r_[rng.random(50000) * cdf[-1], cdf[:-1], np.nextafter(cdf[:-1], 0), 0.0]
    want = np.searchsorted(cdf, x, side="right")
    for buckets in (None, 7, 1 << 16):
        assert (InverseCdf(cdf, buckets)(x) == want).all()


def _drawn(world, tmp_path):
    """The phases of select_samples up to the row layout, on the module's world."""
    from dailyrec.sampling import select as S
    from dailyrec.sampling.negatives import popularity_q
    from dailyrec.sampling.positives import select_positives
    from dailyrec.step import begin

    cfg = load_config(overrides={**world["base"], "sampling.hard_negative_sources": ["exposed", "same_category"]},
                      environ={})
    run_ = begin("sample", CUR, cfg)
    sc = cfg.sampling
    rng = np.random.default_rng(1)
    d, _ = S.read_inputs(run_)
    pos = select_positives(rng, d.cu, d.ci, d.n_items, sc.positive_subsample_t, sc.positive_cap_per_item)
    q = popularity_q(S.item_counts(d)[1].astype(np.float64), sc.popularity_floor, sc.popularity_alpha)
    negs, _ = S.draw_negatives(run_, rng, d, pos, q, None)
    return S, run_, d, pos, negs


def test_train_rows_lay_out_each_positive_then_its_negatives_by_source(world, tmp_path):
    S, _, d, pos, negs = _drawn(world, tmp_path)
    rows = S.train_rows(d, pos, negs)
    # the reference layout: a stable sort by owner of [positives, random, exposed, same_category]
    parts = [(np.arange(pos.n), pos.item, np.zeros(pos.n, np.int8))] + [
        (negs.parts[s][0], negs.parts[s][1], np.full(len(negs.parts[s][0]), k, np.int8))
        for k, s in enumerate(S.SOURCES) if s in negs.parts]
    assert {"random", "exposed", "same_category"} <= set(negs.parts)
    owner, item, src = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(owner, kind="stable")
    assert rows.n == len(owner) > pos.n
    assert (rows.owner == owner[order]).all() and (rows.item == item[order]).all() and (rows.src == src[order]).all()
    assert (d.cu[np.searchsorted(d.click_rows, rows.click)] == rows.user).all()


def test_streamed_train_parquet_has_the_rows_of_the_whole_table(world, tmp_path):
    import pyarrow as pa

    S, run_, d, pos, negs = _drawn(world, tmp_path)
    rows = S.train_rows(d, pos, negs)
    path = str(tmp_path / "train.parquet")
    groups = S.write_train(path, run_.store.fs, d, rows, row_group_rows=100)
    f = pq.ParquetFile(path)
    assert groups == f.num_row_groups == -(-rows.n // 100)
    assert {f.metadata.row_group(i).num_rows for i in range(groups - 1)} == {100}
    whole = S.assemble(d, pos, negs)
    whole = pa.table({n: c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
                      for n, c in zip(whole.column_names, whole.columns)})
    assert f.read().equals(whole)


def test_seen_pairs_are_the_distinct_window_clicks_sorted(world, tmp_path):
    import pyarrow as pa

    S, _, d, pos, _ = _drawn(world, tmp_path)
    clicks = d.clicks.take(pa.array(d.click_rows))
    want = pa.table({"user_id": clicks["user_id"], "item_id": clicks["item_id"]}).group_by(
        ["user_id", "item_id"]).aggregate([]).sort_by([("user_id", "ascending"), ("item_id", "ascending")])
    got = S.seen_pairs(d, pos)
    assert got.equals(want) and got.num_rows == len(clicked_pairs(world) & set(zip(*got.to_pydict().values())))


def test_rerun_writes_identical_bytes(world):
    from dailyrec.sampling.select import SAMPLE_ROW_GROUP_ROWS

    over = {"sampling.hard_negative_sources": ["exposed", "same_category"]}
    a, _, man = run(world, **over)
    first = {f: open(f"{a['path']}/{f}", "rb").read() for f in ("train.parquet", "holdout.parquet", "seen.parquet")}
    b, _, _ = run(world, **over)
    assert all(open(f"{b['path']}/{f}", "rb").read() == v for f, v in first.items())
    assert man["train_row_group_rows"] == SAMPLE_ROW_GROUP_ROWS == 131_072 and man["train_row_groups"] == 1


def test_row_group_gathers_keep_values_types_and_nulls():
    import pyarrow as pa

    from dailyrec.sampling.output import _Gather

    idx = np.array([2, 0, 1, 2, 3])
    for arr in [pa.array(["a", None, "b", "a"]), pa.array([1, None, 3, 4], pa.int32()),
                pa.array([1, 2, None, 4], pa.timestamp("us", tz="UTC")), pa.array([1, 2, 3, 4], pa.timestamp("us", tz="UTC"))]:
        for plain in (False, True):
            got = _Gather(arr, plain=plain).take(idx)
            got = got.cast(got.type.value_type) if pa.types.is_dictionary(got.type) else got
            assert got.equals(arr.take(pa.array(idx))), (arr.type, plain)


def test_user_history_column_is_leak_free_and_byte_identical(world):
    """features.user_history: every row's history_item_ids are the user's last N clicks strictly before
    the positive's time (recomputed from the logs with pandas), the same for a positive's negatives;
    the as-of files end at the end of the day / the holdout start; a re-run writes the same bytes."""
    from dailyrec.history import AS_OF_END_FILE, AS_OF_HOLDOUT_FILE, HISTORY_COLUMN

    n = 4
    over = {"features.user_history.enabled": True, "features.user_history.length": n}
    res, train, _ = run(world, **over)
    clicks = world["logs"][world["logs"].click == 1].reset_index(drop=True)
    by_user = {u: g.sort_values("event_time", kind="stable") for u, g in clicks.groupby("user_id")}
    g = with_group(train)
    pos = g[g.label == 1]
    assert len(pos) > 100
    checked = 0
    for _, r in pos.iterrows():
        h = list(r[HISTORY_COLUMN])
        prior = by_user[r.user_id]
        prior = prior[prior.event_time < r.event_time]
        assert len(h) == min(n, len(prior))
        assert set(h) <= set(prior.item_id)  # only clicks strictly before the row's time
        if prior.event_time.is_unique:  # no timestamp tie: the exact list, most recent first
            assert h == list(prior.item_id.iloc[::-1][:n])
            checked += len(h)
    assert checked > 100
    # negatives carry their positive's history
    assert all(list(a) == list(b) for a, b in zip(g[HISTORY_COLUMN], pos.set_index("group")[HISTORY_COLUMN]
                                                     .reindex(g.group)))
    end = pq.read_table(f"{res['path']}/{AS_OF_END_FILE}").to_pandas()
    held = pq.read_table(f"{res['path']}/{AS_OF_HOLDOUT_FILE}").to_pandas()
    last = clicks.sort_values("event_time", kind="stable").groupby("user_id").item_id.last()
    assert all(list(h)[0] == last[u] or last[u] in list(h) for u, h in zip(end.user_id, end[HISTORY_COLUMN]))
    train_items = set(world["train_logs"][world["train_logs"].click == 1].item_id)
    held_only = set(world["holdout_logs"][world["holdout_logs"].click == 1].item_id) - train_items
    assert not held_only & {i for h in held[HISTORY_COLUMN] for i in h}
    first = {f: open(f"{res['path']}/{f}", "rb").read() for f in ("train.parquet", AS_OF_END_FILE, AS_OF_HOLDOUT_FILE)}
    again, _, _ = run(world, **over)
    assert all(open(f"{again['path']}/{f}", "rb").read() == v for f, v in first.items())
