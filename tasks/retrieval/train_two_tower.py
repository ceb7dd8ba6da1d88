"""Train the two-tower retrieval model for one ``cur_date``.

    python -m tasks.retrieval.train_two_tower --cur-date 2026-11-02 [--set training.epochs=3]

Inputs: ``samples/dt=D/train.parquet`` (tasks.retrieval.sample) and ``features/dt=D/vocabularies.json``
(tasks.retrieval.features), streamed row group by row group (``dailyrec.stream.ParquetStream``:
feature values become integer ids on the Arrow side, memory is bounded by
``training.shuffle_buffer_rows``). Warm start from the newest gate-passed model strictly before ``cur_date``
(known ids keep their embedding rows, new ids are initialised; dense layers copied). Exponential
learning-rate decay with a floor; a checkpoint every ``training.checkpoint_every_steps`` steps
(the last ``training.checkpoints_keep`` kept) under ``checkpoints/two_tower/dt=D/``; TensorBoard
logs under ``tensorboard/two_tower/dt=D/`` (run logs, outside the output: they hold wall times)
and per-epoch metrics in the log. Deterministic: a re-run with the same inputs, warm start and
config writes byte-identical files (``dailyrec.training.deterministic_training``).

Output (atomic), ``models/two_tower/dt=D/``: ``model/`` (Keras archive for warm start),
``user_tower/`` and ``item_tower/`` (SavedModels with raw-feature serving signatures),
``_manifest.json`` (history, warm-start stats, lineage, examples/s, model version
``tt-<date>-<config8>-<lineage8>``, ``dailyrec.training.model_version``).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.registry import model_dir
from dailyrec.step import begin
from dailyrec.training import (deterministic_training, fit, lineage, model_version, sample_stream, warm_source,
                               warm_start)

NAME = "two_tower"


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Train (warm start, checkpoints) and export the day's two-tower model and towers."""
    from dailyrec.features import read_numeric_stats
    from models.serving import export_towers
    from models.two_tower import build_two_tower, load_model, save_model, warm_start_from

    run = begin("train_two_tower", cur_date, cfg)
    store, tc = run.store, cfg.training
    samples, vocab_path = run.path("samples", "train.parquet"), run.path("features", "vocabularies.json")
    run.require(samples, vocab_path, hint=f"run the features and sample steps for {run.cur_date} first")
    with run.timer.step("load"):
        vocabularies = store.read_json(vocab_path)
        stream, n, n_pos = sample_stream(store, cfg, samples, vocabularies)
    if n_pos == 0:
        raise ValueError(f"{samples}: no positive rows to train on")
    run.log.info("training %s on %d rows (%d positives) from %s, loss=%s", run.cur_date, n, n_pos, samples, tc.loss)

    deterministic_training(tc.seed)
    with run.timer.step("build"):
        model = build_two_tower(tc, cfg.features, vocabularies, numeric_stats=read_numeric_stats(store, run.cur_date))
    src = warm_source(run, NAME)
    warm = warm_start(run, model, src, src[1] if src else None, load_model, warm_start_from, label=NAME,
                      archive=f"{src[1]}/model" if src else None)
    ckpt_dir = str(store.local_path(run.partition(f"checkpoints/{NAME}")))
    tb_dir = str(store.local_path(run.partition(f"tensorboard/{NAME}")))
    final = model_dir(store, NAME, run.cur_date)
    with store.atomic_output(final) as tmp:
        ds = stream.dataset()
        result = fit(run, model, ds, rows=n, epochs=tc.epochs, label=NAME, ckpt_dir=ckpt_dir, tb_dir=tb_dir,
                     stream=stream)
        with run.timer.step("save"):
            save_model(model, f"{tmp}/model")
            export_towers(model, tmp)
        lin = lineage(store, [samples, vocab_path], warm)
        version = model_version("tt", run.cur_date, cfg, lin)
        manifest = run.manifest(
            inputs=[samples, vocab_path], rows={"train": n, "positives": n_pos}, lineage=lin,
            model_version=version, history=result.history, warm_start=warm, tensorboard=tb_dir,
            examples_per_s=result.examples_per_s, loss=tc.loss, checkpoints=ckpt_dir, final_loss=result.final_loss)
        store.write_json(f"{tmp}/_manifest.json", manifest)
    run.log.info("model %s written to %s (%.0f examples/s)", version, final, manifest["examples_per_s"])
    return {"model_dir": final, "model_version": version, "rows": n, "final_loss": manifest["final_loss"],
            "examples_per_s": manifest["examples_per_s"], "warm_start_from": warm["from"]}


if __name__ == "__main__":
    cli.main(step)
