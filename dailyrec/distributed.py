"""Distributed (synchronous data-parallel) training of both models: ``training.distribute``.

* ``none``: the task's own process, Keras ``model.fit`` (``dailyrec.training.fit``); nothing here.
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over the task process's local devices (one
  replica per GPU; one on a CPU-only machine), with this module's custom training loop.
* ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over ``training.workers``
  processes. :func:`launch` starts them locally (``python -m dailyrec.distributed --job FILE``), each
  with its own ``TF_CONFIG`` naming every worker on a free ``127.0.0.1`` port; the task waits for
  all, and a worker that fails or is killed fails the task with
  :class:`~dailyrec.errors.DistributedTrainingError` after every other worker's process group was
  stopped. In production one pod per worker gets the same ``TF_CONFIG`` (docs/scale-out.md).

Why a custom loop: Keras 3's ``model.fit`` does not run under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585; with TF 2.21 / Keras 3.15 the fit of a two-worker cluster fails at its first
step with ``ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type``).
The loop here is the ``tf.distribute`` custom-loop pattern (TensorFlow guide "Custom training with
tf.distribute.Strategy"): ``strategy.run(replica_step)`` on a batch of
``strategy.distribute_datasets_from_function``, losses combined with ``strategy.reduce``, gradients
summed over replicas by the Keras optimizer (``optimizer.apply`` in replica context all-reduces them).

The same model as one worker: each replica's loss is its share of the **global** batch loss,

* two-tower ``softmax`` (in-batch negatives, mixed negatives, logQ correction, accidental-hit
  masking; ``models.losses``): every replica all-gathers the item vectors, item keys and ``log q``
  of the global batch (``ReplicaContext.all_gather``, differentiable), scores its own positive rows
  against all ``B`` candidates, and divides its sum by the global number of positives ``P``;
* two-tower ``bce``: the sum of its rows' BCE divided by the global ``B``;
* ranking (MMoE / shared bottom): ``sum_t w_t * sum_rows BCE_t / B`` (``ranking.loss_weights``).

So the replicas' gradients sum to the one-worker gradient of the same global batch, which
``ParquetStream(shard_by="batch")`` gives (worker ``w`` keeps the ``w``-th slice of every global
batch); the results differ only by floating-point summation order. Training metrics: ``loss`` (mean
of the global batch losses over the epoch, as Keras logs it), the ranking's ``<task>_loss``, the
two-tower's ``recall_at_10`` (mean over replicas of the in-batch recall of each replica's first 64
positives against the global batch: an estimate, like the one-worker metric), ``learning_rate``.

Checkpoints: ``tf.train.Checkpoint(model=, optimizer=)`` every ``training.checkpoint_every_steps``
steps and at the end, written by the chief (worker 0) into the day's checkpoint folder (the others
write to a scratch folder, deleted: every worker must take part in a save). A checkpoint holds one
copy of each variable whatever the number of replicas, so any worker count restores it: the task
process restores the final one into its own, undistributed model and saves and exports it as the
one-process path does.

TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dailyrec.errors import DistributedTrainingError

if TYPE_CHECKING:
    from dailyrec.step import StepRun
    from dailyrec.stream import ParquetStream
    from dailyrec.training import Fit

log = logging.getLogger("dailyrec.distributed")

JOB_FILE = "job.json"
WORKERS_DIR = "_workers"
"""Sub-folder of the day's checkpoint folder with the job, the initial weights, the workers' logs and results."""
RECALL_K, RECALL_MAX_QUERIES = 10, 64
STOP_GRACE_S = 5.0
"""Seconds a stopped worker gets between SIGTERM and SIGKILL."""
PARENT_PID_ENV = "DAILYREC_TRAINING_PARENT_PID"


# --------------------------------------------------------------------------------------------- strategy


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


# --------------------------------------------------------------------------------------------- the job


@dataclass
class Job:
    """What every worker needs to train one model (written as ``job.json``; paths are absolute).

    ``family``: ``two_tower`` or ``ranking`` (``kind``: ``mmoe`` / ``shared_bottom``); ``config``:
    the run's config (``Config.model_dump(mode="json")``); ``vocabularies``: a JSON file
    ``{feature: [id, ...]}``; ``init``: the checkpoint of the initial (possibly warm-started) weights;
    ``stream``: the :class:`~dailyrec.stream.ParquetStream` arguments of the global stream
    (``paths``, ``extra``, ``batch_size``, ``seed``, ``buffer_rows``, ``drop_remainder``,
    ``filesystem``: whether the paths are the store's); ``strategy``: ``mirrored`` / ``multi_worker``.
    """

    family: str
    kind: str
    config: dict[str, Any]
    vocabularies: str
    init: str
    stream: dict[str, Any]
    epochs: int
    label: str
    strategy: str
    job_dir: str
    ckpt_dir: str
    tb_dir: str
    shard_by: str = "batch"
    timeout_s: float = 600.0
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self) -> Path:
        path = Path(self.job_dir) / JOB_FILE
        path.write_text(json.dumps(self.__dict__, indent=1, sort_keys=True))
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "Job":
        return cls(**json.loads(Path(path).read_text()))


def _result_path(job: Job, index: int) -> Path:
    return Path(job.job_dir) / f"result-{index}.json"


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


# --------------------------------------------------------------------------------------------- replica losses


def _grad_bytes(grads: list[Any]) -> tuple[Any, Any]:
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
        weights: ``ranking.loss_weights``.
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


# --------------------------------------------------------------------------------------------- the worker


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the launching task process dies (no orphan worker even if the task
    process is killed with -9); exit at once if it is already gone."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != int(parent):
        os._exit(1)


def train(job: Job) -> dict[str, Any]:
    """Train ``job``'s model as one worker of its strategy (the custom loop of the module doc).

    Writes checkpoints (the chief into ``job.ckpt_dir``), TensorBoard scalars (chief) and
    ``result-<worker>.json``: ``{"worker", "workers", "replicas", "history", "seconds" (the training
    loop's wall time, tracing included), "epoch_seconds", "steps", "examples" (global rows trained, all epochs),
    "dense_grad_bytes_per_step", "sparse_grad_bytes_per_step" (:func:`_grad_bytes`),
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

            return stream_dataset(stream)
        return stream.dataset()

    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    dist = strategy.distribute_datasets_from_function(dataset_fn, options)
    weights = dict(cfg.ranking.loss_weights)

    def replica_step(batch: Any) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            if job.family == "two_tower":
                out = two_tower_replica_loss(model, batch)
            else:
                out = ranking_replica_loss(model, batch, weights)
        grads = tape.gradient(out["loss"], model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        out["dense_grad_bytes"], out["sparse_grad_bytes"] = _grad_bytes(grads)
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
    _result_path(job, index).write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


def worker(job: str) -> dict[str, Any]:
    """One training worker of a ``training.distribute`` job (:func:`launch` starts it with its
    ``TF_CONFIG``): train the model of ``job`` (a ``job.json``) and write its result."""
    _die_with_parent()
    result = train(Job.read(job))
    return {k: v for k, v in result.items() if k != "history"}


# --------------------------------------------------------------------------------------------- the launcher


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` now (bound to port 0, then released)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def tf_config(ports: list[int], index: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of one worker per port on ``host``."""
    return {"cluster": {"worker": [f"{host}:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


@dataclass
class WorkerProcess:
    """One launched worker: its index, ``subprocess.Popen`` (its own session and process group) and log file."""

    index: int
    proc: subprocess.Popen
    log_path: Path

    def ended(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"exited with signal {-code} ({signal.Signals(-code).name})"
        return f"exited with code {code}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [t for t in text if not t.startswith(("I0000", "W0000", "WARNING: All log messages"))]
    return "\n".join(keep[-lines:])


def stop(workers: list[WorkerProcess], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every worker's process group, SIGKILL what is left after ``grace_s``, reap them all."""
    for w in workers:
        try:
            os.killpg(w.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for w in workers:
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        w.proc.wait()


def launch(job_path: str | os.PathLike[str], workers: int, *, python: str = sys.executable, poll_s: float = 0.2,
           on_start: Any = None, forward: logging.Logger | None = None) -> list[dict[str, Any]]:
    """Run ``workers`` local worker processes of the job at ``job_path`` and wait for all.

    Each is ``python -m dailyrec.distributed --job JOB`` in its own session (process group), with
    ``TF_CONFIG`` = :func:`tf_config` on :func:`free_ports` of ``127.0.0.1``, the repo on
    ``PYTHONPATH``, stdout/stderr in ``<job dir>/worker-<i>.log``, and the parent-death signal set
    (a worker dies with the task process). ``on_start(list[WorkerProcess])`` is called once all are
    started (tests use it to kill one); ``forward``: a logger that gets worker 0's ``dailyrec`` log
    lines as they come (the Airflow task log).

    Returns:
        the workers' ``result-<i>.json`` dicts (:func:`train`), in worker order.
    Raises:
        DistributedTrainingError: a worker exited with a non-zero code or a signal, or ended without
            its result ("worker 1 exited with signal 9 (SIGKILL); ..."), naming its log and its last
            lines. Every worker's process group has been stopped (SIGTERM, then SIGKILL) when it is
            raised, and also when the waiting task is interrupted (its own SIGTERM, KeyboardInterrupt).
    """
    from dailyrec.config import REPO_ROOT

    job_path = Path(job_path)
    job_dir = job_path.parent
    ports = free_ports(workers)
    base_env = dict(os.environ)
    base_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [base_env.get("PYTHONPATH")])])
    base_env[PARENT_PID_ENV] = str(os.getpid())
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    procs: list[WorkerProcess] = []
    failed: WorkerProcess | None = None
    offset = 0
    try:
        for i in range(workers):
            env = {**base_env, "TF_CONFIG": json.dumps(tf_config(ports, i))}
            log_path = job_dir / f"worker-{i}.log"
            with open(log_path, "wb") as out:
                proc = subprocess.Popen([python, "-m", "dailyrec.distributed", "--job", str(job_path)],
                                        cwd=str(REPO_ROOT), env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            procs.append(WorkerProcess(i, proc, log_path))
        log.info("started %d training workers on 127.0.0.1 ports %s (pids %s); logs in %s", workers, ports,
                 [w.proc.pid for w in procs], job_dir)
        if on_start is not None:
            on_start(procs)
        while True:
            codes = [w.proc.poll() for w in procs]
            bad = [w for w, c in zip(procs, codes) if c not in (None, 0)]
            if forward is not None:
                offset = _forward(procs[0].log_path, offset, forward)
            if bad:
                # a signal (the cause) before an exit code (often a peer noticing the loss)
                failed = sorted(bad, key=lambda w: (w.proc.returncode >= 0, w.index))[0]
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(poll_s)
    finally:
        stop(procs)
    if failed is not None:
        others = [w.index for w in procs if w is not failed]
        raise DistributedTrainingError(
            f"worker {failed.index} {failed.ended()}; the other worker(s) {others} were stopped. "
            f"Log {failed.log_path}, last lines:\n{_tail(failed.log_path)}")
    results = []
    for w in procs:
        path = job_dir / f"result-{w.index}.json"
        if not path.exists():
            raise DistributedTrainingError(f"worker {w.index} exited with code 0 but wrote no {path.name}; log "
                                           f"{w.log_path}:\n{_tail(w.log_path)}")
        results.append(json.loads(path.read_text()))
    return results


def _forward(path: Path, offset: int, to: logging.Logger) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode(errors="replace").splitlines():
        if " dailyrec." in line:
            to.info("[worker 0] %s", line.split(" dailyrec.", 1)[1].split(": ", 1)[-1])
    return offset + end


# --------------------------------------------------------------------------------------------- the task's side


def _family(model: Any) -> tuple[str, str, dict[str, list[str]]]:
    from models.ranking import RankingModel
    from models.two_tower import TwoTowerModel

    if isinstance(model, TwoTowerModel):
        return "two_tower", "two_tower", model.vocabularies
    if isinstance(model, RankingModel):
        return "ranking", model.kind, dict(model.encoder.vocabularies or {})
    raise TypeError(f"distributed training knows TwoTowerModel and RankingModel, got {type(model).__name__}")


def prepare(cfg: Any, model: Any, stream: ParquetStream, *, epochs: int, label: str, ckpt_dir: str, tb_dir: str,
            strategy: str | None = None) -> Job:
    """Write the job of training ``model`` on ``stream`` into ``<ckpt_dir>/_workers/`` (``ckpt_dir``
    and ``tb_dir`` are cleared first): ``job.json``, the vocabularies and the initial weights
    (``tf.train.Checkpoint``, optimizer slots built and empty); returns the :class:`Job`.

    ``stream`` is the one-process stream (global batch, seed, buffer); every worker opens its shard
    of it (``training.shard_by``). ``strategy``: ``mirrored`` / ``multi_worker`` (default
    ``cfg.training.distribute``)."""
    import tensorflow as tf

    tc = cfg.training
    family, kind, vocabularies = _family(model)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    shutil.rmtree(tb_dir, ignore_errors=True)
    job_dir = Path(ckpt_dir) / WORKERS_DIR
    job_dir.mkdir(parents=True)
    (job_dir / "vocabularies.json").write_text(json.dumps(vocabularies))
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # fresh slots: the workers' graph has them too
    init = tf.train.Checkpoint(model=model).write(str(job_dir / "init" / "ckpt"))
    job = Job(family=family, kind=kind, config=cfg.model_dump(mode="json"),
              vocabularies=str(job_dir / "vocabularies.json"), init=init,
              stream={"paths": list(stream.paths), "extra": {k: str(v) for k, v in stream.extra.items()},
                      "batch_size": stream.batch_size, "seed": stream.seed, "buffer_rows": stream.buffer_rows,
                      "drop_remainder": stream.drop_remainder, "filesystem": stream.filesystem is not None},
              epochs=epochs, label=label, strategy=strategy or tc.distribute, job_dir=str(job_dir),
              ckpt_dir=ckpt_dir, tb_dir=tb_dir, shard_by=tc.shard_by, timeout_s=tc.worker_timeout_s)
    job.write()
    return job


def restore(model: Any, result: dict[str, Any]) -> None:
    """Load the chief's final checkpoint (``result["checkpoint"]``, written by any number of workers)
    into ``model``, an undistributed model of the same build: weights and optimizer state. Raises
    ``AssertionError`` if one of ``model``'s variables has no value in the checkpoint."""
    import tensorflow as tf

    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).restore(
        result["checkpoint"]).assert_existing_objects_matched()


def fit(run: StepRun, model: Any, stream: ParquetStream, *, epochs: int, label: str, ckpt_dir: str, tb_dir: str,
        timer_step: str = "fit") -> Fit:
    """Train ``model`` (built, compiled, maybe warm-started) on ``stream`` with ``training.distribute``
    (``mirrored``: in this process; ``multi_worker``: :func:`launch` of ``training.workers``
    processes), then :func:`restore` the final checkpoint into ``model``.

    The job, the initial weights, the workers' logs and results stay in ``<ckpt_dir>/_workers/``
    (:func:`prepare`).

    Returns:
        ``dailyrec.training.Fit``: the chief's per-epoch history, the training loop's seconds and
        examples/s (global rows x epochs / seconds; process start-up not included, it is logged).
    Raises:
        DistributedTrainingError: a worker failed (see :func:`launch`).
    """
    from dailyrec.training import Fit

    tc = run.cfg.training
    job = prepare(run.cfg, model, stream, epochs=epochs, label=label, ckpt_dir=ckpt_dir, tb_dir=tb_dir)
    t0 = time.perf_counter()
    with run.timer.step(timer_step):
        if tc.distribute == "mirrored":
            results = [train(job)]
        elif tc.distribute == "multi_worker":
            run.log.info("%s: %s training on %d workers (shard_by=%s, global batch %d)", label, tc.distribute,
                         tc.workers, tc.shard_by, stream.batch_size)
            results = launch(Path(job.job_dir) / JOB_FILE, tc.workers, forward=run.log)
        else:
            raise ValueError(f"dailyrec.distributed.fit: training.distribute is {tc.distribute!r}")
        chief = results[0]
        restore(model, chief)
    wall = time.perf_counter() - t0
    seconds = float(chief["seconds"])
    run.log.info("%s: %d worker(s) trained %d examples in %.1f s (%.1f s with start-up); checkpoint %s", label,
                 chief["workers"], chief["examples"], seconds, wall, chief["checkpoint"])
    return Fit(history=chief["history"], seconds=seconds, examples_per_s=round(chief["examples"] / seconds, 1))


if __name__ == "__main__":
    from dailyrec import cli

    cli.main(worker)
