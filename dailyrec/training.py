"""Shared by the training steps of both models (``tasks.retrieval.train_two_tower``,
``tasks.ranking.train_mmoe``): the warm-start source and its copy into a fresh model, the fit with
its Keras callbacks (checkpoints, one log line per epoch, TensorBoard) and figures, the model
version string. TensorFlow and Keras are imported inside the functions.

A model version identifies one model (docs/pipeline.md, "Model versions"): it hashes the config,
the bytes of the training inputs and the version of the warm-start model, so a cold and a warm
model of the same day differ, and a re-run with the same inputs, warm start and config gets the
same version (training is deterministic: :func:`deterministic_training`)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dailyrec.config import Config
    from dailyrec.step import StepRun


def lineage(store: Any, inputs: list[str], warm: dict[str, Any]) -> dict[str, Any]:
    """What a model is trained from, besides the config: ``{"inputs": {path under the data root:
    sha256}, "warm_start": the warm-start model's version, or None for a cold start}`` (recorded in
    the manifest). Paths are relative to the data root, so the same data gives the same version
    wherever the data root lives."""
    root = store.root.rstrip("/") + "/"
    return {"inputs": {p.removeprefix(root): store.sha256(p) for p in inputs},
            "warm_start": warm.get("model_version") if warm.get("from") else None}


def model_version(prefix: str, cur_date: str, cfg: Config, lineage: dict[str, Any]) -> str:
    """``<prefix>-<cur_date>-<config8>-<lineage8>``, e.g. ``tt-2026-11-02-1a2b3c4d-9f8e7d6c``: the first
    8 hex of the config digest, then of the sha256 of :func:`lineage` (input bytes + warm-start
    model version). The same inputs, warm start and config give the same version; a cold and a
    warm model of one day, or two days' inputs, give different ones."""
    blob = json.dumps(lineage, sort_keys=True).encode()
    return f"{prefix}-{cur_date}-{cfg.digest()[:8]}-{hashlib.sha256(blob).hexdigest()[:8]}"


def deterministic_training(seed: int) -> None:
    """Seed Python, numpy and TensorFlow with ``seed`` and turn on TensorFlow's op determinism, so
    a re-run trains bit-identical weights (and the model files, version and embeddings match)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def training_callbacks(model: Any, log: logging.Logger, label: str, epochs: int, ckpt_dir: str, tb_dir: str,
                       checkpoint_every_steps: int, checkpoints_keep: int) -> list[Any]:
    """A checkpoint every ``checkpoint_every_steps`` steps and at the end (the last
    ``checkpoints_keep`` kept, ``tf.train.CheckpointManager`` in ``ckpt_dir``), an INFO line per
    epoch with the metrics, the learning rate and the epoch's seconds (the learning rates are kept
    in the ``EpochLog`` callback's ``lrs``, one per epoch), a progress line at least every 30 s
    (:class:`dailyrec.progress.Progress`: steps done / total, rate, ETA), and TensorBoard logs."""
    import keras
    import tensorflow as tf

    from dailyrec.progress import Progress

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
            self.lrs: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            lr = model.optimizer.learning_rate
            lr = float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)
            self.lrs.append(round(lr, 8))
            shown = ", ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
            log.info("%s epoch %d/%d: %s, lr=%.5f (%.1fs)", label, epoch + 1, epochs, shown, lr,
                     time.perf_counter() - self.t0)

    class StepProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            steps = (self.params or {}).get("steps")
            self.progress = Progress(log, f"{label} fit", total=steps * epochs if steps else None, unit="steps")

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.progress.add(1)

        def on_train_end(self, logs: Any = None) -> None:
            self.progress.done()

    return [Checkpoints(), EpochLog(), StepProgress(),
            keras.callbacks.TensorBoard(log_dir=tb_dir, update_freq="epoch", write_graph=False)]


def warm_source(run: StepRun, name: str) -> tuple[str, str] | None:
    """``(date, model dir)`` of the newest gate-passed ``name`` model strictly before the run's
    ``cur_date`` (:func:`dailyrec.registry.warm_start_source`), or None (logged as a cold start)
    when there is none or ``training.warm_start`` is off.

    With ``passes.enabled`` the daily run is the consolidation of the day's passes
    (:func:`dailyrec.passchain.consolidation_source`, ``passes.consolidate_from``): ``last_pass``
    gives ``("<D>T<HH>", passes/<name>/dt=D/hour=HH)``, D's last pass (the previous base when D had
    no pass, logged), ``scratch`` None, ``base`` the rule above. Passes off: unchanged."""
    from dailyrec.registry import warm_start_source

    on = run.cfg.training.warm_start
    if on and run.cfg.passes.enabled:
        from dailyrec.passchain import consolidation_source

        src = consolidation_source(run, name)
        if src is not False:
            return src
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
    initialised, layers of matching shapes copied), timed as ``timer_step``. The attempt is logged
    before loading.

    Args:
        path: the warm-start model recorded in the manifest (None without ``source``);
        archive: the Keras archive to load when it is not ``path`` itself (e.g. ``<path>/model``).
    Returns:
        The manifest's ``warm_start``: ``{"from": None}`` for a cold start (no ``source``, or with
        ``missing_ok`` nothing at the archive: a warning), else ``{"from": date, "path": path,
        "model_version": the source's version, "stats": transfer's statistics}``.
    Raises:
        WarmStartError: the source model cannot be read (truncated, not a Keras archive, another
            model class...), naming the file and the cause, when ``training.warm_start_on_error``
            is ``fail``; with ``cold_start`` the run logs a warning, trains cold and returns
            ``{"from": None, "failed": {"from", "file", "error"}}``.
    """
    if source is None or path is None:
        return {"from": None}
    archive = archive or path
    if missing_ok and not Path(archive).exists():
        run.log.warning("%s: no model at %s to warm start from; cold start", label, archive)
        return {"from": None}
    keras_file = _keras_file(archive)
    run.log.info("%s: warm start from the %s model, loading %s", label, source[0], keras_file)
    try:
        with run.timer.step(timer_step):
            old = load(archive, compile=False)
    except Exception as exc:  # noqa: BLE001 - every cause becomes one named error (or a logged cold start)
        return _warm_start_failed(run, label, source[0], keras_file, exc)
    stats = transfer(model, old)
    run.log.info("%s warm start from %s (%s): %s", label, source[0], archive, json.dumps(stats, default=str)[:500])
    version = run.store.read_json(f"{source[1]}/_manifest.json").get("model_version")
    return {"from": source[0], "path": path, "model_version": version, "stats": stats}


def _keras_file(archive: str) -> str:
    return archive if archive.endswith(".keras") else f"{archive.rstrip('/')}/model.keras"


def _load_cause(keras_file: str, exc: BaseException) -> str:
    """Why a Keras archive did not load, in words (Keras says "File not found" for a corrupt zip)."""
    p = Path(keras_file)
    if not p.exists():
        return "the file does not exist"
    if not zipfile.is_zipfile(p):
        return f"not a valid Keras (zip) archive: truncated or corrupt ({p.stat().st_size} bytes)"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def _warm_start_failed(run: StepRun, label: str, date: str, keras_file: str, exc: BaseException) -> dict[str, Any]:
    from dailyrec.errors import WarmStartError

    cause = _load_cause(keras_file, exc)
    what = f"{label}: cannot warm start from the {date} model {keras_file}: {cause}"
    if run.cfg.training.warm_start_on_error == "fail":
        raise WarmStartError(f"{what} (training.warm_start_on_error=fail; set it to cold_start to train "
                             f"from scratch instead, or training.warm_start=false)") from exc
    run.log.warning("%s; cold start (training.warm_start_on_error=cold_start)", what)
    return {"from": None, "failed": {"from": date, "file": keras_file, "error": cause}}


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
        timer_step: str = "fit", stream: Any = None, **fit_kwargs: Any) -> Fit:
    """``model.fit(ds, epochs, verbose=0, **fit_kwargs)`` with :func:`training_callbacks`, timed as
    ``timer_step``; the day's checkpoints in ``ckpt_dir`` and TensorBoard logs in ``tb_dir`` are
    cleared first (a re-run starts its own).

    With ``training.distribute`` other than ``none`` the fit is :func:`dailyrec.distributed.fit` on
    ``stream`` (the ``dailyrec.stream.ParquetStream`` behind ``ds``; required then) instead.

    ``rows`` is the number of training rows (one epoch), for ``examples_per_s``; the checkpoint
    cadence and how many are kept come from ``training.checkpoint_every_steps`` /
    ``training.checkpoints_keep``.
    """
    tc = run.cfg.training
    if tc.distribute != "none":
        from dailyrec import distributed

        if stream is None:
            raise ValueError(f"training.distribute={tc.distribute}: {label}'s fit needs its ParquetStream (stream=)")
        return distributed.fit(run, model, stream, epochs=epochs, label=label, ckpt_dir=ckpt_dir, tb_dir=tb_dir,
                               timer_step=timer_step)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    shutil.rmtree(tb_dir, ignore_errors=True)
    t0 = time.perf_counter()
    with run.timer.step(timer_step):
        callbacks = training_callbacks(model, run.log, label, epochs, ckpt_dir, tb_dir, tc.checkpoint_every_steps,
                                       tc.checkpoints_keep)
        hist = model.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks, **fit_kwargs)
    seconds = time.perf_counter() - t0
    history = {k: [round(float(x), 6) for x in v] for k, v in hist.history.items()}
    lrs = next((c.lrs for c in callbacks if hasattr(c, "lrs")), [])
    if lrs and "learning_rate" not in history:
        history["learning_rate"] = lrs   # the LR curve of the run report (per epoch, at its end)
    return Fit(history=history, seconds=seconds, examples_per_s=round(rows * epochs / seconds, 1))


def sample_stream(store: Any, cfg: Config, samples: str, vocabularies: dict[str, list[str]]) -> tuple[Any, int, int]:
    """``(stream, rows, positives)`` of the two-tower samples at ``samples`` (the day's
    ``samples/dt=D/train.parquet`` or a pass's ``pass_samples/.../train.parquet``): a
    :class:`dailyrec.stream.ParquetStream` whose feature columns (and, with ``features.user_history``, the
    ``history_item_ids`` list) become integer ids on the Arrow side, with the ``label`` and ``log_q``
    columns (float32), ``training.batch_size`` rows per batch and ``training.shuffle_buffer_rows`` of
    bounded shuffle; ``positives`` is the sum of ``label``. Both training steps (daily and pass) read
    their samples through it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dailyrec.history import history_encoders
    from dailyrec.stream import ParquetStream, id_encoders

    tc = cfg.training
    encoders = {**id_encoders(cfg.features.spec, vocabularies), **history_encoders(cfg.features, vocabularies)}
    stream = ParquetStream(samples, encoders, extra={"label": "float32", "log_q": "float32"}, batch_size=tc.batch_size,
                           seed=tc.seed, buffer_rows=tc.shuffle_buffer_rows, filesystem=store.fs)
    labels = pq.read_table(samples, columns=["label"], filesystem=store.fs).column("label")
    return stream, stream.num_rows, int(pc.sum(labels).as_py() or 0)
