"""Incremental training of the MMoE ranking model on one hourly pass, and its publish pointer
(``hourly.train_mmoe_pass``; pass identity, samples and warm source in :mod:`dailyrec.ranking.passes`).

The pass trains on its own impressions only (``ranking_pass_samples/dt=D/hour=HH/train.parquet``),
streamed (:class:`dailyrec.stream.ParquetStream`: bounded memory), for ``passes.epochs`` epochs,
with the daily run's losses, optimizer and batch size (``ranking.*``), starting from the pass's warm
source (the previous pass, or the daily base of D-1) through the daily run's warm start: known ids keep
their embedding rows, ids admitted since grow the tables (:func:`dailyrec.ranking.passes.pass_vocabularies`),
every other layer of matching shape is copied (``models.ranking.warm_start_from``). Deterministic
(``dailyrec.training.deterministic_training``): a re-run of the pass writes byte-identical files.
TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dailyrec.ranking import NAME
from dailyrec.ranking.passes import (ensure_pass_samples, pass_dir, pass_hours, pass_label,
                                     pass_start, pass_vocabularies, warm_source_for_pass)

if TYPE_CHECKING:
    from dailyrec.step import StepRun


def _label_counts(path: str, fs: Any, tasks: list[Any]) -> dict[str, int]:
    """``{"rows", "click", "conversion", <task>: positives}`` of a pass's training rows (label columns only)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cols = list(dict.fromkeys(["click", "conversion", *(t.label_column for t in tasks)]))
    with fs.open_input_file(path) as fh:
        table = pq.read_table(fh, columns=cols)
    out = {"rows": table.num_rows}
    for c in cols:
        out[c] = int(pc.sum(pc.cast(table.column(c), "float64")).as_py() or 0)
    return out


def train_pass(run: StepRun, hour: int) -> dict[str, Any]:
    """Train the pass holding ``hour`` from its warm source; write ``passes/mmoe/dt=D/hour=HH/``.

    Output (atomic): ``model/model.keras`` (warm-startable), ``saved_model/`` (serving signature of
    ``models.serving.export_ranking_model``), ``_manifest.json`` (``model_version``
    ``mmoe-<D>T<HH>-<config8>-<lineage8>``, ``warm_start``, ``hours``, ``rows``, ``admitted``,
    ``history``, ``negative_downsample_rate``, ``tasks``, ``numeric_stats``). A pass without any
    training row keeps the warm source's weights (``trained`` false).

    Returns ``{"model_dir", "model_version", "rows", "final_loss", "warm_start_from", "admitted", "trained"}``.
    Raises:
        MissingPassError: the warm source is missing (naming it); MissingHourError: an hour of the pass
            is incomplete (when the samples are built here);
        WarmStartError: the warm source's archive cannot be read (whatever ``training.warm_start_on_error``:
            a pass never trains from scratch);
        FloatingPointError: the training loss is not finite (nothing is written).
    """
    from dailyrec.ranking.artifacts import artifact_dirs
    from dailyrec.ranking.inputs import stream_dataset, training_stream
    from dailyrec.storage import MANIFEST
    from dailyrec.training import deterministic_training, fit, lineage, model_version, warm_start
    from models.ranking import build_ranking_model, load_model, save_model, task_specs, warm_start_from
    from models.serving import export_ranking_model

    store, cfg, d, timer, rc = run.store, run.cfg, run.cur_date, run.timer, run.cfg.ranking
    start, hours = pass_start(cfg, hour), pass_hours(cfg, hour)
    label = pass_label(d, start)
    src_label, src_dir = warm_source_for_pass(store, cfg, NAME, d, start)
    samples_dir = ensure_pass_samples(run, start)
    samples = f"{samples_dir}/train.parquet"
    tasks = rc.resolved_tasks()
    with timer.step("load"):
        sman = store.read_json(f"{samples_dir}/{MANIFEST}")
        src_man = store.read_json(f"{src_dir}/{MANIFEST}")
        src_keras = artifact_dirs(src_dir, "main")[0]
        vocabularies, admitted, admission = pass_vocabularies(store, src_keras, d, start)
        counts = _label_counts(samples, store.fs, tasks)
    n = counts["rows"]
    nstats = src_man.get("numeric_stats") or None
    run.log.info("pass %s (hours %s): %d training rows (%d clicks) from %s (%s); admitted ids added: %s%s",
                 label, hours, n, counts["click"], src_label, src_dir, admitted or "none",
                 "" if admission else " (no admission state for this pass: the warm source's vocabularies)")

    import keras

    keras.utils.clear_session()  # fresh name counters: the same files whatever ran before in this process
    deterministic_training(rc.seed)
    with timer.step("build"):
        model = build_ranking_model(rc, cfg.features, vocabularies, kind=rc.kind, seed=rc.seed, numeric_stats=nstats)
    warm = warm_start(run, model, (src_label, src_dir), src_keras, load_model, warm_start_from,
                      label=f"{rc.kind} pass {label}")
    if warm.get("from") is None:
        from dailyrec.errors import WarmStartError

        raise WarmStartError(f"pass {label}: could not warm start from {src_label} ({src_dir}): "
                             f"{warm.get('failed')}; a pass never trains from scratch")
    history: dict[str, list[float]] = {}
    final_loss = None
    examples_per_s = 0.0
    if n:
        stream = training_stream(samples, list(cfg.features.spec), vocabularies, batch_size=rc.batch_size,
                                 seed=rc.seed, buffer_rows=cfg.training.shuffle_buffer_rows, filesystem=store.fs,
                                 tasks=tasks)
        ckpt = store.local_path(store.partition(f"checkpoints/{NAME}", d, start))
        tb = store.local_path(store.partition(f"tensorboard/{NAME}", d, start))
        result = fit(run, model, stream_dataset(stream, tasks), rows=n, epochs=cfg.passes.epochs,
                     label=f"{rc.kind} pass {label}", ckpt_dir=str(ckpt / "main"), tb_dir=str(tb / "main"),
                     shuffle=False, stream=stream)
        history, final_loss, examples_per_s = result.history, result.final_loss, result.examples_per_s
        bad = [k for k, v in history.items() if any(not math.isfinite(x) for x in v)]
        if bad:
            raise FloatingPointError(f"pass {label}: training diverged (non-finite {bad}: {history}); "
                                     f"nothing written, {src_label} stays the serving model")
    else:
        run.log.warning("pass %s has no training row: the pass model keeps the weights of %s", label, src_label)

    final = pass_dir(store, NAME, d, start)
    with store.atomic_output(final) as tmp:
        keras_dir, sm_dir = artifact_dirs(tmp, "main")
        with timer.step("save"):
            save_model(model, keras_dir)
            export_ranking_model(model, sm_dir)
        lin = lineage(store, [samples], warm)
        version = model_version(NAME, label, cfg, lin)
        rate = float(sman.get("negative_downsample_rate", rc.negative_downsample_rate))
        manifest = run.manifest(
            inputs=[samples, src_dir], rows={"train": n, "clicks": counts["click"],
                                             "conversions": counts["conversion"]},
            model_version=version, kind=rc.kind, lineage=lin, hour=start, hours=hours, pass_label=label,
            warm_start=warm, admitted=admitted, admission_state=admission, trained=bool(n),
            history=history, final_loss=final_loss, examples_per_s=examples_per_s,
            params=int(model.count_params()), negative_downsample_rate=rate, numeric_stats=nstats,
            tasks=task_specs(tasks), epochs=cfg.passes.epochs, batch_size=rc.batch_size,
            loss_weights=rc.task_weights(),
            artifacts={"main": {"kind": rc.kind, **dict(zip(("keras", "saved_model"),
                                                             artifact_dirs(final, "main")))}})
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    run.log.info("pass model %s written to %s (warm start from %s, final loss %s)", version, final, src_label,
                 final_loss)
    return {"model_dir": final, "model_version": version, "rows": n, "final_loss": final_loss,
            "warm_start_from": src_label, "admitted": admitted, "trained": bool(n)}


def publish_pass(run: StepRun, hour: int, prequential: str | None = None) -> str:
    """Write the publish pointer ``registry/mmoe/dt=D/hour=HH/published.json`` of the trained pass
    (the fields of the daily ``published.json`` the scorer reads, :mod:`dailyrec.scoring`: saved
    model, Keras model, version, kind, down-sample rate, tasks; plus ``hour``, ``hours``,
    ``warm_start`` and the path of the pass's prequential metrics). Returns the pointer's path.

    Raises ``FileNotFoundError`` naming the pass dir when the pass was not trained."""
    from dailyrec.ranking.artifacts import artifact_dirs
    from dailyrec.ranking.evaluation import tasks_of
    from dailyrec.registry import mark_pass_published
    from dailyrec.storage import MANIFEST

    start = pass_start(run.cfg, hour)
    mdir = pass_dir(run.store, NAME, run.cur_date, start)
    run.require(f"{mdir}/{MANIFEST}", hint="train the pass first (hourly.train_mmoe_pass)")
    man = run.store.read_json(f"{mdir}/{MANIFEST}")
    keras_dir, saved_model = artifact_dirs(mdir, "main")
    info = {"model_version": man["model_version"], "kind": man.get("kind", "mmoe"), "saved_model": saved_model,
            "keras_model": keras_dir, "negative_downsample_rate": man["negative_downsample_rate"],
            "tasks": tasks_of(man), "hours": man["hours"], "pass": man["pass_label"],
            "warm_start": {"from": man["warm_start"]["from"], "model_version": man["warm_start"].get("model_version")},
            "prequential": prequential}
    return mark_pass_published(run.store, NAME, run.cur_date, start, {"model_dir": mdir, **info})
