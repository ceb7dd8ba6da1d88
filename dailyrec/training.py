"""Shared by the training steps of both models (``tasks.retrieval.train_two_tower``,
``tasks.ranking.train_mmoe``): the warm-start source and its copy into a fresh model, the fit with
its Keras callbacks (checkpoints, one log line per epoch, TensorBoard) and figures, the model
version string. TensorFlow and Keras are imported inside the functions."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dailyrec.config import Config
    from dailyrec.step import StepRun


def model_version(prefix: str, cur_date: str, cfg: Config) -> str:
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


def warm_source(run: StepRun, name: str) -> tuple[str, str] | None:
    """``(date, model dir)`` of the newest gate-passed ``name`` model strictly before the run's
    ``cur_date`` (:func:`dailyrec.registry.warm_start_source`), or None (logged as a cold start)
    when there is none or ``training.warm_start`` is off."""
    from dailyrec.registry import warm_start_source

    on = run.cfg.training.warm_start
    src = warm_start_source(run.store, name, run.cur_date) if on else None
    if src is None:
        run.log.info("cold start (no gate-passed %s model before %s%s)", name, run.cur_date,
                     "" if on else "; training.warm_start is off")
    return src


def warm_start(run: StepRun, model: Any, source: tuple[str, str] | None, path: str | None,
               load: Callable[..., Any], transfer: Callable[[Any, Any], dict[str, Any]], *, label: str,
               archive: str | None = None, timer_step: str = "warm_start", missing_ok: bool = False) -> dict[str, Any]:
    """Copy the weights of a saved model of the :func:`warm_source` ``source`` into the freshly
    built ``model``: ``transfer(model, load(archive or path, compile=False))`` (the model family's
    ``load_model`` and ``warm_start_from``: known ids keep their embedding rows, new ids are
    initialised, layers of matching shapes copied), timed as ``timer_step``.

    Args:
        path: the warm-start model recorded in the manifest (None without ``source``);
        archive: the Keras archive to load when it is not ``path`` itself (e.g. ``<path>/model``).
    Returns:
        The manifest's ``warm_start``: ``{"from": None}`` for a cold start (no ``source``, or with
        ``missing_ok`` nothing at the archive: a warning), else ``{"from": date, "path": path,
        "stats": transfer's statistics}``.
    """
    if source is None or path is None:
        return {"from": None}
    archive = archive or path
    if missing_ok and not Path(archive).exists():
        run.log.warning("%s: no model at %s to warm start from; cold start", label, archive)
        return {"from": None}
    with run.timer.step(timer_step):
        stats = transfer(model, load(archive, compile=False))
    run.log.info("%s warm start from %s (%s): %s", label, source[0], archive, json.dumps(stats, default=str)[:500])
    return {"from": source[0], "path": path, "stats": stats}


@dataclass(frozen=True)
class Fit:
    """What a :func:`fit` reports: ``history`` (per-epoch metrics, rounded to 6 digits), the fit's
    wall-clock ``seconds`` and ``examples_per_s`` (rows x epochs / seconds, rounded to 0.1)."""

    history: dict[str, list[float]]
    seconds: float
    examples_per_s: float

    @property
    def final_loss(self) -> float | None:
        """The last epoch's ``loss`` (None without one)."""
        return self.history.get("loss", [None])[-1]


def fit(run: StepRun, model: Any, ds: Any, *, rows: int, epochs: int, label: str, ckpt_dir: str, tb_dir: str,
        timer_step: str = "fit", **fit_kwargs: Any) -> Fit:
    """``model.fit(ds, epochs, verbose=0, **fit_kwargs)`` with :func:`training_callbacks`, timed as
    ``timer_step``; the day's checkpoints in ``ckpt_dir`` are cleared first (a re-run starts its own).

    ``rows`` is the number of training rows (one epoch), for ``examples_per_s``; the checkpoint
    cadence and how many are kept come from ``training.checkpoint_every_steps`` /
    ``training.checkpoints_keep``.
    """
    tc = run.cfg.training
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    t0 = time.perf_counter()
    with run.timer.step(timer_step):
        callbacks = training_callbacks(model, run.log, label, epochs, ckpt_dir, tb_dir, tc.checkpoint_every_steps,
                                       tc.checkpoints_keep)
        hist = model.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks, **fit_kwargs)
    seconds = time.perf_counter() - t0
    history = {k: [round(float(x), 6) for x in v] for k, v in hist.history.items()}
    return Fit(history=history, seconds=seconds, examples_per_s=round(rows * epochs / seconds, 1))
