"""Shared by the training steps of both models: Keras callbacks (checkpoints, one log line per
epoch, TensorBoard) and the model version string."""

from __future__ import annotations

import logging
import time
from typing import Any


def model_version(prefix: str, cur_date: str, cfg: Any) -> str:
    """``<prefix>-<cur_date>-<first 8 hex of the config digest>``, e.g. ``tt-2026-11-02-1a2b3c4d``."""
    return f"{prefix}-{cur_date}-{cfg.digest()[:8]}"


def training_callbacks(model: Any, log: logging.Logger, label: str, epochs: int, ckpt_dir: str, tb_dir: str,
                       checkpoint_every_steps: int, checkpoints_keep: int) -> list[Any]:
    """A checkpoint every ``checkpoint_every_steps`` steps and at the end (the last
    ``checkpoints_keep`` kept, ``tf.train.CheckpointManager`` in ``ckpt_dir``), an INFO line per
    epoch with the metrics, the learning rate and the epoch's seconds, and TensorBoard logs."""
    import keras
    import tensorflow as tf

    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), ckpt_dir, max_to_keep=checkpoints_keep)

    class Checkpoints(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.step += 1
            if self.step % checkpoint_every_steps == 0:
                manager.save(checkpoint_number=self.step)

        def on_train_end(self, logs: Any = None) -> None:
            manager.save(checkpoint_number=self.step)

    class EpochLog(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            lr = model.optimizer.learning_rate
            lr = float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)
            shown = ", ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
            log.info("%s epoch %d/%d: %s, lr=%.5f (%.1fs)", label, epoch + 1, epochs, shown, lr,
                     time.perf_counter() - self.t0)

    return [Checkpoints(), EpochLog(),
            keras.callbacks.TensorBoard(log_dir=tb_dir, update_freq="epoch", write_graph=False)]
