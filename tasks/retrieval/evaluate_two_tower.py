"""Evaluate the day's two-tower model on the holdout and decide whether it may be published.

    python -m tasks.retrieval.evaluate_two_tower --cur-date 2026-11-02

Holdout: the clicks of the last ``training.holdout_hours`` hours of ``cur_date``, or more hours
(then the days before, up to ``evaluation.max_holdout_days``) when those hours have fewer than
``evaluation.min_holdout_users`` users or ``evaluation.min_holdout_clicks`` clicks: the sample step
chose the span and excluded it from training (:mod:`dailyrec.holdout`). Users: those with a
held-out click (at most ``evaluation.max_eval_users``, a seeded sample). Candidates: the day's
whole catalog minus, when ``serving.exclude_seen`` (as serving does), the items the user clicked
in the training window. Truth: the user's distinct held-out clicked items. The same users,
candidates and truth for every ranker (:func:`dailyrec.metrics.holdout_eval_set`):

* ``new``: the model trained for ``cur_date``, scored as serving scores (``u . v + beta * log q``
  with ``q`` from the held-out-free clicks of ``serving.popularity_window_days``:
  :mod:`dailyrec.popularity_prior`). With ``serving.popularity_beta_grid`` the beta with the best
  ``gate_metric`` on the holdout is chosen here and recorded (``popularity_prior``; the index build
  reads it), and its rows are cross-fitted (each half of the users scored with the beta the other
  half chose), so the gate does not profit from the choice;
* ``previous``: the newest *published* model before ``cur_date`` (yesterday's), if any, scored as it
  was served (with the beta its own evaluation chose);
* ``popularity``: the catalog ranked by clicks over the longest counter window before the holdout
  (held-out clicks subtracted), ties broken by the shortest window's clicks, then ``item_id``
  (:func:`dailyrec.metrics.popularity_scores`).

Item freshness features (:mod:`dailyrec.freshness`: ``item_age_days``, ``item_clicks_<H>h``) are
computed for the candidates as the training rows of the holdout's time would see them
(``features.freshness_as_of``: ``day_start``, as of 00:00 of the holdout's first day, the staleness
a day's exported vectors have; ``event_time``, as of the holdout's start), for ``new`` and
``previous`` alike; the export computes them as of the end of the day.

Gate (``evaluation.*``, :func:`dailyrec.metrics.gate_decision`): paired over users, the per-user
``gate_metric`` of new minus previous (and minus popularity) with a seeded bootstrap interval
(``bootstrap_samples``, ``confidence``). The new model is blocked when it is worse than the previous
model by more than ``max_drop_vs_previous`` with that confidence, or (``require_beat_popularity``)
worse than popularity with that confidence; a drop the interval cannot tell from noise passes with a
note; a holdout still too small after extension is *undecided* (``when_undecided``: pass with a note
by default). When the holdout reaches into hours the previous model trained on, new vs previous is
compared on the held-out clicks after the previous model's training window only. The decision, the
intervals, the holdout's size and the table go to ``eval/two_tower/dt=D/report.json``; a failed gate
keeps the last good model online (the DAG skips export and publish).
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
    from dailyrec.freshness import catalog_freshness, freshness_names, iso_to_us, row_as_of
    from dailyrec.history import rows_with_history
    from dailyrec.popularity_prior import (auto_beta, catalog_log_prior, gate_choice, prior_on, prior_scorer,
                                           served_beta)
    from dailyrec.metrics import (constant_scorer, format_table, gate_decision, holdout_eval_set,
                                  metrics_from_topk, per_user_metrics, popularity_scores, top_k)

    run = begin("evaluate_two_tower", cur_date, cfg)
    store, ev, specs = run.store, cfg.evaluation, cfg.features.spec
    new_dir = model_dir(store, NAME, run.cur_date)
    run.require(run.path("samples", "holdout.parquet"), run.path("samples", "seen.parquet"),
                run.path("features", "catalog.parquet"), f"{new_dir}/_manifest.json",
                hint=f"run the features, sample and train_two_tower steps for {run.cur_date} first")
    prev = published_before(store, NAME, run.cur_date)
    with run.timer.step("eval_set"):
        es = holdout_eval_set(store, cfg, run.cur_date)
        overlap = _previous_overlap(store, cfg, prev, es["holdout"]) if prev else None
        if overlap:
            es = holdout_eval_set(store, cfg, run.cur_date, fresh_since=overlap)
        if freshness_names(cfg):  # as of the holdout's start or its day's start (dailyrec.freshness.row_as_of)
            es["catalog"] = catalog_freshness(store, cfg, run.cur_date, es["catalog"], int(row_as_of(
                iso_to_us(es["holdout"]["start"]), cfg.features.freshness_as_of)))
    # features.user_history: the users' clicks strictly before the holdout start (no held-out click)
    es["user_rows"] = rows_with_history(es["user_rows"], store, cfg, run.cur_date, as_of="holdout")
    models = {"new": new_dir}
    if prev is not None:
        models["previous"] = prev["model_dir"]
    kmax, metric = max(ev.ks), ev.gate_metric
    # serving's score u.v + beta log q (q leak-free: held-out clicks out); beta from the grid, chosen here
    betas = sorted(set(cfg.serving.popularity_beta_grid)) if auto_beta(cfg) else [cfg.serving.popularity_beta]
    log_q = catalog_log_prior(cfg, es["catalog"], es["holdout_table"], run.cur_date) if prior_on(cfg) else None
    table: dict[str, dict[str, float]] = {}
    by_beta: dict[str, dict[float, Any]] = {}
    for name, mdir in models.items():  # previous: the beta it was served with (its own report's choice)
        own = betas if name == "new" else [served_beta(store, cfg, prev["cur_date"])[0]]
        with run.timer.step(name):
            u = tower_vectors(f"{mdir}/user_tower", es["user_rows"], specs)
            v = tower_vectors(f"{mdir}/item_tower", es["catalog"], specs)
            by_beta[name] = {b: top_k(prior_scorer(u, v, log_q, b), len(es["truth"]), kmax, es["exclude"])
                             for b in own}
    prior, topks = gate_choice(cfg, run.cur_date, by_beta, es["truth"], es["n_truth"], metric)
    if len(betas) > 1:
        run.log.info("popularity prior: beta %s serves (%s per beta on the holdout: %s; cross-fitted halves: %s)",
                     prior["beta"], metric, prior["grid"], prior["cross_fitted_betas"])
    with run.timer.step("popularity"):
        pop, pop_info = popularity_scores(es["catalog"], es["holdout_table"], run.cur_date)
        topks["popularity"] = top_k(constant_scorer(pop), len(es["truth"]), kmax, es["exclude"])
    per_user = {}
    for name, tk in topks.items():
        table[name] = metrics_from_topk(tk, es["truth"], es["n_truth"], ev.ks)
        per_user[name] = per_user_metrics(tk, es["truth"], es["n_truth"], ev.ks)[metric]
    with run.timer.step("bootstrap"):
        paired = _paired(run, es, topks, per_user, metric)
    gate = gate_decision(table, ev, prev["cur_date"] if prev else None, paired=paired, holdout=es["holdout"])
    if len(betas) > 1 and prior["beta"] == betas[-1]:  # served ~ popularity: say so, whatever the verdict
        gate["notes"].append(f"the popularity prior dominates: beta {prior['beta']} (the largest of serving."
                             f"popularity_beta_grid) serves; {metric} per beta on the holdout: {prior['grid']}")
    report = run.manifest(inputs=[new_dir, run.partition("samples")],
                          rows={"eval_users": len(es["users"]), "holdout_clicks": es["holdout_rows"],
                                "holdout_users": es["holdout"]["users"], "holdout_hours": es["holdout"]["hours"],
                                "candidates": es["catalog"].num_rows},
                          table=table, gate=gate, popularity_column=pop_info["column"], popularity=pop_info,
                          excluded_seen=es["exclude"] is not None, popularity_prior=prior)
    with store.atomic_output(run.partition(f"eval/{NAME}")) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    run.log.info("evaluation of %s on %d users (holdout: %s), %d candidates:\n%s", run.cur_date, len(es["users"]),
                 es["holdout"]["reason"], es["catalog"].num_rows, format_table(table, ev.ks))
    for name, c in gate["comparisons"].items():
        run.log.info("new - %s on %s: %+.4f, %d%% interval [%+.4f, %+.4f] over %d users: %s", name, metric,
                     c["mean_diff"], round(100 * ev.confidence), c["ci"][0], c["ci"][1], c["users"], c["verdict"])
    for note in gate["notes"]:
        run.log.warning("gate note: %s", note)
    if gate["passed"]:
        run.log.info("gate PASSED on %s (%s)", metric, gate["verdict"])
    else:
        run.log.warning("gate FAILED: %s. The model of %s is not published; the last good model stays online.",
                        "; ".join(gate["reasons"]), run.cur_date)
    return {"report": eval_report_path(store, NAME, run.cur_date), "passed": gate["passed"],
            "verdict": gate["verdict"], "reasons": gate["reasons"], "notes": gate["notes"], "metric": metric,
            "new": round(table["new"][metric], 4),
            "previous": round(table["previous"][metric], 4) if "previous" in table else None,
            "popularity": round(table["popularity"][metric], 4),
            "intervals": {n: c["ci"] for n, c in gate["comparisons"].items()}, "popularity_beta": prior["beta"],
            "holdout": {k: es["holdout"][k] for k in ("hours", "users", "clicks", "extended", "enough")}}


def _previous_overlap(store: Any, cfg: Config, prev: dict[str, Any], holdout: dict[str, Any]) -> str | None:
    """The end of the previous model's training window (ISO UTC) when the holdout starts before it
    (an extended holdout reaching into days the previous model trained on), else None."""
    from dailyrec.holdout import span_bounds

    path = f"{store.partition('samples', prev['cur_date'])}/_manifest.json"
    span = (store.read_json(path).get("holdout") if store.exists(path) else None) or {}
    cutoff = span.get("start") or span_bounds(prev["cur_date"], cfg.training.holdout_hours)[0]
    return cutoff if holdout["start"] < cutoff else None


def _paired(run: Any, es: dict[str, Any], topks: dict[str, Any], per_user: dict[str, Any], metric: str
            ) -> dict[str, dict[str, Any]]:
    """Bootstrap intervals of new - popularity and new - previous (per-user ``metric``), seeded by
    ``(training.seed, cur_date, comparison)``."""
    from dailyrec.metrics import paired_bootstrap, per_user_metrics

    ev = run.cfg.evaluation
    seed = [run.cfg.training.seed, int(run.cur_date.replace("-", ""))]
    out = {"popularity": paired_bootstrap(per_user["new"], per_user["popularity"], ev.bootstrap_samples,
                                          ev.confidence, seed + [1])}
    if "previous" not in topks:
        return out
    fresh = es.get("fresh")
    if fresh is None:
        out["previous"] = paired_bootstrap(per_user["new"], per_user["previous"], ev.bootstrap_samples,
                                           ev.confidence, seed + [2])
        return out
    # the previous model trained on part of the holdout: compare on the clicks after its training window
    rows = fresh["rows"]
    note = (f"the holdout starts before the end of the previous model's training window ({fresh['since']}): new "
            f"vs previous is compared on the {fresh['clicks']} held-out clicks after it ({len(rows)} users)")
    if len(rows) == 0:
        return out | {"previous": {"mean_diff": 0.0, "ci": [0.0, 0.0], "users": 0, "confidence": ev.confidence,
                                   "samples": 0, "undecided": True, "note": note + ": none, not compared"}}
    new_f, prev_f = (per_user_metrics(topks[n][rows], fresh["truth"], fresh["n_truth"], ev.ks)[metric]
                     for n in ("new", "previous"))
    cmp = paired_bootstrap(new_f, prev_f, ev.bootstrap_samples, ev.confidence, seed + [2])
    cmp["note"], cmp["since"] = note, fresh["since"]
    if len(rows) < ev.min_holdout_users:
        cmp["undecided"] = True
        cmp["note"] = note + f": fewer than evaluation.min_holdout_users={ev.min_holdout_users}, reported only"
    return out | {"previous": cmp}


if __name__ == "__main__":
    cli.main(step)
