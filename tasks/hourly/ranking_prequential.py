"""Prequential (predict-then-train) metrics of the ranking model on one hourly pass, before it trains.

    python -m tasks.hourly.ranking_prequential --cur-date 2026-11-02 --hour 3

The pass is ``(cur_date, hour)``: hours ``hour .. hour + training.split_per_pass - 1`` of ``cur_date``
(``hour`` is normalised to its pass's first hour). First the pass's impressions are written to
``ranking_pass_samples/dt=D/hour=HH/`` (``train.parquet``: down-sampled as the daily ranking samples,
``impressions.parquet``: every impression; :func:`dailyrec.ranking.passes.build_pass_samples`); then
the serving MMoE, the pass's warm source (the previous pass ``passes/mmoe/dt=D/hour=HH-s/``, or for
the day's first pass the daily base ``models/mmoe/dt=D-1/``), scores every impression of the pass:
AUC and log loss per task, calibrated from its training down-sample rate
(:func:`dailyrec.ranking.passes.prequential_metrics`). Written atomically to
``prequential/mmoe/dt=D/hour=HH/metrics.json``. A missing previous pass / base is
:class:`dailyrec.errors.MissingPassError`, an incomplete hour :class:`dailyrec.passes.MissingHourError`
(named; the chain stops).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.ranking import NAME
from dailyrec.ranking.passes import (IMPRESSIONS_FILE, build_pass_samples, pass_hours, pass_label, pass_start,
                                     prequential_metrics, warm_source_for_pass)
from dailyrec.step import begin


def ready(cur_date: str, cfg: Config, hour: int) -> tuple[bool, str]:
    """True when every hour of the pass has its ``_SUCCESS`` marker and the pass's warm source (the
    previous pass, or the daily base of D-1) exists; else what is missing."""
    from dailyrec.errors import MissingPassError
    from dailyrec.passes import log_hours_complete
    from dailyrec.storage import open_store

    store = open_store(cfg)
    complete, why = log_hours_complete(store, cur_date, pass_hours(cfg, hour))
    if not complete:
        return False, why
    try:
        label, path = warm_source_for_pass(store, cfg, NAME, cur_date, hour)
    except MissingPassError as exc:
        return False, str(exc)
    return True, f"hours {pass_hours(cfg, hour)} complete, serving model {label} at {path}"


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Build the pass's ranking samples and score them with the serving MMoE; write the per-task AUC."""
    import pyarrow.parquet as pq

    run = begin("ranking_prequential", cur_date, cfg)
    store, d = run.store, run.cur_date
    start = pass_start(cfg, hour)
    label = pass_label(d, start)
    source = warm_source_for_pass(store, cfg, NAME, d, start)   # first: a missing source stops before any work
    samples = build_pass_samples(run, start)
    with run.timer.step("read"), store.fs.open_input_file(samples["impressions"]) as fh:
        impressions = pq.read_table(fh)
    metrics = prequential_metrics(run, impressions, f"{samples['path']}/{IMPRESSIONS_FILE}", source)
    report = run.manifest(inputs=[samples["impressions"], source[1]], rows={"impressions": impressions.num_rows},
                          hour=start, hours=pass_hours(cfg, start), pass_label=label, **metrics)
    out = run.partition(f"prequential/{NAME}", start)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/metrics.json", report)
    aucs = {k: v for k, v in metrics.items() if k.endswith("_auc")}
    run.log.info("prequential %s: %s (serving %s) on %d impressions (%d clicks): %s -> %s/metrics.json",
                 label, metrics["model_version"], source[0], metrics["impressions"], metrics["clicks"], aucs, out)
    for w in metrics["warnings"]:
        run.log.warning("%s", w)
    return {"metrics": f"{out}/metrics.json", "pass": label, "scored_by": source[0],
            "model_version": metrics["model_version"], "impressions": metrics["impressions"], **aucs}


if __name__ == "__main__":
    cli.main(step)
