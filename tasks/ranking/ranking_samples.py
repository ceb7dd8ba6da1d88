"""Ranking samples (stage 1 of the daily ranking DAG): labelled impressions for the MMoE ranker.

    python -m tasks.ranking.ranking_samples --cur-date 2026-11-03 [--set ranking.negative_downsample_rate=0.25]

Inputs: the hourly logs of the last ``sampling.window_days`` days up to ``cur_date``, the users
snapshot of ``cur_date`` and ``features/dt=D/catalog.parquet`` (the retrieval DAG's features step;
its ``_manifest.json`` must exist, it is written last: :func:`ready`); the logs of the window
must have passed ``tasks.ingest.validate_day`` (``run.require_validated``). The SQL is
``sql/ranking_*.sql`` (DuckDB).

* one row per impression with its labels, ``click``, ``conversion`` and the label column of every
  task of ``ranking.tasks`` (a log column; checked by :func:`dailyrec.ranking.samples.check_labels`:
  0/1 for a binary task, no null, 0 without a click for a ``post_click`` task), and every feature of
  ``features.spec``: user side (users snapshot of ``cur_date``), context (log columns and
  ``hour_of_day``) and item side (catalog of ``cur_date``);
* training rows: the window minus the last ``training.holdout_hours`` hours of ``cur_date``.
  Every click is kept; an impression without a click is kept with probability
  ``r = ranking.negative_downsample_rate`` (seeded by ``(ranking.seed, cur_date)``,
  :func:`dailyrec.ranking.samples.downsample_negatives`). Each row carries ``downsample_rate`` (its keep
  probability: 1 for clicks, ``r`` otherwise) and ``sample_weight`` = 1 / that (the
  inverse-probability weight: weighted sums estimate the window's real counts). The model trains
  *unweighted* on these rows, so its click head learns the odds of the down-sampled data, and
  :func:`dailyrec.ranking.calibration.calibrate` maps a prediction back: ``p_true = p / (p + (1 - p) / r)``;
  :func:`dailyrec.ranking.calibration.calibrate_conversion` does the same for the conversion head (see
  docs/ranking.md). The training rows are written in a seeded shuffled order (seed
  ``(ranking.seed, cur_date, 1)``, :func:`dailyrec.ranking.samples.shuffled_order`) in row groups of
  ``dailyrec.stream.ROW_GROUP_ROWS`` = 131,072 rows: the training reader permutes row groups and shuffles
  within a bounded buffer, so it needs rows that are not in time order;
* holdout rows: every impression of the last ``training.holdout_hours`` hours of ``cur_date``,
  not down-sampled (``downsample_rate`` = ``sample_weight`` = 1);
* a conversion without a click is a data error: the day validation rejects it already
  (``dailyrec.contract``); here it raises :class:`~dailyrec.errors.ContractError` too, naming the days.

Output (atomic), ``ranking_samples/dt=D/``: ``train.parquet``, ``holdout.parquet``,
``_manifest.json`` (per-label statistics before/after down-sampling, the rate, the seed).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.dates import window
from dailyrec.ranking.calibration import CALIBRATION_FORMULA
from dailyrec.ranking.samples import features_manifest_path, impression_rows, sample_tables
from dailyrec.step import begin
from dailyrec.storage import MANIFEST, open_store


def ready(cur_date: str, cfg: Config) -> tuple[bool, str]:
    """True when the retrieval DAG's features step has finished ``cur_date`` (its manifest exists)."""
    store = open_store(cfg)
    path = features_manifest_path(store, cur_date)
    ok = store.exists(path)
    return ok, f"{path} exists" if ok else f"{path} not written yet (daily_retrieval's build_features)"


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Build the day's ranking training rows (down-sampled) and holdout rows; returns pointers."""
    import pyarrow.parquet as pq

    from dailyrec.stream import ROW_GROUP_ROWS

    run = begin("ranking_samples", cur_date, cfg)
    store, cur_date, timer = run.store, run.cur_date, run.timer
    rate = float(cfg.ranking.negative_downsample_rate)
    holdout_hours = cfg.training.holdout_hours
    seed = [cfg.ranking.seed, int(cur_date.replace("-", ""))]
    fman = features_manifest_path(store, cur_date)
    run.require(fman, hint=f"the features of {cur_date} are not built yet (daily_retrieval's build_features, "
                           f"or python -m tasks.retrieval.features --cur-date {cur_date})")
    run.require_validated(window(cur_date, cfg.sampling.window_days))
    rows, info = impression_rows(store, cur_date, cfg, timer)

    with timer.step("downsample"):
        train, holdout, stats = sample_tables(rows, rate, seed, shuffle_seed=[*seed, 1],
                                              tasks=cfg.ranking.resolved_tasks())
    before, after, holdout_stats = stats["train_before_downsampling"], stats["train"], stats["holdout"]
    if not before["rows"]:
        run.log.warning("ranking samples %s: the training window holds no impression", cur_date)
    elif not before["clicks"]:
        run.log.warning("ranking samples %s: the training window holds no click", cur_date)
    if not holdout_stats["rows"]:
        run.log.warning("ranking samples %s: no holdout rows (training.holdout_hours=%d)", cur_date, holdout_hours)
    out = run.partition("ranking_samples")
    row_counts = {"train": train.num_rows, "holdout": holdout.num_rows, "window": rows.num_rows,
                  "train_before_downsampling": before["rows"]}
    hours = info["hours"]
    with timer.step("write"), store.atomic_output(out) as tmp:
        pq.write_table(train, f"{tmp}/train.parquet", filesystem=store.fs, compression="zstd",
                       row_group_size=ROW_GROUP_ROWS)
        pq.write_table(holdout, f"{tmp}/holdout.parquet", filesystem=store.fs, compression="zstd")
        manifest = run.manifest(
            inputs={"logs": {d: hours[d] for d in sorted(hours)}, "users": run.partition("users"),
                    "catalog": info["catalog"], "features_manifest": fman},
            rows=row_counts, stats=stats, negative_downsample_rate=rate, seed=seed, features=info["features"],
            train_order={"shuffle_seed": [*seed, 1], "row_group_rows": ROW_GROUP_ROWS},
            training_window={"days": sorted(hours), "excluded_hours_of_cur_date": holdout_hours},
            calibration=CALIBRATION_FORMULA,
        )
        manifest["timings_s"]["total"] = timer.total()
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    run.log.info("ranking samples dt=%s: %d training impressions (CTR %s, CVR %s) -> %d rows after keeping "
                 "non-clicks at r=%g (CTR %s, weighted %s); %d holdout rows (CTR %s) -> %s in %.2fs",
                 cur_date, before["rows"], before["ctr"], before["conversion_rate"], after["rows"], rate,
                 after["ctr"], after.get("weighted_ctr"), holdout_stats["rows"], holdout_stats["ctr"], out,
                 timer.total())
    return {"path": out, "train": f"{out}/train.parquet", "holdout": f"{out}/holdout.parquet",
            "rows": row_counts, "negative_downsample_rate": rate, "labels": stats["labels"]}


if __name__ == "__main__":
    cli.main(step)
