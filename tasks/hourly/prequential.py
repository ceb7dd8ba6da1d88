"""Predict-then-train metrics of one pass (hourly_training's ``prequential``), BEFORE training.

    python -m tasks.hourly.prequential --cur-date 2026-11-02 --hour 5

The serving model of the pass = its warm source (``dailyrec.passes.warm_source_for_pass``: the
previous pass, or the daily base of ``D - 1`` for the day's first pass; ``MissingPassError``
otherwise) scores the pass's impressions over the pass catalog (``pass_samples/dt=D/hour=HH/``):
``recall_at_<K>`` (``K = passes.prequential_k``), ``new_item_recall_at_<K>`` (clicked items born
on ``D``), ``auc`` of the pointwise score vs click, counts (:mod:`dailyrec.prequential`). Output
(atomic): ``prequential/two_tower/dt=D/hour=HH/metrics.json``.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin

NAME = "two_tower"


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Score the pass holding ``hour`` with its warm-source model; write its prequential metrics."""
    import pyarrow.parquet as pq

    from dailyrec.passes import pass_hours, pass_label, pass_start, warm_source_for_pass
    from dailyrec.prequential import score_pass

    run = begin("prequential", cur_date, cfg)
    store, start = run.store, pass_start(cfg, hour)
    label = pass_label(run.cur_date, start)
    catalog_path = f"{run.partition('pass_samples', start)}/catalog.parquet"
    run.require(catalog_path, hint=f"run tasks.hourly.pass_samples --cur-date {run.cur_date} --hour {start} first")
    src_label, src_dir = warm_source_for_pass(store, cfg, NAME, run.cur_date, start)
    version = store.read_json(f"{src_dir}/_manifest.json").get("model_version")
    with run.timer.step("catalog"):
        catalog = pq.read_table(catalog_path, filesystem=store.fs)
    k = cfg.passes.prequential_k
    metrics = score_pass(run, pass_hours(cfg, start), catalog, src_dir, k)
    rounded = {key: (round(v, 6) if isinstance(v, float) else v) for key, v in metrics.items()}
    report = run.manifest(inputs=[catalog_path, src_dir], rows={"impressions": metrics["impressions"],
                                                                "users": metrics["users"]},
                          pass_label=label, hours=pass_hours(cfg, start), model_version=version,
                          scored_by={"from": src_label, "path": src_dir}, **rounded)
    out = run.partition(f"prequential/{NAME}", start)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/metrics.json", report)
    run.log.info("prequential %s (model %s from %s): recall@%d=%s (popularity of the last %d hours: %s) new-item "
                 "recall@%d=%s auc=%s over %d users, %d impressions", label, version, src_label, k,
                 rounded[f"recall_at_{k}"], metrics.get("popularity_hours", 0), rounded.get(f"popularity_recall_at_{k}"),
                 k, rounded[f"new_item_recall_at_{k}"], rounded["auc"], metrics["users"], metrics["impressions"])
    return {"metrics": f"{out}/metrics.json", "pass": label, "model_version": version,
            f"recall_at_{k}": rounded[f"recall_at_{k}"], f"new_item_recall_at_{k}": rounded[f"new_item_recall_at_{k}"],
            f"popularity_recall_at_{k}": rounded.get(f"popularity_recall_at_{k}"),
            "auc": rounded["auc"], "users": metrics["users"], "impressions": metrics["impressions"]}


if __name__ == "__main__":
    cli.main(step)
