"""The ranking model's rows: every impression of the window with its labels (``click``,
``conversion`` and the label columns of ``ranking.tasks``) and the features of ``features.spec``
(SQL over the hourly logs), the label checks, the training rows' negative down-sampling and the
label statistics written into the ``ranking_samples`` manifest. pyarrow and DuckDB are imported inside
the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from dailyrec.config import Config
    from dailyrec.storage import Store, Timer


def features_manifest_path(store: Store, cur_date: str) -> str:
    """``<root>/features/dt=D/_manifest.json``: written last by the retrieval DAG's features step."""
    from dailyrec.storage import MANIFEST

    return f"{store.partition('features', cur_date)}/{MANIFEST}"


def feature_columns(cfg: Config, catalog_columns: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(user, context, item) feature names of ``features.spec`` other than the two ids, checked
    against where they come from (users snapshot, log columns / ``hour_of_day``, catalog).

    Raises:
        ValueError: a feature is not a column of its source, naming each.
    """
    from dailyrec.contract import LOG_SCHEMA, USER_SCHEMA
    from dailyrec.freshness import is_freshness

    fc = cfg.features
    user = [f.name for f in fc.by_side("user") if f.name != "user_id"]
    context = [f.name for f in fc.by_side("context")]
    item = [f.name for f in fc.by_side("item") if f.name != "item_id"]
    bad = ([f"{n} (user side: not a users column)" for n in user if n not in USER_SCHEMA.names]
           + [f"{n} (context: not a log column)" for n in context
              if n not in LOG_SCHEMA.names and n != "hour_of_day"]
           + [f"{n} (item side: not a catalog column)" for n in item if n not in catalog_columns and not is_freshness(n)]
           + [f"{n} (an item freshness feature: the two-tower steps compute it, the ranking steps not yet; "
              "docs/features-and-sampling.md)" for n in item if is_freshness(n)])
    if bad:
        raise ValueError(f"features.spec: {bad}")
    return user, context, item


def extra_label_columns(cfg: Config) -> list[str]:
    """The label columns of ``ranking.tasks`` besides ``click`` and ``conversion`` (always selected),
    in task order, each once."""
    out: list[str] = []
    for t in cfg.ranking.tasks:
        col = t.label_column
        if col not in ("click", "conversion") and col not in out:
            out.append(col)
    return out


def check_labels(rows: pa.Table, cfg: Config, where: str) -> None:
    """Refuse label values the tasks cannot learn from, naming the task, the column and a count:
    a null label; a binary task's label other than 0/1; a ``post_click`` task's label (the
    conversion-like tasks, calibrated with the click head) other than 0 on a row without a click.

    Raises:
        ContractError: naming ``where``, the task and the column.
    """
    import pyarrow.compute as pc

    from dailyrec.errors import ContractError

    click = np.asarray(rows["click"].to_numpy(zero_copy_only=False))
    for t in cfg.ranking.resolved_tasks():
        col = rows[t.label_column]
        if col.null_count:
            raise ContractError(f"{where}: task '{t.name}': label column '{t.label_column}' has {col.null_count} "
                                "null value(s)")
        y = np.asarray(pc.cast(col, "float64").to_numpy(zero_copy_only=False))
        if t.kind == "binary":
            bad = int(np.sum((y != 0) & (y != 1)))
            if bad:
                raise ContractError(f"{where}: task '{t.name}' is binary but label column '{t.label_column}' has "
                                    f"{bad} value(s) other than 0/1 (e.g. {float(y[(y != 0) & (y != 1)][0])!r})")
        elif not np.isfinite(y).all():
            raise ContractError(f"{where}: task '{t.name}': label column '{t.label_column}' has "
                                f"{int((~np.isfinite(y)).sum())} non-finite value(s)")
        if t.calibration_mode == "post_click":
            bad = int(np.sum((y != 0) & (click == 0)))
            if bad:
                raise ContractError(f"{where}: task '{t.name}' is calibrated post_click but label column "
                                    f"'{t.label_column}' is non-zero on {bad} impression(s) without a click "
                                    "(set its calibration to 'none', or fix the logs)")


def impression_rows(store: Store, cur_date: str, cfg: Config, timer: Timer) -> tuple[pa.Table, dict[str, Any]]:
    """Every impression of the ranking window with its labels and the features of ``features.spec``.

    Runs ``sql/ranking_label_check.sql`` then ``sql/ranking_impressions.sql`` (DuckDB) over the
    hourly logs of the ``sampling.window_days`` days ending at ``cur_date`` (``YYYY-MM-DD``), the
    users snapshot of ``cur_date`` and ``features/dt=D/catalog.parquet``; ``timer`` (a
    :class:`dailyrec.storage.Timer`) records the phases.

    Returns:
        ``(rows, info)``: an Arrow table sorted as the SQL sorts it (labels int, ``is_holdout``,
        ``in_catalog``, ``in_users`` bools, the feature columns) and ``{"catalog": path, "hours":
        {day: [hours read]}, "features": {"user", "context", "item"}}``.
    Raises:
        ContractError: a conversion without a click in the window (the count per day named); a
            task's label value it cannot learn from (:func:`check_labels`).
        ValueError: a feature of the spec is not a column of its source (:func:`feature_columns`);
            a task's label column is not a log column (naming it and the log file).
    """
    import pyarrow.parquet as pq

    from dailyrec.dates import window
    from dailyrec.events import log_inputs

    with timer.step("inputs"):
        catalog_path = f"{store.partition('features', cur_date)}/catalog.parquet"
        with store.fs.open_input_file(catalog_path) as fh:
            catalog = pq.read_table(fh)
        files, hours = log_inputs(store, window(cur_date, cfg.sampling.window_days), cur_date)
    rows, feats = query_impressions(store, cfg, cur_date, files, catalog, timer,
                                    window_days=cfg.sampling.window_days, holdout_hours=cfg.training.holdout_hours,
                                    where=f"ranking samples {cur_date}")
    return rows, {"catalog": catalog_path, "hours": hours, "features": feats}


def query_impressions(store: Store, cfg: Config, cur_date: str, files: list[str], catalog: pa.Table, timer: Timer,
                      *, window_days: int, holdout_hours: int, where: str) -> tuple[pa.Table, dict[str, list[str]]]:
    """``sql/ranking_label_check.sql`` then ``sql/ranking_impressions.sql`` (DuckDB) over the log
    ``files`` (hourly partitions; the rows of the ``window_days`` days ending at ``cur_date``), the
    users snapshot of ``cur_date`` and ``catalog`` (the item-side features by ``item_id``).

    Shared by the daily samples (:func:`impression_rows`: the window's files, the features step's
    catalog) and the hourly pass samples (:mod:`dailyrec.ranking.passes`: the pass's hour files,
    ``window_days=1``, ``holdout_hours=0``).

    Returns:
        ``(rows, {"user", "context", "item"} feature names)``; ``rows`` as :func:`impression_rows`.
    Raises:
        ContractError / ValueError: as :func:`impression_rows`, ``where`` naming the run.
    """
    import pyarrow.parquet as pq

    from dailyrec import sql
    from dailyrec.contract import ITEM_SCHEMA
    from dailyrec.errors import ContractError
    from dailyrec.events import open_events, read_snapshot

    with timer.step("engine"):
        user_feats, context, item_feats = feature_columns(cfg, catalog.column_names)
        labels = extra_label_columns(cfg)
        if labels:
            with store.fs.open_input_file(files[-1]) as fh:
                log_columns = pq.read_schema(fh).names
            missing = [c for c in labels if c not in log_columns]
            if missing:
                raise ValueError(f"ranking.tasks: label column(s) {missing} are not columns of the logs "
                                 f"({files[-1]}: {log_columns})")
        users = read_snapshot(store, "users", cur_date)
        con = open_events(store, files, users, catalog.select(ITEM_SCHEMA.names))
        sql.register_arrow(con, "catalog", catalog)
    params = {"cur_date": cur_date, "window_days": window_days, "holdout_hours": holdout_hours}
    with timer.step("sql_label_check"):
        bad = sql.query_arrow(con, "ranking_label_check", params)
    if bad.num_rows:
        per_day = {str(d): int(n) for d, n in zip(bad["dt"].to_pylist(), bad["bad_rows"].to_pylist())}
        con.close()
        raise ContractError(
            f"{where}: column 'conversion' is 1 where 'click' is 0 on {sum(per_day.values())} "
            f"impression(s) of the window (per day: {per_day}); a conversion must follow a click. "
            f"Fix the logs (the day validation, tasks.ingest.validate_day, rejects them as well).")
    with timer.step("sql_impressions"):
        rows = sql.query_arrow(con, "ranking_impressions", params,
                                 {"user_features": user_feats, "context": context, "item_features": item_feats,
                                  "labels": labels})
    con.close()
    check_labels(rows, cfg, where)
    return rows, {"user": user_feats, "context": context, "item": item_feats}


def downsample_negatives(click: np.ndarray, is_holdout: np.ndarray, rate: float,
                         seed: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep every training click and each training non-click with probability ``rate``.

    One uniform draw per training row (``~is_holdout``), in the rows' order, from
    ``np.random.default_rng(seed)``: the same rows and seed give the same sample.

    Args:
        click: int/bool ``[n]`` click labels.
        is_holdout: bool ``[n]``, True for the held-out rows (never down-sampled).
        rate: the non-clicks' keep probability, in (0, 1].
        seed: anything ``np.random.default_rng`` takes (the step uses ``[ranking.seed, yyyymmdd]``).
    Returns:
        ``(kept, keep_prob, holdout)``: int64 indices of the kept training rows (ascending),
        float32 ``[len(kept)]`` keep probability of each (1 for clicks, ``rate`` otherwise), and
        int64 indices of the holdout rows.
    """
    train_idx = np.flatnonzero(~is_holdout)
    hold_idx = np.flatnonzero(is_holdout)
    u = np.random.default_rng(seed).random(len(train_idx))
    keep = (click[train_idx] == 1) | (u < rate)
    kept = train_idx[keep]
    keep_prob = np.where(click[kept] == 1, 1.0, rate).astype(np.float32)
    return kept, keep_prob, hold_idx


def shuffled_order(n: int, seed: Any) -> np.ndarray:
    """A seeded permutation of ``range(n)`` (int64 ``[n]``, ``np.random.default_rng(seed)``): the
    order the training rows are written in, so that the training reader's row-group shuffle and
    bounded buffer see rows of the whole window, not time-local runs. The same ``n`` and seed give
    the same order (a re-run writes byte-identical files)."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def sample_tables(rows: pa.Table, rate: float, seed: Any,
                  shuffle_seed: Any | None = None, tasks: list[Any] | None = None) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """Split :func:`impression_rows` into the down-sampled training rows and the holdout rows.

    Both tables drop ``is_holdout`` and gain ``sample_weight`` and ``downsample_rate`` (float32;
    the keep probability and its inverse, 1 for clicks and holdout rows) — see
    :func:`downsample_negatives` for the draw. With ``shuffle_seed`` the training rows come in the
    order of :func:`shuffled_order` (``shuffle_seed``) instead of the SQL's time order (the holdout
    keeps the SQL's order); the rows themselves are the same.

    Returns:
        ``(train, holdout, stats)``; ``stats`` holds :func:`label_stats` of the training window
        before (``train_before_downsampling``) and after (``train``) down-sampling, of the
        ``holdout``, the per-``labels`` view (:func:`per_label`; with ``tasks``, the
        ``ranking.tasks`` objects, also each further task's label statistics, :func:`task_stats`),
        and the counts of rows whose item left the catalog / whose user is missing from the snapshot.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    click = np.asarray(rows["click"].to_numpy(zero_copy_only=False), dtype=np.int8)
    conv = np.asarray(rows["conversion"].to_numpy(zero_copy_only=False), dtype=np.int8)
    is_hold = np.asarray(rows["is_holdout"].to_numpy(zero_copy_only=False), dtype=bool)
    kept, keep_prob, hold_idx = downsample_negatives(click, is_hold, rate, seed)
    if shuffle_seed is not None:
        order = shuffled_order(len(kept), shuffle_seed)
        kept, keep_prob = kept[order], keep_prob[order]
    train_idx = np.flatnonzero(~is_hold)
    before = label_stats(click[train_idx], conv[train_idx])
    after = label_stats(click[kept], conv[kept], 1.0 / keep_prob)
    holdout_stats = label_stats(click[hold_idx], conv[hold_idx])
    base = rows.drop_columns(["is_holdout"])
    train = base.take(pa.array(kept)).append_column(
        "sample_weight", pa.array(1.0 / keep_prob, pa.float32())).append_column(
        "downsample_rate", pa.array(keep_prob, pa.float32()))
    ones = np.ones(len(hold_idx), np.float32)
    holdout = base.take(pa.array(hold_idx)).append_column(
        "sample_weight", pa.array(ones)).append_column("downsample_rate", pa.array(ones))
    stats = {
        "train_before_downsampling": before, "train": after, "holdout": holdout_stats,
        "labels": {**per_label(before, after, holdout_stats),
                   **task_stats(rows, tasks or [], train_idx, kept, 1.0 / keep_prob, hold_idx)},
        "rows_with_item_outside_catalog": int(pc.sum(pc.invert(rows["in_catalog"])).as_py() or 0),
        "rows_with_user_missing_from_snapshot": int(pc.sum(pc.invert(rows["in_users"])).as_py() or 0),
    }
    return train, holdout, stats


def label_stats(click: np.ndarray, conversion: np.ndarray, weight: np.ndarray | None = None) -> dict[str, Any]:
    """Rows, clicks, conversions and their rates (rounded to 6 digits; ``None`` when undefined);
    with ``weight`` (float ``[n]``, inverse keep probabilities) also the weighted estimates."""
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


def per_label(before: dict[str, Any], after: dict[str, Any], holdout: dict[str, Any]) -> dict[str, Any]:
    """Statistics by label (from three :func:`label_stats`): positives and rates before/after
    down-sampling, and in the holdout."""
    out = {}
    for label, count, rate in (("click", "clicks", "ctr"), ("conversion", "conversions", "conversion_rate")):
        out[label] = {
            "positives_before": before[count], "rate_before": before[rate],
            "positives_after": after[count], "rate_after": after[rate],
            "weighted_rate_after": after.get(f"weighted_{rate}"),
            "holdout_positives": holdout[count], "holdout_rate": holdout[rate],
        }
    return out


def task_stats(rows: pa.Table, tasks: list[Any], train_idx: np.ndarray, kept: np.ndarray, weight: np.ndarray,
               hold_idx: np.ndarray) -> dict[str, Any]:
    """Label statistics of the tasks whose label is not ``click``/``conversion`` (those are in
    :func:`per_label`): a binary task's ``positives_before`` / ``rate_before`` (training window),
    ``positives_after`` / ``rate_after`` / ``weighted_rate_after`` (down-sampled, ``weight`` the
    inverse keep probabilities of ``kept``), ``holdout_positives`` / ``holdout_rate``; a regression
    task's ``mean_before``, ``mean_after``, ``weighted_mean_after``, ``holdout_mean`` (rounded to 6 digits)."""
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    r6 = lambda v: round(float(v), 6) if v is not None else None  # noqa: E731
    for t in tasks:
        col = t.label_column
        if col in ("click", "conversion") or t.name in out:
            continue
        y = np.asarray(pc.cast(rows[col], "float64").to_numpy(zero_copy_only=False))
        b, a, h = y[train_idx], y[kept], y[hold_idx]
        mean = lambda v: float(v.mean()) if len(v) else None  # noqa: E731
        wmean = float((weight * a).sum() / weight.sum()) if len(a) else None
        if t.kind == "binary":
            out[t.name] = {"label": col, "positives_before": int(b.sum()), "rate_before": r6(mean(b)),
                           "positives_after": int(a.sum()), "rate_after": r6(mean(a)), "weighted_rate_after": r6(wmean),
                           "holdout_positives": int(h.sum()), "holdout_rate": r6(mean(h))}
        else:
            out[t.name] = {"label": col, "mean_before": r6(mean(b)), "mean_after": r6(mean(a)),
                           "weighted_mean_after": r6(wmean), "holdout_mean": r6(mean(h))}
    return out
