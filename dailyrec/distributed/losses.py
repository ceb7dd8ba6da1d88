"""Each replica's share of a global-batch loss (the sum over replicas is the one-worker loss of the
same batch; docs/scale-out.md, "The same model as one worker"), and the bytes its gradients put
into the all-reduce. Run in replica context (``strategy.run``)."""

from __future__ import annotations

from typing import Any

RECALL_K, RECALL_MAX_QUERIES = 10, 64


def grad_bytes(grads: list[Any]) -> tuple[Any, Any]:
    """Bytes of one replica's gradients as the optimizer all-reduces them: ``(dense, sparse)``,
    dense tensors whole (ring all-reduce), ``IndexedSlices`` (the embedding rows a batch touches)
    as values + int64 indices (all-gathered). ``float32[]`` each."""
    import tensorflow as tf

    dense, sparse = tf.constant(0.0), tf.constant(0.0)
    for g in grads:
        if g is None:
            continue
        if isinstance(g, tf.IndexedSlices):
            sparse += tf.cast(tf.size(g.values), tf.float32) * g.values.dtype.size
            sparse += tf.cast(tf.size(g.indices), tf.float32) * 8.0
        else:
            dense += tf.cast(tf.size(g), tf.float32) * g.dtype.size
    return dense, sparse


def two_tower_replica_loss(model: Any, batch: dict[str, Any], training: bool = True) -> dict[str, Any]:
    """One replica's share of the global-batch two-tower loss (module doc), in replica context.

    Args:
        model: a built ``models.two_tower.TwoTowerModel``.
        batch: this replica's rows ``{feature: int32[b], "label": float32[b], "log_q": float32[b]}``
            (its slice of the global batch of ``B`` rows).
    Returns:
        ``{"loss": float32[] (sum over replicas = the global batch loss), "recall": float32[] (this
        replica's in-batch recall@10 estimate), "gather_bytes": float32[] (bytes this replica
        all-gathers: item vectors, keys, log q, and the gradient of the gathered vectors)}``.
    Raises:
        KeyError: ``logq_correction`` is on and the batch has no ``log_q``.
    """
    import tensorflow as tf

    from models import losses
    from models.two_tower import LOG_Q_KEY

    ctx = tf.distribute.get_replica_context()
    labels = tf.cast(tf.reshape(batch["label"], [-1]), tf.float32)
    keys = model.item_keys(batch)
    query_cols = losses.query_rows(labels)
    local_n = tf.shape(labels, out_type=tf.int64)[0]
    # collectives cost a round trip each: one gather of the counts, one of the packed candidates
    counts = ctx.all_gather(tf.stack([local_n, tf.size(query_cols, out_type=tf.int64)])[None, :], axis=0)
    offset = tf.reduce_sum(counts[:ctx.replica_id_in_sync_group, 0])
    global_n = tf.cast(tf.reduce_sum(counts[:, 0]), tf.float32)
    p_global = tf.cast(tf.reduce_sum(counts[:, 1]), tf.float32)
    global_cols = query_cols + offset
    item_emb = model.item_tower(batch, training=training)
    softmax = model.loss_name == "softmax"
    if softmax and model.logq_correction and LOG_Q_KEY not in batch:
        raise KeyError(f"logq_correction is on but the batch has no {LOG_Q_KEY!r}; got {sorted(batch)}")
    log_q = tf.reshape(tf.cast(batch[LOG_Q_KEY], tf.float32), [-1, 1]) if (
        softmax and model.logq_correction) else tf.zeros([tf.shape(item_emb)[0], 1])
    # [vector (D) | log q (1) | item key as the 2 float32 words of its int64 bits (2)]: copied, never summed
    packed = tf.concat([item_emb, log_q, tf.bitcast(keys, tf.float32)], axis=1)
    all_packed = ctx.all_gather(packed, axis=0)
    dim = item_emb.shape[-1]
    all_items, all_log_q = all_packed[:, :dim], all_packed[:, dim]
    all_keys = tf.bitcast(tf.stop_gradient(all_packed[:, dim + 1:]), tf.int64)
    gathered = tf.cast(tf.size(all_packed), tf.float32) * 4.0 * 2.0  # the gather, and its gradient's all-reduce
    if softmax:
        query_emb = model.user_tower({n: tf.gather(batch[n], query_cols) for n in model.user_tower.feature_names},
                                     training=training)
        mean = losses.softmax_loss_for_queries(query_emb, global_cols, all_items, all_keys,
                                               all_log_q if model.logq_correction else None, model.temperature,
                                               model.logq_correction)
        p_local = tf.cast(tf.size(query_cols), tf.float32)
        loss = tf.math.divide_no_nan(mean * p_local, p_global)
    else:
        user_emb = model.user_tower(batch, training=training)
        mean = losses.pointwise_bce_loss(user_emb, item_emb, labels, model.temperature)
        loss = tf.math.divide_no_nan(mean * tf.cast(local_n, tf.float32), global_n)
        query_emb = tf.gather(user_emb, query_cols)
    n = RECALL_MAX_QUERIES
    recall = losses.recall_at_k_for_queries(tf.stop_gradient(query_emb[:n]), global_cols[:n],
                                            tf.stop_gradient(all_items), all_keys, RECALL_K)
    return {"loss": loss, "recall": recall, "gather_bytes": gathered}


def ranking_replica_loss(model: Any, batch: tuple[dict[str, Any], dict[str, Any]], weights: dict[str, float],
                         training: bool = True) -> dict[str, Any]:
    """One replica's share of the global-batch ranking loss: ``sum_t w_t * sum_rows BCE_t / B``.

    Args:
        model: a built ``models.ranking.RankingModel`` (outputs ``{task: float32[b, 1]}`` probabilities).
        batch: ``(features {name: int32[b]}, labels {task: float32[b]})``, this replica's slice.
        weights: ``{task: loss weight}`` (``RankingConfig.task_weights``); binary tasks only (config check).
    Returns:
        ``{"loss": float32[], "<task>_loss": float32[] (unweighted)}``, each this replica's share
        (summed over replicas: the global batch's value). The BCE is Keras'
        ``binary_crossentropy``, as the compiled one-process loss.
    """
    import keras
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    features, labels = batch
    local_n = tf.cast(tf.shape(labels[model.tasks[0]])[0], tf.float32)
    global_n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_n)
    preds = model(features, training=training)
    out: dict[str, Any] = {}
    total = tf.constant(0.0)
    for t in model.tasks:
        per_row = keras.losses.binary_crossentropy(tf.reshape(tf.cast(labels[t], tf.float32), [-1, 1]), preds[t])
        share = tf.math.divide_no_nan(tf.reduce_sum(per_row), global_n)
        out[f"{t}_loss"] = share
        total += float(weights[t]) * share
    out["loss"] = total
    out["rows"] = local_n
    return out
