"""Layers alone (no model, no training loop): MMoE gates, shapes, parameter count and
serialisation, SharedBottom serialisation; and the one raw value -> tensor rule of
``models.serving`` that both models' inputs go through."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dailyrec.config import FeatureSpec
from models.mmoe import MMoE, SharedBottom, mmoe_param_count
from models.serving import dummy_features, input_signature, raw_column, tf_dtype, to_tensors


def test_mmoe_layer_gates_sum_to_one_and_shapes():
    layer = MMoE(num_experts=3, expert_units=[12, 6], num_tasks=2, task_specific_experts=2)
    x = np.random.default_rng(0).normal(size=(7, 10)).astype("float32")
    outs, gates = layer(x, return_gates=True)
    assert len(outs) == 2 and len(gates) == 2
    for o, g in zip(outs, gates):
        assert tuple(o.shape) == (7, 6)
        assert tuple(g.shape) == (7, 5)  # 3 shared + 2 own
        np.testing.assert_allclose(np.asarray(g).sum(axis=1), 1.0, atol=1e-6)
        assert (np.asarray(g) >= 0).all()
    assert tuple(layer.expert_kernels[0].shape) == (3 + 2 * 2, 10, 12)
    assert layer.seen_experts(1) == [0, 1, 2, 5, 6]
    for o, g in zip(layer(x), layer.gates(x)):  # same numbers without return_gates
        assert tuple(o.shape) == (7, 6) and tuple(g.shape) == (7, 5)
    n_params = sum(int(np.prod(w.shape)) for w in layer.weights)
    assert n_params == mmoe_param_count(10, 3, [12, 6], 2, 2)
    # symbolic use (functional model), gates included
    inp = keras.Input((10,))
    outs, gates = MMoE(2, [4], 2, 1)(inp, return_gates=True)
    model = keras.Model(inp, [*outs, *gates])
    assert [tuple(o.shape) for o in model(x)] == [(7, 4), (7, 4), (7, 3), (7, 3)]


def test_mmoe_layer_serializes():
    layer = MMoE(num_experts=2, expert_units=[4], num_tasks=3, task_specific_experts=1, name="m")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, MMoE)
    assert clone.get_config() == layer.get_config()
    sb = SharedBottom([5, 3], num_tasks=2)
    assert keras.layers.deserialize(keras.layers.serialize(sb)).get_config() == sb.get_config()


def test_one_dtype_rule_for_specs_signatures_and_dummies():
    specs = [FeatureSpec(name="user_id", side="user", kind="vocab"),
             FeatureSpec(name="hour_of_day", side="context", kind="int", buckets=24, dtype="int")]
    assert [tf_dtype(s) for s in specs] == [tf.string, tf.int64]
    assert tf_dtype(specs[1].model_dump()) == tf.int64
    assert tf_dtype({"name": "x", "kind": "int"}) == tf.int64  # a dict without dtype falls back on kind
    assert tf_dtype({"name": "x", "kind": "hash"}) == tf.string
    sig = input_signature(specs)
    assert {n: (s.shape.as_list(), s.dtype) for n, s in sig.items()} == {
        "user_id": ([None], tf.string), "hour_of_day": ([None], tf.int64)}
    dummy = dummy_features(specs, batch=3)
    assert dummy["user_id"].numpy().tolist() == [b""] * 3 and dummy["hour_of_day"].numpy().tolist() == [0] * 3


def test_raw_values_cast_to_the_signature():
    specs = [FeatureSpec(name="user_id", side="user", kind="vocab"),
             FeatureSpec(name="hour_of_day", side="context", kind="int", buckets=24, dtype="int")]
    want = {"user_id": [b"7", b"u1"], "hour_of_day": [3, 4]}
    for feats in ({"user_id": np.array([7, "u1"], dtype=object), "hour_of_day": np.array([3, 4], np.int32)},
                  {"user_id": ["7", b"u1"], "hour_of_day": [3.0, 4.0], "extra": [1, 2]},
                  {"user_id": tf.constant(["7", "u1"]), "hour_of_day": tf.constant([3, 4])}):
        got = to_tensors(feats, specs)
        assert set(got) == {"user_id", "hour_of_day"}
        assert {k: v.numpy().tolist() for k, v in got.items()} == want
        assert got["hour_of_day"].dtype == tf.int64
    assert to_tensors({"user_id": tf.constant([7, 8]), "hour_of_day": [1, 2]}, specs)["user_id"].numpy().tolist() \
        == [b"7", b"8"]
    with pytest.raises(KeyError, match="hour_of_day"):
        to_tensors({"user_id": ["a"]}, input_signature(specs), where="here")
    # numpy level (tf.data pipelines): strings kept, other objects through str, ints to int64
    assert raw_column(np.array(["a", "b"], dtype=object)).tolist() == ["a", "b"]
    assert raw_column(np.array([1, 2], np.int32)).dtype == np.int64
    assert raw_column(np.array([1.5], np.float32)).dtype == np.float32
    assert raw_column(np.array([1, 2]), tf.string).tolist() == ["1", "2"]
    assert raw_column(np.array([1, 2], np.int32), tf.int64).dtype == np.int64
