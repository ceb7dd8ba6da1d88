"""Evaluate the day's ranking model on the held-out hours and decide whether it may be published.

    python -m tasks.ranking.evaluate_mmoe --cur-date 2026-11-02

Rows: ``ranking_samples/dt=D/holdout.parquet``, every impression of the last
``training.holdout_hours`` hours of ``cur_date`` (not down-sampled). The same rows for every model:

* ``new``: the model trained for ``cur_date`` (``models/mmoe/dt=D/saved_model``, normally MMoE);
* ``shared_bottom``: the shared-bottom baseline trained on the same rows
  (``models/mmoe/dt=D/shared_bottom/saved_model``), when it was trained;
* ``previous``: the newest *published* ranking model before ``cur_date`` (yesterday's), if any.

Every model's predictions are calibrated back from its own training down-sample rate (the
``negative_downsample_rate`` of its manifest; ``tasks.ranking.ranking_samples.calibrate`` and
``calibrate_conversion``) before the metrics. Per task (click, conversion): ``auc``,
``logloss``, ``calibration`` (mean calibrated prediction / mean label; 1 is perfect),
``mean_pred``, ``mean_label`` and ``mean_raw_pred`` (the uncalibrated mean).

Gate diagnostics of the new MMoE on the same rows (``models.mmoe.gate_diagnostics``): mean gate
weight per expert per task and its normalised entropy; a collapsed gate (one expert takes more
than 90% of a task's mean weight) is a warning (``warnings`` in the report and the task log), not
a failure.

Gate: the new model fails when its click AUC, or its conversion AUC, is more than
``ranking.max_auc_drop_vs_previous`` below the previous model's on these rows (a task without
positives in the holdout has no AUC and is left out, with a warning). Without a previous model
the gate passes. The report goes to ``eval/mmoe/dt=D/report.json``; a failed gate is not a task
failure: the DAG skips the publish and yesterday's model stays the published one.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.registry import eval_report_path, model_dir, published_before
from dailyrec.storage import MANIFEST, Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.evaluate_mmoe")
NAME = "mmoe"
TASKS = ("click", "conversion")
LOGLOSS_EPS = 1e-7


# ---- metrics ------------------------------------------------------------------------------------
def auc(labels: Any, scores: Any) -> float | None:
    """ROC AUC (Mann-Whitney U, ties get average ranks); ``None`` without both classes."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(len(s))
    ranks[order] = avg_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: Any, probs: Any) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def task_metrics(labels: dict[str, np.ndarray], calibrated: dict[str, np.ndarray],
                 raw: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Flat ``{<task>_<metric>: value}`` for every task (see the module doc)."""
    out: dict[str, float | None] = {}
    for t in TASKS:
        y, p = labels[t], calibrated[t]
        a = auc(y, p)
        mean_label = float(y.mean())
        out[f"{t}_auc"] = round(a, 6) if a is not None else None
        out[f"{t}_logloss"] = round(log_loss(y, p), 6)
        out[f"{t}_calibration"] = round(float(p.mean()) / mean_label, 4) if mean_label > 0 else None
        out[f"{t}_mean_pred"] = round(float(p.mean()), 6)
        out[f"{t}_mean_label"] = round(mean_label, 6)
        out[f"{t}_mean_raw_pred"] = round(float(raw[t].mean()), 6)
    return out


# ---- models -------------------------------------------------------------------------------------
def signature_specs(ranker: Any) -> list[dict[str, str]]:
    """Feature spec dicts (name, dtype) of a loaded SavedModel's serving signature."""
    import tensorflow as tf

    return [{"name": n, "dtype": "string" if spec.dtype == tf.string else "int"}
            for n, spec in sorted(ranker.input_signature.items())]


def model_rate(store: Any, mdir: str) -> float:
    """The negative down-sample rate a model was trained with (its manifest)."""
    man = store.read_json(f"{mdir}/{MANIFEST}")
    return float(man.get("negative_downsample_rate", 1.0))


def predict_calibrated(ranker: Any, table: Any, rate: float, where: str = "rows") -> tuple[dict, dict]:
    """Raw and calibrated ``{task: float64[n]}`` of a loaded ranker on an Arrow table."""
    from tasks.ranking.ranking_samples import calibrate, calibrate_conversion
    from dailyrec.inputs import feature_arrays

    feats = feature_arrays(table, signature_specs(ranker), where=where)
    raw = {t: np.asarray(v, dtype=np.float64).reshape(-1) for t, v in ranker(feats).items()}
    cal = {"click": calibrate(raw["click"], rate),
           "conversion": calibrate_conversion(raw["conversion"], raw["click"], rate)}
    return raw, cal


def _gate_warnings(diag: dict[str, Any]) -> list[str]:
    out = []
    for task, d in diag.items():
        if d["collapsed"]:
            w = d["mean_weight"]
            top = int(np.argmax(w))
            out.append(f"MMoE gate of task '{task}' collapsed: expert {d['experts'][top]} takes {w[top]:.0%} of "
                       f"the mean gate weight (normalised entropy {d['entropy']:.2f}); the task barely uses "
                       f"the other experts")
    return out


# ---- the step -----------------------------------------------------------------------------------
def evaluate_mmoe(cur_date: str, cfg: Config | None = None) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from models.mmoe import gate_diagnostics, load_model, load_ranking_model
    from dailyrec.inputs import feature_arrays
    from tasks.ranking.train_mmoe import artifact_dirs

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    rc = cfg.ranking
    hold_path = f"{store.partition('ranking_samples', cur_date)}/holdout.parquet"
    new_dir = model_dir(store, NAME, cur_date)
    for p in (hold_path, f"{new_dir}/{MANIFEST}"):
        if not store.exists(p):
            raise FileNotFoundError(f"{p} is missing: run tasks.ranking.ranking_samples and tasks.ranking.train_mmoe for {cur_date} first")
    with timer.step("load"):
        holdout = pq.read_table(hold_path, filesystem=store.fs)
        new_man = store.read_json(f"{new_dir}/{MANIFEST}")
    n = holdout.num_rows
    if n == 0:
        raise ValueError(f"{hold_path} has no rows: nothing to evaluate (training.holdout_hours="
                         f"{cfg.training.holdout_hours})")
    labels = {t: holdout.column(t).to_numpy(zero_copy_only=False).astype(np.float64) for t in TASKS}
    warnings: list[str] = []
    for t in TASKS:
        if labels[t].sum() == 0:
            warnings.append(f"the holdout has no {t} positive: {t} AUC is undefined and the gate ignores it")

    table: dict[str, dict[str, Any]] = {}
    rates: dict[str, float] = {}
    candidates = [("new", new_dir, "main")]
    if "baseline" in (new_man.get("artifacts") or {}):
        candidates.append(("shared_bottom", new_dir, "baseline"))
    prev = published_before(store, NAME, cur_date)
    if prev is not None:
        candidates.append(("previous", prev["model_dir"], "main"))
    for name, mdir, role in candidates:
        with timer.step(name):
            rate = model_rate(store, mdir)
            try:
                ranker = load_ranking_model(artifact_dirs(mdir, role)[1])
                raw, cal = predict_calibrated(ranker, holdout, rate, where=hold_path)
            except (KeyError, TypeError) as exc:  # a model of another feature set cannot score today's rows
                if name != "previous":
                    raise
                warnings.append(f"the previous model ({prev['cur_date']}) cannot score these rows: {exc}; "
                                "the gate has nothing to compare with")
                continue
            table[name] = task_metrics(labels, cal, raw)
            rates[name] = rate

    gates: dict[str, Any] = {}
    if new_man.get("kind", "mmoe") == "mmoe":
        with timer.step("gate_diagnostics"):
            keras_model = load_model(artifact_dirs(new_dir, "main")[0], compile=False)
            feats = feature_arrays(holdout, list(keras_model.encoder.specs), where=hold_path)
            gates = gate_diagnostics(keras_model, feats)
            del keras_model
        warnings += _gate_warnings(gates)

    reasons: list[str] = []
    max_drop = rc.max_auc_drop_vs_previous
    if "previous" in table:
        for t in TASKS:
            new_auc, old_auc = table["new"][f"{t}_auc"], table["previous"][f"{t}_auc"]
            if new_auc is None or old_auc is None:
                continue
            if new_auc < old_auc - max_drop:
                reasons.append(f"{t} AUC {new_auc:.4f} is more than {max_drop} below the previous model's "
                               f"{old_auc:.4f} ({prev['cur_date']})")
    gate = {"passed": not reasons, "reasons": reasons, "metrics": [f"{t}_auc" for t in TASKS],
            "max_auc_drop_vs_previous": max_drop,
            "previous_model": prev["cur_date"] if prev and "previous" in table else None}
    rows = {"holdout": n, **{f"holdout_{t}s": int(labels[t].sum()) for t in TASKS}}
    report = make_manifest("evaluate_mmoe", cfg, cur_date, inputs=[hold_path, new_dir] + ([prev["model_dir"]] if prev else []),
                           rows=rows, timings=timer.timings, table=table, gate=gate, warnings=warnings,
                           gates=gates, downsample_rates=rates, model_version=new_man.get("model_version"))
    out = store.partition(f"eval/{NAME}", cur_date)
    with store.atomic_output(out) as tmp:
        store.write_json(f"{tmp}/report.json", report)
    log.info("ranking evaluation of %s on %d holdout impressions (%d clicks, %d conversions):\n%s",
             cur_date, n, rows["holdout_clicks"], rows["holdout_conversions"], format_table(table))
    for name, d in gates.items():
        log.info("gate of %s: mean weight %s, entropy %.3f, row entropy %.3f", name,
                 dict(zip(d["experts"], (round(w, 3) for w in d["mean_weight"]))), d["entropy"], d["row_entropy"])
    for w in warnings:
        log.warning("%s", w)
    if gate["passed"]:
        log.info("gate PASSED (%s)", "vs " + gate["previous_model"] if gate["previous_model"] else "no previous model")
    else:
        log.warning("gate FAILED: %s. The ranking model of %s is not published; the last published one stays.",
                    "; ".join(reasons), cur_date)
    return {"report": eval_report_path(store, NAME, cur_date), "passed": gate["passed"], "reasons": reasons,
            "warnings": warnings, "previous_model": gate["previous_model"],
            **{f"{name}_{t}_auc": m[f"{t}_auc"] for name, m in table.items() for t in TASKS}}


def format_table(table: dict[str, dict[str, Any]]) -> str:
    keys = [f"{t}_{m}" for t in TASKS for m in ("auc", "logloss", "calibration")]
    lines = [f"{'model':<14}" + "".join(f"{k:>24}" for k in keys)]
    for name, m in table.items():
        lines.append(f"{name:<14}" + "".join(f"{m[k]:>24.4f}" if m[k] is not None else f"{'-':>24}" for k in keys))
    return "\n".join(lines)


def main() -> None:
    from dailyrec import cli

    args = cli.parser(__doc__.splitlines()[0]).parse_args()
    cli.run(lambda: evaluate_mmoe(args.cur_date, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
