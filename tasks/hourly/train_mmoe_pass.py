"""Incremental training of the MMoE ranking model on one hourly pass, then its publish pointer.

    python -m tasks.hourly.train_mmoe_pass --cur-date 2026-11-02 --hour 3 [--set passes.epochs=2]

The pass is ``(cur_date, hour)``: hours ``hour .. hour + training.split_per_pass - 1`` of ``cur_date``
(``hour`` normalised to its pass's first hour). Trains on the pass's impressions only
(``ranking_pass_samples/dt=D/hour=HH/train.parquet``, built here when ``hourly.ranking_prequential``
did not run), streamed, ``passes.epochs`` epochs, from the previous pass ``passes/mmoe/dt=D/hour=HH-s/``
or, for the day's first pass, the daily base ``models/mmoe/dt=D-1/`` (warm start with the daily run's
id remap; ids admitted since, ``admission/dt=D/hour=HH/state.parquet``, get their own rows):
:func:`dailyrec.ranking.pass_training.train_pass`. Output (atomic, byte-identical on a re-run):
``passes/mmoe/dt=D/hour=HH/`` (``model/``, ``saved_model/``, ``_manifest.json``), then the publish
pointer ``registry/mmoe/dt=D/hour=HH/published.json`` the scorer (:mod:`dailyrec.scoring`) loads when
it is the newest. Older pass checkpoints (``model/``; the SavedModel and the pointer stay) are pruned by
``training.checkpoint_per_pass`` / ``passes.checkpoints_keep`` (:func:`dailyrec.passes.prune_checkpoints`).
A missing previous pass / base is :class:`dailyrec.errors.MissingPassError`.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.ranking import NAME
from dailyrec.passes import prune_checkpoints
from dailyrec.ranking.pass_training import publish_pass, train_pass
from dailyrec.ranking.passes import pass_start
from dailyrec.step import begin


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Train the MMoE on the pass from the previous pass (or the daily base); publish its pointer."""
    run = begin("train_mmoe_pass", cur_date, cfg)
    start = pass_start(cfg, hour)
    trained = train_pass(run, start)
    preq = f"{run.partition(f'prequential/{NAME}', start)}/metrics.json"
    pointer = publish_pass(run, start, preq if run.store.exists(preq) else None)
    run.log.info("pass %s of %s published: %s", trained["model_version"], NAME, pointer)
    pruned = prune_checkpoints(run.store, cfg, NAME, run.cur_date, start)
    return {**trained, "published": pointer, "pruned": pruned}


if __name__ == "__main__":
    cli.main(step)
