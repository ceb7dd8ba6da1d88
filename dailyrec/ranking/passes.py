"""Hourly passes of the MMoE ranking model (issue 10, point 5; docs in /work/hourly-design.md and the
streaming-trainer design: passes, per-pass AUC, base/delta models): pass identity, the pass's
impressions, the prequential (predict-then-train) metrics and the incremental training.

A **pass** is ``(cur_date, hour)``, ``hour`` its FIRST hour; it covers hours
``hour .. hour + training.split_per_pass - 1`` of ``cur_date`` (:func:`pass_hours`). Its
**warm source** (:func:`warm_source_for_pass`) is the previous pass of the same day
(``passes/mmoe/dt=D/hour=<hour - s>/``) when ``hour > 0``, else the daily base of ``D - 1``
(``models/mmoe/dt=D-1/``, gate passed); a missing one is :class:`MissingPassError`: the chain stops,
it never skips data. The serving model of a pass (the one the prequential metrics score) is that
same warm source: the model online when the pass's hours arrived.

Storage (every output atomic, byte-identical on a re-run of the same pass):

* ``ranking_pass_samples/dt=D/hour=HH/``: ``train.parquet`` (the pass's impressions, non-clicks
  kept at ``ranking.negative_downsample_rate``, seeded shuffled order: the columns of the daily
  ``ranking_samples/dt=D/train.parquet``), ``impressions.parquet`` (every impression of the pass,
  not down-sampled, weights 1: the prequential rows) and ``_manifest.json``;
* ``prequential/mmoe/dt=D/hour=HH/metrics.json`` (:func:`prequential_metrics`);
* ``passes/mmoe/dt=D/hour=HH/``: ``model/model.keras``, ``saved_model/``, ``_manifest.json``
  (the layout of ``models/mmoe/dt=D``: :func:`dailyrec.ranking.artifacts.artifact_dirs` works on it).

The pass identity, the warm-source chain and the checkpoint retention are the shared
:mod:`dailyrec.passes` (re-exported here: :func:`pass_start`, :func:`pass_hours`,
:func:`warm_source_for_pass`, :class:`MissingPassError`...). pyarrow and TensorFlow are imported
inside the functions.
"""

from __future__ import annotations

import json
import zipfile
from typing import TYPE_CHECKING, Any

from dailyrec.errors import MissingPassError  # noqa: F401 - re-exported: one class for the chain (not retried)
from dailyrec.passes import (MissingHourError, is_pass_end, pass_dir, pass_hours, pass_label,  # noqa: F401
                             pass_start, previous_pass, warm_source_for_pass)

if TYPE_CHECKING:
    import pyarrow as pa

    from dailyrec.config import Config
    from dailyrec.step import StepRun
    from dailyrec.storage import Store

SAMPLES = "ranking_pass_samples"
"""The pass samples' dataset: ``ranking_pass_samples/dt=D/hour=HH/``."""
IMPRESSIONS_FILE = "impressions.parquet"


# ---- the pass's impressions ----------------------------------------------------------------------
def pass_log_files(store: Store, cfg: Config, cur_date: str, hour: int) -> list[str]:
    """The Parquet files of the pass's hourly log partitions, in hour order
    (:func:`dailyrec.passes.require_hours`), each checked against the log contract
    (:func:`dailyrec.contract.validate_partition`).

    Raises:
        MissingHourError: an hour of the pass has no ``_SUCCESS`` marker (naming the partition).
        ContractError: a partition breaks the contract.
    """
    from dailyrec.contract import validate_partition
    from dailyrec.passes import require_hours

    hours = pass_hours(cfg, hour)
    files = require_hours(store, cur_date, hours)
    for h in hours:
        validate_partition(store, "logs", cur_date, h)
    return files


def build_pass_samples(run: StepRun, hour: int) -> dict[str, Any]:
    """Write ``ranking_pass_samples/dt=D/hour=HH/`` (module doc) for the pass starting at ``hour``.

    Rows: ``sql/ranking_impressions.sql`` over the pass's hour files only (``window_days=1``,
    ``holdout_hours=0``), the users and items snapshots of ``cur_date`` (the items snapshot is the
    catalog: new items of the day have their side features). Non-clicks of ``train.parquet`` are kept
    with probability ``ranking.negative_downsample_rate`` (seed ``[ranking.seed, yyyymmdd, hour]``),
    written in a seeded shuffled order (seed ``[..., 1]``) in row groups of ``dailyrec.stream.ROW_GROUP_ROWS``.

    Returns ``{"path", "train", "impressions", "rows", "negative_downsample_rate", "labels"}``.
    Raises:
        MissingHourError: an hour of the pass is incomplete; FileNotFoundError: a snapshot is missing;
        ContractError / ValueError: bad labels or features (:func:`dailyrec.ranking.samples.query_impressions`).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dailyrec.contract import ITEM_SCHEMA
    from dailyrec.events import read_snapshot
    from dailyrec.ranking.calibration import CALIBRATION_FORMULA
    from dailyrec.ranking.samples import query_impressions, sample_tables
    from dailyrec.storage import MANIFEST
    from dailyrec.stream import ROW_GROUP_ROWS

    store, cfg, d, timer = run.store, run.cfg, run.cur_date, run.timer
    start, hours = pass_start(cfg, hour), pass_hours(cfg, hour)
    with timer.step("inputs"):
        files = pass_log_files(store, cfg, d, start)
        catalog = read_snapshot(store, "items", d).select(ITEM_SCHEMA.names)
    rows, feats = query_impressions(store, cfg, d, files, catalog, timer, window_days=1, holdout_hours=0,
                                    where=f"ranking pass samples {pass_label(d, start)}")
    rate = float(cfg.ranking.negative_downsample_rate)
    seed = [cfg.ranking.seed, int(d.replace("-", "")), start]
    with timer.step("downsample"):
        train, _, stats = sample_tables(rows, rate, seed, shuffle_seed=[*seed, 1], tasks=cfg.ranking.resolved_tasks())
        ones = pa.array(np.ones(rows.num_rows, np.float32))
        every = rows.drop_columns(["is_holdout"]).append_column("sample_weight", ones).append_column(
            "downsample_rate", ones)
    out = run.partition(SAMPLES, start)
    counts = {"train": train.num_rows, "impressions": every.num_rows}
    with timer.step("write"), store.atomic_output(out) as tmp:
        pq.write_table(train, f"{tmp}/train.parquet", filesystem=store.fs, compression="zstd",
                       row_group_size=ROW_GROUP_ROWS)
        pq.write_table(every, f"{tmp}/{IMPRESSIONS_FILE}", filesystem=store.fs, compression="zstd")
        manifest = run.manifest(
            inputs={"logs": {d: hours}, "users": run.partition("users"), "items": run.partition("items")},
            rows=counts, stats={k: stats[k] for k in ("train_before_downsampling", "train", "labels")},
            negative_downsample_rate=rate, seed=seed, features=feats, hour=start, hours=hours,
            train_order={"shuffle_seed": [*seed, 1], "row_group_rows": ROW_GROUP_ROWS},
            calibration=CALIBRATION_FORMULA)
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    run.log.info("ranking pass samples %s (hours %s): %d impressions (CTR %s) -> %d training rows at r=%g -> %s",
                 pass_label(d, start), hours, every.num_rows, stats["train_before_downsampling"]["ctr"],
                 train.num_rows, rate, out)
    return {"path": out, "train": f"{out}/train.parquet", "impressions": f"{out}/{IMPRESSIONS_FILE}",
            "rows": counts, "negative_downsample_rate": rate, "labels": stats["labels"]}


def ensure_pass_samples(run: StepRun, hour: int) -> str:
    """The pass's samples dir, built by :func:`build_pass_samples` when its manifest is missing
    (deterministic: the same files as the prequential step writes)."""
    from dailyrec.storage import MANIFEST

    out = run.partition(SAMPLES, pass_start(run.cfg, hour))
    if not run.store.exists(f"{out}/{MANIFEST}"):
        build_pass_samples(run, hour)
    return out


# ---- prequential (predict-then-train) -------------------------------------------------------------
def prequential_metrics(run: StepRun, impressions: pa.Table, where: str, source: tuple[str, str]) -> dict[str, Any]:
    """The serving model ``source`` (``(label, model dir)``, :func:`warm_source_for_pass`) scored on
    every impression of the pass BEFORE the pass trains (prequential evaluation, Dawid 1984; the
    streaming-trainer design's per-pass AUC).

    Predictions are calibrated from the model's own training down-sample rate; per task of the model
    (:func:`dailyrec.ranking.evaluation.task_metrics`): ``<task>_auc`` (``None`` without both classes)
    and ``<task>_logloss`` (binary) or ``<task>_rmse`` / ``<task>_mae`` (regression), calibration and means.

    Returns ``{"impressions", "clicks", "conversions", "model_version", "scored_by": {"from", "path"},
    **metrics, "warnings"}`` (``scored_by`` as in the two-tower prequential); metrics are absent (and a
    warning says so) for a pass without impressions.
    Raises KeyError / TypeError: the serving model cannot score the rows (another feature set).
    """
    from dailyrec.ranking.artifacts import artifact_dirs, model_rate
    from dailyrec.ranking.evaluation import holdout_labels, predict_calibrated, task_metrics, tasks_of
    from dailyrec.storage import MANIFEST
    from models.serving import load_ranking_model

    label, mdir = source
    man = run.store.read_json(f"{mdir}/{MANIFEST}")
    n = impressions.num_rows
    out: dict[str, Any] = {"impressions": n, "model_version": man.get("model_version"),
                           "scored_by": {"from": label, "path": mdir}, "warnings": []}
    for col in ("click", "conversion"):
        out[f"{col}s"] = int(sum(impressions.column(col).to_pylist())) if n else 0
    if n == 0:
        out["warnings"].append(f"{where}: the pass has no impression; nothing to score")
        return out
    tasks = tasks_of(man)
    labels, warnings = holdout_labels(impressions, tasks)
    out["warnings"] += [w.replace("the holdout", "the pass") for w in warnings]
    with run.timer.step("score"):
        ranker = load_ranking_model(artifact_dirs(mdir, "main")[1])
        raw, cal = predict_calibrated(ranker, impressions, model_rate(run.store, mdir), where=where, tasks=tasks)
    out.update(task_metrics(labels, cal, raw, tasks))
    return out


# ---- vocabularies of a pass ------------------------------------------------------------------------
def archive_vocabularies(keras_dir: str) -> dict[str, list[str]]:
    """``{feature: [id, ...]}`` stored in a saved ranking model's ``model.keras`` (its config:
    ``RankingModel.get_config()["vocabularies"]``), read from the zip without building the model.

    Raises ``FileNotFoundError`` naming the archive when it is missing."""
    path = keras_dir if keras_dir.endswith(".keras") else f"{keras_dir.rstrip('/')}/model.keras"
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: the warm-start model archive is missing") from None
    return {k: list(v) for k, v in (config.get("config", {}).get("vocabularies") or {}).items()}


def admitted_ids(store: Store, cur_date: str, hour: int) -> dict[str, list[str]]:
    """``{feature: sorted admitted ids}`` of the admission state after pass (D, HH)
    (``admission/dt=D/hour=HH/state.parquet``, columns ``feature``, ``id``, ``admitted``; the
    admission helper's ``dailyrec.admission``), ``{}`` when that state was not written."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = f"{store.partition('admission', cur_date, hour)}/state.parquet"
    if not store.exists(path):
        return {}
    with store.fs.open_input_file(path) as fh:
        state = pq.read_table(fh, columns=["feature", "id", "admitted"])
    state = state.filter(pc.equal(state["admitted"], True))
    out: dict[str, list[str]] = {}
    for f, i in zip(state["feature"].to_pylist(), state["id"].to_pylist()):
        out.setdefault(f, []).append(str(i))
    return {f: sorted(set(v)) for f, v in sorted(out.items())}


def pass_vocabularies(store: Store, keras_dir: str, cur_date: str, hour: int
                      ) -> tuple[dict[str, list[str]], dict[str, int], bool]:
    """The pass model's vocabularies: the warm-source model's (:func:`archive_vocabularies`, its row
    order kept) with the ids admitted so far appended in sorted order (:func:`admitted_ids`): the
    embedding tables grow pass by pass; known ids keep their rows through the warm start's id remap.

    Returns ``(vocabularies, {feature: ids added (features with none left out)}, admission state found)``."""
    vocab = archive_vocabularies(keras_dir)
    admitted = admitted_ids(store, cur_date, hour)
    added: dict[str, int] = {}
    for feature, ids in admitted.items():
        if feature not in vocab:
            continue
        known = set(vocab[feature])
        new = [i for i in ids if i not in known]
        if new:
            vocab[feature] = vocab[feature] + new
            added[feature] = len(new)
    return vocab, added, store.exists(f"{store.partition('admission', cur_date, hour)}/state.parquet")
