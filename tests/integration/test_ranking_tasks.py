"""Ranking tasks from the config: custom binary tasks, a regression task, extra (pairwise AUC)
losses, the ESMM head (pCTCVR = pCTR x pCVR over every impression), and a config with 2 numeric
features and 2 custom binary tasks through the pipeline's steps (features -> ranking samples ->
train_mmoe -> evaluate_mmoe -> publish -> score_check).

Real TensorFlow, DuckDB and files; small synthetic data keeps the file around a minute or two.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from dailyrec.config import FeatureSpec, FeaturesConfig, OptimizerConfig, RankingConfig, RankingTaskConfig, load_config
from dailyrec.inputs import ranking_dataset
from models.ranking import RankingModel, TaskLoss, build_ranking_model, pairwise_auc_loss
from models.synthetic import synthetic_ranking_data

SPECS = [
    FeatureSpec(name="user_id", side="user", kind="vocab", buckets=1000, embedding_dim=8),
    FeatureSpec(name="device_type", side="context", kind="int", buckets=8, embedding_dim=4, dtype="int"),
    FeatureSpec(name="item_id", side="item", kind="vocab", buckets=1000, embedding_dim=8),
    FeatureSpec(name="item_category", side="item", kind="hash", buckets=64, embedding_dim=4),
]
FCFG = FeaturesConfig(spec=SPECS)
VOCAB = {"user_id": [f"u{i}" for i in range(200)], "item_id": [f"i{i}" for i in range(100)]}
OPT = OptimizerConfig(name="adam", learning_rate=0.01, decay_steps=50)


def _sig_tensors(model: RankingModel, feats: dict) -> dict:
    sig = model.input_signature()
    return {n: tf.constant(feats[n], dtype=sig[n].dtype) for n in sig}


@pytest.fixture(scope="module")
def data():
    return synthetic_ranking_data(SPECS, 6000, seed=3, vocabularies=VOCAB, id_cardinality=50)


def test_pairwise_auc_loss_is_the_mean_over_positive_negative_pairs():
    y = np.array([1, 0, 0, 1, 0], np.float32)
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.1], np.float32)
    z = np.log(p) - np.log1p(-p)
    want = np.mean([np.log1p(np.exp(-(z[i] - z[j]))) for i in (0, 3) for j in (1, 2, 4)])
    assert float(pairwise_auc_loss(y, p)) == pytest.approx(want, rel=1e-5)
    assert float(pairwise_auc_loss(np.ones(3, np.float32), p[:3])) == 0.0  # one class: no pair
    bce = TaskLoss("bce")
    both = TaskLoss("bce", extra=[{"name": "pairwise_auc", "weight": 0.5}])
    assert float(both(y, p[:, None])) == pytest.approx(float(bce(y, p[:, None])) + 0.5 * want, rel=1e-5)
    with pytest.raises(ValueError, match="unknown extra loss"):
        TaskLoss("bce", extra=[{"name": "listwise", "weight": 1.0}])


def test_esmm_head_is_the_product_and_its_loss_covers_every_impression(data):
    """ranking.esmm: the conversion output is p(click) x p(conversion | click) row by row, and
    its training loss is the BCE of that product against the conversion label over ALL rows
    (clicked or not): Ma et al. 2018's entire-space loss, not a loss over the clicked rows."""
    feats, labels = data
    rc = RankingConfig(num_experts=3, expert_units=[16], tower_units=[8], optimizer=OPT, esmm=True)
    model = build_ranking_model(rc, FCFG, VOCAB, seed=5)
    assert model.parents == {"conversion": "click"}
    model.fit(ranking_dataset(feats, labels, batch_size=256, seed=1), epochs=3, verbose=0, shuffle=False)
    x = _sig_tensors(model, feats)
    out = {k: v.numpy().ravel() for k, v in model(x, training=False).items()}
    cvr = model.conditional(x)["conversion"].numpy().ravel()
    np.testing.assert_allclose(out["conversion"], out["click"] * cvr, rtol=1e-6)
    assert (out["conversion"] <= out["click"] + 1e-7).all()

    # the reported loss of the conversion output is the BCE over every row
    res = model.evaluate(ranking_dataset(feats, labels, batch_size=len(labels["click"]), shuffle=False),
                         verbose=0, return_dict=True)
    y, p = labels["conversion"], np.clip(out["conversion"], 1e-7, 1 - 1e-7)
    everywhere = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    clicked = labels["click"] == 1
    only_clicked = float(-(y[clicked] * np.log(p[clicked]) + (1 - y[clicked]) * np.log(1 - p[clicked])).mean())
    assert res["conversion_loss"] == pytest.approx(everywhere, rel=1e-3)
    assert abs(everywhere - only_clicked) > 1e-2
    from dailyrec.ranking.evaluation import auc
    assert auc(labels["conversion"], out["conversion"]) > 0.7

    # the config spells ESMM either way, and refuses a parent that is not an earlier binary task
    alt = RankingConfig(tasks=[RankingTaskConfig(name="click"), RankingTaskConfig(name="conversion", parent="click")])
    assert [t.parent for t in alt.resolved_tasks()] == [t.parent for t in rc.resolved_tasks()]
    from dailyrec.config import ConfigError
    with pytest.raises(ConfigError, match="parent 'click' must be a task listed before it"):
        load_config(overrides={"ranking.tasks": [{"name": "conversion", "parent": "click"}, {"name": "click"}]},
                    environ={})


def test_regression_task_and_extra_loss_train(data):
    """A regression task (Huber loss, linear head) next to a binary task with a pairwise AUC extra
    loss: both learn (RMSE below the constant predictor's, AUC above chance), metrics are named
    <task>_rmse / <task>_auc, and the model reloads with its tasks."""
    from dailyrec.ranking.evaluation import auc, task_metrics
    from models.ranking import load_model, save_model

    feats, labels = data
    rng = np.random.default_rng(0)
    # minutes on the item: driven by the context (device type) and the click, plus noise
    dwell = (0.5 * feats["device_type"] + 0.3 * labels["click"] + rng.normal(0, 0.1, len(labels["click"]))
             ).astype(np.float32)
    tasks = [RankingTaskConfig(name="click", extra_losses=[{"name": "pairwise_auc", "weight": 0.2}]),
             RankingTaskConfig(name="dwell", label="dwell_s", kind="regression", loss="huber", huber_delta=1.0)]
    rc = RankingConfig(tasks=tasks, num_experts=2, expert_units=[16], tower_units=[8], optimizer=OPT)
    model = build_ranking_model(rc, FCFG, VOCAB, seed=7)
    hist = model.fit(ranking_dataset(feats, {"click": labels["click"], "dwell": dwell}, batch_size=64, seed=1),
                     epochs=5, verbose=0, shuffle=False).history
    assert {"click_auc", "dwell_rmse"} <= set(hist)
    x = _sig_tensors(model, feats)
    out = {k: v.numpy().ravel() for k, v in model(x, training=False).items()}
    rmse = float(np.sqrt(np.mean((out["dwell"] - dwell) ** 2)))
    assert rmse < 0.5 * float(dwell.std())
    assert out["dwell"].max() > 1.0  # a linear head, not a probability
    assert auc(labels["click"], out["click"]) > 0.7
    m = task_metrics({"click": labels["click"], "dwell": dwell}, out, out,
                     [{"name": "click", "kind": "binary"}, {"name": "dwell", "kind": "regression"}])
    assert {"click_auc", "click_logloss", "dwell_rmse", "dwell_mae"} <= set(m) and "dwell_auc" not in m

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        save_model(model, d)
        again = load_model(d)
    assert [t["kind"] for t in again.task_specs] == ["binary", "regression"]
    np.testing.assert_allclose(again(x, training=False)["dwell"].numpy().ravel(), out["dwell"], rtol=1e-5)


def test_task_config_errors_are_named():
    from dailyrec.config import ConfigError

    for tasks, match in [
        ([{"name": "dwell", "kind": "regression", "loss": "bce"}], "kind='regression' takes loss mse or huber"),
        ([{"name": "click"}, {"name": "click"}], "duplicate task names"),
        ([{"name": "dwell", "kind": "regression", "extra_losses": [{"name": "pairwise_auc"}]}],
         "apply to binary tasks only"),
        ([{"name": "like"}, {"name": "buy", "label": "conversion"}], "needs a task calibrated 'click'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(overrides={"ranking.tasks": tasks}, environ={})
    with pytest.raises(ConfigError, match="ranking.esmm needs the tasks 'click' and 'conversion'"):
        load_config(overrides={"ranking.tasks": [{"name": "click"}], "ranking.esmm": True}, environ={})


# ---- the pipeline: 2 numeric features, 2 custom binary tasks --------------------------------------
PIPE_SPEC = [
    {"name": "user_id", "side": "user", "kind": "vocab", "buckets": 1000, "embedding_dim": 8},
    {"name": "user_age_bucket", "side": "user", "kind": "numeric", "dtype": "float"},
    {"name": "device_type", "side": "context", "kind": "int", "buckets": 8, "embedding_dim": 4, "dtype": "int"},
    {"name": "item_id", "side": "item", "kind": "vocab", "buckets": 1000, "embedding_dim": 8},
    {"name": "clicks_3d", "side": "item", "kind": "numeric", "dtype": "float", "transform": "log1p",
     "missing_indicator": True},
]
PIPE_TASKS = [
    {"name": "click"},
    {"name": "add_to_cart", "label": "add_to_cart", "extra_losses": [{"name": "pairwise_auc", "weight": 0.1}]},
    {"name": "like", "label": "liked", "calibration": "none", "weight": 0.5},
]


def _write_logs_with_labels(store, day: str, events: pa.Table) -> None:
    """The hourly partitions of ``events`` keeping its extra (label) columns: the log contract
    allows extra columns, and the SQL views read every column of the files."""
    from dailyrec.storage import SUCCESS_MARKER

    hours = pa.compute.hour(events["event_time"]).to_numpy()
    for h in range(24):
        part = store.partition("logs", day, h)
        with store.atomic_output(part) as tmp:
            pq.write_table(events.filter(pa.array(hours == h)), f"{tmp}/part-00000.parquet", filesystem=store.fs)
            with store.fs.open_output_stream(f"{tmp}/{SUCCESS_MARKER}"):
                pass


def test_custom_tasks_and_numeric_features_run_through_the_steps(tmp_path):
    from dailyrec.contract import write_partition
    from dailyrec.dates import date_range
    from dailyrec.scoring import Scorer
    from dailyrec.storage import open_store
    from tasks.ranking.evaluate_mmoe import step as evaluate_mmoe
    from tasks.ranking.publish_model import step as publish_model
    from tasks.ranking.ranking_samples import step as ranking_samples
    from tasks.ranking.train_mmoe import step as train_mmoe
    from tasks.retrieval.features import step as build_features
    from tasks.serving.score_check import step as score_check
    from tests.helpers import config, make_items, make_users, random_day, validate_day

    cfg = config(tmp_path, **{"features.counter_windows_days": [1, 3], "sampling.window_days": 2,
                              "features.spec": PIPE_SPEC, "ranking.tasks": PIPE_TASKS, "ranking.epochs": 3,
                              "ranking.batch_size": 256, "ranking.num_experts": 2, "ranking.expert_units": [16],
                              "ranking.tower_units": [8], "training.checkpoint_every_steps": 1000})
    store = open_store(cfg)
    users = make_users([f"u{u}" for u in range(60)])
    age = dict(zip(users["user_id"].to_pylist(), users["user_age_bucket"].to_pylist()))
    for k, day in enumerate(date_range("2026-11-01", 2)):
        ev = random_day(day, 6000, n_users=60, n_items=40, seed=20 + k, ctr=0.25)
        rng = np.random.default_rng(k)
        click = ev["click"].to_numpy()
        cart = (click * (rng.random(ev.num_rows) < 0.4)).astype(np.int8)
        a = np.array([age[u] for u in ev["user_id"].to_pylist()])
        liked = (rng.random(ev.num_rows) < np.where(a >= 4, 0.6, 0.1)).astype(np.int8)  # depends on the numeric age
        ev = ev.append_column("add_to_cart", pa.array(cart)).append_column("liked", pa.array(liked))
        _write_logs_with_labels(store, day, ev)
        write_partition(store, "users", users, day)
        write_partition(store, "items", make_items([f"i{i}" for i in range(40)]), day)
        validate_day(store, day)
        build_features(day, cfg)
    day = "2026-11-02"
    samples = ranking_samples(day, cfg)
    assert samples["labels"]["add_to_cart"]["positives_after"] > 0 and samples["labels"]["like"]["label"] == "liked"
    train = train_mmoe(day, cfg)
    man = store.read_json(f"{train['model_dir']}/_manifest.json")
    assert [t["name"] for t in man["tasks"]] == ["click", "add_to_cart", "like"]
    assert [t["calibration"] for t in man["tasks"]] == ["click", "none", "none"]
    assert set(man["numeric_stats"]) == {"user_age_bucket", "clicks_3d"}
    ev = evaluate_mmoe(day, cfg)
    rep = store.read_json(ev["report"])
    assert rep["gate"]["metrics"] == ["click_auc", "add_to_cart_auc", "like_auc"]
    assert {"click_auc", "add_to_cart_auc", "like_auc", "like_logloss"} <= set(rep["table"]["new"])
    assert rep["table"]["new"]["like_auc"] > 0.65, rep["table"]  # learnt from the numeric user_age_bucket
    assert ev["passed"]
    publish_model(day, cfg)
    check = score_check(day, cfg)
    assert {"click", "add_to_cart", "like", "label_add_to_cart", "label_like"} <= set(check["rows"][0])
    # JSON rows: a numeric feature takes a number or null (missing)
    row = {"user_id": "u3", "user_age_bucket": None, "device_type": 1, "item_id": "i2", "clicks_3d": 12.0}
    scored = Scorer(cfg, day).score([row])
    assert 0 < scored[0]["like"] < 1 and 0 < scored[0]["click"] < 1
