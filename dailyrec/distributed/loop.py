"""A training worker: the ``tf.distribute`` strategy of ``training.distribute`` and the custom
training loop (``strategy.run`` of a replica step, gradients summed by the optimizer, one
``strategy.reduce`` of the step's figures, checkpoints written by the chief)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dailyrec.distributed.job import Job
from dailyrec.distributed.launcher import die_with_parent
from dailyrec.distributed.losses import RECALL_K, grad_bytes, ranking_replica_loss, two_tower_replica_loss
from dailyrec.errors import DistributedTrainingError

if TYPE_CHECKING:
    from dailyrec.stream import ParquetStream

log = logging.getLogger("dailyrec.distributed")


def make_strategy(kind: str, timeout_s: float | None = None) -> Any:
    """The ``tf.distribute`` strategy of ``training.distribute``.

    ``none``: the default strategy; ``mirrored``: ``MirroredStrategy()`` (local devices);
    ``multi_worker``: ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG`` with collectives timing out
    after ``timeout_s`` seconds. Raises ``DistributedTrainingError`` for ``multi_worker`` without a
    ``TF_CONFIG`` naming this worker, ``ValueError`` for another ``kind``.
    """
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        if not tf_config.get("cluster", {}).get("worker") or "task" not in tf_config:
            raise DistributedTrainingError("training.distribute=multi_worker: TF_CONFIG does not name the cluster's "
                                           "workers and this task (dailyrec.distributed.launch sets it)")
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise ValueError(f"unknown training.distribute {kind!r} (none, mirrored, multi_worker)")


def worker_of(strategy: Any) -> tuple[int, int]:
    """``(this worker's index, number of workers)``; ``(0, 1)`` without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1
    return int(resolver.task_id or 0), len(resolver.cluster_spec().as_dict().get("worker", []))


def _build_model(job: Job, cfg: Any, vocabularies: dict[str, list[str]]) -> Any:
    """The job's model, built and compiled exactly as the one-process step builds it."""
    if job.family == "two_tower":
        from models.two_tower import build_two_tower

        return build_two_tower(cfg.training, cfg.features, vocabularies)
    if job.family == "ranking":
        from models.ranking import build_ranking_model

        return build_ranking_model(cfg.ranking, cfg.features, vocabularies, kind=job.kind, seed=cfg.ranking.seed)
    raise ValueError(f"unknown model family {job.family!r} (two_tower, ranking)")


def _stream(job: Job, cfg: Any, vocabularies: dict[str, list[str]], shard: tuple[int, int] | None) -> ParquetStream:
    from dailyrec.storage import open_store
    from dailyrec.stream import ParquetStream, id_encoders

    s = job.stream
    fs = open_store(cfg).fs if s.get("filesystem") else None
    return ParquetStream(s["paths"], id_encoders(list(cfg.features.spec), vocabularies), extra=s["extra"],
                         batch_size=s["batch_size"], seed=s["seed"], buffer_rows=s["buffer_rows"], filesystem=fs,
                         drop_remainder=s.get("drop_remainder", False), shard=shard, shard_by=job.shard_by)


def train(job: Job) -> dict[str, Any]:
    """Train ``job``'s model as one worker of its strategy (the custom loop of the module doc).

    Writes checkpoints (the chief into ``job.ckpt_dir``), TensorBoard scalars (chief) and
    ``result-<worker>.json``: ``{"worker", "workers", "replicas", "history", "seconds" (the training
    loop's wall time, tracing included), "epoch_seconds", "steps", "examples" (global rows trained, all epochs),
    "dense_grad_bytes_per_step", "sparse_grad_bytes_per_step" (:func:`~dailyrec.distributed.losses.grad_bytes`),
    "gather_bytes_per_step" (the two-tower's all-gathered candidates; means over the steps),
    "trainable_params", "checkpoint" (the final one, chief only)}``, and returns it.
    """
    import tensorflow as tf

    from dailyrec.config import Config
    from dailyrec.progress import Progress
    from dailyrec.training import deterministic_training

    cfg = Config.model_validate(job.config)
    strategy = make_strategy(job.strategy, job.timeout_s)
    index, workers = worker_of(strategy)
    if strategy.num_replicas_in_sync != workers:
        raise DistributedTrainingError(f"{strategy.num_replicas_in_sync} replicas over {workers} worker(s): the input "
                                       "sharding assumes one replica per worker (one device per worker process)")
    chief = index == 0
    seed = cfg.ranking.seed if job.family == "ranking" else cfg.training.seed
    deterministic_training(seed)
    vocabularies = json.loads(Path(job.vocabularies).read_text())
    with strategy.scope():
        model = _build_model(job, cfg, vocabularies)
        model.optimizer.build(model.trainable_variables)
        tf.train.Checkpoint(model=model).read(job.init).assert_existing_objects_matched()
    stream = _stream(job, cfg, vocabularies, (index, workers) if workers > 1 else None)
    steps = stream.steps_per_epoch

    def dataset_fn(ctx: Any) -> Any:
        if ctx.num_input_pipelines > 1 and ctx.input_pipeline_id != index:
            raise DistributedTrainingError(f"input pipeline {ctx.input_pipeline_id} on worker {index}")
        if job.family == "ranking":
            from dailyrec.ranking.inputs import stream_dataset

            return stream_dataset(stream, cfg.ranking.resolved_tasks())
        return stream.dataset()

    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    dist = strategy.distribute_datasets_from_function(dataset_fn, options)
    weights = cfg.ranking.task_weights()

    def replica_step(batch: Any) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            if job.family == "two_tower":
                out = two_tower_replica_loss(model, batch)
            else:
                out = ranking_replica_loss(model, batch, weights)
        grads = tape.gradient(out["loss"], model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        out["dense_grad_bytes"], out["sparse_grad_bytes"] = grad_bytes(grads)
        return out

    tasks = [] if job.family == "two_tower" else [f"{t}_loss" for t in model.tasks]
    sums = {"loss", "rows", *tasks}
    names = sorted(["loss", "dense_grad_bytes", "sparse_grad_bytes", *tasks,
                    *(["recall", "gather_bytes"] if job.family == "two_tower" else ["rows"])])
    replicas = float(strategy.num_replicas_in_sync)

    def replica_vector(batch: Any) -> Any:
        out = replica_step(batch)
        if sorted(out) != names:
            raise AssertionError(f"step figures {sorted(out)} != {names}")
        return tf.stack([tf.cast(out[k], tf.float32) for k in names])

    @tf.function
    def train_step(batch: Any) -> dict[str, Any]:
        # the figures of a step travel as one vector: one cross-worker reduce, not one per figure
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_vector, args=(batch,)), axis=None)
        return {k: total[i] if k in sums else total[i] / replicas for i, k in enumerate(names)}

    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    own_dir = Path(job.ckpt_dir) if chief else Path(job.job_dir) / f"scratch-checkpoints-{index}"
    manager = tf.train.CheckpointManager(ckpt, str(own_dir), max_to_keep=cfg.training.checkpoints_keep)
    writer = tf.summary.create_file_writer(job.tb_dir) if chief else None
    every = cfg.training.checkpoint_every_steps
    history: dict[str, list[float]] = {}
    progress = Progress(log, f"{job.label} fit (worker {index}/{workers})", total=steps * job.epochs, unit="steps")
    step = 0
    dense_bytes = sparse_bytes = gather_bytes = 0.0
    epoch_seconds: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(job.epochs):
        te = time.perf_counter()
        outs: list[dict[str, Any]] = []
        for batch in dist:
            outs.append(train_step(batch))
            step += 1
            progress.add(1)
            if step % every == 0:
                manager.save(checkpoint_number=step)
        if len(outs) != steps:
            raise DistributedTrainingError(f"worker {index}: epoch {epoch + 1} gave {len(outs)} steps, expected {steps}")
        vals = {k: [float(o[k]) for o in outs] for k in outs[0]}
        dense_bytes += sum(vals.pop("dense_grad_bytes"))
        sparse_bytes += sum(vals.pop("sparse_grad_bytes"))
        gather_bytes += sum(vals.pop("gather_bytes", [0.0]))
        if "recall" in vals:
            vals[f"recall_at_{RECALL_K}"] = vals.pop("recall")
        # as Keras logs them: the two-tower's trackers average the batches, the compiled ranking
        # losses average the rows (batch means weighted by the batch's rows)
        w = vals.pop("rows", None) or [1.0] * len(outs)
        lr = model.optimizer.learning_rate
        lr = float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)
        for k, v in vals.items():
            history.setdefault(k, []).append(round(sum(a * b for a, b in zip(v, w)) / sum(w), 6))
        history.setdefault("learning_rate", []).append(round(lr, 8))
        shown = ", ".join(f"{k}={v[-1]:.4f}" for k, v in history.items() if k != "learning_rate")
        epoch_seconds.append(round(time.perf_counter() - te, 3))
        log.info("%s epoch %d/%d (worker %d/%d): %s, lr=%.5f (%.1fs)", job.label, epoch + 1, job.epochs, index,
                 workers, shown, lr, epoch_seconds[-1])
        if writer is not None:
            with writer.as_default(step=epoch):
                for k, v in history.items():
                    tf.summary.scalar(k, v[-1])
    seconds = time.perf_counter() - t0
    progress.done()
    final = manager.save(checkpoint_number=step)
    if writer is not None:
        writer.close()
    if not chief:
        shutil.rmtree(own_dir, ignore_errors=True)
    rows = stream.num_rows if job.shard_by == "batch" or workers == 1 else steps * stream.batch_size * workers
    result = {"worker": index, "workers": workers, "replicas": int(strategy.num_replicas_in_sync), "history": history,
              "seconds": round(seconds, 3), "epoch_seconds": epoch_seconds, "steps": step, "examples": int(rows * job.epochs),
              "dense_grad_bytes_per_step": round(dense_bytes / max(step, 1), 1),
              "sparse_grad_bytes_per_step": round(sparse_bytes / max(step, 1), 1),
              "gather_bytes_per_step": round(gather_bytes / max(step, 1), 1),
              "trainable_params": int(sum(math.prod(v.shape) for v in model.trainable_variables)),
              "checkpoint": final if chief else None}
    (Path(job.job_dir) / f"result-{index}.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


def worker(job: str) -> dict[str, Any]:
    """One training worker of a ``training.distribute`` job (:func:`launch` starts it with its
    ``TF_CONFIG``): train the model of ``job`` (a ``job.json``) and write its result."""
    die_with_parent()
    result = train(Job.read(job))
    return {k: v for k, v in result.items() if k != "history"}
