"""Incremental training of the two-tower model on one pass (hourly_training's ``train_pass``).

    python -m tasks.hourly.train_pass --cur-date 2026-11-02 --hour 5 [--set passes.epochs=2]

Warm start from ``dailyrec.passes.warm_source_for_pass`` (the previous pass of the day, or the
gate-passed daily base of ``D - 1`` for the day's first pass; ``MissingPassError`` otherwise: the
chain stops, no data is skipped) into a model built with the pass's vocabularies
(``pass_samples/dt=D/hour=HH/vocabularies.json``: base ∪ admitted ids), through the daily run's
id remap (``models.two_tower.warm_start_from``: known ids keep their rows, newly admitted ids get
fresh rows; dense layers copied). Then ``passes.epochs`` epochs over the pass's samples only,
streamed row group by row group (``dailyrec.stream.ParquetStream``, bounded memory), with the
daily run's loss and optimizer (``training.*``). Deterministic: a re-run writes the same bytes.
A pass without positives keeps the warm-started weights (``trained: false`` in the manifest).

Output (atomic), ``passes/two_tower/dt=D/hour=HH/``: ``model/`` (Keras archive: the checkpoint the
next pass warm starts from), ``user_tower/``, ``item_tower/`` (SavedModels), ``vocabularies.json``,
``_manifest.json`` (``model_version`` ``tt-<D>T<HH>-<config8>-<lineage8>``, ``warm_start``,
``hours``, ``rows``, ``admitted``, ``touched_items``). Then older checkpoints no later pass needs
are pruned (``training.checkpoint_per_pass``, ``passes.checkpoints_keep``; ``dailyrec.passes``).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin

NAME = "two_tower"


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Train the pass holding ``hour`` from its warm source; write ``passes/two_tower/dt=D/hour=HH/``."""
    import keras

    from dailyrec.passes import (pass_dir, pass_hours, pass_label, pass_start, prune_checkpoints,
                                 warm_source_for_pass)
    from dailyrec.training import deterministic_training, fit, lineage, model_version, sample_stream, warm_start
    from models.serving import export_towers
    from models.two_tower import build_two_tower, load_model, save_model, warm_start_from

    run = begin("train_pass", cur_date, cfg)
    store, tc, start = run.store, cfg.training, pass_start(cfg, hour)
    label = pass_label(run.cur_date, start)
    sdir = run.partition("pass_samples", start)
    samples, vocab_path = f"{sdir}/train.parquet", f"{sdir}/vocabularies.json"
    run.require(samples, vocab_path, f"{sdir}/_manifest.json",
                hint=f"run tasks.hourly.pass_samples --cur-date {run.cur_date} --hour {start} first")
    src = warm_source_for_pass(store, cfg, NAME, run.cur_date, start)  # MissingPassError names a broken chain
    smanifest = store.read_json(f"{sdir}/_manifest.json")
    with run.timer.step("load"):
        vocabularies = store.read_json(vocab_path)
        stream, n, n_pos = sample_stream(store, cfg, samples, vocabularies)
    run.log.info("pass %s: training on %d rows (%d positives) from %s, warm start from %s", label, n, n_pos,
                 samples, src[0])

    keras.utils.clear_session()  # fresh name counters: the same files whatever ran before in this process
    deterministic_training(tc.seed)
    with run.timer.step("build"):
        model = build_two_tower(tc, cfg.features, vocabularies)
    warm = warm_start(run, model, src, src[1], load_model, warm_start_from, label=f"{NAME} pass {label}",
                      archive=f"{src[1]}/model")
    logs = f"{NAME}_passes"
    ckpt_dir = str(store.local_path(run.partition(f"checkpoints/{logs}", start)))
    tb_dir = str(store.local_path(run.partition(f"tensorboard/{logs}", start)))
    final = pass_dir(store, NAME, run.cur_date, start)
    history: dict[str, Any] = {}
    examples_per_s, final_loss = 0.0, None
    with store.atomic_output(final) as tmp:
        if n_pos > 0:
            result = fit(run, model, stream.dataset(), rows=n, epochs=cfg.passes.epochs, label=f"{NAME} pass {label}",
                         ckpt_dir=ckpt_dir, tb_dir=tb_dir, stream=stream)
            history, examples_per_s, final_loss = result.history, result.examples_per_s, result.final_loss
        else:
            run.log.warning("pass %s has no positive row: the warm-started model is kept as the pass's model", label)
        with run.timer.step("save"):
            save_model(model, f"{tmp}/model")
            export_towers(model, tmp)
            store.write_text(f"{tmp}/vocabularies.json", store.read_text(vocab_path))
        lin = lineage(store, [samples, vocab_path], warm)
        version = model_version("tt", label, cfg, lin)
        manifest = run.manifest(
            inputs=[samples, vocab_path], rows={"train": n, "positives": n_pos}, lineage=lin, model_version=version,
            pass_label=label, hours=pass_hours(cfg, start), warm_start=warm, trained=n_pos > 0, history=history,
            epochs=cfg.passes.epochs, output_dim=model.user_tower.output_dim, examples_per_s=examples_per_s,
            final_loss=final_loss, loss=tc.loss,
            admitted=smanifest.get("admitted", {}), newly_admitted=smanifest.get("newly_admitted", {}),
            touched_items=smanifest["rows"].get("touched_items", 0),
            tensorboard=tb_dir, checkpoints=ckpt_dir)
        store.write_json(f"{tmp}/_manifest.json", manifest)
    pruned = prune_checkpoints(store, cfg, NAME, run.cur_date, start)
    run.log.info("pass model %s written to %s (warm start from %s)", version, final, warm.get("from"))
    return {"model_dir": final, "model_version": version, "rows": n, "positives": n_pos, "final_loss": final_loss,
            "warm_start_from": warm.get("from"), "pruned": pruned, "pass": label}


if __name__ == "__main__":
    cli.main(step)
