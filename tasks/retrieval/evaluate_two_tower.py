"""Evaluate the day's two-tower model on the held-out hours and decide whether it may be published.

    python -m tasks.retrieval.evaluate_two_tower --cur-date 2026-11-02

Users: those with a click in the held-out last ``training.holdout_hours`` hours of ``cur_date``
(at most ``evaluation.max_eval_users``, a seeded sample). Candidates: the day's whole catalog
minus the items the user clicked in the training window (all clicks, before down-sampling). Truth: the user's distinct held-out
clicked items. The same users, candidates and truth for every ranker:

* ``new``: the model trained for ``cur_date``;
* ``previous``: the newest *published* model before ``cur_date`` (yesterday's), if any;
* ``popularity``: the catalog ranked by clicks over the longest counter window.

Gate (``evaluation.*``): the new model fails when its ``gate_metric`` is more than
``max_drop_vs_previous`` below the previous model's, or (``require_beat_popularity``) below
popularity. The decision and the table go to ``eval/two_tower/dt=D/report.json``; a failed gate
keeps the last good model online (the DAG skips export and publish).
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.registry import eval_report_path, model_dir, published_before
from dailyrec.storage import Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.evaluate_two_tower")
NAME = "two_tower"


def popularity_column(columns: list[str]) -> str:
    """The catalog's click counter over its longest window (``clicks_<W>d``)."""
    cands = [c for c in columns if c.startswith("clicks_") and c.endswith("d") and c[7:-1].isdigit()]
    if not cands:
        raise KeyError(f"catalog has no clicks_<W>d counter column; columns: {columns}")
    return max(cands, key=lambda c: int(c[7:-1]))


def _eval_set(store: Any, cfg: Config, cur_date: str) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    sdir = store.partition("samples", cur_date)
    holdout = pq.read_table(f"{sdir}/holdout.parquet", filesystem=store.fs)
    seen_t = pq.read_table(f"{sdir}/seen.parquet", filesystem=store.fs)
    catalog = pq.read_table(f"{store.partition('features', cur_date)}/catalog.parquet", filesystem=store.fs)
    if holdout.num_rows == 0:
        raise ValueError(f"{sdir}/holdout.parquet has no clicks: nothing to evaluate "
                         f"(training.holdout_hours={cfg.training.holdout_hours})")
    item_ids = catalog.column("item_id").to_pylist()
    pos = {it: i for i, it in enumerate(item_ids)}
    hold = holdout.to_pandas()
    users = np.array(sorted(hold["user_id"].unique()))
    if len(users) > cfg.evaluation.max_eval_users:
        rng = np.random.default_rng([cfg.training.seed, int(cur_date.replace("-", ""))])
        users = np.sort(rng.choice(users, cfg.evaluation.max_eval_users, replace=False))
    hold = hold[hold["user_id"].isin(set(users))].sort_values(["user_id", "event_time"], kind="stable")
    first = hold.drop_duplicates("user_id", keep="first").set_index("user_id").loc[users].reset_index()
    truth_items = hold.groupby("user_id")["item_id"].apply(lambda s: sorted(set(s)))
    truth = [np.array([pos[i] for i in truth_items[u] if i in pos], dtype=np.int64) for u in users]
    n_truth = [len(truth_items[u]) for u in users]
    tr = seen_t.to_pandas()
    tr = tr[tr["user_id"].isin(set(users))]
    seen = tr.groupby("user_id")["item_id"].apply(lambda s: sorted(set(s)))
    exclude = [np.array([pos[i] for i in seen.get(u, []) if i in pos], dtype=np.int64) for u in users]
    import pyarrow as pa

    return {"users": users, "user_rows": pa.Table.from_pandas(first, preserve_index=False), "catalog": catalog,
            "truth": truth, "n_truth": n_truth, "exclude": exclude, "holdout_rows": holdout.num_rows}


def tower_vectors(tower_dir: str, table: Any, specs: list[Any]) -> Any:
    from models.two_tower import load_tower
    from dailyrec.inputs import feature_arrays, predict_in_batches

    tower = load_tower(tower_dir)
    wanted = [s for s in specs if s.name in tower.feature_names]
    return predict_in_batches(tower, feature_arrays(table, wanted, where=tower_dir))


def evaluate_two_tower(cur_date: str, cfg: Config | None = None) -> dict[str, Any]:
    from dailyrec.metrics import constant_scorer, dot_scorer, evaluate_ranker

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    ev = cfg.evaluation
    with timer.step("eval_set"):
        es = _eval_set(store, cfg, cur_date)
    specs = cfg.features.spec
    args = (es["truth"], es["n_truth"], es["exclude"], ev.ks)
    table: dict[str, dict[str, float]] = {}
    new_dir = model_dir(store, NAME, cur_date)
    with timer.step("new"):
        u = tower_vectors(f"{new_dir}/user_tower", es["user_rows"], specs)
        v = tower_vectors(f"{new_dir}/item_tower", es["catalog"], specs)
        table["new"] = evaluate_ranker(dot_scorer(u, v), *args)
    prev = published_before(store, NAME, cur_date)
    if prev is not None:
        with timer.step("previous"):
            pdir = prev["model_dir"]
            u = tower_vectors(f"{pdir}/user_tower", es["user_rows"], specs)
            v = tower_vectors(f"{pdir}/item_tower", es["catalog"], specs)
            table["previous"] = evaluate_ranker(dot_scorer(u, v), *args)
    with timer.step("popularity"):
        col = popularity_column(es["catalog"].column_names)
        pop = es["catalog"].column(col).to_numpy(zero_copy_only=False).astype("float32")
        table["popularity"] = evaluate_ranker(constant_scorer(pop), *args)
    metric = ev.gate_metric
    if metric not in table["new"]:
        raise ValueError(f"evaluation.gate_metric {metric!r} is not computed; choose one of {sorted(table['new'])}")
    reasons = []
    if "previous" in table and table["new"][metric] < table["previous"][metric] - ev.max_drop_vs_previous:
        reasons.append(f"{metric} {table['new'][metric]:.4f} is more than {ev.max_drop_vs_previous} below the "
                       f"previous model's {table['previous'][metric]:.4f} ({prev['cur_date']})")
    if ev.require_beat_popularity and table["new"][metric] < table["popularity"][metric]:
        reasons.append(f"{metric} {table['new'][metric]:.4f} is below popularity's {table['popularity'][metric]:.4f}")
    gate = {"passed": not reasons, "metric": metric, "reasons": reasons,
            "previous_model": prev["cur_date"] if prev else None}
    report = make_manifest("evaluate_two_tower", cfg, cur_date, inputs=[new_dir, store.partition("samples", cur_date)],
                           rows={"eval_users": len(es["users"]), "holdout_clicks": es["holdout_rows"],
                                 "candidates": es["catalog"].num_rows},
                           timings=timer.timings, table=table, gate=gate, popularity_column=col)
    out = store.partition(f"eval/{NAME}", cur_date)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    log.info("evaluation of %s on %d users, %d candidates:\n%s", cur_date, len(es["users"]),
             es["catalog"].num_rows, format_table(table, ev.ks))
    if gate["passed"]:
        log.info("gate PASSED on %s", metric)
    else:
        log.warning("gate FAILED: %s. The model of %s is not published; the last good model stays online.",
                    "; ".join(reasons), cur_date)
    return {"report": eval_report_path(store, NAME, cur_date), "passed": gate["passed"], "reasons": reasons,
            "metric": metric, "new": round(table["new"][metric], 4),
            "previous": round(table["previous"][metric], 4) if "previous" in table else None,
            "popularity": round(table["popularity"][metric], 4)}


def format_table(table: dict[str, dict[str, float]], ks: list[int]) -> str:
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "hitrate", "ndcg")]
    keys = [f"{m}_at_{k}" for k in ks for m in ("recall", "hitrate", "ndcg")]
    lines = [f"{'model':<12}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in table.items():
        lines.append(f"{name:<12}" + "".join(f"{m[k]:>12.4f}" for k in keys))
    return "\n".join(lines)


def main() -> None:
    from dailyrec import cli

    args = cli.parser(__doc__.splitlines()[0]).parse_args()
    cli.run(lambda: evaluate_two_tower(args.cur_date, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
