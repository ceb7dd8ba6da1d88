"""Evaluate the day's two-tower model on the held-out hours and decide whether it may be published.

    python -m tasks.retrieval.evaluate_two_tower --cur-date 2026-11-02

Users: those with a click in the held-out last ``training.holdout_hours`` hours of ``cur_date``
(at most ``evaluation.max_eval_users``, a seeded sample). Candidates: the day's whole catalog
minus the items the user clicked in the training window (all clicks, before down-sampling). Truth: the user's distinct held-out
clicked items. The same users, candidates and truth for every ranker
(:func:`dailyrec.metrics.holdout_eval_set`):

* ``new``: the model trained for ``cur_date``;
* ``previous``: the newest *published* model before ``cur_date`` (yesterday's), if any;
* ``popularity``: the catalog ranked by clicks over the longest counter window.

Gate (``evaluation.*``, :func:`dailyrec.metrics.gate_decision`): the new model fails when its
``gate_metric`` is more than ``max_drop_vs_previous`` below the previous model's, or
(``require_beat_popularity``) below popularity. The decision and the table go to
``eval/two_tower/dt=D/report.json``; a failed gate keeps the last good model online (the DAG
skips export and publish).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.registry import eval_report_path, model_dir, published_before
from dailyrec.step import begin

NAME = "two_tower"


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Evaluate new vs previous vs popularity on the holdout; write the report and the gate."""
    from dailyrec.embeddings import tower_vectors
    from dailyrec.metrics import (constant_scorer, dot_scorer, evaluate_ranker, format_table, gate_decision,
                                  holdout_eval_set, popularity_column)

    run = begin("evaluate_two_tower", cur_date, cfg)
    store, ev, specs = run.store, cfg.evaluation, cfg.features.spec
    new_dir = model_dir(store, NAME, run.cur_date)
    run.require(run.path("samples", "holdout.parquet"), run.path("samples", "seen.parquet"),
                run.path("features", "catalog.parquet"), f"{new_dir}/_manifest.json",
                hint=f"run the features, sample and train_two_tower steps for {run.cur_date} first")
    with run.timer.step("eval_set"):
        es = holdout_eval_set(store, cfg, run.cur_date)
    args = (es["truth"], es["n_truth"], es["exclude"], ev.ks)
    models = {"new": new_dir}
    prev = published_before(store, NAME, run.cur_date)
    if prev is not None:
        models["previous"] = prev["model_dir"]
    table: dict[str, dict[str, float]] = {}
    for name, mdir in models.items():
        with run.timer.step(name):
            u = tower_vectors(f"{mdir}/user_tower", es["user_rows"], specs)
            v = tower_vectors(f"{mdir}/item_tower", es["catalog"], specs)
            table[name] = evaluate_ranker(dot_scorer(u, v), *args)
    with run.timer.step("popularity"):
        col = popularity_column(es["catalog"].column_names)
        pop = es["catalog"].column(col).to_numpy(zero_copy_only=False).astype("float32")
        table["popularity"] = evaluate_ranker(constant_scorer(pop), *args)
    gate = gate_decision(table, ev, prev["cur_date"] if prev else None)
    report = run.manifest(inputs=[new_dir, run.partition("samples")],
                          rows={"eval_users": len(es["users"]), "holdout_clicks": es["holdout_rows"],
                                "candidates": es["catalog"].num_rows},
                          table=table, gate=gate, popularity_column=col)
    with store.atomic_output(run.partition(f"eval/{NAME}")) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    run.log.info("evaluation of %s on %d users, %d candidates:\n%s", run.cur_date, len(es["users"]),
                 es["catalog"].num_rows, format_table(table, ev.ks))
    if gate["passed"]:
        run.log.info("gate PASSED on %s", gate["metric"])
    else:
        run.log.warning("gate FAILED: %s. The model of %s is not published; the last good model stays online.",
                        "; ".join(gate["reasons"]), run.cur_date)
    metric = gate["metric"]
    return {"report": eval_report_path(store, NAME, run.cur_date), "passed": gate["passed"],
            "reasons": gate["reasons"], "metric": metric, "new": round(table["new"][metric], 4),
            "previous": round(table["previous"][metric], 4) if "previous" in table else None,
            "popularity": round(table["popularity"][metric], 4)}


if __name__ == "__main__":
    cli.main(step)
