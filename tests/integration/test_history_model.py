"""The user tower with the click history (models/history.py): the pooling masks padding and
out-of-vocabulary ids, an empty history gives the learned default, the history changes the
vector, and fit / save_model-load_model / warm_start_from / export_towers (serving_default on raw
strings, embed_ids on HistoryEncoder ids) all round-trip. Real TensorFlow, small sizes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from dailyrec.config import FeaturesConfig, TrainingConfig
from dailyrec.history import HISTORY_COLUMN as DATA_COLUMN
from dailyrec.history import HistoryEncoder, history_matrix
from models import serving
from models import two_tower as tt
from models.history import HISTORY_COLUMN, HistoryPooling

SMALL = dict(user_hidden=[16], item_hidden=[16], output_dim=8)
ITEMS = [f"i{i}" for i in range(12)]
USERS = [f"u{i}" for i in range(6)]


def _fc(n: int = 4, pooling: str = "mean") -> FeaturesConfig:
    return FeaturesConfig(user_history={"enabled": True, "length": n, "embedding_dim": 6, "pooling": pooling})


def _batch(fc: FeaturesConfig, rows: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for s in fc.spec:
        if s.dtype == "int":
            out[s.name] = rng.integers(0, 5, rows).astype(np.int64)
        elif s.name == "user_id":
            out[s.name] = rng.choice(USERS, rows)
        elif s.name == "item_id":
            out[s.name] = rng.choice(ITEMS, rows)
        else:
            out[s.name] = np.array([f"v{k}" for k in rng.integers(0, 3, rows)], dtype=object)
    lists = [list(rng.choice(ITEMS, rng.integers(0, 6))) for _ in range(rows)]
    out[HISTORY_COLUMN] = history_matrix(pa.array(lists, pa.list_(pa.string())), fc.user_history.length)
    out["label"] = (np.arange(rows) % 3 == 0).astype(np.float32)
    out["log_q"] = np.full(rows, -2.0, np.float32)
    return out


def test_pooling_masks_padding_and_oov_and_defaults_an_empty_history():
    assert HISTORY_COLUMN == DATA_COLUMN
    layer = HistoryPooling(["a", "b", "c"], embedding_dim=3, length=4)
    layer.empty.assign([7.0, 8.0, 9.0])
    out = layer(tf.constant([["a", "", "", ""], ["a", "c", "zz", ""], ["", "", "", ""], ["zz", "", "", ""]])).numpy()
    table = layer.encoder.embeddings[HISTORY_COLUMN].embeddings.numpy()  # row k+1 = vocab[k]
    np.testing.assert_allclose(out[0], table[1], atol=1e-6)
    np.testing.assert_allclose(out[1], (table[1] + table[3]) / 2, atol=1e-6)  # padding and OOV "zz" masked
    np.testing.assert_allclose(out[2], [7, 8, 9])  # no entry: the learned default
    np.testing.assert_allclose(out[3], [7, 8, 9])
    ids = HistoryEncoder(4, ["a", "b", "c"])(pa.array([["a", "c", "zz"]], pa.list_(pa.string())))
    np.testing.assert_allclose(layer(tf.constant(ids)).numpy()[0], out[1], atol=1e-6)


def test_attention_pooling_weights_only_real_entries():
    layer = HistoryPooling(["a", "b", "c"], embedding_dim=3, length=4, pooling="attention")
    q = tf.constant(np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32))
    out = layer(tf.constant([["a", "b", "", ""], ["a", "b", "zz", "zz"], ["", "", "", ""]]), q).numpy()
    np.testing.assert_allclose(out[0], layer(tf.constant([["a", "b", "", ""]]), q[:1]).numpy()[0], atol=1e-6)
    e = layer.encoder.embeddings[HISTORY_COLUMN].embeddings.numpy()[[1, 2]]  # a, b
    logits = e @ (q.numpy()[0] @ layer.query.kernel.numpy()) / np.sqrt(3)
    w = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(out[0], w @ e, atol=1e-5)  # softmax over the two real entries only
    q1 = tf.concat([q[:1], q[:1], q[2:]], axis=0)
    out1 = layer(tf.constant([["a", "b", "", ""], ["a", "b", "zz", "zz"], ["", "", "", ""]]), q1).numpy()
    np.testing.assert_allclose(out1[1], out1[0], atol=1e-6)  # OOV entries masked like padding
    np.testing.assert_allclose(out[2], layer.empty.numpy())


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_history_model_trains_saves_loads_warm_starts_and_exports(tmp_path, pooling):
    fc = _fc(pooling=pooling)
    tc = TrainingConfig(**SMALL)
    vocabs = {"user_id": USERS, "item_id": ITEMS}
    model = tt.build_two_tower(tc, fc, vocabs)
    assert model.user_tower.feature_names[-1] == HISTORY_COLUMN
    assert model.user_tower.vocabularies[HISTORY_COLUMN] == ITEMS
    batch = _batch(fc, 30)
    model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(10), epochs=2, verbose=0)

    one = {k: v[:1] for k, v in batch.items()}
    with_h = dict(one, **{HISTORY_COLUMN: np.array([["i1", "i2", "", ""]], dtype=object)})
    without = dict(one, **{HISTORY_COLUMN: np.array([["", "", "", ""]], dtype=object)})
    u = model.user_tower
    assert np.abs(u(with_h).numpy() - u(without).numpy()).max() > 1e-4  # the history moves the vector

    tt.save_model(model, tmp_path / "m")
    back = tt.load_model(tmp_path / "m")
    np.testing.assert_allclose(back.user_tower(batch).numpy(), u(batch).numpy(), atol=1e-6)

    fresh = tt.build_two_tower(tc, fc, {"user_id": USERS, "item_id": ITEMS + ["i_new"]})
    stats = tt.warm_start_from(fresh, back)
    assert stats["embeddings"]["user_tower"][HISTORY_COLUMN] == {"kept": len(ITEMS), "new": 1}
    np.testing.assert_allclose(fresh.user_tower.history.empty.numpy(), u.history.empty.numpy())

    paths = serving.export_towers(model, tmp_path / "export")
    raw = serving.load_tower(paths["user_tower"])
    assert raw.input_signature[HISTORY_COLUMN].shape.as_list() == [None, None]
    np.testing.assert_allclose(raw(batch), u(batch).numpy(), atol=1e-5)
    ids = serving.load_tower(paths["user_tower"], signature=serving.IDS_SIGNATURE)
    from dailyrec.stream import id_encoders

    enc = id_encoders(fc.by_side("user") + fc.by_side("context"), vocabs)
    table = pa.table({k: batch[k] for k in enc})
    feed = {k: e(table.column(k)) for k, e in enc.items()}
    lists = pa.array([[x for x in row if x] for row in batch[HISTORY_COLUMN]], pa.list_(pa.string()))
    feed[HISTORY_COLUMN] = HistoryEncoder(4, ITEMS)(lists)
    np.testing.assert_allclose(ids(feed), u(batch).numpy(), atol=1e-5)
