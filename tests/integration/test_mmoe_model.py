"""MMoE ranking model: gates, shapes, task-specific experts, training, export, warm start.

The MMoE / SharedBottom layers alone are unit-tested in tests/unit/test_layers.py.

Real TensorFlow throughout; small feature specs and synthetic rows keep the file well under a
minute on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from dailyrec.config import FeatureSpec, FeaturesConfig, OptimizerConfig, RankingConfig
from dailyrec.inputs import ranking_dataset
from models.mmoe import matched_shared_bottom_units, mmoe_param_count, towers_param_count
from models.optim import DecayWithFloor
from models.ranking import RankingModel, build_ranking_model, gate_diagnostics, load_model, save_model, warm_start_from
from models.serving import export_ranking_model, load_ranking_model
from models.synthetic import synthetic_ranking_data

SPECS = [
    FeatureSpec(name="user_id", side="user", kind="vocab", buckets=1000, embedding_dim=8),
    FeatureSpec(name="user_segment", side="user", kind="hash", buckets=32, embedding_dim=4),
    FeatureSpec(name="device_type", side="context", kind="int", buckets=8, embedding_dim=4, dtype="int"),
    FeatureSpec(name="hour_of_day", side="context", kind="int", buckets=24, embedding_dim=4, dtype="int"),
    FeatureSpec(name="item_id", side="item", kind="vocab", buckets=1000, embedding_dim=8),
    FeatureSpec(name="item_category", side="item", kind="hash", buckets=64, embedding_dim=4),
]
FCFG = FeaturesConfig(spec=SPECS)
VOCAB = {"user_id": [f"u{i}" for i in range(200)], "item_id": [f"i{i}" for i in range(100)]}
RCFG = RankingConfig(num_experts=3, expert_units=[16], task_specific_experts=1, tower_units=[8],
                     optimizer=OptimizerConfig(name="adam", learning_rate=0.01, decay_steps=50))


def _predict(model: RankingModel, feats: dict) -> dict[str, np.ndarray]:
    sig = model.input_signature()
    x = {n: tf.constant(feats[n], dtype=sig[n].dtype) for n in sig}
    return {t: v.numpy() for t, v in model(x, training=False).items()}


@pytest.fixture(scope="module")
def data():
    return synthetic_ranking_data(SPECS, 6000, seed=3, vocabularies=VOCAB, id_cardinality=50)


@pytest.fixture(scope="module")
def trained(data):
    feats, labels = data
    model = build_ranking_model(RCFG, FCFG, VOCAB, seed=5)
    before = model.evaluate(ranking_dataset(feats, labels, batch_size=2048, shuffle=False),
                            verbose=0, return_dict=True)
    hist = model.fit(ranking_dataset(feats, labels, batch_size=256, seed=1), epochs=4, verbose=0,
                     shuffle=False)
    return model, before, hist.history


def test_model_outputs_and_gates(trained, data):
    model, _, _ = trained
    feats, _ = data
    part = {k: v[:33] for k, v in feats.items()}
    out = _predict(model, part)
    assert set(out) == {"click", "conversion"}
    for v in out.values():
        assert v.shape == (33, 1)
        assert ((v > 0) & (v < 1)).all()
    sig = model.input_signature()
    gates = model.gates({n: tf.constant(part[n], dtype=sig[n].dtype) for n in sig})
    for g in gates.values():
        assert tuple(g.shape) == (33, 3 + 1)
        np.testing.assert_allclose(np.asarray(g).sum(axis=1), 1.0, atol=1e-6)


def test_task_specific_expert_reaches_only_its_task(trained, data):
    model, _, _ = trained
    feats, _ = data
    part = {k: v[:64] for k, v in feats.items()}
    base = _predict(model, part)
    mmoe = model.mmoe
    n = mmoe.num_experts
    for task_idx, task in enumerate(model.tasks):
        other = model.tasks[1 - task_idx]
        expert = n + task_idx * mmoe.task_specific_experts  # this task's own expert
        saved = [np.array(v.numpy()) for v in (*mmoe.expert_kernels, *mmoe.expert_biases)]
        try:
            k0 = saved[0].copy()
            k0[expert] += np.random.default_rng(task_idx).normal(0, 0.5, size=k0[expert].shape)
            mmoe.expert_kernels[0].assign(k0)
            b0 = saved[len(mmoe.expert_kernels)].copy()
            b0[expert] += 0.5
            mmoe.expert_biases[0].assign(b0)
            pert = _predict(model, part)
        finally:
            for var, val in zip((*mmoe.expert_kernels, *mmoe.expert_biases), saved):
                var.assign(val)
        assert np.abs(pert[task] - base[task]).max() > 1e-4, task
        np.testing.assert_array_equal(pert[other], base[other])
    # perturbing a shared expert moves both tasks
    k0 = np.array(mmoe.expert_kernels[0].numpy())
    k_pert = k0.copy()
    k_pert[0] += 0.5
    mmoe.expert_kernels[0].assign(k_pert)
    try:
        pert = _predict(model, part)
    finally:
        mmoe.expert_kernels[0].assign(k0)
    for t in model.tasks:
        assert np.abs(pert[t] - base[t]).max() > 1e-4
    np.testing.assert_array_equal(_predict(model, part)["click"], base["click"])


def test_loss_falls_on_learnable_data(trained):
    _, before, hist = trained
    assert hist["loss"][-1] < 0.9 * before["loss"], (before, hist["loss"])
    assert hist["click_auc"][-1] > 0.7 and hist["conversion_auc"][-1] > 0.7, hist
    assert set(hist) >= {"click_loss", "conversion_loss", "click_auc", "conversion_auc"}


def test_gate_diagnostics(trained, data):
    model, _, _ = trained
    feats, _ = data
    diag = gate_diagnostics(model, {k: v[:3000] for k, v in feats.items()}, batch_size=1000)
    for i, t in enumerate(model.tasks):
        d = diag[t]
        assert d["experts"] == ["shared_0", "shared_1", "shared_2", f"{t}_0"]
        assert np.isclose(sum(d["mean_weight"]), 1.0, atol=1e-6)
        assert 0.0 <= d["entropy"] <= 1.0 and 0.0 <= d["row_entropy"] <= d["entropy"] + 1e-9
        assert d["collapsed"] is False
    # force the click gate onto one expert
    bias = model.mmoe.gate_biases[0]
    saved = np.array(bias.numpy())
    bias.assign(np.array([30.0, 0, 0, 0], dtype="float32"))
    try:
        diag = gate_diagnostics(model, {k: v[:500] for k, v in feats.items()})
    finally:
        bias.assign(saved)
    assert diag["click"]["collapsed"] is True and diag["click"]["entropy"] < 0.1
    assert diag["conversion"]["collapsed"] is False


def test_export_and_reload_give_identical_scores(trained, data, tmp_path):
    model, _, _ = trained
    feats, _ = data
    part = {k: v[:500] for k, v in feats.items()}
    want = _predict(model, part)
    export_ranking_model(model, tmp_path / "serving")
    ranker = load_ranking_model(tmp_path / "serving")
    assert set(ranker.input_signature) == {s.name for s in SPECS}
    assert ranker.input_signature["hour_of_day"].dtype == tf.int64
    assert ranker.input_signature["user_id"].dtype == tf.string
    got = ranker(part, batch_size=128)
    for t in ("click", "conversion"):
        assert got[t].shape == (500,)
        np.testing.assert_allclose(got[t], want[t][:, 0], atol=1e-6)
    # unknown ids / lists of python values go through the raw signature too
    odd = {s.name: (["never-seen"] * 3 if s.dtype == "string" else [1, 2, 3]) for s in SPECS}
    assert ranker(odd)["click"].shape == (3,)
    as_bytes = dict(part, user_id=np.array([u.encode() for u in part["user_id"]], dtype=object))
    np.testing.assert_allclose(ranker(as_bytes)["click"], got["click"], atol=1e-6)

    save_model(model, tmp_path / "keras")
    reloaded = load_model(tmp_path / "keras")
    assert isinstance(reloaded, RankingModel)
    assert reloaded.encoder.vocabularies == model.encoder.vocabularies
    again = _predict(reloaded, part)
    for t in ("click", "conversion"):
        np.testing.assert_allclose(again[t], want[t], atol=1e-6)
    assert int(reloaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())


def test_warm_start_keeps_known_rows(trained):
    old, _, _ = trained
    vocab = {"user_id": [f"u{i}" for i in range(100, 300)],  # u100..u199 known, u200.. new
             "item_id": VOCAB["item_id"]}
    new = build_ranking_model(RCFG, FCFG, vocab, seed=9)
    stats = warm_start_from(new, old)
    assert stats["encoder"]["user_id"] == {"kept": 100, "new": 100}
    assert stats["encoder"]["item_id"] == {"kept": 100, "new": 0}
    assert stats["layers"]["mmoe"] == "copied" and stats["skipped"] == 0
    old_u = old.encoder.embeddings["user_id"].embeddings.numpy()
    new_u = new.encoder.embeddings["user_id"].embeddings.numpy()
    # new row 1 + j holds vocab[j]; old row 1 + i holds u<i>
    np.testing.assert_array_equal(new_u[1:101], old_u[101:201])
    assert not np.allclose(new_u[101:], 0) and not np.array_equal(new_u[101:], old_u[1:101])
    for a, b in zip(new.mmoe.get_weights(), old.mmoe.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a different expert layout is left fresh but the towers still transfer
    other = build_ranking_model(RCFG.model_copy(update={"num_experts": 5}), FCFG, VOCAB, seed=2)
    stats = warm_start_from(other, old)
    assert stats["layers"]["mmoe"] == "shape_mismatch"
    assert stats["layers"]["tower/click/0"] == "copied"


def test_shared_bottom_builds_and_trains(data):
    feats, labels = data
    model = build_ranking_model(RCFG, FCFG, VOCAB, kind="shared_bottom", seed=4)
    assert model.mmoe is None and model.bottom is not None
    # parameter budget above the input matches the MMoE it stands for (within 2%)
    d = model.input_dim
    mmoe_budget = mmoe_param_count(d, 3, [16], 2, 1) + towers_param_count(16, [8], 2)
    sb_budget = sum(int(np.prod(w.shape)) for w in model.bottom.weights) + sum(
        int(np.prod(w.shape)) for key, layer in model.weight_layers().items()
        if key.startswith(("tower/", "head/")) for w in layer.weights)
    assert abs(sb_budget - mmoe_budget) / mmoe_budget < 0.02, (sb_budget, mmoe_budget)
    assert model.bottom_units == matched_shared_bottom_units(d, 3, [16], 2, 1, [8])
    before = model.evaluate(ranking_dataset(feats, labels, batch_size=2048, shuffle=False),
                            verbose=0, return_dict=True)
    w = np.where(labels["click"] > 0, 2.0, 1.0)  # sample weights are accepted too
    hist = model.fit(ranking_dataset(feats, labels, sample_weight=w, batch_size=256, seed=1),
                     epochs=3, verbose=0, shuffle=False).history
    after = model.evaluate(ranking_dataset(feats, labels, batch_size=2048, shuffle=False),
                           verbose=0, return_dict=True)
    assert after["loss"] < 0.9 * before["loss"], (before, after)
    assert hist["click_auc"][-1] > 0.7
    out = _predict(model, {k: v[:5] for k, v in feats.items()})
    assert out["click"].shape == (5, 1)
    with pytest.raises(ValueError):
        gate_diagnostics(model, feats)


def test_decay_with_floor_and_config_checks():
    sched = DecayWithFloor(0.01, 0.5, 10, floor=0.002)
    assert np.isclose(float(sched(0)), 0.01)
    assert np.isclose(float(sched(10)), 0.005)
    assert np.isclose(float(sched(15)), 0.01 * 0.5 ** 1.5)
    assert np.isclose(float(sched(1000)), 0.002)
    stair = DecayWithFloor(0.01, 0.5, 10, staircase=True)
    assert np.isclose(float(stair(19)), 0.005)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sched))
    assert isinstance(clone, DecayWithFloor) and clone.get_config() == sched.get_config()
    with pytest.raises(ValueError, match="loss_weights"):
        build_ranking_model(RCFG.model_copy(update={"loss_weights": {"click": 1.0, "ctr": 1.0}}),
                            FCFG, VOCAB)
    with pytest.raises(ValueError, match="kind"):
        RankingModel(SPECS, VOCAB, kind="ple")


def _lazy_cfg(name: str) -> RankingConfig:
    return RCFG.model_copy(update={"optimizer": OptimizerConfig(name=name, learning_rate=0.01, decay_steps=50)})


def _ids(feats: dict) -> dict[str, np.ndarray]:
    """Raw feature arrays -> row ids, as the training stream feeds them."""
    import pyarrow as pa

    from dailyrec.stream import id_encoders

    return {n: enc(pa.array(feats[n])) for n, enc in id_encoders(SPECS, VOCAB).items()}


@pytest.mark.parametrize("name", ["lazy_adam", "adam"])
def test_lazy_adam_updates_only_the_embedding_rows_a_batch_touches(data, name):
    from models.optim import LazyAdam

    feats, labels = data
    ids = _ids(feats)
    model = build_ranking_model(_lazy_cfg(name), FCFG, VOCAB, seed=5)
    assert isinstance(model.optimizer, LazyAdam) == (name == "lazy_adam")
    table = model.encoder.embeddings["user_id"].embeddings
    first = np.flatnonzero(ids["user_id"] <= 50)[:128]     # users u0..u49 (row 1 + i)
    second = np.flatnonzero(ids["user_id"] > 100)[:128]    # users u100..
    model.train_on_batch({n: v[first] for n, v in ids.items()}, {t: v[first] for t, v in labels.items()})
    after_first = table.numpy().copy()
    model.train_on_batch({n: v[second] for n, v in ids.items()}, {t: v[second] for t, v in labels.items()})
    after_second = table.numpy()
    only_first = np.setdiff1d(np.unique(ids["user_id"][first]), ids["user_id"][second])
    assert len(only_first) > 10
    moved = np.abs(after_second[only_first] - after_first[only_first]).max(axis=1) > 0
    if name == "lazy_adam":  # rows absent from the second batch keep their values (and moments)
        assert not moved.any()
    else:  # Keras' Adam densifies: the first batch's momentum keeps moving those rows
        assert moved.all()
    touched = np.unique(ids["user_id"][second])
    assert (np.abs(after_second[touched] - after_first[touched]).max(axis=1) > 0).all()


def test_lazy_adam_trains_the_ranking_model_on_ids(data):
    feats, labels = data
    ids = _ids(feats)
    model = build_ranking_model(_lazy_cfg("lazy_adam"), FCFG, VOCAB, seed=5)
    ds = tf.data.Dataset.from_tensor_slices((ids, labels)).batch(256)
    before = model.evaluate(ds, verbose=0, return_dict=True)
    hist = model.fit(ds, epochs=4, verbose=0).history
    after = model.evaluate(ds, verbose=0, return_dict=True)
    assert after["loss"] < 0.9 * before["loss"], (before, after)
    assert hist["click_auc"][-1] > 0.7
    # trained on ids, it scores raw values the same way (the serving path looks them up itself)
    raw = _predict(model, {k: v[:50] for k, v in feats.items()})
    enc = {t: v.numpy() for t, v in model({k: tf.constant(v[:50]) for k, v in ids.items()}, training=False).items()}
    for t in raw:
        np.testing.assert_allclose(raw[t], enc[t], rtol=1e-6, atol=1e-7)
