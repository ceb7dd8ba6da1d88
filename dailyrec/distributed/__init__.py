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
* ranking (MMoE / shared bottom): ``sum_t w_t * sum_rows BCE_t / B`` (``ranking.task_weights()``: each task's weight, ``ranking.loss_weights`` overriding).

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

The package: :mod:`~dailyrec.distributed.job` (the job file, :func:`fit` / :func:`prepare` /
:func:`restore` on the task's side), :mod:`~dailyrec.distributed.loop` (the strategy and the
worker's training loop), :mod:`~dailyrec.distributed.losses` (the replicas' shares of the losses),
:mod:`~dailyrec.distributed.launcher` (local worker processes); ``python -m dailyrec.distributed
--job FILE`` is one worker (``__main__``). TensorFlow is imported inside the functions.
"""

from __future__ import annotations

from dailyrec.distributed.job import JOB_FILE, WORKERS_DIR, Job, fit, prepare, restore
from dailyrec.distributed.launcher import free_ports, launch, stop, tf_config
from dailyrec.errors import DistributedTrainingError

__all__ = ["JOB_FILE", "WORKERS_DIR", "DistributedTrainingError", "Job", "fit", "free_ports", "launch", "prepare",
           "restore", "stop", "tf_config"]
