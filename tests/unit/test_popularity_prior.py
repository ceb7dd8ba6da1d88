"""The popularity prior of retrieval (dailyrec.popularity_prior): ``u . v + beta * log q`` through
augmented vectors, in real FAISS indexes (numpy as the independent reference), the index build
with a real catalog, the leak-free counts of the gate, and the config rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.ann import build_index, clustered_vectors, index_dir
from dailyrec.config import ConfigError
from dailyrec.embeddings import write_embeddings
from dailyrec.popularity_prior import (augment_items, augment_queries, catalog_log_prior, choose_beta, gate_choice,
                                       counter_column, leak_free_counts, log_prior, prior_scorer, served_beta)

DAY = "2026-11-01"
N, DIM = 3000, 16


def _world(n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    items, _ = clustered_vectors(n, DIM, clusters=30, seed=seed)
    users = rng.standard_normal((200, DIM)).astype(np.float32)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    counts = rng.zipf(1.6, n).clip(0, 5000).astype(np.int64) - 1  # heavy-tailed clicks, some zeros
    return users, items, counts


def test_log_prior_is_a_floored_distribution():
    lq = log_prior(np.array([0, 1, 8]), floor=1.0)
    np.testing.assert_allclose(np.exp(lq), [1 / 12, 2 / 12, 9 / 12], rtol=1e-6)
    assert lq.dtype == np.float32 and np.isclose(np.exp(lq).sum(), 1.0)
    for bad in (np.array([]), np.array([1, -1]), np.array([1.0, np.nan])):
        with pytest.raises(ValueError):
            log_prior(bad)
    with pytest.raises(ValueError):
        log_prior(np.array([1, 2]), floor=0)


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0])
def test_index_inner_product_is_dot_plus_beta_log_q(beta):
    users, items, counts = _world()
    lq = log_prior(counts)
    index = faiss.IndexFlatIP(DIM + 1)
    index.add(augment_items(items, lq, beta))
    k = 50
    scores, labels = index.search(augment_queries(users, index.d), k)
    want = users.astype(np.float64) @ items.T.astype(np.float64) + beta * lq.astype(np.float64)[None, :]
    got = np.take_along_axis(want, labels, axis=1)
    np.testing.assert_allclose(scores, got, atol=1e-5)  # every returned score is u.v + beta log q
    best = np.sort(want, axis=1)[:, ::-1][:, :k]
    np.testing.assert_allclose(scores, best, atol=1e-5)  # ... and they are the k best ones
    # the same ranking as the evaluation's scorer
    np.testing.assert_allclose(prior_scorer(users, items, lq, beta)(np.arange(10)), want[:10], atol=1e-5)


def test_the_prior_moves_popular_items_up_and_beta_zero_is_plain_dot():
    users, items, counts = _world(seed=1)
    lq = log_prior(counts)
    plain = prior_scorer(users, items, lq, 0.0)(np.arange(len(users)))
    np.testing.assert_allclose(plain, users @ items.T, atol=1e-6)
    top = lambda s: np.argsort(-s, axis=1)[:, :20]  # noqa: E731
    strong = prior_scorer(users, items, lq, 1.0)(np.arange(len(users)))
    assert counts[top(strong)].mean() > 3 * counts[top(plain)].mean()
    with pytest.raises(ValueError, match="beta must be > 0"):
        augment_items(items, lq, 0.0)
    with pytest.raises(ValueError, match="log q values"):
        augment_items(items, lq[:-1], 0.5)


def test_queries_follow_the_index_dimension():
    u = np.ones((3, DIM), np.float32)
    assert augment_queries(u, DIM) is not None and augment_queries(u, DIM).shape == (3, DIM)
    aug = augment_queries(u, DIM + 1)
    assert aug.shape == (3, DIM + 1) and (aug[:, -1] == 1).all() and (aug[:, :DIM] == u).all()
    with pytest.raises(ValueError, match="cannot query an index of dimension 40"):
        augment_queries(u, 40)


def test_leak_free_counts_subtract_held_out_clicks_inside_the_window_only():
    catalog = pa.table({"item_id": ["a", "b", "c"], "clicks_7d": [5, 3, 0], "clicks_1d": [2, 1, 0]})
    ts = lambda s: dt.datetime.fromisoformat(s).replace(tzinfo=dt.timezone.utc)  # noqa: E731
    holdout = pa.table({"item_id": ["a", "a", "b", "zz"],
                        "event_time": pa.array([ts("2026-11-01 22:00"), ts("2026-10-31 12:00"),
                                                ts("2026-11-01 23:00"), ts("2026-11-01 23:30")],
                                               pa.timestamp("us", tz="UTC"))})
    assert leak_free_counts(catalog, "clicks_7d", holdout, DAY).tolist() == [3, 2, 0]
    assert leak_free_counts(catalog, "clicks_1d", holdout, DAY).tolist() == [1, 0, 0]  # 10-31 is outside 1 day
    assert leak_free_counts(catalog, "clicks_7d", None, DAY).tolist() == [5, 3, 0]
    with pytest.raises(KeyError, match="popularity_window_days must be one of"):
        leak_free_counts(catalog, "clicks_14d", None, DAY)


def test_config_rules(cfg):
    on = cfg.with_overrides({"serving.popularity_beta": 0.4, "serving.popularity_window_days": 7,
                             "features.counter_windows_days": [1, 7]})
    assert cfg.serving.popularity_beta_grid and counter_column(cfg) == "clicks_7d"  # the default: the week
    assert counter_column(cfg.with_overrides({"features.counter_windows_days": [3, 1]})) == "clicks_3d"
    assert counter_column(cfg.with_overrides({"features.counter_windows_days": [1, 30, 14]})) == "clicks_14d"
    assert on.serving.popularity_beta == 0.4
    with pytest.raises(ConfigError, match="popularity_window_days 14 is not one of features.counter_windows_days"):
        cfg.with_overrides({"serving.popularity_beta": 0.4, "serving.popularity_window_days": 14,
                            "features.counter_windows_days": [1, 7]})
    with pytest.raises(ConfigError, match="popularity_beta"):
        cfg.with_overrides({"serving.popularity_beta": -0.1})
    with pytest.raises(ConfigError, match="unknown key 'serving.popularity_bta'"):
        cfg.with_overrides({"serving.popularity_bta": 0.1})
    with pytest.raises(ConfigError, match="popularity_window_days 14 is not one of"):  # a grid needs it too
        cfg.with_overrides({"serving.popularity_window_days": 14, "features.counter_windows_days": [1, 7]})
    for bad in ([0.1, 0.1], [-1.0], [11.0]):
        with pytest.raises(ConfigError, match="popularity_beta_grid must be distinct betas"):
            cfg.with_overrides({"serving.popularity_beta_grid": bad})
    # off: any window is accepted (nothing reads it)
    assert cfg.with_overrides({"serving.popularity_beta": 0.0, "serving.popularity_beta_grid": [],
                               "serving.popularity_window_days": 30,
                               "features.counter_windows_days": [1, 7]}).serving.popularity_beta == 0.0


def test_build_index_holds_the_prior_from_the_days_catalog(cfg, store):
    """The stage's index: [v, beta log q] with q from features/dt=D/catalog.parquet (catalog order and
    extra items do not matter); searched with [u, 1] it returns u.v + beta log q exactly."""
    users, items, counts = _world(seed=2)
    ids = [f"it{i:05d}" for i in range(N)]
    write_embeddings(store, DAY, ids, items, "tt-v1")
    order = np.random.default_rng(3).permutation(N)  # the catalog in another order, plus an unexported item
    catalog = pa.table({"item_id": [ids[i] for i in order] + ["zz-new"],
                        "clicks_7d": np.append(counts[order], 40).astype(np.int64)})
    feats = store.partition("features", DAY)
    Path(feats).mkdir(parents=True, exist_ok=True)
    pq.write_table(catalog, f"{feats}/catalog.parquet")
    beta = 0.25
    c = cfg.with_overrides({"serving.popularity_beta": beta, "serving.popularity_window_days": 7,
                            "serving.popularity_beta_grid": [], "features.counter_windows_days": [1, 7]})
    res = build_index(DAY, c, query_vectors=users)
    assert res["recall_at_k"] == 1.0 and res["dim"] == DIM + 1
    manifest = json.loads(Path(index_dir(store, DAY), "_manifest.json").read_text())
    assert manifest["index"]["popularity_prior"] == {"beta": beta, "window_days": 7, "column": "clicks_7d",
                                                     "floor": 1.0}
    index = faiss.read_index(f"{index_dir(store, DAY)}/index.faiss")
    scores, labels = index.search(augment_queries(users, index.d), 10)
    lq_all = catalog_log_prior(c, catalog)  # q over the whole catalog (the unexported item included)
    lq = np.empty(N, np.float32)
    lq[order] = lq_all[:N]
    want = users.astype(np.float64) @ items.T + beta * lq.astype(np.float64)
    np.testing.assert_allclose(scores, np.sort(want, axis=1)[:, ::-1][:, :10], atol=1e-5)
    assert np.isclose(np.exp(lq_all).sum(), 1.0)


def test_build_index_without_a_catalog_says_it_has_no_prior(cfg, store):
    items, _ = clustered_vectors(500, DIM, clusters=10, seed=4)
    write_embeddings(store, DAY, [f"i{i}" for i in range(500)], items, "tt-v1")
    res = build_index(DAY, cfg.with_overrides({"serving.popularity_beta": 0.3, "serving.popularity_window_days": 7,
                                               "serving.popularity_beta_grid": [],
                                               "features.counter_windows_days": [1, 7]}))
    assert res["dim"] == DIM and res["popularity_prior"]["beta"] == 0.0
    assert res["popularity_prior"]["configured_beta"] == 0.3 and "without the popularity prior" in res[
        "popularity_prior"]["note"]


def test_choose_beta_is_cross_fitted():
    """Each half of the users gets the beta that is best on the other half, never its own best."""
    n = 100
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)  # the split choose_beta draws with the same seed
    first, second = perm[:50], perm[50:]
    a, b = np.zeros(n), np.zeros(n)
    a[first], b[first] = 0.5, 0.1    # the first half likes beta 0 ...
    a[second], b[second] = 0.2, 0.3  # ... the second half beta 1
    out = choose_beta({0.0: a, 1.0: b}, seed=0)
    assert out["fold_betas"] == [1.0, 0.0]  # first half scored with the second half's pick, and back
    assert (out["assign"][first] == 1.0).all() and (out["assign"][second] == 0.0).all()
    assert out["beta"] == 0.0 and out["grid"] == {"0.0": 0.35, "1.0": 0.2}  # on everyone: 0.35 > 0.2
    tie = choose_beta({0.0: np.ones(4), 0.5: np.ones(4)}, seed=1)
    assert tie["beta"] == 0.0 and tie["fold_betas"] == [0.0, 0.0]  # ties go to the smaller beta
    with pytest.raises(ValueError):
        choose_beta({}, seed=0)


def test_gate_choice_scores_every_ranker_under_the_cross_fitted_betas(cfg):
    n, k = 40, 5
    truth = [np.array([0]) for _ in range(n)]
    good = np.tile(np.arange(k), (n, 1))          # item 0 ranked first: recall 1
    bad = np.tile(np.arange(10, 10 + k), (n, 1))  # item 0 absent: recall 0
    by_beta = {"new": {0.0: bad, 0.5: good}, "previous": {0.2: bad}}  # previous: as it was served
    record, topks = gate_choice(cfg, DAY, by_beta, truth, [1] * n, "recall_at_10")
    assert record["beta"] == 0.5 and record["chosen_on"] == "holdout" and record["cross_fitted_betas"] == [0.5, 0.5]
    assert record["column"] == "clicks_7d" and record["grid"] == {"0.0": 0.0, "0.5": 1.0}
    assert (topks["new"] == good).all() and (topks["previous"] == bad).all()
    one, t1 = gate_choice(cfg, DAY, {"new": {0.0: bad}}, truth, [1] * n, "recall_at_10")
    assert one == {"beta": 0.0} and (t1["new"] == bad).all()


def test_the_index_uses_the_beta_the_evaluation_chose(cfg, store):
    """With a grid (the default) the index build reads eval/two_tower/dt=D/report.json's choice."""
    users, items, counts = _world(n=400, seed=5)
    ids = [f"i{i:04d}" for i in range(400)]
    write_embeddings(store, DAY, ids, items, "tt-v1")
    feats = store.partition("features", DAY)
    Path(feats).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": ids, "clicks_7d": counts}), f"{feats}/catalog.parquet")
    assert served_beta(store, cfg, DAY)[0] == cfg.serving.popularity_beta == 0.0  # no report: the fixed beta
    assert build_index(DAY, cfg, query_vectors=users)["dim"] == DIM
    report = Path(store.partition("eval/two_tower", DAY), "report.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"popularity_prior": {"beta": 0.3, "chosen_on": "holdout"}}))
    res = build_index(DAY, cfg, query_vectors=users)
    assert res["dim"] == DIM + 1 and res["popularity_prior"]["beta"] == 0.3
    assert res["popularity_prior"]["chosen_by"].endswith("eval/two_tower/dt=2026-11-01/report.json")
    index = faiss.read_index(f"{index_dir(store, DAY)}/index.faiss")
    scores, _ = index.search(augment_queries(users, index.d), 5)
    want = users.astype(np.float64) @ items.T + 0.3 * log_prior(counts).astype(np.float64)
    np.testing.assert_allclose(scores, np.sort(want, axis=1)[:, ::-1][:, :5], atol=1e-5)
