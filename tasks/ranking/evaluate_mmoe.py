"""Evaluate the day's ranking model on the held-out hours and decide whether it may be published.

    python -m tasks.ranking.evaluate_mmoe --cur-date 2026-11-02

Rows: ``ranking_samples/dt=D/holdout.parquet``, every impression of the last
``training.holdout_hours`` hours of ``cur_date`` (not down-sampled). The same rows for every model:

* ``new``: the model trained for ``cur_date`` (``models/mmoe/dt=D/saved_model``, normally MMoE);
* ``shared_bottom``: the shared-bottom baseline trained on the same rows
  (``models/mmoe/dt=D/shared_bottom/saved_model``), when it was trained;
* ``previous``: the newest *published* ranking model before ``cur_date`` (yesterday's), if any.

Every model's predictions are calibrated back from its own training down-sample rate (the
``negative_downsample_rate`` of its manifest; per task's ``calibration``:
:func:`dailyrec.ranking.calibration.calibrate` for the click task,
:func:`~dailyrec.ranking.calibration.calibrate_conversion` for a post-click task, none otherwise)
before the metrics. Per task of the model (its manifest's ``tasks``: ``ranking.tasks`` when it was
trained; default click, conversion): ``auc`` and ``logloss`` (binary) or ``rmse`` and ``mae``
(regression), ``calibration`` (mean calibrated prediction / mean label; 1 is perfect),
``mean_pred``, ``mean_label`` and ``mean_raw_pred`` (the uncalibrated mean).

Gate diagnostics of the new MMoE on the same rows (``models.ranking.gate_diagnostics``): mean gate
weight per expert per task and its normalised entropy; a collapsed gate (one expert takes more
than 90% of a task's mean weight) is a warning (``warnings`` in the report and the task log), not
a failure.

Gate: the new model fails when the AUC of a binary task (click, conversion by default) is more than
``ranking.max_auc_drop_vs_previous`` below the previous model's on these rows, or the RMSE of a
regression task more than ``ranking.max_rmse_rise_vs_previous`` (a fraction) above it (a task
without positives in the holdout has no AUC and is left out, with a warning; so is a task the
previous model does not have). Without a previous model
the gate passes. The report goes to ``eval/mmoe/dt=D/report.json``; a failed gate is not a task
failure: the DAG skips the publish and yesterday's model stays the published one.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.errors import NothingToEvaluate
from dailyrec.ranking import NAME
from dailyrec.ranking.evaluation import (candidates, collapsed_gate_warnings, format_table, gate_diagnostics,
                                         gate_metric, holdout_labels, publish_gate, score_models, tasks_of)
from dailyrec.registry import eval_report_path, model_dir, published_before
from dailyrec.step import begin
from dailyrec.storage import MANIFEST


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Evaluate the day's ranking model (and its baseline, and yesterday's) on the holdout; the gate."""
    import pyarrow.parquet as pq

    run = begin("evaluate_mmoe", cur_date, cfg)
    store, cur_date, log = run.store, run.cur_date, run.log
    hold_path = run.path("ranking_samples", "holdout.parquet")
    new_dir = model_dir(store, NAME, cur_date)
    run.require(hold_path, f"{new_dir}/{MANIFEST}",
                hint=f"run tasks.ranking.ranking_samples and tasks.ranking.train_mmoe for {cur_date} first")
    with run.timer.step("load"):
        holdout = pq.read_table(hold_path, filesystem=store.fs)
        new_man = store.read_json(f"{new_dir}/{MANIFEST}")
    n = holdout.num_rows
    if n == 0:
        raise NothingToEvaluate(f"{hold_path} has no rows: nothing to evaluate, the day is too sparse "
                                f"(training.holdout_hours={cfg.training.holdout_hours})")
    tasks = tasks_of(new_man)
    labels, warnings = holdout_labels(holdout, tasks)
    prev = published_before(store, NAME, cur_date)
    prev_date = prev["cur_date"] if prev else None
    table, rates, unscored = score_models(run, holdout, hold_path, labels, candidates(new_dir, new_man, prev),
                                          prev_date)
    gates = gate_diagnostics(run, new_dir, holdout, hold_path) if new_man.get("kind", "mmoe") == "mmoe" else {}
    warnings += unscored + collapsed_gate_warnings(gates)
    gate = publish_gate(table, cfg.ranking.max_auc_drop_vs_previous, prev_date, tasks,
                        cfg.ranking.max_rmse_rise_vs_previous)
    reasons = gate["reasons"]
    click, conv = (holdout.column(c).to_numpy(zero_copy_only=False) for c in ("click", "conversion"))
    rows = {"holdout": n, "holdout_clicks": int(click.sum()), "holdout_conversions": int(conv.sum()),
            **{f"holdout_{t['name']}_positives": int(labels[t["name"]].sum()) for t in tasks
               if t.get("kind", "binary") == "binary" and t["name"] not in ("click", "conversion")}}
    report = run.manifest(inputs=[hold_path, new_dir] + ([prev["model_dir"]] if prev else []),
                          rows=rows, table=table, gate=gate, warnings=warnings, tasks=tasks,
                          gates=gates, downsample_rates=rates, model_version=new_man.get("model_version"))
    out = run.partition(f"eval/{NAME}")
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    log.info("ranking evaluation of %s on %d holdout impressions (%d clicks, %d conversions):\n%s",
             cur_date, n, rows["holdout_clicks"], rows["holdout_conversions"], format_table(table, tasks))
    for name, d in gates.items():
        log.info("gate of %s: mean weight %s, entropy %.3f, row entropy %.3f", name,
                 dict(zip(d["experts"], (round(w, 3) for w in d["mean_weight"]))), d["entropy"], d["row_entropy"])
    for w in warnings:
        log.warning("%s", w)
    if gate["passed"]:
        log.info("gate PASSED (%s)", "vs " + gate["previous_model"] if gate["previous_model"] else "no previous model")
    else:
        log.warning("gate FAILED: %s. The ranking model of %s is not published; the last published one stays.",
                    "; ".join(reasons), cur_date)
    return {"report": eval_report_path(store, NAME, cur_date), "passed": gate["passed"], "reasons": reasons,
            "warnings": warnings, "previous_model": gate["previous_model"],
            **{f"{name}_{gate_metric(t)}": m.get(gate_metric(t)) for name, m in table.items() for t in tasks}}


if __name__ == "__main__":
    cli.main(step)
