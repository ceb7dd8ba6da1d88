"""Loss functions of the two-tower model (logQ sign, accidental-hit masking, BCE, in-batch recall)
and the optimiser pieces (learning-rate decay with a floor, LazyAdam). Real TensorFlow, tiny
tensors, no model, no training loop."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import losses
from models.optim import DecayWithFloor, LazyAdam


def test_lr_schedule_decays_to_floor_and_serialises():
    sched = DecayWithFloor(0.01, 0.5, 10, floor=0.002)
    assert float(sched(0)) == pytest.approx(0.01)
    assert float(sched(10)) == pytest.approx(0.005)
    assert float(sched(5)) == pytest.approx(0.01 * 0.5 ** 0.5, rel=1e-5)
    assert float(sched(1000)) == pytest.approx(0.002)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert isinstance(again, DecayWithFloor) and again.get_config() == sched.get_config()


def test_lazy_adam_matches_adam_on_touched_rows_and_leaves_others():
    rng = np.random.default_rng(0)
    init = rng.normal(size=(6, 3)).astype(np.float32)
    lazy_var, adam_var = keras.Variable(init), keras.Variable(init)
    lazy, adam = LazyAdam(learning_rate=0.1), keras.optimizers.Adam(learning_rate=0.1)
    for step in range(3):
        idx = tf.constant([0, 2, 2, 4], tf.int64)  # a repeated row, rows 1, 3, 5 never touched
        vals = tf.constant(rng.normal(size=(4, 3)).astype(np.float32))
        lazy.apply([tf.IndexedSlices(vals, idx, tf.constant([6, 3], tf.int64))], [lazy_var])
        adam.apply([tf.math.unsorted_segment_sum(vals, idx, 6)], [adam_var])
    got, want = lazy_var.numpy(), adam_var.numpy()
    np.testing.assert_allclose(got[[0, 2, 4]], want[[0, 2, 4]], atol=1e-5)
    np.testing.assert_array_equal(got[[1, 3, 5]], init[[1, 3, 5]])
    assert isinstance(keras.optimizers.deserialize(keras.optimizers.serialize(lazy)), LazyAdam)


# ----------------------------------------------------------------------------- losses


def _unit(x: np.ndarray) -> tf.Tensor:
    x = np.asarray(x, np.float32)
    return tf.constant(x / np.linalg.norm(x, axis=1, keepdims=True))


def test_bce_loss_hand_computed():
    u = _unit([[1, 0], [1, 0], [0, 1]])
    v = _unit([[1, 0], [0, 1], [0, -1]])
    labels = tf.constant([1.0, 0.0, 0.0])
    # logits = cos / T with T = 0.5: [2, 0, -2]
    expected = (-math.log(1 / (1 + math.exp(-2))) + math.log(2) - math.log(1 - 1 / (1 + math.exp(2)))) / 3
    got = float(losses.pointwise_bce_loss(u, v, labels, temperature=0.5))
    assert got == pytest.approx(expected, rel=1e-5)


def test_logq_correction_lowers_frequent_items():
    # one query (row 0) and three candidates with the SAME cosine to it; only log q differs.
    u = _unit([[1, 0], [0, 1], [0, 1], [0, 1]])
    v = _unit([[1, 1], [1, 1], [1, 1], [1, 1]])
    labels = tf.constant([1.0, 0.0, 0.0, 0.0])
    keys = tf.constant([10, 11, 12, 13], tf.int64)
    log_q = tf.constant(np.log([0.01, 0.5, 0.01, 0.001]).astype(np.float32))  # item 11 frequent
    t = 0.1
    cols, raw = losses.in_batch_logits(u, v, labels, keys, log_q, t, logq_correction=False)
    _, corrected = losses.in_batch_logits(u, v, labels, keys, log_q, t, logq_correction=True)
    assert cols.numpy().tolist() == [0]
    cos = math.sqrt(0.5)
    np.testing.assert_allclose(raw.numpy()[0], [cos / t] * 4, rtol=1e-5)
    # logit_ij = u.v / T - log q_j
    np.testing.assert_allclose(corrected.numpy()[0], cos / t - log_q.numpy(), rtol=1e-5)
    c = corrected.numpy()[0]
    assert c[1] < c[2] < c[3], "the frequent item must get the lowest logit, the rarest the highest"
    # so the frequent negative takes a smaller share of the softmax than without the correction
    p_raw = tf.nn.softmax(raw).numpy()[0]
    p_cor = tf.nn.softmax(corrected).numpy()[0]
    assert p_cor[1] < p_raw[1] and p_cor[3] > p_raw[3]
    # and the loss is the cross-entropy of these logits, target column 0
    loss = float(losses.in_batch_softmax_loss(u, v, labels, keys, log_q, t, logq_correction=True))
    assert loss == pytest.approx(-math.log(p_cor[0]), rel=1e-5)


def _ref_softmax_loss(u, v, labels, keys, log_q, t):
    """Straightforward numpy reference: mean over positive rows of the masked cross-entropy."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    out = []
    for i in np.nonzero(np.asarray(labels) > 0.5)[0]:
        cols = [j for j in range(len(keys)) if j == i or keys[j] != keys[i]]
        logits = np.array([u[i] @ v[j] / t - log_q[j] for j in cols])
        target = cols.index(i)
        out.append(-(logits[target] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()))
    return float(np.mean(out))


def test_accidental_hits_are_masked():
    rng = np.random.default_rng(3)
    # rows 0,1 positives (items A, B); row 2 a negative that duplicates A; row 3 negative item C;
    # row 4 a positive of item A again (so rows 0 and 4 mask each other and row 2).
    keys = np.array(["A", "B", "A", "C", "A"])
    labels = np.array([1, 1, 0, 0, 1], np.float32)
    v_np = rng.normal(size=(5, 4))
    v_np[2] = v_np[4] = v_np[0]  # same item, same embedding
    v = _unit(v_np)
    u = _unit(v_np + 0.3 * rng.normal(size=(5, 4)))  # each user close to its own item
    log_q = np.log(np.array([0.2, 0.1, 0.2, 0.05, 0.2], np.float32))

    mask = losses.accidental_hit_mask(tf.constant(keys), tf.constant([0, 1, 4], tf.int64)).numpy()
    np.testing.assert_array_equal(mask, [[False, False, True, False, True],
                                         [False, False, False, False, False],
                                         [True, False, True, False, False]])

    cols, logits = losses.in_batch_logits(u, v, tf.constant(labels), tf.constant(keys), tf.constant(log_q), 0.1)
    logits = logits.numpy()
    assert cols.numpy().tolist() == [0, 1, 4]
    assert np.isneginf(logits[0, 2]) and np.isneginf(logits[0, 4]) and np.isfinite(logits[0, 0])
    assert np.isneginf(logits[2, 0]) and np.isneginf(logits[2, 2]) and np.isfinite(logits[2, 4])
    assert np.isfinite(logits[1]).all()

    loss = float(losses.in_batch_softmax_loss(u, v, tf.constant(labels), tf.constant(keys),
                                              tf.constant(log_q), 0.1))
    assert loss == pytest.approx(_ref_softmax_loss(u.numpy(), v.numpy(), labels, keys, log_q, 0.1), rel=1e-5)
    # without masking, the two duplicates of A would count as negatives as likely as the positive:
    # the loss of queries 0 and 4 would rise by about log(3)
    unmasked = float(losses.in_batch_softmax_loss(u, v, tf.constant(labels), tf.constant(np.arange(5)),
                                                  tf.constant(log_q), 0.1))
    assert unmasked > loss + 0.3


def test_softmax_loss_matches_logits_and_has_finite_gradients():
    rng = np.random.default_rng(5)
    n = 64
    u = tf.Variable(_unit(rng.normal(size=(n, 8))))
    v = tf.Variable(_unit(rng.normal(size=(n, 8))))
    labels = tf.constant((rng.random(n) < 0.4).astype(np.float32))
    keys = tf.constant(rng.integers(0, 10, n), tf.int64)  # many duplicates
    log_q = tf.constant(np.log(rng.uniform(0.01, 0.3, n)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = losses.in_batch_softmax_loss(u, v, labels, keys, log_q, 0.05)
    grads = tape.gradient(loss, [u, v])
    cols, logits = losses.in_batch_logits(u, v, labels, keys, log_q, 0.05)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=cols, logits=logits))
    assert float(loss) == pytest.approx(float(ce), rel=1e-5)
    assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)

    # degenerate batches: every row the same item, and no positive at all
    same = tf.zeros([n], tf.int64)
    with tf.GradientTape() as tape:
        loss_same = losses.in_batch_softmax_loss(u, v, labels, same, log_q, 0.05)
    assert float(loss_same) == pytest.approx(0.0, abs=1e-6)
    assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in tape.gradient(loss_same, [u, v]))
    assert float(losses.in_batch_softmax_loss(u, v, tf.zeros([n]), keys, log_q, 0.05)) == 0.0
    assert float(losses.in_batch_recall_at_k(u, v, tf.zeros([n]), keys)) == 0.0


def test_in_batch_recall():
    # query 0 -> its own item is the best; query 1 -> its item is worst among 12 distinct items
    d = 12
    eye = np.eye(d, dtype=np.float32)
    u = np.zeros((d, d), np.float32)
    u[0] = eye[0]
    u[1] = -eye[1] + 0.01 * eye[2]
    u[2:] = eye[2:]
    labels = np.zeros(d, np.float32)
    labels[[0, 1]] = 1
    r = losses.in_batch_recall_at_k(_unit(u + 1e-3), tf.constant(eye), tf.constant(labels),
                                    tf.constant(np.arange(d)), k=10)
    assert float(r) == pytest.approx(0.5)
