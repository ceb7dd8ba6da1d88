"""Ranking benchmark of the daily ranking pipeline: MMoE, shared bottom, MMoE + ESMM and
task-specific experts (click, conversion) on generated logs and on MovieLens-100K, the default
chosen on a validation split, training throughput and peak memory at 10M impressions, and the MMoE
paper's synthetic table (copied from ``bench/results/mmoe_synthetic.json``).

Everything runs through the pipeline's own steps, in temporary data roots (removed at the end):
``tasks.retrieval.features`` -> ``tasks.ranking.ranking_samples`` ->
``tasks.ranking.train_mmoe`` (MMoE + its shared-bottom baseline, the same rows, epochs, batch
size, schedule and seed; ``matched_shared_bottom_units``: the same parameter budget) ->
``tasks.ranking.evaluate_mmoe`` (AUC and log loss per task, on calibrated predictions). The
config is the pipeline default (``ranking.*``: 4 experts of [64], towers [32], 2 epochs, batch
2048, Adam 0.005 with ``DecayWithFloor``, non-clicks kept at 0.5) with warm start off; every run
is repeated for ``--seeds`` values of ``ranking.seed`` (13, 14, 15: initialisation and shuffling;
the samples are built once, so the seeds see the same rows). Reported per model and task: mean,
standard deviation (n-1) and the per-seed values, plus the paired difference MMoE - shared bottom.

**Generated logs** (``dailyrec.demo.generator.generate``, the demo defaults: 3 days of 200,000
impressions, 5,000 users, 2,000 items): features of every day, ranking samples of the last day
(``sampling.window_days`` = 2 days, non-clicks down-sampled), the pipeline's holdout scheme:
every impression of the last ``training.holdout_hours`` = 3 hours of the last day.

**MovieLens-100K** (``/work/shared/data/movielens-100k``): ``dailyrec.ingest.movielens`` into the
contract (``click`` = 1 for every rating, ``conversion`` = rating >= 4). Time split at
``T = 1998-04-01 00:00 UTC``: the training rows are the ranking samples of ``cur_date =
1998-03-31`` with ``sampling.window_days = 200`` (every rating before T) and ``holdout_hours =
0``; the test rows are the ranking samples of ``cur_date = 1998-04-22`` (the last day of the
data) with ``window_days = 22`` (every rating from T on). Both are built with
``ranking.negative_downsample_rate = 1`` (nothing to down-sample: every row is a click), so the
calibration in the evaluation is the identity. MovieLens has no impressions, so the benchmark
**constructs** them: every rating row is one shown item that was clicked, and ``--ml-negatives``
(4) rows with ``click = conversion = 0`` are added per rating, each the same request (user, user
features, time, context) with another item drawn uniformly from the items already in the
catalogue that day (``item_created_dt`` <= the rating's date: the importer's "first rating" date)
that the user never rated anywhere in the file (no duplicate within a request), with that item's
catalogue features; the rows are then sorted like the SQL's output (time, request, item). The draw is seeded (``--data-seed``) and the same for every model and seed.
The augmented rows replace ``ranking_samples/dt=1998-03-31/train.parquet`` (training) and
``holdout.parquet`` (test, from the ratings of the test period) in the bench's temporary data
root, then ``train_mmoe`` / ``evaluate_mmoe`` run unchanged. Vocabularies are those of the
features step of 1998-03-31 (ids seen before T): 74 of the 162 test users and 43 test items
never appear in training and fall in the OOV bucket. With uniform negatives the click task is
mostly "popular/known item vs random item", so click AUCs are high; ``conversion`` is scored per
impression (as the pipeline does: P(click and rating >= 4 | shown)). The pipeline's default budget
(``ranking.epochs`` = 2) is the main result; ``movielens.epochs_8`` repeats the training with 8
epochs on the same rows and seeds (``--ml-more-epochs``), to show whether the comparison depends on
the budget. Also reported:
``auc_conversion_given_click``, the conversion AUC among the clicked (rated) test rows with the
implied CVR ``p_conversion / p_click`` (calibrated) as score: does the model separate ratings >= 4
from lower ratings. A model-free reference, ``popularity_baseline``, scores the same rows with the
item's click (conversion) count in the training rows, and the clicked rows with the item's smoothed
training CVR.

**The model table** (:func:`variants_table`, ``<data>.variants``; ``--no-variants`` skips it):
``mmoe_esmm`` (``ranking.esmm``) and ``task_specific`` (2 shared experts + 1 per task) trained
alone with the same rows and seeds as the MMoE and its shared bottom, and the same four models
trained and evaluated on a validation split of the day's training rows (the last 20 % by
``event_time``, :func:`validation_root`); the best mean AUC on validation is
``default_on_validation``, its test figures are reported unchanged. ``auc_conversion_esmm`` is
MovieLens' MMoE + ESMM conversion AUC (mean of seeds).

**Throughput and memory at 10M impressions** (``--throughput-events``): one generated day of 10M
impressions (100,000 users, 20,000 items: the generator benchmark's universe), features and
ranking samples of that day with ``training.holdout_hours = 0`` (all 10M impressions are in the
training window; non-clicks kept at ``ranking.negative_downsample_rate``), then ``train_mmoe``
with ``ranking.epochs = 1``, batch 2048, on its streaming input. Each phase runs in a fresh
subprocess, so its peak RSS (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` would inherit the
parent's) is its own; ``mmoe_peak_rss_mb`` is the training step's (both fits, save/export).
``mmoe_examples_per_s`` = rows / wall seconds of the MMoE ``fit`` (the figure ``train_mmoe`` writes
in its manifest: the streaming input, the model, checkpoints and TensorBoard callbacks included);
``_cpu`` variants divide by the process CPU seconds of the fit instead (less sensitive to other load
on the shared machine), with the 1-minute load average at the start and end of each fit. The
``in_memory`` phase fits the same MMoE on the same rows fed from in-memory int32 id arrays
(:func:`in_memory_fit`): ``mmoe_vs_in_memory`` = streaming / in-memory examples per CPU-second
(``_wall``: per wall second), both measured in the same run. If a phase dies (out of memory), the
day is halved and the measurement repeated; the JSON says which size fitted.

**Quality before vs after the streaming input**: :func:`quality_check`.

**Synthetic** (Ma et al. 2018, section 3.2): the table of ``bench/results/mmoe_synthetic.json``
is copied with the command that produced it (``./dev bench mmoe_synthetic``); if that file is
absent it is re-run here with ``--quick``.

    ./dev bench mmoe            # full run (~30-50 min on the shared 2-core machine)
    ./dev bench mmoe --quick    # smoke run (small data, 1 seed, 200k-impression throughput)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, load_avg, peak_rss_mb, save_result  # noqa: E402

NAME = "mmoe"
TASKS = ("click", "conversion")
KINDS = {"new": "mmoe", "shared_bottom": "shared_bottom"}  # evaluate_mmoe's table names -> ours
ML_DIR = "/work/shared/data/movielens-100k"
ML_CUT = "1998-04-01"          # T: training before, test from it on (UTC)
ML_TRAIN_DATE = "1998-03-31"   # cur_date of the training samples (the day before T)
ML_TEST_DATE = "1998-04-22"    # last day of ML-100K
ML_TRAIN_WINDOW = 200          # days: every rating before T (the data start 1997-09-20)
ML_TEST_WINDOW = 22            # 1998-04-01 .. 1998-04-22
SYNTHETIC_JSON = RESULTS_DIR / "mmoe_synthetic.json"

log = logging.getLogger("bench.mmoe")


def _stats(values: list[float]) -> dict[str, Any]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "per_seed": []}
    return {"mean": round(statistics.fmean(v), 5),
            "std": round(statistics.stdev(v), 5) if len(v) > 1 else 0.0,
            "per_seed": [round(x, 5) for x in v]}


SET: dict[str, Any] = {}
"""``--set section.key=value`` overrides, applied on top of every config of the run (e.g.
``ranking.optimizer.name=adam`` to measure the previous default)."""


def _config(root: str | Path, overrides: dict[str, Any] | None = None, files: list[str] | None = None):
    from dailyrec.config import load_config

    base = {"storage.data_root": str(root), "training.warm_start": False}
    return load_config(overrides={**base, **(overrides or {}), **SET}, files=files, environ={})


# ---- the pipeline's train + evaluate, per seed -------------------------------------------------------
def _auc_given_click(cfg, cur_date: str) -> dict[str, float | None]:
    """Conversion AUC among the clicked holdout rows, score = calibrated p_conversion / p_click."""
    import numpy as np
    import pyarrow.parquet as pq

    from dailyrec.registry import model_dir
    from dailyrec.storage import open_store
    from models.serving import load_ranking_model
    from dailyrec.ranking.artifacts import artifact_dirs, model_rate
    from dailyrec.ranking.evaluation import auc, predict_calibrated

    store = open_store(cfg)
    hold_path = f"{store.partition('ranking_samples', cur_date)}/holdout.parquet"
    hold = pq.read_table(hold_path, filesystem=store.fs)
    click = hold.column("click").to_numpy().astype(bool)
    conv = hold.column("conversion").to_numpy()[click]
    mdir = model_dir(store, "mmoe", cur_date)
    rate = model_rate(store, mdir)
    out = {}
    for name, role in (("mmoe", "main"), ("shared_bottom", "baseline")):
        ranker = load_ranking_model(artifact_dirs(mdir, role)[1])
        _, cal = predict_calibrated(ranker, hold.filter(click), rate, where=hold_path)
        out[name] = auc(conv, cal["conversion"] / np.clip(cal["click"], 1e-12, None))
        del ranker
    return out


def popularity_baseline(cfg, cur_date: str) -> dict[str, float | None]:
    """AUC of a model-free score on the holdout: the item's click (conversion) count in the
    training rows (the down-sampling keeps every click, hence every conversion)."""
    import numpy as np
    import pyarrow.parquet as pq

    from dailyrec.storage import open_store
    from dailyrec.ranking.evaluation import auc

    store = open_store(cfg)
    sdir = store.partition("ranking_samples", cur_date)
    train = pq.read_table(f"{sdir}/train.parquet", columns=["item_id", *TASKS], filesystem=store.fs).to_pandas()
    hold = pq.read_table(f"{sdir}/holdout.parquet", columns=["item_id", *TASKS], filesystem=store.fs).to_pandas()
    out: dict[str, float | None] = {}
    for t in TASKS:
        counts = train.groupby("item_id")[t].sum()
        score = hold["item_id"].map(counts).fillna(0).to_numpy(dtype=np.float64)
        out[f"auc_{t}"] = round(auc(hold[t].to_numpy(), score), 5)
    clicked = hold["click"].to_numpy() == 1
    conv_rate = train[train["click"] == 1].groupby("item_id")["conversion"].agg(["sum", "count"])
    prior = float(train.loc[train["click"] == 1, "conversion"].mean())
    cvr = (conv_rate["sum"] + 10 * prior) / (conv_rate["count"] + 10)  # smoothed item CVR
    score = hold.loc[clicked, "item_id"].map(cvr).fillna(prior).to_numpy(dtype=np.float64)
    a = auc(hold.loc[clicked, "conversion"].to_numpy(), score)
    out["auc_conversion_given_click"] = round(a, 5) if a is not None else None
    return out


def train_and_evaluate(cfg, cur_date: str, seeds: list[int], baseline_only: bool = False) -> dict[str, Any]:
    """train_mmoe + evaluate_mmoe for each ``ranking.seed``; per model and task AUC/log loss stats
    (``baseline_only``: without the given-click AUC and the popularity baseline)."""
    from dailyrec.registry import eval_report_path, model_dir
    from dailyrec.storage import MANIFEST, open_store
    from tasks.ranking.evaluate_mmoe import step as evaluate_mmoe
    from tasks.ranking.train_mmoe import step as train_mmoe

    per: dict[str, dict[str, list]] = {k: {} for k in KINDS.values()}
    runs = []
    for seed in seeds:
        scfg = cfg.with_overrides({"ranking.seed": seed})
        store = open_store(scfg)
        t0 = time.perf_counter()
        load0 = load_avg()
        train_mmoe(cur_date, scfg.with_overrides({"ranking.kind": "mmoe", "ranking.train_baseline": True}))
        train_s = time.perf_counter() - t0
        man = store.read_json(f"{model_dir(store, 'mmoe', cur_date)}/{MANIFEST}")
        evaluate_mmoe(cur_date, scfg)
        rep = store.read_json(eval_report_path(store, "mmoe", cur_date))
        given = _auc_given_click(scfg, cur_date) if not baseline_only else {}
        for tname, kind in KINDS.items():
            m = rep["table"][tname]
            for t in TASKS:
                per[kind].setdefault(f"auc_{t}", []).append(m[f"{t}_auc"])
                per[kind].setdefault(f"logloss_{t}", []).append(m[f"{t}_logloss"])
                per[kind].setdefault(f"calibration_{t}", []).append(m[f"{t}_calibration"])
            if given:
                per[kind].setdefault("auc_conversion_given_click", []).append(given[kind])
        run = {"seed": seed, "train_mmoe_seconds": round(train_s, 1), "load_avg_1m_start": load0,
               "examples_per_s": {"mmoe": man["examples_per_s"], "shared_bottom": man["baseline"]["examples_per_s"]},
               "params": {"mmoe": man["params"], "shared_bottom": man["baseline"]["params"]},
               "shared_bottom_units": man["baseline"].get("bottom_units"),
               "gate_entropy": {t: round(g["entropy"], 4) for t, g in (rep.get("gates") or {}).items()},
               "gate_collapsed": {t: g["collapsed"] for t, g in (rep.get("gates") or {}).items()}}
        runs.append(run)
        print(f"  seed {seed}: " + ", ".join(
            f"{kind} " + " ".join(f"{k}={v[-1]:.4f}" for k, v in per[kind].items()
                                  if k.startswith("auc") and v[-1] is not None)
            for kind in per) + f" ({train_s:.0f}s train, load {load0})", flush=True)
    rows = rep["rows"]
    out: dict[str, Any] = {kind: {k: _stats(v) for k, v in d.items()} for kind, d in per.items()}
    out["mmoe_minus_shared_bottom"] = {}
    for k in per["mmoe"]:
        if not k.startswith("auc"):
            continue
        pairs = [(a, b) for a, b in zip(per["mmoe"][k], per["shared_bottom"][k]) if a is not None and b is not None]
        out["mmoe_minus_shared_bottom"][k] = {
            **{x: y for x, y in _stats([a - b for a, b in pairs]).items() if x != "per_seed"},
            "mmoe_better": f"{sum(a > b for a, b in pairs)}/{len(pairs)}"}
    if baseline_only:
        return out
    out["popularity_baseline"] = popularity_baseline(cfg, cur_date)
    print(f"  popularity baseline: {out['popularity_baseline']}", flush=True)
    out["holdout_rows"] = rows
    out["train_rows"] = man["rows"]
    out["runs"] = runs
    return out


# ---- variants (ESMM, task-specific experts) and the choice on a validation split --------------------
VARIANTS: dict[str, dict[str, Any]] = {
    "mmoe_esmm": {"ranking.esmm": True},
    "task_specific": {"ranking.num_experts": 2, "ranking.task_specific_experts": 1},
}
"""The further models of the table, as config overrides of the default MMoE (each trained alone,
``ranking.train_baseline=false``): MMoE + ESMM (``conversion`` = pCTR x pCVR, Ma et al. 2018) and
task-specific experts (2 shared + 1 per task: the same 4 experts of the default, Tang et al. 2020's
CGC layout without the progressive layers)."""
VALIDATION_FRACTION = 0.2


def variant_aucs(cfg, cur_date: str, seeds: list[int], overrides: dict[str, Any]) -> dict[str, Any]:
    """train_mmoe (``overrides``, no baseline) + evaluate_mmoe per seed: ``{auc_<task>: stats}`` of
    the ``new`` model on the day's holdout, plus per-seed training seconds."""
    from dailyrec.registry import eval_report_path
    from dailyrec.storage import open_store
    from tasks.ranking.evaluate_mmoe import step as evaluate_mmoe
    from tasks.ranking.train_mmoe import step as train_mmoe

    per: dict[str, list] = {}
    secs = []
    for seed in seeds:
        scfg = cfg.with_overrides({**overrides, "ranking.seed": seed, "ranking.train_baseline": False})
        t0 = time.perf_counter()
        train_mmoe(cur_date, scfg)
        secs.append(round(time.perf_counter() - t0, 1))
        evaluate_mmoe(cur_date, scfg)
        rep = open_store(scfg).read_json(eval_report_path(open_store(scfg), "mmoe", cur_date))
        for t in TASKS:
            per.setdefault(f"auc_{t}", []).append(rep["table"]["new"][f"{t}_auc"])
    return {**{k: _stats(v) for k, v in per.items()}, "train_seconds": secs, "overrides": overrides}


def validation_root(cfg, cur_date: str, work: Path, name: str) -> Any:
    """A data root whose ``ranking_samples/dt=cur_date`` splits the day's TRAINING rows by time: the
    first ``1 - VALIDATION_FRACTION`` train, the last ``VALIDATION_FRACTION`` (by event_time) are the
    holdout the variants are compared on. The test rows (the day's holdout) are not in it. The
    features of the day (vocabularies, numeric statistics) are copied as they are. Returns its config."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dailyrec.storage import MANIFEST, open_store

    store = open_store(cfg)
    root = work / f"validation-{name}"
    vcfg = cfg.with_overrides({"storage.data_root": str(root)})
    vstore = open_store(vcfg)
    src, dst = Path(store.local_path(store.partition("features", cur_date))), \
        Path(vstore.local_path(vstore.partition("features", cur_date)))
    shutil.copytree(src, dst)
    sdir = store.partition("ranking_samples", cur_date)
    train = pq.read_table(f"{sdir}/train.parquet", filesystem=store.fs)
    t = train.column("event_time").cast(pa.int64())
    cut = pc.quantile(t, q=1 - VALIDATION_FRACTION, interpolation="lower")[0].as_py()
    early = train.filter(pc.less_equal(t, cut))
    late = train.filter(pc.greater(t, cut))
    vdir = vstore.partition("ranking_samples", cur_date)
    Path(vstore.local_path(vdir)).mkdir(parents=True, exist_ok=True)
    pq.write_table(early, f"{vdir}/train.parquet", filesystem=vstore.fs, compression="zstd")
    pq.write_table(late, f"{vdir}/holdout.parquet", filesystem=vstore.fs, compression="zstd")
    man = store.read_json(f"{sdir}/{MANIFEST}")
    man["rows"] = {"train": early.num_rows, "holdout": late.num_rows}
    man["bench_note"] = (f"bench/mmoe.py validation split: the last {VALIDATION_FRACTION:.0%} of the training rows "
                         "by event_time are the holdout; the test rows are not here")
    vstore.write_json(f"{vdir}/{MANIFEST}", man)
    return vcfg, {"train_rows": early.num_rows, "validation_rows": late.num_rows,
                  "validation_clicks": int(pc.sum(late.column("click")).as_py() or 0),
                  "validation_conversions": int(pc.sum(late.column("conversion")).as_py() or 0)}


def _mean_auc(m: dict[str, Any]) -> float | None:
    vals = [m[f"auc_{t}"]["mean"] for t in TASKS if m.get(f"auc_{t}", {}).get("mean") is not None]
    return round(statistics.fmean(vals), 5) if vals else None


def variants_table(cfg, cur_date: str, seeds: list[int], work: Path, name: str,
                   base: dict[str, Any]) -> dict[str, Any]:
    """The table's four models on the test rows and on a validation split of the training rows;
    the default is the model with the best mean AUC (click, conversion) on VALIDATION, and its test
    figures are reported as they are (the test rows never choose anything). ``base``: the
    ``train_and_evaluate`` result of the same day (MMoE and shared bottom on the test rows)."""
    test = {"mmoe": {f"auc_{t}": base["mmoe"][f"auc_{t}"] for t in TASKS},
            "shared_bottom": {f"auc_{t}": base["shared_bottom"][f"auc_{t}"] for t in TASKS}}
    for v, ov in VARIANTS.items():
        print(f"  test rows, {v}", flush=True)
        test[v] = variant_aucs(cfg, cur_date, seeds, ov)
    vcfg, vinfo = validation_root(cfg, cur_date, work, name)
    print(f"  validation split: {vinfo}", flush=True)
    val: dict[str, Any] = {}
    both = train_and_evaluate(vcfg, cur_date, seeds, baseline_only=True)
    val["mmoe"] = {f"auc_{t}": both["mmoe"][f"auc_{t}"] for t in TASKS}
    val["shared_bottom"] = {f"auc_{t}": both["shared_bottom"][f"auc_{t}"] for t in TASKS}
    for v, ov in VARIANTS.items():
        print(f"  validation rows, {v}", flush=True)
        val[v] = variant_aucs(vcfg, cur_date, seeds, ov)
    shutil.rmtree(work / f"validation-{name}", ignore_errors=True)
    scores = {k: _mean_auc(m) for k, m in val.items()}
    chosen = max((k for k in scores if scores[k] is not None), key=lambda k: scores[k])
    out = {"test": test, "validation": val, "validation_mean_auc": scores,
           "test_mean_auc": {k: _mean_auc(m) for k, m in test.items()},
           "default_on_validation": chosen, "validation_split": vinfo,
           "default_test": {f"auc_{t}": test[chosen][f"auc_{t}"]["mean"] for t in TASKS},
           "default_test_mean_auc": _mean_auc(test[chosen]),
           "esmm_minus_mmoe_conversion": round(test["mmoe_esmm"]["auc_conversion"]["mean"]
                                               - test["mmoe"]["auc_conversion"]["mean"], 5),
           "task_specific_minus_mmoe_click": round(test["task_specific"]["auc_click"]["mean"]
                                                   - test["mmoe"]["auc_click"]["mean"], 5)}
    print(f"  validation mean AUC {scores} -> default {chosen}; test mean AUC {out['test_mean_auc']}", flush=True)
    return out


# ---- generated logs ------------------------------------------------------------------------------------
def run_generated(work: Path, args: argparse.Namespace, seeds: list[int]) -> dict[str, Any]:
    from dailyrec.dates import date_range
    from tasks.retrieval.features import step as build_features
    from dailyrec.demo.generator import generate
    from dailyrec.validation import validate_days
    from tasks.ranking.ranking_samples import step as build_ranking_samples

    root = work / "generated"
    cfg = _config(root, {"demo.events_per_day": args.gen_events, "demo.n_users": args.gen_users,
                         "demo.n_items": args.gen_items, "demo.days": args.gen_days})
    dates = date_range(cfg.demo.start_date, args.gen_days)
    t0 = time.perf_counter()
    summary = generate(cfg, dates[0], len(dates))
    validate_days(cfg, dates)
    for d in dates:
        build_features(d, cfg)
    samples = build_ranking_samples(dates[-1], cfg)
    prep_s = time.perf_counter() - t0
    print(f"generated: {summary['events']:,} impressions over {len(dates)} days, samples of {dates[-1]}: "
          f"{samples['rows']} ({prep_s:.0f}s)", flush=True)
    res = train_and_evaluate(cfg, dates[-1], seeds)
    if not args.no_variants:
        res["variants"] = variants_table(cfg, dates[-1], seeds, work, "generated", res)
    res["setup"] = {
        "days": dates, "cur_date": dates[-1], "events_per_day": args.gen_events, "users": args.gen_users,
        "items": args.gen_items, "ctr": summary["ctr"], "cvr_after_click": summary["cvr"],
        "window_days": cfg.sampling.window_days, "holdout": f"last {cfg.training.holdout_hours} hours of {dates[-1]}",
        "negative_downsample_rate": cfg.ranking.negative_downsample_rate,
        "train_rows_before_downsampling": samples["rows"]["train_before_downsampling"],
        "prepare_seconds": round(prep_s, 1)}
    shutil.rmtree(root, ignore_errors=True)
    return res


# ---- MovieLens-100K ------------------------------------------------------------------------------------
def _with_negatives(rows, catalog, rated: set[tuple[str, str]] | Any, k: int, rng) -> Any:
    """Rating rows (all clicks) + ``k`` constructed non-click rows per rating (see the module doc)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = rows.num_rows
    if k <= 0 or n == 0:
        return rows
    cat_ids = np.asarray(catalog.column("item_id").to_pylist(), dtype=object)
    created = catalog.column("item_created_dt").cast(pa.int32()).to_numpy()
    order = np.argsort(created, kind="stable")
    cat_ids, created = cat_ids[order], created[order]
    item_cols = [c for c in ("item_category", "item_domain", "item_publisher") if c in rows.column_names]
    # rows' date (UTC day number) -> how many catalogue items exist by then (a sorted prefix)
    day = rows.column("event_time").cast(pa.int64()).to_numpy() // 86_400_000_000
    n_known = np.searchsorted(created, day, side="right")
    if (n_known <= k).any():
        raise ValueError("a rating's day has too few catalogue items to draw negatives from")
    pos = {s: i for i, s in enumerate(cat_ids)}
    users = np.asarray(rows.column("user_id").to_pylist(), dtype=object)
    uidx = {u: i for i, u in enumerate(np.unique(users))}
    u_code = np.array([uidx[u] for u in users], dtype=np.int64)
    rated_codes = np.array(sorted(uidx[u] * len(cat_ids) + pos[i] for u, i in rated if u in uidx and i in pos),
                           dtype=np.int64)
    draws = np.full((n, k), -1, dtype=np.int64)
    todo = np.ones((n, k), dtype=bool)
    while todo.any():
        r, c = np.nonzero(todo)
        draws[r, c] = np.floor(rng.random(len(r)) * n_known[r]).astype(np.int64)
        bad = np.isin(u_code[:, None] * len(cat_ids) + draws, rated_codes)
        srt = np.sort(draws, axis=1)
        dup_rows = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        todo = bad.copy()
        todo[dup_rows, 1:] = True  # redraw all but the first of a request with a duplicate
    rep = np.repeat(np.arange(n), k)
    neg = rows.take(pa.array(rep))
    chosen = draws.reshape(-1)
    cat_pos = catalog.take(pa.array(order[chosen]))
    cols = {}
    for name in neg.column_names:
        if name == "item_id":
            cols[name] = cat_pos.column("item_id")
        elif name in item_cols:
            cols[name] = cat_pos.column(name).cast(neg.schema.field(name).type)
        elif name == "request_id":
            cols[name] = pc.binary_join_element_wise(
                neg.column(name).combine_chunks(), pa.array(np.tile([f"neg{j}" for j in range(k)], n)), ":")
        elif name in ("click", "conversion"):
            cols[name] = pa.array(np.zeros(len(rep), np.int8)).cast(neg.schema.field(name).type)
        elif name == "in_catalog":
            cols[name] = pa.array(np.ones(len(rep), bool))
        else:
            cols[name] = neg.column(name)
    neg = pa.table(cols, schema=neg.schema)
    # the order of sql/ranking_impressions.sql (a request's rows together, in time order), written
    # in one Parquet row group (< 1M rows): the training stream's buffer then holds the whole file
    # and permutes it every epoch
    return pa.concat_tables([rows, neg]).sort_by(
        [("event_time", "ascending"), ("request_id", "ascending"), ("item_id", "ascending")])


def run_movielens(work: Path, args: argparse.Namespace, seeds: list[int]) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    from dailyrec.storage import MANIFEST, open_store
    from tasks.retrieval.features import step as build_features
    from dailyrec.ingest.movielens import import_movielens
    from dailyrec.validation import validate_days
    from tasks.ranking.ranking_samples import step as build_ranking_samples

    root = work / "movielens"
    files = [str(ROOT / "config" / "imported-logs.yaml")]
    base = {"ranking.negative_downsample_rate": 1.0, "training.holdout_hours": 0}
    t0 = time.perf_counter()
    summary = import_movielens(_config(root, base, files), args.ml_dir, validate=False)
    validate_days(_config(root, base, files), open_store(_config(root, base, files)).list_partitions("logs"))
    import_s = time.perf_counter() - t0
    tables = {}
    for role, cur, days in (("train", ML_TRAIN_DATE, ML_TRAIN_WINDOW), ("test", ML_TEST_DATE, ML_TEST_WINDOW)):
        cfg = _config(root, {**base, "sampling.window_days": days}, files)
        build_features(cur, cfg)
        s = build_ranking_samples(cur, cfg)
        store = open_store(cfg)
        tables[role] = pq.read_table(s["train"], filesystem=store.fs)
        tables[f"{role}_catalog"] = pq.read_table(f"{store.partition('features', cur)}/catalog.parquet",
                                                  filesystem=store.fs)
    cut_us = int(dt.datetime.fromisoformat(ML_CUT).replace(tzinfo=dt.timezone.utc).timestamp() * 1e6)
    t_train = tables["train"].column("event_time").cast("int64").to_numpy()
    t_test = tables["test"].column("event_time").cast("int64").to_numpy()
    assert (t_train < cut_us).all() and (t_test >= cut_us).all(), "time split violated"
    assert tables["train"].num_rows + tables["test"].num_rows == summary["rows"], "ratings lost"
    rated = set()
    for role in ("train", "test"):
        rated |= set(zip(tables[role].column("user_id").to_pylist(), tables[role].column("item_id").to_pylist()))
    rng = np.random.default_rng(args.data_seed)
    train = _with_negatives(tables["train"], tables["train_catalog"], rated, args.ml_negatives, rng)
    test = _with_negatives(tables["test"], tables["test_catalog"], rated, args.ml_negatives, rng)
    # the constructed impressions become the day's ranking samples (training rows and holdout)
    cfg = _config(root, {**base, "sampling.window_days": ML_TRAIN_WINDOW}, files)
    store = open_store(cfg)
    sdir = store.partition("ranking_samples", ML_TRAIN_DATE)
    pq.write_table(train, f"{sdir}/train.parquet", filesystem=store.fs, compression="zstd")
    pq.write_table(test, f"{sdir}/holdout.parquet", filesystem=store.fs, compression="zstd")
    man = store.read_json(f"{sdir}/{MANIFEST}")
    man["rows"] = {"train": train.num_rows, "holdout": test.num_rows}
    man["bench_note"] = (f"bench/mmoe.py: {args.ml_negatives} constructed non-click rows per rating; holdout = "
                         f"the ratings from {ML_CUT} on (+ their constructed non-clicks)")
    store.write_json(f"{sdir}/{MANIFEST}", man)
    prep_s = time.perf_counter() - t0
    print(f"movielens: {summary['rows']:,} ratings imported in {import_s:.0f}s; train {train.num_rows:,} rows "
          f"({tables['train'].num_rows:,} ratings), test {test.num_rows:,} rows ({tables['test'].num_rows:,} "
          f"ratings) ({prep_s:.0f}s)", flush=True)
    res = train_and_evaluate(cfg, ML_TRAIN_DATE, seeds)
    if not args.no_variants:
        res["variants"] = variants_table(cfg, ML_TRAIN_DATE, seeds, work, "movielens", res)
    for epochs in args.ml_more_epochs:  # sensitivity to the training budget, same rows and seeds
        print(f"== MovieLens-100K with ranking.epochs={epochs}", flush=True)
        t1 = time.perf_counter()
        more = train_and_evaluate(cfg.with_overrides({"ranking.epochs": epochs}), ML_TRAIN_DATE, seeds)
        more.pop("popularity_baseline", None)
        res[f"epochs_{epochs}"] = {"epochs": epochs, **more, "seconds": round(time.perf_counter() - t1, 1)}
    vocab = store.read_json(f"{store.partition('features', ML_TRAIN_DATE)}/vocabularies.json")
    test_users = set(tables["test"].column("user_id").to_pylist())
    test_items = set(tables["test"].column("item_id").to_pylist())
    res["setup"] = {
        "data": args.ml_dir, "split": f"train: ratings before {ML_CUT} 00:00 UTC; test: ratings from then on "
                                      f"(to {ML_TEST_DATE})",
        "train_ratings": tables["train"].num_rows, "test_ratings": tables["test"].num_rows,
        "negatives_per_rating": args.ml_negatives, "negatives": "uniform over the items in the catalogue that "
        "day, never rated by the user, no duplicate within a request", "data_seed": args.data_seed,
        "conversion_rate_of_ratings": {r: round(float(np.mean(tables[r].column("conversion").to_numpy())), 4)
                                       for r in ("train", "test")},
        "test_users": len(test_users), "test_users_not_in_vocab": len(test_users - set(vocab["user_id"])),
        "test_items": len(test_items), "test_items_not_in_vocab": len(test_items - set(vocab["item_id"])),
        "import_seconds": round(import_s, 1), "prepare_seconds": round(prep_s, 1)}
    shutil.rmtree(root, ignore_errors=True)
    return res


# ---- throughput / memory at 10M impressions: phases in subprocesses ----------------------------------
def _phase(args: argparse.Namespace) -> dict[str, Any]:
    """One phase of the throughput measurement, in this (fresh) process; returns its figures."""
    cfg = _config(args.root, {"demo.events_per_day": args.throughput_events, "demo.n_users": args.throughput_users,
                              "demo.n_items": args.throughput_items, "demo.days": 1,
                              "training.holdout_hours": 0, "ranking.epochs": 1,
                              "ranking.batch_size": args.batch_size})
    day = cfg.demo.start_date
    w0, c0, l0 = time.perf_counter(), time.process_time(), load_avg()
    out: dict[str, Any] = {"phase": args.phase}
    if args.phase == "generate":
        from dailyrec.demo.generator import generate

        s = generate(cfg, day, 1)
        out.update(events=s["events"], clicks=s["clicks"], conversions=s["conversions"])
    elif args.phase == "samples":
        from tasks.retrieval.features import step as build_features
        from tasks.ranking.ranking_samples import step as build_ranking_samples

        from tasks.ingest.validate_day import step as validate_day

        validate_day(day, cfg)
        f0 = time.perf_counter()
        build_features(day, cfg)
        out["features_seconds"] = round(time.perf_counter() - f0, 1)
        s0 = time.perf_counter()
        s = build_ranking_samples(day, cfg)
        out["ranking_samples_seconds"] = round(time.perf_counter() - s0, 1)
        out["rows"] = s["rows"]
        out["negative_downsample_rate"] = s["negative_downsample_rate"]
    elif args.phase == "train":
        import keras

        from dailyrec.registry import model_dir
        from dailyrec.storage import MANIFEST, open_store
        from models import ranking
        from tasks.ranking.train_mmoe import step as train_mmoe

        fits: list[dict[str, Any]] = []

        def timed_fit(self, *a, **kw):  # wraps the pipeline's fit call to time it in CPU seconds too
            fw, fc, fl = time.perf_counter(), time.process_time(), load_avg()
            hist = keras.Model.fit(self, *a, **kw)
            fits.append({"kind": self.kind, "wall_s": time.perf_counter() - fw,
                         "cpu_s": time.process_time() - fc, "load_avg_1m_start": fl, "load_avg_1m_end": load_avg()})
            return hist

        ranking.RankingModel.fit = timed_fit
        train_mmoe(day, cfg.with_overrides({"ranking.kind": "mmoe", "ranking.train_baseline": not args.no_baseline}))
        store = open_store(cfg)
        man = store.read_json(f"{model_dir(store, 'mmoe', day)}/{MANIFEST}")
        n = man["rows"]["train"]
        out["rows"] = n
        out["timings_s"] = man["timings_s"]
        for f in fits:
            out[f["kind"]] = {
                "examples_per_s": round(n / f["wall_s"]), "examples_per_cpu_s": round(n / f["cpu_s"]),
                "fit_seconds": round(f["wall_s"], 1), "fit_cpu_seconds": round(f["cpu_s"], 1),
                "cpu_utilisation": round(f["cpu_s"] / f["wall_s"], 2),
                "load_avg_1m_start": f["load_avg_1m_start"], "load_avg_1m_end": f["load_avg_1m_end"]}
        out["mmoe"]["manifest_examples_per_s"] = man["examples_per_s"]
        out["params"] = man["params"]
    elif args.phase == "in_memory":
        out.update(in_memory_fit(cfg, day))
    out.update(wall_seconds=round(time.perf_counter() - w0, 1), cpu_seconds=round(time.process_time() - c0, 1),
               load_avg_1m_start=l0, load_avg_1m_end=load_avg(), peak_rss_mb=peak_rss_mb())
    return out


def _pre_batched(feats: dict[str, Any], labels: dict[str, Any], batch_size: int) -> Any:
    """``(features, labels)`` batches of ``batch_size`` rows in row order, from in-memory arrays:
    ``from_tensor_slices`` over ``[steps, B]`` reshapes of them (one slice per batch), then the
    last, smaller batch."""
    import tensorflow as tf

    n = len(next(iter(labels.values())))
    full = (n // batch_size) * batch_size

    def part(lo: int, hi: int, rows: int) -> Any:
        f = {k: v[lo:hi].reshape(-1, rows) for k, v in feats.items()}
        y = {k: v[lo:hi].reshape(-1, rows) for k, v in labels.items()}
        return tf.data.Dataset.from_tensor_slices((f, y))

    ds = part(0, full, batch_size)
    if full < n:
        ds = ds.concatenate(part(full, n, n - full))
    return ds.prefetch(tf.data.AUTOTUNE)


def in_memory_fit(cfg, day: str, same_process_stream: bool = True) -> dict[str, Any]:
    """The input-pipeline-free limit of ``train_mmoe``'s MMoE fit: the same model (config, seed,
    vocabularies, callbacks), the same rows (the day's ``train.parquet``, in file order), encoded to
    int32 ids up front (``dailyrec.stream.id_encoders``, what the stream does per row group) and fed
    by ``tf.data.Dataset.from_tensor_slices`` of those int arrays without shuffle, sliced batch by
    batch (:func:`_pre_batched`: the cheapest feed there is; ``from_tensor_slices(...).batch(B)``
    slices row by row and costs more CPU than the stream). Times ``model.fit`` in wall and process
    CPU seconds (encoding excluded). With ``same_process_stream``, then fits a fresh, identical model
    on the streaming input of ``train_mmoe`` (:mod:`dailyrec.ranking.inputs`) in the same process:
    ``stream_same_process`` and its ``vs_in_memory`` ratios (a control for the load differences
    between the phases' processes on a shared machine)."""
    import tempfile as _tf

    import pyarrow.parquet as pq
    import tensorflow as tf

    from dailyrec.ranking.inputs import LABELS
    from dailyrec.storage import open_store
    from dailyrec.stream import id_encoders
    from dailyrec.training import deterministic_training, training_callbacks
    from models.ranking import build_ranking_model

    store = open_store(cfg)
    rc, tc = cfg.ranking, cfg.training
    samples = f"{store.partition('ranking_samples', day)}/train.parquet"
    vocabularies = store.read_json(f"{store.partition('features', day)}/vocabularies.json")
    e0 = time.perf_counter()
    table = pq.read_table(samples, filesystem=store.fs)
    feats = {name: enc(table.column(name)) for name, enc in id_encoders(list(cfg.features.spec), vocabularies).items()}
    labels = {t: table.column(t).to_numpy().astype(dtype) for t, dtype in LABELS.items()}
    n = table.num_rows
    del table
    encode_s = time.perf_counter() - e0

    def timed(ds: Any, label: str) -> dict[str, Any]:
        deterministic_training(rc.seed)
        model = build_ranking_model(rc, cfg.features, vocabularies, kind="mmoe", seed=rc.seed)
        with _tf.TemporaryDirectory() as tmp:
            callbacks = training_callbacks(model, log, label, 1, f"{tmp}/ckpt", f"{tmp}/tb",
                                           tc.checkpoint_every_steps, tc.checkpoints_keep)
            fw, fc, fl = time.perf_counter(), time.process_time(), load_avg()
            model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
            wall, cpu = time.perf_counter() - fw, time.process_time() - fc
        return {"examples_per_s": round(n / wall), "examples_per_cpu_s": round(n / cpu), "fit_seconds": round(wall, 1),
                "fit_cpu_seconds": round(cpu, 1), "cpu_utilisation": round(cpu / wall, 2),
                "fit_load_avg_1m_start": fl, "fit_load_avg_1m_end": load_avg()}

    out: dict[str, Any] = {"rows": n, "encode_seconds": round(encode_s, 1),
                           **timed(_pre_batched(feats, labels, rc.batch_size), "in_memory")}
    if same_process_stream:
        from dailyrec.ranking.inputs import stream_dataset, training_stream

        stream = training_stream(samples, list(cfg.features.spec), vocabularies, batch_size=rc.batch_size,
                                 seed=rc.seed, buffer_rows=tc.shuffle_buffer_rows, filesystem=store.fs)
        st = timed(stream_dataset(stream), "stream_same_process")
        out["stream_same_process"] = {
            **st, "vs_in_memory": {"wall": round(st["examples_per_s"] / out["examples_per_s"], 3),
                                   "per_cpu_s": round(st["examples_per_cpu_s"] / out["examples_per_cpu_s"], 3)}}
    return out


def _run_phase(phase: str, root: Path, args: argparse.Namespace, events: int) -> dict[str, Any] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--root", str(root),
           "--throughput-events", str(events), "--throughput-users", str(args.throughput_users),
           "--throughput-items", str(args.throughput_items), "--batch-size", str(args.batch_size)]
    if args.no_baseline:
        cmd.append("--no-baseline")
    for kv in args.set:
        cmd += ["--set", kv]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("PHASE_RESULT ")]
    if p.returncode < 0:  # killed (the kernel's OOM killer sends SIGKILL): retry smaller
        print(f"  phase {phase} at {events:,} events was killed (signal {-p.returncode}) after "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
        return None
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"phase {phase} at {events:,} events failed with exit status {p.returncode}")
    res = json.loads(lines[-1][len("PHASE_RESULT "):])
    print(f"  phase {phase} at {events:,} events: {json.dumps(res)}", flush=True)
    return res


def run_throughput(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    events = args.throughput_events
    failures = []
    while events >= 100_000:
        root = work / f"throughput-{events}"
        phases = {}
        for phase in ("generate", "samples", "in_memory", "train"):
            r = _run_phase(phase, root, args, events)
            if r is None:
                failures.append({"events": events, "phase": phase})
                break
            phases[phase] = r
        shutil.rmtree(root, ignore_errors=True)
        if len(phases) == 4:
            tr, mem = phases["train"], phases["in_memory"]
            ratio = {"wall": round(tr["mmoe"]["examples_per_s"] / mem["examples_per_s"], 3),
                     "per_cpu_s": round(tr["mmoe"]["examples_per_cpu_s"] / mem["examples_per_cpu_s"], 3)}
            print(f"  MMoE fit, streaming vs in-memory int arrays: {ratio}", flush=True)
            return {"events": events, "requested_events": args.throughput_events, "failed_attempts": failures,
                    "users": args.throughput_users, "items": args.throughput_items, "batch_size": args.batch_size,
                    "epochs": 1, "train_rows": tr["rows"], "streaming_vs_in_memory": ratio, "phases": phases}
        events //= 2
    return {"requested_events": args.throughput_events, "failed_attempts": failures, "events": None}


# ---- synthetic table ----------------------------------------------------------------------------------
def synthetic_table() -> dict[str, Any]:
    if SYNTHETIC_JSON.exists():
        doc = json.loads(SYNTHETIC_JSON.read_text())
        syn = doc["metrics"]["synthetic"]
        setup = {k: syn["setup"][k] for k in ("d", "n_train", "n_test", "epochs", "batch_size", "seeds", "mmoe",
                                              "shared_bottom_units", "params", "loss") if k in syn["setup"]}
        return {"command": doc["command"], "date": doc["date"], "source": "bench/results/mmoe_synthetic.json",
                "setup": setup, "table": syn["table"]}
    import importlib.util

    spec = importlib.util.spec_from_file_location("mmoe_synthetic", ROOT / "bench" / "mmoe_synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    syn = mod.run_synthetic([1.0, 0.0], [0], 4000, 1000, 5, 256, 0.01)
    return {"command": "./dev bench mmoe_synthetic --quick (re-run inside bench/mmoe.py: "
                       "bench/results/mmoe_synthetic.json was absent)",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "setup": {k: syn["setup"][k] for k in ("n_train", "epochs", "seeds", "params")}, "table": syn["table"]}


# ---- quality before vs after the streaming input ----------------------------------------------------
BEFORE_STREAM = "the in-memory input (whole window as numpy/TF strings, tf.data row-wise shuffle, 100k buffer, Adam)"


def _aucs(m: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for data in ("movielens", "generated"):
        if isinstance(m.get(data), dict):
            out[data] = {kind: {f"auc_{t}": m[data][kind][f"auc_{t}"] for t in (*TASKS, "conversion_given_click")
                                if f"auc_{t}" in m[data][kind]}
                         for kind in ("mmoe", "shared_bottom")}
    return out


def quality_check(metrics: dict[str, Any], skipped: list[str]) -> dict[str, Any]:
    """AUCs (mean, std, per seed) of this run ("after": the streaming input) next to those of the
    last run on the previous input ("before": read from the ``bench/results/mmoe.json`` that this run
    replaces, or carried over from its own ``quality_check.before``). Training is deterministic, so
    "before" is what the old input path gives on the same data and seeds."""
    before: dict[str, Any] | None = None
    prev_path = RESULTS_DIR / f"{NAME}.json"
    if prev_path.exists():
        prev = json.loads(prev_path.read_text())
        pm = prev.get("metrics", {})
        if "quality_check" in pm:
            before = pm["quality_check"].get("before")
        elif "mmoe_vs_in_memory" not in pm:  # a result of the previous input path
            before = {"input": BEFORE_STREAM, "command": prev.get("command"), "date": prev.get("date"),
                      "optimizer": "adam", **_aucs(pm)}
    after = {"input": "dailyrec.stream.ParquetStream (row-group order + bounded buffer), samples written shuffled",
             "optimizer": _config(".").ranking.optimizer.name, **_aucs(metrics)}
    diff: dict[str, Any] = {}
    for data in ("movielens", "generated"):
        if before and data in before and data in after:
            diff[data] = {kind: {k: round(after[data][kind][k]["mean"] - before[data][kind][k]["mean"], 5)
                                 for k in after[data][kind] if k in before[data][kind]
                                 and after[data][kind][k]["mean"] is not None
                                 and before[data][kind][k]["mean"] is not None}
                          for kind in ("mmoe", "shared_bottom")}
    return {"before": before, "after": after, "after_minus_before_mean_auc": diff, "skipped": skipped}


# ---- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench mmoe", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small data, 1 seed, 200k impressions")
    ap.add_argument("--seeds", type=int, default=3, help="ranking.seed values 13, 14, ...")
    ap.add_argument("--gen-days", type=int, default=3)
    ap.add_argument("--gen-events", type=int, default=200_000, help="generated impressions per day")
    ap.add_argument("--gen-users", type=int, default=5_000)
    ap.add_argument("--gen-items", type=int, default=2_000)
    ap.add_argument("--ml-dir", default=ML_DIR)
    ap.add_argument("--ml-negatives", type=int, default=4, help="constructed non-click rows per rating")
    ap.add_argument("--ml-more-epochs", type=int, nargs="*", default=[8],
                    help="also train MovieLens with these ranking.epochs (sensitivity; none: skip)")
    ap.add_argument("--data-seed", type=int, default=2018, help="seed of the constructed MovieLens negatives")
    ap.add_argument("--throughput-events", type=int, default=10_000_000)
    ap.add_argument("--throughput-users", type=int, default=100_000)
    ap.add_argument("--throughput-items", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--no-baseline", action="store_true", help="throughput: train the MMoE only")
    ap.add_argument("--no-variants", action="store_true",
                    help="skip the MMoE + ESMM / task-specific experts table and the validation choice")
    ap.add_argument("--skip", nargs="*", default=[], choices=["generated", "movielens", "throughput"])
    ap.add_argument("--workdir", default=None, help="parent of the temporary data roots (default $TMPDIR)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write results")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run of the benchmark (repeatable), e.g. "
                         "ranking.optimizer.name=adam")
    ap.add_argument("-v", "--verbose", action="store_true", help="the pipeline's INFO logs")
    ap.add_argument("--phase", choices=["generate", "samples", "in_memory", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from dailyrec.config import parse_set_args

    SET.update(parse_set_args(args.set))
    if args.phase:
        res = _phase(args)
        print("PHASE_RESULT " + json.dumps(res), flush=True)
        return 0

    if args.quick:
        args.seeds = 1
        args.ml_more_epochs = []
        args.gen_days, args.gen_events = 2, 50_000
        args.throughput_events, args.throughput_users, args.throughput_items = 200_000, 10_000, 2_000
    seeds = [_config(".").ranking.seed + i for i in range(args.seeds)]
    work = Path(tempfile.mkdtemp(prefix="dailyrec-bench-mmoe-", dir=args.workdir))
    t_all = time.perf_counter()
    loads = {"start": load_avg()}
    metrics: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    try:
        results: dict[str, Any] = {}
        if "movielens" not in args.skip and not (Path(args.ml_dir) / "u.data").exists():
            print(f"== MovieLens-100K skipped: {args.ml_dir}/u.data is absent (../shared/data is not part of a "
                  "fresh clone)", flush=True)
            args.skip.append("movielens")
            metrics["movielens_skipped"] = f"{args.ml_dir}/u.data is absent"
        if "movielens" not in args.skip:
            print(f"== MovieLens-100K (seeds {seeds})", flush=True)
            t0 = time.perf_counter()
            results["movielens"] = run_movielens(work, args, seeds)
            seconds["movielens"] = round(time.perf_counter() - t0, 1)
        if "generated" not in args.skip:
            print(f"== generated logs (seeds {seeds})", flush=True)
            t0 = time.perf_counter()
            results["generated"] = run_generated(work, args, seeds)
            seconds["generated"] = round(time.perf_counter() - t0, 1)
        if "throughput" not in args.skip:
            print(f"== throughput at {args.throughput_events:,} impressions", flush=True)
            t0 = time.perf_counter()
            results["throughput"] = run_throughput(work, args)
            seconds["throughput"] = round(time.perf_counter() - t0, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads["end"] = load_avg()

    ml = results.get("movielens")
    if ml:
        for kind in ("mmoe", "shared_bottom"):
            for t in TASKS:
                metrics[f"auc_{t}_{kind}"] = ml[kind][f"auc_{t}"]["mean"]
        if "variants" in ml:
            mv = ml["variants"]
            metrics["auc_conversion_esmm"] = mv["test"]["mmoe_esmm"]["auc_conversion"]["mean"]
            metrics["auc_click_esmm"] = mv["test"]["mmoe_esmm"]["auc_click"]["mean"]
            metrics["auc_click_task_specific"] = mv["test"]["task_specific"]["auc_click"]["mean"]
            metrics["auc_conversion_task_specific"] = mv["test"]["task_specific"]["auc_conversion"]["mean"]
            metrics["default_on_validation"] = mv["default_on_validation"]
            metrics["auc_click_default_on_validation"] = mv["default_test"]["auc_click"]
    tp = results.get("throughput")
    if tp and tp.get("events"):
        tr = tp["phases"]["train"]
        metrics["mmoe_examples_per_s"] = tr["mmoe"]["examples_per_s"]
        metrics["mmoe_vs_in_memory"] = tp["streaming_vs_in_memory"]["per_cpu_s"]
        metrics["mmoe_vs_in_memory_wall"] = tp["streaming_vs_in_memory"]["wall"]
        metrics["mmoe_peak_rss_mb"] = tr["peak_rss_mb"]
        metrics["train_examples_per_s"] = tr["mmoe"]["examples_per_s"]
        metrics["peak_rss_mb"] = tr["peak_rss_mb"]
    metrics["synthetic"] = synthetic_table()
    if ml:
        metrics["movielens"] = ml
    if results.get("generated"):
        g = results["generated"]
        for kind in ("mmoe", "shared_bottom"):
            for t in TASKS:
                metrics[f"generated_auc_{t}_{kind}"] = g[kind][f"auc_{t}"]["mean"]
                metrics[f"generated_auc_{t}_{kind}_std"] = g[kind][f"auc_{t}"]["std"]
        if "variants" in g:
            metrics["generated_auc_conversion_esmm"] = g["variants"]["test"]["mmoe_esmm"]["auc_conversion"]["mean"]
            metrics["generated_default_on_validation"] = g["variants"]["default_on_validation"]
        metrics["generated"] = g
    if tp:
        if tp.get("events"):
            tr = tp["phases"]["train"]
            metrics["train_examples_per_cpu_s"] = tr["mmoe"]["examples_per_cpu_s"]
            metrics["train_load_avg_1m"] = [tr["mmoe"]["load_avg_1m_start"], tr["mmoe"]["load_avg_1m_end"]]
        metrics["throughput"] = tp
    metrics["quality_check"] = quality_check(metrics, args.skip)
    import keras
    import tensorflow as tf

    metrics["config"] = {"ranking": _config(work).ranking.model_dump(mode="json"), "seeds": seeds,
                         "warm_start": False, "quick": args.quick}
    metrics["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
    metrics["seconds"] = {**seconds, "total": round(time.perf_counter() - t_all, 1)}
    metrics["load_avg_1m"] = loads
    metrics["bench_process_peak_rss_mb"] = peak_rss_mb()

    headline = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    print(json.dumps(headline, indent=1))
    if not args.no_write:
        save_result(NAME, list(argv if argv is not None else sys.argv[1:]), metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
