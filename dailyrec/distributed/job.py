"""The task's side of distributed training: the job file every worker reads (:class:`Job`),
:func:`prepare` (write it and the initial weights), :func:`restore` (load the chief's final
checkpoint into the task's own model) and :func:`fit` (the two around the workers:
``dailyrec.training.fit`` calls it when ``training.distribute`` is not ``none``)."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dailyrec.distributed import launcher

if TYPE_CHECKING:
    from dailyrec.step import StepRun
    from dailyrec.stream import ParquetStream
    from dailyrec.training import Fit

JOB_FILE = "job.json"
WORKER_SECTIONS = ("storage", "features", "training", "ranking")
"""The config sections written into the job (the others take their defaults in the workers)."""
WORKERS_DIR = "_workers"
"""Sub-folder of the day's checkpoint folder with the job, the initial weights, the workers' logs and results."""


@dataclass
class Job:
    """What every worker needs to train one model (written as ``job.json``; paths are absolute).

    ``family``: ``two_tower`` or ``ranking`` (``kind``: ``mmoe`` / ``shared_bottom``); ``config``:
    the run's config sections :data:`WORKER_SECTIONS` (``Config.model_dump(mode="json")``); ``vocabularies``: a JSON file
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
    # the sections a worker reads (not e.g. redis.url, which may hold a password)
    sections = {k: v for k, v in cfg.model_dump(mode="json").items() if k in WORKER_SECTIONS}
    job = Job(family=family, kind=kind, config=sections,
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
            from dailyrec.distributed.loop import train

            results = [train(job)]
        elif tc.distribute == "multi_worker":
            run.log.info("%s: %s training on %d workers (shard_by=%s, global batch %d)", label, tc.distribute,
                         tc.workers, tc.shard_by, stream.batch_size)
            results = launcher.launch(Path(job.job_dir) / JOB_FILE, tc.workers, forward=run.log)
        else:
            raise ValueError(f"dailyrec.distributed.fit: training.distribute is {tc.distribute!r}")
        chief = results[0]
        restore(model, chief)
    wall = time.perf_counter() - t0
    seconds = float(chief["seconds"])
    run.log.info("%s: %d worker(s) trained %d examples in %.1f s (%.1f s with start-up); checkpoint %s", label,
                 chief["workers"], chief["examples"], seconds, wall, chief["checkpoint"])
    return Fit(history=chief["history"], seconds=seconds, examples_per_s=round(chief["examples"] / seconds, 1))
