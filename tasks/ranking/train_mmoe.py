"""Train the MMoE ranking model (click, conversion) for one ``cur_date``, and its shared-bottom baseline.

    python -m tasks.ranking.train_mmoe --cur-date 2026-11-02 [--set ranking.num_experts=6] [--kind shared_bottom] [--no-baseline]

Inputs: ``ranking_samples/dt=D/train.parquet`` (tasks.ranking.ranking_samples) and
``features/dt=D/vocabularies.json`` (tasks.retrieval.features). The model is ``models.mmoe`` built from
``ranking.*`` and ``features.spec``; it trains *unweighted* on the down-sampled rows (the
evaluation and the scorer calibrate its click/conversion predictions back with the rate recorded
in the manifest). Warm start from the newest gate-passed model strictly before ``cur_date``
(``dailyrec.registry.warm_start_source``; known ids keep their embedding rows, every other layer
with matching shapes is copied; ``training.warm_start=false`` turns it off). Adam with
exponential learning-rate decay and a floor (``ranking.learning_rate``, ``lr_decay_rate``,
``lr_decay_steps``, ``lr_floor``); a checkpoint every ``training.checkpoint_every_steps`` steps
(the last ``training.checkpoints_keep`` kept) under ``checkpoints/mmoe/dt=D/{main,baseline}/``; TensorBoard
logs; one log line per epoch.

The shared-bottom baseline (``models.mmoe.RankingModel(kind="shared_bottom")``, the same
parameter budget) is trained on the same rows with the same epochs, batch size, schedule and
seed, and warm started from the previous baseline the same way, so the evaluation compares like
with like.

Output (atomic), ``models/mmoe/dt=D/``::

    model/model.keras           the full Keras model (vocabularies inside) for warm start
    saved_model/                SavedModel, serving_default takes raw features (export_ranking_model)
    shared_bottom/model/        the baseline, same layout
    shared_bottom/saved_model/
    tensorboard/{main,baseline}/  TensorBoard logs of both fits
    _manifest.json              model_version "mmoe-<date>-<cfghash8>", history, warm_start,
                                examples_per_s, negative_downsample_rate, the baseline's figures
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.registry import model_dir, warm_start_source
from dailyrec.storage import MANIFEST, Timer, make_manifest, open_store
from dailyrec.training import training_callbacks

log = logging.getLogger("dailyrec.train_mmoe")
NAME = "mmoe"
BASELINE = "shared_bottom"
KERAS_DIR = "model"
SAVED_MODEL_DIR = "saved_model"


def model_version(cur_date: str, cfg: Config) -> str:
    return f"mmoe-{cur_date}-{cfg.digest()[:8]}"


def artifact_dirs(root: str, role: str = "main") -> tuple[str, str]:
    """(Keras model dir, SavedModel dir) inside a ``models/mmoe/dt=D`` folder: ``role`` "main" is
    the model that is evaluated and published, "baseline" the shared-bottom comparison."""
    if role not in ("main", "baseline"):
        raise ValueError(f"role must be 'main' or 'baseline', got {role!r}")
    base = root if role == "main" else f"{root}/{BASELINE}"
    return f"{base}/{KERAS_DIR}", f"{base}/{SAVED_MODEL_DIR}"


def _fit_one(cfg: Config, kind: str, vocabularies: dict[str, list[str]], features: dict[str, Any],
             labels: dict[str, Any], warm_dir: str | None, ckpt_dir: str, tb_dir: str,
             timer: Timer) -> tuple[Any, dict[str, Any]]:
    """Build, (warm start,) fit one model; returns it and its manifest figures."""
    from pathlib import Path

    from models.mmoe import build_ranking_model, load_model, ranking_dataset, warm_start_from

    rc = cfg.ranking
    n = len(next(iter(labels.values())))
    with timer.step(f"{kind}_build"):
        model = build_ranking_model(rc, cfg.features, vocabularies, kind=kind, seed=rc.seed)
    warm: dict[str, Any] = {"from": None}
    if warm_dir is not None and Path(warm_dir).exists():
        with timer.step(f"{kind}_warm_start"):
            old = load_model(warm_dir, compile=False)
            stats = warm_start_from(model, old)
        warm = {"path": warm_dir, "stats": stats}
        log.info("%s warm start from %s: embeddings %s; %d layer(s) copied, %d fresh", kind, warm_dir,
                 stats["encoder"], stats["copied"], stats["skipped"])
    elif warm_dir is not None:
        log.warning("%s: no model at %s to warm start from; cold start", kind, warm_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # a re-run starts its own checkpoints
    ds = ranking_dataset(features, labels, batch_size=rc.batch_size, shuffle=True, seed=rc.seed,
                         specs=list(cfg.features.spec))
    t0 = time.perf_counter()
    with timer.step(f"{kind}_fit"):
        hist = model.fit(ds, epochs=rc.epochs, verbose=0, shuffle=False,  # the dataset shuffles
                         callbacks=training_callbacks(model, log, kind, cfg.ranking.epochs, ckpt_dir, tb_dir,
                                                    cfg.training.checkpoint_every_steps,
                                                    cfg.training.checkpoints_keep))
    fit_s = time.perf_counter() - t0
    history = {k: [round(float(x), 6) for x in v] for k, v in hist.history.items()}
    info = {"kind": kind, "params": int(model.count_params()), "history": history, "warm_start": warm,
            "examples_per_s": round(n * rc.epochs / fit_s, 1), "fit_seconds": round(fit_s, 2),
            "final_loss": history.get("loss", [None])[-1], "checkpoints": ckpt_dir}
    if kind == BASELINE:
        info["bottom_units"] = list(model.bottom_units)
    log.info("%s: %d parameters, final loss %s, %.0f examples/s", kind, info["params"], info["final_loss"],
             info["examples_per_s"])
    return model, info


def train_mmoe(cur_date: str, cfg: Config | None = None, kind: str = "mmoe", baseline: bool = True) -> dict[str, Any]:
    """Train the day's ranking model (``kind``, default MMoE) and, with ``baseline``, the
    shared-bottom baseline on the same rows; write ``models/mmoe/dt=D`` atomically."""
    import pyarrow.parquet as pq

    from models.mmoe import export_ranking_model, save_model
    from dailyrec.inputs import feature_arrays

    if kind not in ("mmoe", BASELINE):
        raise ValueError(f"kind must be 'mmoe' or '{BASELINE}', got {kind!r}")
    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    rc = cfg.ranking
    sdir = store.partition("ranking_samples", cur_date)
    samples, smanifest = f"{sdir}/train.parquet", f"{sdir}/{MANIFEST}"
    vocab_path = f"{store.partition('features', cur_date)}/vocabularies.json"
    for p in (smanifest, vocab_path):
        if not store.exists(p):
            raise FileNotFoundError(f"{p} is missing: run the features and ranking_samples steps for {cur_date} first")
    with timer.step("load"):
        table = pq.read_table(samples, filesystem=store.fs)
        sman = store.read_json(smanifest)
        vocabularies = store.read_json(vocab_path)
        specs = list(cfg.features.spec)
        arrays = feature_arrays(table, specs, extra={"click": "float32", "conversion": "float32"}, where=samples)
    n = table.num_rows
    labels = {"click": arrays.pop("click"), "conversion": arrays.pop("conversion")}
    n_click, n_conv = int(labels["click"].sum()), int(labels["conversion"].sum())
    if n == 0 or n_click == 0:
        raise ValueError(f"{samples}: {n} rows, {n_click} clicks: nothing to train a ranker on")
    rate = float(sman.get("negative_downsample_rate", rc.negative_downsample_rate))
    log.info("training %s (%s) on %d rows (%d clicks, %d conversions; non-clicks kept at r=%g) from %s",
             cur_date, kind, n, n_click, n_conv, rate, samples)

    src = warm_start_source(store, NAME, cur_date) if cfg.training.warm_start else None
    if src is None:
        log.info("cold start (no gate-passed ranking model before %s%s)", cur_date,
                 "" if cfg.training.warm_start else "; training.warm_start is off")
    roles = {"main": kind, **({"baseline": BASELINE} if baseline and kind != BASELINE else {})}
    ckpt_root = store.local_path(store.partition(f"checkpoints/{NAME}", cur_date))
    final = model_dir(store, NAME, cur_date)
    infos: dict[str, dict[str, Any]] = {}
    with store.atomic_output(final) as tmp:
        for role, k in roles.items():
            warm_dir = artifact_dirs(src[1], role)[0] if src is not None else None
            model, info = _fit_one(cfg, k, vocabularies, arrays, labels, warm_dir, str(ckpt_root / role),
                                   f"{tmp}/tensorboard/{role}", timer)
            if info["warm_start"].get("path"):
                info["warm_start"]["from"] = src[0]
            keras_dir, sm_dir = artifact_dirs(tmp, role)
            with timer.step(f"{role}_save"):
                save_model(model, keras_dir)
                export_ranking_model(model, sm_dir)
            infos[role] = info
            del model
        main = infos["main"]
        version = model_version(cur_date, cfg)
        manifest = make_manifest(
            "train_mmoe", cfg, cur_date, inputs=[samples, vocab_path],
            rows={"train": n, "clicks": n_click, "conversions": n_conv},
            timings=timer.timings, model_version=version, kind=kind,
            history=main["history"], warm_start=main["warm_start"], examples_per_s=main["examples_per_s"],
            final_loss=main["final_loss"], params=main["params"], checkpoints=str(ckpt_root),
            negative_downsample_rate=rate, loss_weights=dict(rc.loss_weights), num_experts=rc.num_experts,
            epochs=rc.epochs, batch_size=rc.batch_size,
            artifacts={role: {"kind": k, **dict(zip(("keras", "saved_model"), artifact_dirs(final, role)))}
                       for role, k in roles.items()},
            baseline=infos.get("baseline"),
        )
        manifest["timings_s"]["total"] = timer.total()
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    log.info("ranking model %s written to %s (%.0f examples/s)", version, final, main["examples_per_s"])
    return {"model_dir": final, "model_version": version, "rows": n, "final_loss": main["final_loss"],
            "examples_per_s": main["examples_per_s"], "warm_start_from": main["warm_start"]["from"],
            "baseline_final_loss": infos["baseline"]["final_loss"] if "baseline" in infos else None}


def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["mmoe", BASELINE], default="mmoe", help="the model to train and publish")
    p.add_argument("--no-baseline", action="store_true", help="skip the shared-bottom baseline")
    args = p.parse_args()
    cli.run(lambda: train_mmoe(args.cur_date, cli.config_from_args(args), kind=args.kind,
                               baseline=not args.no_baseline))


if __name__ == "__main__":
    main()
