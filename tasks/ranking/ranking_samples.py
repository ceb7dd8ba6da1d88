"""Ranking samples (stage 1 of the daily ranking DAG): labelled impressions for the MMoE ranker.

    python -m tasks.ranking.ranking_samples --cur-date 2026-11-03 [--set ranking.negative_downsample_rate=0.25]

Inputs: the hourly logs of the last ``sampling.window_days`` days up to ``cur_date``, the users
snapshot of ``cur_date`` and ``features/dt=D/catalog.parquet`` (the retrieval DAG's features step;
its ``_manifest.json`` must exist, it is written last). The SQL is ``sql/ranking_*.sql`` (DuckDB).

* one row per impression with both labels, ``click`` and ``conversion``, and every feature of
  ``features.spec``: user side (users snapshot of ``cur_date``), context (log columns and
  ``hour_of_day``) and item side (catalog of ``cur_date``);
* training rows: the window minus the last ``training.holdout_hours`` hours of ``cur_date``.
  Every click is kept; an impression without a click is kept with probability
  ``r = ranking.negative_downsample_rate`` (seeded by ``(ranking.seed, cur_date)``). Each row
  carries ``downsample_rate`` (its keep probability: 1 for clicks, ``r`` otherwise) and
  ``sample_weight`` = 1 / that (the inverse-probability weight: weighted sums estimate the
  window's real counts). The model trains *unweighted* on these rows, so its click head learns
  the odds of the down-sampled data, and :func:`calibrate` maps a prediction back:
  ``p_true = p / (p + (1 - p) / r)``; :func:`calibrate_conversion` does the same for the
  conversion head (see docs/ranking.md);
* holdout rows: every impression of the last ``training.holdout_hours`` hours of ``cur_date``,
  not down-sampled (``downsample_rate`` = ``sample_weight`` = 1);
* a conversion without a click is a data error: the day validation rejects it already
  (``dailyrec.contract``); here it raises :class:`~dailyrec.errors.ContractError` too, naming the days.

Output (atomic), ``ranking_samples/dt=D/``: ``train.parquet``, ``holdout.parquet``,
``_manifest.json`` (per-label statistics before/after down-sampling, the rate, the seed).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date, window
from dailyrec.errors import ContractError
from dailyrec.storage import MANIFEST, Store, Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.ranking_samples")

DATASET = "ranking_samples"


# ---- calibration ------------------------------------------------------------------------------
def calibrate(p: Any, rate: float) -> np.ndarray:
    """Undo negative down-sampling on a predicted click probability.

    A model trained on data where negatives were kept with probability ``rate`` (positives all
    kept) predicts ``p = q / (q + (1 - q) * rate)`` for a true probability ``q``; the inverse is
    ``q = p / (p + (1 - p) / rate)``. ``rate = 1`` returns ``p`` unchanged.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"down-sample rate must be in (0, 1], got {rate!r}")
    p = np.asarray(p, dtype=np.float64)
    if rate == 1:
        return p
    return p / (p + (1.0 - p) / rate)


def calibrate_conversion(p_conversion: Any, p_click: Any, rate: float) -> np.ndarray:
    """Undo negative down-sampling on a predicted per-impression conversion probability.

    Conversions only follow clicks, so every conversion positive was kept, and the negatives
    dropped were non-click impressions: the down-sampled data over-represents conversions by
    ``1 / (c + (1 - c) * rate)`` where ``c`` is the true click probability of the row. With
    ``c = calibrate(p_click, rate)`` (``p_click`` the click head's raw prediction on the same
    row) the true conversion probability is ``p_conversion * (c + (1 - c) * rate)``.
    """
    c = calibrate(p_click, rate)
    return np.asarray(p_conversion, dtype=np.float64) * (c + (1.0 - c) * rate)


# ---- inputs ------------------------------------------------------------------------------------
def features_manifest_path(store: Store, cur_date: str) -> str:
    return f"{store.partition('features', cur_date)}/{MANIFEST}"


def features_ready(cur_date: str, cfg: Config | None = None) -> bool:
    """True when the retrieval DAG's features step has finished ``cur_date`` (its manifest exists)."""
    store = open_store(cfg or load_config())
    return store.exists(features_manifest_path(store, parse_date(cur_date).isoformat()))


def feature_columns(cfg: Config, catalog_columns: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(user, context, item) feature names of ``features.spec`` other than the two ids, checked
    against where they come from (users snapshot, log columns / ``hour_of_day``, catalog)."""
    from dailyrec.contract import LOG_SCHEMA, USER_SCHEMA

    fc = cfg.features
    user = [f.name for f in fc.by_side("user") if f.name != "user_id"]
    context = [f.name for f in fc.by_side("context")]
    item = [f.name for f in fc.by_side("item") if f.name != "item_id"]
    bad = ([f"{n} (user side: not a users column)" for n in user if n not in USER_SCHEMA.names]
           + [f"{n} (context: not a log column)" for n in context
              if n not in LOG_SCHEMA.names and n != "hour_of_day"]
           + [f"{n} (item side: not a catalog column)" for n in item if n not in catalog_columns])
    if bad:
        raise ValueError(f"features.spec: {bad}")
    return user, context, item


def _label_stats(click: np.ndarray, conversion: np.ndarray, weight: np.ndarray | None = None) -> dict[str, Any]:
    n = int(len(click))
    clicks, convs = int(click.sum()), int(conversion.sum())
    out: dict[str, Any] = {
        "rows": n, "clicks": clicks, "conversions": convs,
        "ctr": round(clicks / n, 6) if n else None,
        "conversion_rate": round(convs / n, 6) if n else None,
        "cvr_after_click": round(convs / clicks, 6) if clicks else None,
    }
    if weight is not None and n:
        w = weight.astype(np.float64)
        out["weighted_rows"] = round(float(w.sum()), 1)
        out["weighted_ctr"] = round(float((w * click).sum() / w.sum()), 6)
        out["weighted_conversion_rate"] = round(float((w * conversion).sum() / w.sum()), 6)
    return out


def _per_label(before: dict[str, Any], after: dict[str, Any], holdout: dict[str, Any]) -> dict[str, Any]:
    """Statistics by label: positives and rates before/after down-sampling, and in the holdout."""
    out = {}
    for label, count, rate in (("click", "clicks", "ctr"), ("conversion", "conversions", "conversion_rate")):
        out[label] = {
            "positives_before": before[count], "rate_before": before[rate],
            "positives_after": after[count], "rate_after": after[rate],
            "weighted_rate_after": after.get(f"weighted_{rate}"),
            "holdout_positives": holdout[count], "holdout_rate": holdout[rate],
        }
    return out


# ---- the step ---------------------------------------------------------------------------------
def build_ranking_samples(cur_date: str, cfg: Config | None = None) -> dict[str, Any]:
    """Build the day's ranking training rows (down-sampled) and holdout rows; returns pointers."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dailyrec.contract import ITEM_SCHEMA
    from dailyrec import sql as _duck
    from tasks.retrieval.features import log_inputs, open_events, read_snapshot

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    rate = float(cfg.ranking.negative_downsample_rate)
    holdout_hours = cfg.training.holdout_hours
    window_days = cfg.sampling.window_days
    seed = [cfg.ranking.seed, int(cur_date.replace("-", ""))]
    timer = Timer()

    with timer.step("inputs"):
        fdir = store.partition("features", cur_date)
        fman = features_manifest_path(store, cur_date)
        if not store.exists(fman):
            raise FileNotFoundError(f"{fman} does not exist: the features of {cur_date} are not built yet "
                                    f"(daily_retrieval's build_features, or python -m tasks.retrieval.features --cur-date {cur_date})")
        catalog_path = f"{fdir}/catalog.parquet"
        with store.fs.open_input_file(catalog_path) as fh:
            catalog = pq.read_table(fh)
        user_feats, context, item_feats = feature_columns(cfg, catalog.column_names)
        files, hours = log_inputs(store, window(cur_date, window_days), cur_date)
        users = read_snapshot(store, "users", cur_date)
        con = open_events(store, files, users, catalog.select(ITEM_SCHEMA.names))
        _duck.register_arrow(con, "catalog", catalog)
    params = {"cur_date": cur_date, "window_days": window_days, "holdout_hours": holdout_hours}
    with timer.step("sql_label_check"):
        bad = _duck.query_arrow(con, "ranking_label_check", params)
    if bad.num_rows:
        per_day = {str(d): int(n) for d, n in zip(bad["dt"].to_pylist(), bad["bad_rows"].to_pylist())}
        con.close()
        raise ContractError(
            f"ranking samples {cur_date}: column 'conversion' is 1 where 'click' is 0 on {sum(per_day.values())} "
            f"impression(s) of the window (per day: {per_day}); a conversion must follow a click. "
            f"Fix the logs (the day validation, tasks.ingest.validate_day, rejects them as well).")
    with timer.step("sql_impressions"):
        rows = _duck.query_arrow(con, "ranking_impressions", params,
                                 {"user_features": user_feats, "context": context, "item_features": item_feats})
    con.close()

    with timer.step("downsample"):
        is_hold = np.asarray(rows["is_holdout"].to_numpy(zero_copy_only=False), dtype=bool)
        click = np.asarray(rows["click"].to_numpy(zero_copy_only=False), dtype=np.int8)
        conv = np.asarray(rows["conversion"].to_numpy(zero_copy_only=False), dtype=np.int8)
        train_idx = np.flatnonzero(~is_hold)
        hold_idx = np.flatnonzero(is_hold)
        rng = np.random.default_rng(seed)
        u = rng.random(len(train_idx))  # one draw per training row, in the SQL's sorted order
        t_click = click[train_idx] == 1
        keep = t_click | (u < rate)
        kept = train_idx[keep]
        keep_prob = np.where(click[kept] == 1, 1.0, rate).astype(np.float32)
        before = _label_stats(click[train_idx], conv[train_idx])
        after = _label_stats(click[kept], conv[kept], 1.0 / keep_prob)
        holdout_stats = _label_stats(click[hold_idx], conv[hold_idx])

        base = rows.drop_columns(["is_holdout"])
        train = base.take(pa.array(kept)).append_column(
            "sample_weight", pa.array(1.0 / keep_prob, pa.float32())).append_column(
            "downsample_rate", pa.array(keep_prob, pa.float32()))
        ones = np.ones(len(hold_idx), np.float32)
        holdout = base.take(pa.array(hold_idx)).append_column(
            "sample_weight", pa.array(ones)).append_column("downsample_rate", pa.array(ones))

    n_out_cat = int(pc.sum(pc.invert(rows["in_catalog"])).as_py() or 0)
    n_out_users = int(pc.sum(pc.invert(rows["in_users"])).as_py() or 0)
    if not before["rows"]:
        log.warning("ranking samples %s: the training window holds no impression", cur_date)
    elif not before["clicks"]:
        log.warning("ranking samples %s: the training window holds no click", cur_date)
    if not holdout_stats["rows"]:
        log.warning("ranking samples %s: no holdout rows (training.holdout_hours=%d)", cur_date, holdout_hours)
    stats = {
        "train_before_downsampling": before,
        "train": after,
        "holdout": holdout_stats,
        "labels": _per_label(before, after, holdout_stats),
        "rows_with_item_outside_catalog": n_out_cat,
        "rows_with_user_missing_from_snapshot": n_out_users,
    }
    out = store.partition(DATASET, cur_date)
    row_counts = {"train": train.num_rows, "holdout": holdout.num_rows, "window": rows.num_rows,
                  "train_before_downsampling": before["rows"]}
    with timer.step("write"), store.atomic_output(out) as tmp:
        pq.write_table(train, f"{tmp}/train.parquet", filesystem=store.fs, compression="zstd")
        pq.write_table(holdout, f"{tmp}/holdout.parquet", filesystem=store.fs, compression="zstd")
        manifest = make_manifest(
            "ranking_samples", cfg, cur_date,
            inputs={"logs": {d: hours[d] for d in sorted(hours)}, "users": store.partition("users", cur_date),
                    "catalog": catalog_path, "features_manifest": fman},
            rows=row_counts, timings=timer.timings, stats=stats,
            negative_downsample_rate=rate, seed=seed,
            features={"user": user_feats, "context": context, "item": item_feats},
            training_window={"days": sorted(hours), "excluded_hours_of_cur_date": holdout_hours},
            calibration="p_true = p / (p + (1 - p) / negative_downsample_rate) (tasks.ranking.ranking_samples.calibrate)",
        )
        manifest["timings_s"]["total"] = timer.total()
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    log.info("ranking samples dt=%s: %d training impressions (CTR %s, CVR %s) -> %d rows after keeping "
             "non-clicks at r=%g (CTR %s, weighted %s); %d holdout rows (CTR %s) -> %s in %.2fs",
             cur_date, before["rows"], before["ctr"], before["conversion_rate"], after["rows"], rate,
             after["ctr"], after.get("weighted_ctr"), holdout_stats["rows"], holdout_stats["ctr"], out, timer.total())
    return {"path": out, "train": f"{out}/train.parquet", "holdout": f"{out}/holdout.parquet",
            "rows": row_counts, "negative_downsample_rate": rate,
            "labels": stats["labels"]}


def main() -> None:
    from dailyrec import cli

    args = cli.parser(__doc__.splitlines()[0]).parse_args()
    cli.run(lambda: build_ranking_samples(args.cur_date, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
