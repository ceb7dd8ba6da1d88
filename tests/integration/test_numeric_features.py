"""Numeric features (kind ``numeric``): the normalisation statistics are stored with the model and
applied at serving, so a served score equals the score the model computes on its training input.

Real TensorFlow: a small ranking model trained on the pipeline's training path (Parquet ->
``dailyrec.ranking.inputs.training_stream``: ids and raw floats) and served from its SavedModel on
raw values; a tower exported and run on Arrow-side ids (``dailyrec.towers.tower_vectors``).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from dailyrec.config import FeatureSpec, FeaturesConfig, OptimizerConfig, RankingConfig
from models.features import attach_numeric_stats, numeric_stats_from_arrays

SPECS = [
    FeatureSpec(name="user_id", side="user", kind="vocab", buckets=100, embedding_dim=4),
    FeatureSpec(name="device_type", side="context", kind="int", buckets=8, embedding_dim=2, dtype="int"),
    FeatureSpec(name="item_id", side="item", kind="vocab", buckets=100, embedding_dim=4),
    FeatureSpec(name="item_price", side="item", kind="numeric", dtype="float", transform="log1p",
                missing_indicator=True, clip=3.0),
    FeatureSpec(name="user_tenure_days", side="user", kind="numeric", dtype="float"),
]
VOCAB = {"user_id": [f"u{i}" for i in range(30)], "item_id": [f"i{i}" for i in range(20)]}
RCFG = RankingConfig(num_experts=2, expert_units=[8], tower_units=[4], batch_size=128,
                     optimizer=OptimizerConfig(name="adam", learning_rate=0.01))


def _rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    price = rng.lognormal(3.0, 1.5, n)
    price[rng.random(n) < 0.1] = np.nan  # missing
    tenure = rng.normal(400.0, 120.0, n)
    logit = 0.8 * (np.log1p(np.nan_to_num(price, nan=20.0)) - 3.0) - 0.004 * (tenure - 400.0)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    conv = (click * (rng.random(n) < 0.3)).astype(np.int8)
    return pa.table({
        "user_id": [f"u{u}" for u in rng.integers(0, 40, n)],
        "device_type": pa.array(rng.integers(0, 4, n), pa.int32()),
        "item_id": [f"i{i}" for i in rng.integers(0, 25, n)],
        "item_price": pa.array(price, pa.float64(), mask=np.isnan(price)),  # nulls, not NaN, in Parquet
        "user_tenure_days": pa.array(tenure.astype(np.int64), pa.int64()),  # an int column taken as a number
        "click": pa.array(click), "conversion": pa.array(conv),
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dailyrec.inputs import feature_arrays
    from dailyrec.ranking.inputs import stream_dataset, training_stream
    from models.ranking import build_ranking_model

    d = tmp_path_factory.mktemp("numeric")
    table = _rows(3000)
    pq.write_table(table, d / "train.parquet", row_group_size=1000)
    stats = numeric_stats_from_arrays(feature_arrays(table, SPECS), SPECS)
    model = build_ranking_model(RCFG, FeaturesConfig(spec=SPECS), VOCAB, seed=3, numeric_stats=stats)
    stream = training_stream(str(d / "train.parquet"), SPECS, VOCAB, batch_size=RCFG.batch_size, seed=1,
                             buffer_rows=2000)
    model.fit(stream_dataset(stream), epochs=2, verbose=0, shuffle=False)
    return model, stats, table, d


def test_numeric_normalisation_matches_the_formula(trained):
    """The encoder's numeric columns: log1p, (t - mean) / std, clipped, missing -> 0 + indicator."""
    model, stats, table, _ = trained
    price = np.array([0.0, 20.0, 1e9, np.nan, -5.0], np.float32)
    z = model.encoder.normalise("item_price", tf.constant(price)).numpy()
    m, s = stats["item_price"]["mean"], stats["item_price"]["std"]
    t = np.sign(price.astype(np.float64)) * np.log1p(np.abs(price.astype(np.float64)))
    want = np.clip((t - m) / s, -3.0, 3.0)
    want[3] = 0.0
    np.testing.assert_allclose(z[:, 0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(z[:, 1], [0, 0, 0, 1, 0])
    assert z[2, 0] == pytest.approx(3.0)  # clipped
    tenure = model.encoder.normalise("user_tenure_days", tf.constant([400.0], tf.float32)).numpy()
    assert tenure.shape == (1, 1)
    assert tenure[0, 0] == pytest.approx((400.0 - stats["user_tenure_days"]["mean"]) / stats["user_tenure_days"]["std"],
                                         rel=1e-5)


def test_statistics_are_stored_with_the_model_and_applied_at_serving(trained):
    """The statistics travel in the model: the .keras config holds them, a reloaded model and the
    SavedModel (raw values, nulls) give the scores the model computes on its training input (the
    stream's ids and floats) for the same rows; other statistics would give other scores."""
    from dailyrec.inputs import feature_arrays
    from dailyrec.ranking.inputs import training_stream
    from models.ranking import RankingModel, load_model, save_model
    from models.serving import export_ranking_model, load_ranking_model

    model, stats, table, d = trained
    save_model(model, d / "model")
    export_ranking_model(model, d / "saved_model")
    cfg_specs = {s["name"]: s for s in json.loads(
        __import__("zipfile").ZipFile(d / "model" / "model.keras").read("config.json"))["config"]["specs"]}
    for name in ("item_price", "user_tenure_days"):
        assert (cfg_specs[name]["mean"], cfg_specs[name]["std"]) == (stats[name]["mean"], stats[name]["std"])

    # the training input of the first 256 rows (file order: no seed)
    batch = next(training_stream(str(d / "train.parquet"), SPECS, VOCAB, batch_size=256, seed=None,
                                 buffer_rows=256).batches())
    in_training = model({n: tf.constant(batch[n]) for n in model.encoder.names}, training=False)
    rows = table.slice(0, 256)
    assert rows.column("item_price").null_count > 0
    served = load_ranking_model(d / "saved_model")(feature_arrays(rows, SPECS))
    reloaded = load_model(d / "model", compile=False)
    sig = reloaded.input_signature()
    raw = feature_arrays(rows, SPECS)
    again = reloaded({n: tf.constant(raw[n], dtype=sig[n].dtype) for n in sig}, training=False)
    for t in ("click", "conversion"):
        want = in_training[t].numpy().reshape(-1)
        np.testing.assert_allclose(served[t], want, rtol=1e-5, atol=1e-6, err_msg=t)
        np.testing.assert_allclose(again[t].numpy().reshape(-1), want, rtol=1e-5, atol=1e-6, err_msg=t)

    # JSON rows through the scorer's value rules: None is missing, a string is refused
    from dailyrec.scoring import check_value
    check_value("item_price", None, False, "row 0", numeric=True)
    with pytest.raises(ValueError, match="feature 'item_price' must be a number"):
        check_value("item_price", "12", False, "row 0", numeric=True)

    other = {k: {**v, "mean": v["mean"] + 1.0} for k, v in stats.items()}
    shifted = RankingModel.from_config({**model.get_config(), "specs": attach_numeric_stats(SPECS, other)})
    shifted.build()
    shifted.set_weights(model.get_weights())
    moved = shifted({n: tf.constant(raw[n], dtype=sig[n].dtype) for n in sig}, training=False)
    assert np.abs(moved["click"].numpy().reshape(-1) - served["click"]).max() > 1e-4


def test_model_without_statistics_is_refused():
    from models.ranking import build_ranking_model

    with pytest.raises(KeyError, match="numeric feature 'item_price': no normalisation statistics"):
        build_ranking_model(RCFG, FeaturesConfig(spec=SPECS), VOCAB, numeric_stats={})


def test_tower_with_numeric_features_on_arrow_ids_equals_serving(tmp_path):
    """A two-tower tower with a numeric feature: its exported ``embed_ids`` endpoint takes the raw
    float (float32) next to the ids, and the id path of dailyrec.towers.tower_vectors (checked
    against the raw serving signature inside) gives the serving vectors."""
    from dailyrec.inputs import feature_arrays
    from dailyrec.towers import tower_vectors
    from models.serving import export_tower, load_tower
    from models.two_tower import ItemTower

    item_specs = [s for s in SPECS if s.side == "item"]
    table = _rows(500, seed=4)
    stats = numeric_stats_from_arrays(feature_arrays(table, item_specs), item_specs)
    tower = ItemTower(attach_numeric_stats(item_specs, stats), VOCAB, hidden_units=[8], output_dim=4)
    tower.build_dummy()
    export_tower(tower, tmp_path / "item_tower")
    via_ids = tower_vectors(str(tmp_path / "item_tower"), table, item_specs, vocabularies=VOCAB)
    raw = load_tower(tmp_path / "item_tower")(feature_arrays(table, item_specs))
    np.testing.assert_allclose(via_ids, raw, rtol=0, atol=1e-6)
