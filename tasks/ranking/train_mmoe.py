"""Train the MMoE ranking model (the tasks of ``ranking.tasks``; default click, conversion) for one
``cur_date``, and its shared-bottom baseline.

    python -m tasks.ranking.train_mmoe --cur-date 2026-11-02 [--set ranking.num_experts=6]
        [--set ranking.kind=shared_bottom] [--set ranking.train_baseline=false]

Inputs: ``ranking_samples/dt=D/train.parquet`` (tasks.ranking.ranking_samples),
``features/dt=D/vocabularies.json`` and ``numeric_stats.json`` (tasks.retrieval.features; the
numeric features' normalisation, stored in the model's config and SavedModel). The model is ``models.ranking`` built from
``ranking.*`` and ``features.spec``; it trains *unweighted* on the down-sampled rows (the
evaluation and the scorer calibrate its click/conversion predictions back with the rate recorded
in the manifest). The rows are streamed, not loaded: ``dailyrec.ranking.inputs`` reads
``train.parquet`` row group by row group (``dailyrec.stream.ParquetStream``), turns every feature
into int32 embedding row ids on the Arrow side and feeds ``(features, labels)`` batches of
``ranking.batch_size``; each epoch permutes the row groups and mixes rows in a bounded buffer of
``training.shuffle_buffer_rows`` rows (seeded by ``ranking.seed`` and the epoch; the samples step
wrote the rows in a shuffled order), so memory stays flat whatever the day's size. Warm start from the newest gate-passed model strictly before ``cur_date``
(``dailyrec.registry.warm_start_source``; known ids keep their embedding rows, every other layer
with matching shapes is copied; ``training.warm_start=false`` turns it off). The optimizer of
``ranking.optimizer`` (Adam, or ``lazy_adam``: Adam updating only the embedding rows a batch touches,
with exponential learning-rate decay and a floor, ``models.optim.make_optimizer``; docs/ranking.md
says why the default stays ``adam``); a checkpoint every ``training.checkpoint_every_steps`` steps
(the last ``training.checkpoints_keep`` kept) under ``checkpoints/mmoe/dt=D/{main,baseline}/``; TensorBoard
logs under ``tensorboard/mmoe/dt=D/{main,baseline}/`` (run logs, outside the output: they hold wall
times); one log line per epoch. Deterministic: a re-run with the same inputs, warm start and
config writes byte-identical files (``dailyrec.training.deterministic_training``).

The shared-bottom baseline (``models.ranking.RankingModel(kind="shared_bottom")``, the same
parameter budget) is trained on the same rows with the same epochs, batch size, schedule and
seed, and warm started from the previous baseline the same way, so the evaluation compares like
with like (``ranking.train_baseline=false`` skips it; ``ranking.kind=shared_bottom`` trains and
publishes the shared bottom itself, then without a baseline).

Output (atomic), ``models/mmoe/dt=D/``::

    model/model.keras           the full Keras model (vocabularies inside) for warm start
    saved_model/                SavedModel, serving_default takes raw features (export_ranking_model)
    shared_bottom/model/        the baseline, same layout
    shared_bottom/saved_model/
    _manifest.json              model_version "mmoe-<date>-<config8>-<lineage8>", lineage, history, warm_start,
                                examples_per_s, negative_downsample_rate, the baseline's figures
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.features import NUMERIC_STATS_FILE, read_numeric_stats
from dailyrec.ranking import BASELINE, NAME
from dailyrec.ranking.artifacts import artifact_dirs
from dailyrec.registry import model_dir
from dailyrec.step import StepRun, begin
from dailyrec.storage import MANIFEST
from dailyrec.training import deterministic_training, fit, lineage, model_version, warm_source, warm_start


def _fit_one(run: StepRun, role: str, kind: str, vocabularies: dict[str, list[str]], samples: str,
             src: tuple[str, str] | None, ckpt_dir: str, tb_dir: str,
             numeric_stats: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Build, (warm start from ``src``'s model of the same role,) fit one model on a fresh stream of
    ``samples`` (the same batches for every role); returns it and its manifest figures."""
    from dailyrec.ranking.inputs import stream_dataset, training_stream
    from models.ranking import build_ranking_model, load_model, warm_start_from

    cfg, rc = run.cfg, run.cfg.ranking
    deterministic_training(rc.seed)
    with run.timer.step(f"{kind}_build"):
        model = build_ranking_model(rc, cfg.features, vocabularies, kind=kind, seed=rc.seed,
                                    numeric_stats=numeric_stats)
    warm = warm_start(run, model, src, artifact_dirs(src[1], role)[0] if src else None, load_model, warm_start_from,
                      label=kind, timer_step=f"{kind}_warm_start", missing_ok=True)
    tasks = rc.resolved_tasks()
    stream = training_stream(samples, list(cfg.features.spec), vocabularies, batch_size=rc.batch_size, seed=rc.seed,
                             buffer_rows=cfg.training.shuffle_buffer_rows, filesystem=run.store.fs, tasks=tasks)
    result = fit(run, model, stream_dataset(stream, tasks), rows=stream.num_rows, epochs=rc.epochs, label=kind,
                 ckpt_dir=ckpt_dir, tb_dir=tb_dir, timer_step=f"{kind}_fit", shuffle=False,  # the stream shuffles
                 stream=stream)
    info = {"kind": kind, "params": int(model.count_params()), "history": result.history, "warm_start": warm,
            "examples_per_s": result.examples_per_s, "fit_seconds": round(result.seconds, 2),
            "final_loss": result.final_loss, "checkpoints": ckpt_dir}
    if kind == BASELINE:
        info["bottom_units"] = list(model.bottom_units)
    run.log.info("%s: %d parameters, final loss %s, %.0f examples/s", kind, info["params"], info["final_loss"],
                 info["examples_per_s"])
    return model, info


def _label_counts(samples: str, fs: Any, tasks: list[Any]) -> dict[str, Any]:
    """``{"rows", "click", "conversion", "tasks": {task: positives (binary) or label mean (regression)}}``
    of the training rows, reading only the label columns.

    Raises ``KeyError`` naming the file when a label column is missing."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(fs.open_input_file(samples))
    cols = list(dict.fromkeys(["click", "conversion", *(t.label_column for t in tasks)]))
    missing = [c for c in cols if c not in pf.schema_arrow.names]
    if missing:
        raise KeyError(f"{samples}: label column(s) {missing} missing; columns: {pf.schema_arrow.names}")
    table = pf.read(columns=cols)
    out: dict[str, Any] = {"rows": table.num_rows, **{t: int(pc.sum(table.column(t)).as_py() or 0)
                                                     for t in ("click", "conversion")}}
    out["tasks"] = {}
    for t in tasks:
        total = pc.sum(pc.cast(table.column(t.label_column), "float64")).as_py() or 0.0
        out["tasks"][t.name] = (int(total) if t.kind == "binary"
                                else round(total / table.num_rows, 6) if table.num_rows else None)
    return out


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Train the day's ranking model and its shared-bottom baseline; write ``models/mmoe/dt=D``.

    ``ranking.kind`` names the model (default MMoE); ``ranking.train_baseline`` the baseline on the
    same rows. Raises ``FileNotFoundError`` without the day's samples or vocabularies,
    ``ValueError`` when the training rows hold no click.
    """
    from models.ranking import save_model, task_specs
    from models.serving import export_ranking_model

    run = begin("train_mmoe", cur_date, cfg)
    store, cur_date, timer, rc = run.store, run.cur_date, run.timer, cfg.ranking
    samples, smanifest = run.path("ranking_samples", "train.parquet"), run.path("ranking_samples", MANIFEST)
    vocab_path = run.path("features", "vocabularies.json")
    run.require(smanifest, vocab_path, hint=f"run the features and ranking_samples steps for {cur_date} first")
    with timer.step("load"):
        sman = store.read_json(smanifest)
        vocabularies = store.read_json(vocab_path)
        nstats = read_numeric_stats(store, cur_date)
        tasks = rc.resolved_tasks()
        labels = _label_counts(samples, store.fs, tasks)
    n, n_click, n_conv = labels["rows"], labels["click"], labels["conversion"]
    if n == 0 or n_click == 0:
        raise ValueError(f"{samples}: {n} rows, {n_click} clicks: nothing to train a ranker on")
    for t in tasks:
        if t.kind == "binary" and labels["tasks"][t.name] == 0:
            run.log.warning("task %s: no positive (label %s) in the training rows", t.name, t.label_column)
    rate = float(sman.get("negative_downsample_rate", rc.negative_downsample_rate))
    run.log.info("training %s (%s) on %d rows (%d clicks, %d conversions; non-clicks kept at r=%g) from %s",
                 cur_date, rc.kind, n, n_click, n_conv, rate, samples)

    src = warm_source(run, NAME)
    roles = {"main": rc.kind, **({"baseline": BASELINE} if rc.train_baseline and rc.kind != BASELINE else {})}
    ckpt_root = store.local_path(run.partition(f"checkpoints/{NAME}"))
    tb_root = store.local_path(run.partition(f"tensorboard/{NAME}"))
    final = model_dir(store, NAME, cur_date)
    infos: dict[str, dict[str, Any]] = {}
    with store.atomic_output(final) as tmp:
        for role, k in roles.items():
            model, info = _fit_one(run, role, k, vocabularies, samples, src, str(ckpt_root / role),
                                   str(tb_root / role), nstats)
            keras_dir, sm_dir = artifact_dirs(tmp, role)
            with timer.step(f"{role}_save"):
                save_model(model, keras_dir)
                export_ranking_model(model, sm_dir)
            infos[role] = info
            del model
        main = infos["main"]
        stats_path = run.path("features", NUMERIC_STATS_FILE)
        used = [samples, vocab_path] + ([stats_path] if nstats else [])
        lin = lineage(store, used, main["warm_start"])
        version = model_version(NAME, cur_date, cfg, lin)
        manifest = run.manifest(
            inputs=used, numeric_stats=nstats, rows={"train": n, "clicks": n_click, "conversions": n_conv},
            lineage=lin, tensorboard=str(tb_root),
            model_version=version, kind=rc.kind,
            history=main["history"], warm_start=main["warm_start"], examples_per_s=main["examples_per_s"],
            final_loss=main["final_loss"], params=main["params"], checkpoints=str(ckpt_root),
            negative_downsample_rate=rate, loss_weights=rc.task_weights(), num_experts=rc.num_experts,
            tasks=task_specs(tasks), esmm=rc.esmm, label_counts=labels["tasks"],
            epochs=rc.epochs, batch_size=rc.batch_size,
            artifacts={role: {"kind": k, **dict(zip(("keras", "saved_model"), artifact_dirs(final, role)))}
                       for role, k in roles.items()},
            baseline=infos.get("baseline"),
        )
        manifest["timings_s"]["total"] = timer.total()
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    run.log.info("ranking model %s written to %s (%.0f examples/s)", version, final, main["examples_per_s"])
    return {"model_dir": final, "model_version": version, "rows": n, "final_loss": main["final_loss"],
            "examples_per_s": main["examples_per_s"], "warm_start_from": main["warm_start"]["from"],
            "baseline_final_loss": infos["baseline"]["final_loss"] if "baseline" in infos else None}


if __name__ == "__main__":
    cli.main(step)
