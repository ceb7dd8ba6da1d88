"""Two-tower model: towers, the model loss against the loss functions, learning on synthetic data
with both losses, export/reload, save/load, warm start. Real TensorFlow, small sizes.

The loss functions and the optimiser pieces alone are unit-tested in tests/unit/test_losses.py."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dailyrec.config import FeatureSpec, FeaturesConfig, OptimizerConfig, TrainingConfig
from models import losses
from models import serving
from models import two_tower as tt

SMALL_TRAIN = dict(user_hidden=[32], item_hidden=[32], output_dim=16)


def _default_batch(fc: FeaturesConfig, n: int, users: list[str], items: list[str], seed: int = 0) -> dict:
    """Raw features for every spec of ``fc`` (ids drawn from ``users``/``items`` plus unknown ids)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for s in fc.spec:
        if s.dtype == "int":
            out[s.name] = rng.integers(0, 30, n).astype(np.int64)
        elif s.name == "user_id":
            out[s.name] = np.array(rng.choice(users + ["u_unknown"], n))
        elif s.name == "item_id":
            out[s.name] = np.array(rng.choice(items + ["i_unknown"], n))
        else:
            out[s.name] = np.array([f"{s.name}_{k}" for k in rng.integers(0, 50, n)])
    return out


def _tensors(batch: dict) -> dict:
    return {k: tf.constant(v) for k, v in batch.items()}


# ----------------------------------------------------------------------------- towers


def test_towers_output_shape_and_unit_norm():
    fc = FeaturesConfig()
    tc = TrainingConfig(**SMALL_TRAIN)
    vocabs = {"user_id": [f"u{i}" for i in range(20)], "item_id": [f"i{i}" for i in range(10)]}
    model = tt.build_two_tower(tc, fc, vocabs)
    assert model.user_tower.feature_names == [s.name for s in fc.by_side("user") + fc.by_side("context")]
    assert model.item_tower.feature_names == [s.name for s in fc.by_side("item")]
    # each tower keeps only its own vocabularies
    assert set(model.user_tower.vocabularies) == {"user_id"}
    assert set(model.item_tower.vocabularies) == {"item_id"}

    batch = _tensors(_default_batch(fc, 7, vocabs["user_id"], vocabs["item_id"]))
    out = model(batch)
    for side in ("user", "item"):
        emb = out[side].numpy()
        assert emb.shape == (7, 16) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(model.user_tower(batch).numpy(), out["user"].numpy(), atol=1e-6)


def test_model_loss_equals_loss_functions_on_full_embeddings():
    """The softmax path runs the user tower on positive rows only; the value must not change."""
    fc = _synthetic_features()
    vocabs = {"user_id": [f"u{i}" for i in range(20)], "item_id": [f"i{i}" for i in range(10)]}
    raw = _default_batch(fc, 40, vocabs["user_id"], vocabs["item_id"], seed=4)
    labels = (np.arange(40) % 4 == 0).astype(np.float32)
    log_q = np.log(np.linspace(0.01, 0.2, 40)).astype(np.float32)
    batch = _tensors({**raw, "label": labels, "log_q": log_q, "source": np.array(["s"] * 40)})
    for loss_name in ("softmax", "bce"):
        model = tt.build_two_tower(TrainingConfig(loss=loss_name, **SMALL_TRAIN), fc, vocabs)
        loss, recall = model.compute_two_tower_loss(batch)
        emb = model(batch)
        keys = model.item_keys(batch)
        if loss_name == "softmax":
            want = losses.in_batch_softmax_loss(emb["user"], emb["item"], labels, keys, log_q, 0.05)
        else:
            want = losses.pointwise_bce_loss(emb["user"], emb["item"], labels, 0.05)
        assert float(loss) == pytest.approx(float(want), rel=1e-5)
        assert float(recall) == pytest.approx(float(losses.in_batch_recall_at_k(emb["user"], emb["item"], labels,
                                                                                 keys)), abs=1e-6)
    with pytest.raises(KeyError, match="log_q"):
        tt.build_two_tower(TrainingConfig(**SMALL_TRAIN), fc, vocabs).compute_two_tower_loss(
            {k: v for k, v in batch.items() if k != "log_q"})


# ----------------------------------------------------------------------------- learning


N_USERS, N_ITEMS, N_CATS = 200, 100, 5


def _synthetic_features() -> FeaturesConfig:
    return FeaturesConfig(spec=[
        FeatureSpec(name="user_id", side="user", kind="vocab", buckets=1000, embedding_dim=16),
        FeatureSpec(name="hour_of_day", side="context", kind="int", buckets=24, embedding_dim=2, dtype="int"),
        FeatureSpec(name="item_id", side="item", kind="vocab", buckets=1000, embedding_dim=16),
        FeatureSpec(name="item_category", side="item", kind="hash", buckets=16, embedding_dim=4),
    ])


def _synthetic_data(seed: int = 0):
    """Each user likes the items of one of 5 categories; 4 uniform negatives per positive."""
    rng = np.random.default_rng(seed)
    user_cat = rng.integers(0, N_CATS, N_USERS)
    item_cat = np.arange(N_ITEMS) % N_CATS
    by_cat = [np.nonzero(item_cat == c)[0] for c in range(N_CATS)]
    pos_u = np.repeat(np.arange(N_USERS), 25)
    pos_i = np.array([rng.choice(by_cat[user_cat[u]]) for u in pos_u])
    held_i = np.array([rng.choice(by_cat[user_cat[u]]) for u in range(N_USERS)])
    neg_u = np.repeat(pos_u, 4)
    neg_i = rng.integers(0, N_ITEMS, len(neg_u))
    freq = np.bincount(pos_i, minlength=N_ITEMS) / len(pos_i)
    users = np.concatenate([pos_u, neg_u])
    items = np.concatenate([pos_i, neg_i])
    label = np.concatenate([np.ones(len(pos_u)), np.zeros(len(neg_u))]).astype(np.float32)
    log_q = np.concatenate([np.log(freq[pos_i]), np.full(len(neg_u), np.log(1 / N_ITEMS))]).astype(np.float32)
    data = {
        "user_id": np.array([f"u{x}" for x in users]),
        "hour_of_day": rng.integers(0, 24, len(users)).astype(np.int64),
        "item_id": np.array([f"i{x}" for x in items]),
        "item_category": np.array([f"c{item_cat[x]}" for x in items]),
        "label": label,
        "log_q": log_q,
        "source": np.where(label > 0, "click", "uniform"),
    }
    return data, held_i, item_cat


def _catalogue(item_cat: np.ndarray) -> dict:
    return {"item_id": np.array([f"i{x}" for x in range(N_ITEMS)]),
            "item_category": np.array([f"c{item_cat[x]}" for x in range(N_ITEMS)])}


def _held_out_recall_at_10(model, held_i: np.ndarray, item_cat: np.ndarray) -> float:
    users = {"user_id": tf.constant([f"u{x}" for x in range(N_USERS)]),
             "hour_of_day": tf.zeros([N_USERS], tf.int64)}
    u = model.user_tower(users).numpy()
    v = model.item_tower(_catalogue(item_cat)).numpy()
    scores = u @ v.T
    top = np.argsort(-scores, axis=1)[:, :10]
    return float(np.mean([held_i[k] in top[k] for k in range(N_USERS)]))


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["softmax", "bce"])
def test_loss_falls_and_recall_beats_random(loss_name):
    keras.utils.set_random_seed(1)
    data, held_i, item_cat = _synthetic_data()
    fc = _synthetic_features()
    tc = TrainingConfig(loss=loss_name, optimizer=OptimizerConfig(learning_rate=0.01, decay_steps=100), **SMALL_TRAIN)
    vocabs = {"user_id": [f"u{x}" for x in range(N_USERS)], "item_id": [f"i{x}" for x in range(N_ITEMS)]}
    model = tt.build_two_tower(tc, fc, vocabs)
    ds = tf.data.Dataset.from_tensor_slices(data).shuffle(len(data["label"]), seed=1).batch(500)
    before = model.evaluate(ds, verbose=0, return_dict=True)
    recall_before = _held_out_recall_at_10(model, held_i, item_cat)
    hist = model.fit(ds, epochs=4, verbose=0).history
    after = model.evaluate(ds, verbose=0, return_dict=True)
    recall_after = _held_out_recall_at_10(model, held_i, item_cat)

    assert set(hist) >= {"loss", "recall_at_10"} and len(hist["loss"]) == 4
    assert hist["loss"][-1] < hist["loss"][0]
    assert after["loss"] < 0.75 * before["loss"], (before, after)
    assert after["recall_at_10"] > before["recall_at_10"]
    # random ranking gives 10/100; the category structure lets a trained model reach ~0.5
    assert recall_before < 0.25 and recall_after > 0.3, (recall_before, recall_after)
    assert model.optimizer.iterations.numpy() == 4 * math.ceil(len(data["label"]) / 500)


# ----------------------------------------------------------------------------- export, save, warm start


def test_export_and_reload_give_identical_vectors(tmp_path):
    fc = FeaturesConfig()
    tc = TrainingConfig(**SMALL_TRAIN)
    vocabs = {"user_id": [f"u{i}" for i in range(20)], "item_id": [f"i{i}" for i in range(10)]}
    model = tt.build_two_tower(tc, fc, vocabs)
    batch = _default_batch(fc, 33, vocabs["user_id"], vocabs["item_id"], seed=9)
    batch.update(label=(np.arange(33) % 3 == 0).astype(np.float32), log_q=np.full(33, -3.0, np.float32))
    model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(11), epochs=1, verbose=0)  # non-initial weights

    paths = serving.export_towers(model, tmp_path / "export")
    assert paths == {"user_tower": str(tmp_path / "export" / "user_tower"),
                     "item_tower": str(tmp_path / "export" / "item_tower")}
    for name, tower in (("user_tower", model.user_tower), ("item_tower", model.item_tower)):
        loaded = serving.load_tower(paths[name])
        assert loaded.feature_names == sorted(tower.feature_names)
        sig = tf.saved_model.load(paths[name]).signatures["serving_default"]
        _, inputs = sig.structured_input_signature
        for s in tower.specs:
            assert inputs[s["name"]].shape.as_list() == [None]
            assert inputs[s["name"]].dtype == (tf.int64 if s["dtype"] == "int" else tf.string)
        assert list(sig.structured_outputs) == ["embedding"]
        got = loaded(batch)  # numpy in, extra keys ignored
        want = tower(_tensors(batch)).numpy()
        assert got.shape == (33, 16)
        np.testing.assert_allclose(got, want, atol=1e-6)
        # python lists work too
        one = loaded({k: list(v[:1]) for k, v in batch.items()})
        np.testing.assert_allclose(one, want[:1], atol=1e-6)

    # full model round trip (warm start source): same vectors, optimizer state restored
    saved = tt.save_model(model, tmp_path / "model")
    again = tt.load_model(tmp_path / "model")
    assert isinstance(again, tt.TwoTowerModel) and again.vocabularies == vocabs
    assert saved["vocabularies"].endswith("vocabularies.json")
    for side in ("user", "item"):
        np.testing.assert_allclose(again(_tensors(batch))[side].numpy(), model(_tensors(batch))[side].numpy(),
                                   atol=1e-6)
    assert again.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() == 3
    np.testing.assert_array_equal(again.optimizer.variables[-1].numpy(), model.optimizer.variables[-1].numpy())


def test_warm_start_keeps_known_rows_and_initialises_new_ids(tmp_path):
    fc = _synthetic_features()
    tc = TrainingConfig(**SMALL_TRAIN)
    old_vocab = {"user_id": [f"u{i}" for i in range(10)], "item_id": [f"i{i}" for i in range(8)]}
    keras.utils.set_random_seed(2)
    old = tt.build_two_tower(tc, fc, old_vocab)
    tt.save_model(old, tmp_path / "old")
    old = tt.load_model(tmp_path / "old", compile=False)  # warm start reads the previous model from disk
    # new vocabulary: reordered, u5..u9 known, u10..u14 new; items unchanged
    new_vocab = {"user_id": [f"u{i}" for i in [14, 9, 5, 10, 6, 11, 7, 12, 8, 13]],
                 "item_id": list(old_vocab["item_id"])}
    keras.utils.set_random_seed(3)
    new = tt.build_two_tower(tc, fc, new_vocab)
    stats = tt.warm_start_from(new, old)

    assert stats["embeddings"]["user_tower"]["user_id"] == {"kept": 5, "new": 5}
    assert stats["embeddings"]["item_tower"]["item_id"] == {"kept": 8, "new": 0}
    assert stats["kept_ids"] == 13 and stats["new_ids"] == 5
    assert stats["dense_copied"] == 4 and stats["dense_skipped"] == 0

    old_enc, new_enc = old.user_tower.encoder, new.user_tower.encoder
    old_w = old_enc.embeddings["user_id"].embeddings.numpy()
    new_w = new_enc.embeddings["user_id"].embeddings.numpy()

    def row(enc, w, uid):
        return w[int(enc.index("user_id", tf.constant([uid]))[0])]

    for uid in ["u5", "u6", "u7", "u8", "u9"]:
        np.testing.assert_array_equal(row(new_enc, new_w, uid), row(old_enc, old_w, uid))
    for uid in ["u10", "u11", "u12", "u13", "u14"]:
        r = row(new_enc, new_w, uid)
        assert not np.any(np.all(np.isclose(old_w, r[None, :]), axis=1)), f"{uid} got an old row"
    # known users see the same tower output (all their features and the dense layers carried over)
    feats = {"user_id": tf.constant(["u5", "u9"]), "hour_of_day": tf.constant([3, 4], tf.int64)}
    np.testing.assert_allclose(new.user_tower(feats).numpy(), old.user_tower(feats).numpy(), atol=1e-6)
    items = {"item_id": tf.constant([f"i{i}" for i in range(8)]), "item_category": tf.constant(["c1"] * 8)}
    np.testing.assert_allclose(new.item_tower(items).numpy(), old.item_tower(items).numpy(), atol=1e-6)

    # a changed MLP width is skipped, the rest still copied
    wider = tt.build_two_tower(TrainingConfig(user_hidden=[48], item_hidden=[32], output_dim=16), fc, new_vocab)
    s2 = tt.warm_start_from(wider, old)
    assert s2["dense"]["user_tower"] == {"copied": [], "skipped": ["hidden_0", "projection"]}
    assert s2["dense"]["item_tower"]["copied"] == ["hidden_0", "projection"]
