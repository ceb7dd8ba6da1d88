"""Losses of the two-tower retrieval model: pure functions on tensors (TensorFlow ops only).

Shapes: ``B`` rows in the batch, ``D`` the embedding size, ``P`` the number of query rows
(rows with ``label == 1``; dynamic). All embeddings are expected L2-normalised, so a dot product
is a cosine.

A batch mixes positive rows (a user and the item she clicked, ``label = 1``) and sampled
negative rows (a user and a sampled item, ``label = 0``):

* :func:`pointwise_bce_loss` treats every row as a binary example:
  ``BCE(sigmoid(cos(u_i, v_i) / T), label_i)`` with the fixed ``T = TrainingConfig.temperature``
  (no logQ term);
* :func:`in_batch_softmax_loss` is the in-batch sampled softmax with *mixed negative sampling*
  (Yang et al. 2020, "Mixed Negative Sampling for Learning Two-tower Neural Networks in
  Recommendations"): the queries are the positive rows only, the candidates are the items of
  **all** rows (the other positives' items are the in-batch negatives, the negative rows' items are
  the extra sampled negatives). With the logQ correction (Yi et al. 2019, "Sampling-bias-corrected
  neural modeling") the logit of candidate ``j`` for query ``i`` is::

      logit_ij = u_i . v_j / T - log q_j

  ``q_j`` being the probability that item ``j`` turns up as a candidate. Subtracting ``log q_j``
  *lowers* the logit of frequent items (``log q`` is closer to 0, i.e. larger), which undoes the
  over-penalisation of popular items that appear as negatives more often than their share.
  A candidate column ``j != i`` holding the same item as query ``i``'s positive (an *accidental
  hit*) gets ``-inf``: it is not a negative.

This module never imports Airflow.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

Tensor = Any


def pointwise_bce_loss(user_emb: Tensor, item_emb: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(cos(u_i, v_i) / temperature)`` against the labels.

    Args:
        user_emb: ``float32[B, D]`` (L2-normalised).
        item_emb: ``float32[B, D]`` (L2-normalised), row ``i`` is the item of row ``i``.
        labels: ``float[B]``, 1 = positive (clicked) pair, 0 = sampled negative pair.
        temperature: fixed scale ``T > 0``; the logit is ``cos / T``.
    Returns:
        ``float32[]``: the mean over all ``B`` rows.
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.float32)
    logits = tf.reduce_sum(user_emb * item_emb, axis=-1) / temperature
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def query_rows(labels: Tensor) -> Tensor:
    """``float[B]`` labels -> ``int64[P]`` indices of the query (``label > 0.5``) rows."""
    return tf.reshape(tf.where(tf.reshape(labels, [-1]) > 0.5), [-1])


def accidental_hit_mask(item_keys: Tensor, query_cols: Tensor) -> Tensor:
    """Which candidate columns duplicate a query's positive item.

    Args:
        item_keys: ``[B]`` item identity of every row (any dtype ``tf.equal`` accepts: int64 keys,
            strings).
        query_cols: ``int64[P]`` the row (= target column) of each query.
    Returns:
        ``bool[P, B]``: ``True`` at ``(p, j)`` when ``item_keys[j] == item_keys[query_cols[p]]``
        and ``j != query_cols[p]``.
    """
    item_keys = tf.reshape(item_keys, [-1])
    query_keys = tf.gather(item_keys, query_cols)
    same_item = tf.equal(query_keys[:, None], item_keys[None, :])
    cols = tf.range(tf.shape(item_keys, out_type=tf.int64)[0], dtype=tf.int64)
    not_target = tf.not_equal(tf.cast(query_cols, tf.int64)[:, None], cols[None, :])
    return tf.logical_and(same_item, not_target)


def _query_logits_and_hits(
    query_emb: Tensor,
    query_cols: Tensor,
    item_emb: Tensor,
    item_keys: Tensor,
    log_q: Tensor | None,
    temperature: float,
    logq_correction: bool,
) -> tuple[Tensor, Tensor]:
    """``(logits float32[P, B] unmasked, same_item bool[P, B])``.

    ``same_item[p, j]``: column ``j`` holds query ``p``'s item (its own target column included).
    The ``/T`` is applied to the ``P`` query vectors and ``-log q`` enters as an extra embedding
    coordinate (``[u/T, 1] . [v, -log q]``), so the ``[P, B]`` logits come out of one matmul:
    passes over ``[P, B]`` are what costs at ``B = 4096``.
    """
    query_emb = query_emb / temperature
    if logq_correction and log_q is not None:
        log_q = tf.cast(tf.reshape(log_q, [-1, 1]), item_emb.dtype)
        query_emb = tf.concat([query_emb, tf.ones_like(query_emb[:, :1])], axis=1)
        item_emb = tf.concat([item_emb, -log_q], axis=1)
    logits = tf.matmul(query_emb, item_emb, transpose_b=True)
    item_keys = tf.reshape(item_keys, [-1])
    same_item = tf.equal(tf.gather(item_keys, query_cols)[:, None], item_keys[None, :])
    return logits, same_item


def in_batch_logits(
    user_emb: Tensor,
    item_emb: Tensor,
    labels: Tensor,
    item_keys: Tensor,
    log_q: Tensor | None,
    temperature: float,
    logq_correction: bool = True,
) -> tuple[Tensor, Tensor]:
    """Logits of the in-batch softmax: queries = positive rows, candidates = every row's item.

    Args:
        user_emb: ``float32[B, D]``; item_emb: ``float32[B, D]``; labels: ``float[B]``;
        item_keys: ``[B]`` item identity (int64 or string) for accidental-hit masking;
        log_q: ``float[B]`` log sampling probability of each row's item (ignored when
            ``logq_correction`` is false or it is ``None``); temperature: ``T > 0``.
    Returns:
        ``(query_cols int64[P], logits float32[P, B])`` with
        ``logits[p, j] = u_{query_cols[p]} . v_j / T - log q_j``, and ``-inf`` where ``j`` is an
        accidental hit of query ``p`` (same item key, ``j != query_cols[p]``). The target of query
        ``p`` is column ``query_cols[p]``. :func:`in_batch_softmax_loss` is the softmax
        cross-entropy of these logits (computed without materialising the masked matrix twice).
    """
    query_cols = query_rows(labels)
    logits, same_item = _query_logits_and_hits(tf.gather(user_emb, query_cols), query_cols, item_emb, item_keys,
                                               log_q, temperature, logq_correction)
    cols = tf.range(tf.shape(logits, out_type=tf.int64)[1], dtype=tf.int64)
    hit = tf.logical_and(same_item, tf.not_equal(query_cols[:, None], cols[None, :]))
    return query_cols, tf.where(hit, tf.constant(float("-inf"), logits.dtype), logits)


def in_batch_softmax_loss(
    user_emb: Tensor,
    item_emb: Tensor,
    labels: Tensor,
    item_keys: Tensor,
    log_q: Tensor | None,
    temperature: float,
    logq_correction: bool = True,
) -> Tensor:
    """In-batch sampled softmax with mixed negatives, logQ correction and accidental-hit masking.

    Args:
        user_emb: ``float32[B, D]`` (L2-normalised).
        item_emb: ``float32[B, D]`` (L2-normalised).
        labels: ``float[B]``; rows with ``label == 1`` are the queries (``P`` of them), every
            row's item is a candidate column.
        item_keys: ``[B]`` item identity used for accidental-hit masking (int64 or string).
        log_q: ``float[B]`` log of the sampling probability of each row's item (``None`` = no
            correction).
        temperature: ``T > 0``.
        logq_correction: subtract ``log_q`` from the logits.
    Returns:
        ``float32[]``: mean over the ``P`` queries of ``-log softmax(logits_p)[query_cols[p]]``
        with the logits of :func:`in_batch_logits`; 0 when the batch has no positive row.

    Computed as ``softplus(logsumexp_{j not same item}(logits_pj) - logits_p,target)``, which is
    ``log(exp(target) + sum_{other items} exp(logit)) - target``: the same value as the
    cross-entropy of the masked logits, with fewer passes over ``[P, B]``.
    """
    query_cols = query_rows(labels)
    return softmax_loss_for_queries(tf.gather(user_emb, query_cols), query_cols, item_emb, item_keys, log_q,
                                    temperature, logq_correction)


def softmax_loss_for_queries(
    query_emb: Tensor,
    query_cols: Tensor,
    item_emb: Tensor,
    item_keys: Tensor,
    log_q: Tensor | None,
    temperature: float,
    logq_correction: bool = True,
) -> Tensor:
    """:func:`in_batch_softmax_loss` given only the query rows' user vectors.

    Args:
        query_emb: ``float32[P, D]`` user vectors of the query rows (``query_cols``);
        query_cols: ``int64[P]`` their rows (= target columns), as :func:`query_rows` gives;
        item_emb: ``float32[B, D]``; item_keys: ``[B]``; log_q: ``float[B]`` or ``None``.
    Returns:
        ``float32[]``. Lets a model run its user tower on the ``P`` positive rows only (sampled
        negative rows are candidates, never queries).
    """
    logits, same_item = _query_logits_and_hits(query_emb, query_cols, item_emb, item_keys, log_q, temperature,
                                               logq_correction)
    target = tf.gather(logits, query_cols, axis=1, batch_dims=1)
    others = tf.where(same_item, tf.constant(float("-inf"), logits.dtype), logits)
    per_query = tf.math.softplus(tf.reduce_logsumexp(others, axis=1) - target)
    n = tf.cast(tf.shape(per_query)[0], per_query.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_query), n)


def in_batch_recall_at_k(
    user_emb: Tensor,
    item_emb: Tensor,
    labels: Tensor,
    item_keys: Tensor,
    k: int = 10,
    max_queries: int | None = None,
) -> Tensor:
    """Share of queries (positive rows) whose own item ranks in the top ``k`` of the batch's items.

    Ranks plain cosines (no logQ, as served); accidental hits are not counted as better items.
    Args:
        user_emb ``float32[B, D]``, item_emb ``float32[B, D]``, labels ``float[B]``,
        item_keys ``[B]``; ``max_queries``: score only the first that many queries (a cheap
        estimate for a training metric).
    Returns:
        ``float32[]`` in ``[0, 1]`` (0 when there is no query).
    """
    query_cols = query_rows(labels)
    if max_queries is not None:
        query_cols = query_cols[:max_queries]
    return recall_at_k_for_queries(tf.gather(user_emb, query_cols), query_cols, item_emb, item_keys, k)


def recall_at_k_for_queries(query_emb: Tensor, query_cols: Tensor, item_emb: Tensor, item_keys: Tensor,
                            k: int = 10) -> Tensor:
    """:func:`in_batch_recall_at_k` given the query vectors ``float32[P, D]`` and rows ``int64[P]``."""
    scores = tf.matmul(query_emb, item_emb, transpose_b=True)
    target = tf.gather(scores, query_cols, axis=1, batch_dims=1)
    mask = accidental_hit_mask(item_keys, query_cols)
    better = tf.logical_and(scores > target[:, None], tf.logical_not(mask))
    n_better = tf.reduce_sum(tf.cast(better, tf.int32), axis=1)
    hits = tf.cast(n_better < k, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(hits), tf.cast(tf.size(hits), tf.float32))
