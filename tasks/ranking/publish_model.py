"""Publish the day's ranking model: ``registry/mmoe/dt=D/published.json`` points at its SavedModel.

    python -m tasks.ranking.publish_model --cur-date 2026-11-02

Refuses (:class:`~dailyrec.errors.GateRejected`) unless ``eval/mmoe/dt=D/report.json`` says the
gate passed. The record names the SavedModel, the Keras model, the model version, the kind, the
down-sample rate and the tasks (with their calibration) the scorer uses (:mod:`dailyrec.scoring`),
the gate and the new model's metrics. There is no Redis for the ranking model: ``published.json`` is the pointer a
serving system loads the model from.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.errors import GateRejected
from dailyrec.ranking import NAME
from dailyrec.ranking.artifacts import artifact_dirs
from dailyrec.ranking.evaluation import tasks_of
from dailyrec.registry import eval_report_path, mark_published, model_dir
from dailyrec.step import begin
from dailyrec.storage import MANIFEST


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Mark the day's ranking model published when its gate passed."""
    run = begin("publish_model", cur_date, cfg)
    store, cur_date = run.store, run.cur_date
    rep_path = eval_report_path(store, NAME, cur_date)
    run.require(rep_path, hint=f"evaluate the ranking model of {cur_date} first (tasks.ranking.evaluate_mmoe)")
    report = store.read_json(rep_path)
    if not report.get("gate", {}).get("passed"):
        raise GateRejected(f"the ranking model of {cur_date} did not pass its gate "
                           f"({'; '.join(report.get('gate', {}).get('reasons', []))}); it is not published")
    mdir = model_dir(store, NAME, cur_date)
    man = store.read_json(f"{mdir}/{MANIFEST}")
    keras_dir, saved_model = artifact_dirs(mdir, "main")
    info = {"model_version": man["model_version"], "kind": man.get("kind", "mmoe"), "saved_model": saved_model,
            "keras_model": keras_dir, "negative_downsample_rate": man["negative_downsample_rate"],
            "tasks": tasks_of(man),
            "gate": report["gate"], "metrics": report.get("table", {}).get("new", {})}
    path = mark_published(store, NAME, cur_date, info)
    run.log.info("ranking model %s published: %s -> %s", man["model_version"], path, saved_model)
    return {"published": path, "model_version": man["model_version"], "saved_model": saved_model}


if __name__ == "__main__":
    cli.main(step)
