"""Train the two-tower retrieval model for one ``cur_date``.

    python -m tasks.retrieval.train_two_tower --cur-date 2026-11-02 [--set training.epochs=3]

Inputs: ``samples/dt=D/train.parquet`` (tasks.retrieval.sample) and ``features/dt=D/vocabularies.json``
(tasks.retrieval.features). Warm start from the newest gate-passed model strictly before ``cur_date``
(known ids keep their embedding rows, new ids are initialised; dense layers copied). Exponential
learning-rate decay with a floor; a checkpoint every ``training.checkpoint_every_steps`` steps
(the last ``training.checkpoints_keep`` kept) under ``checkpoints/two_tower/dt=D/``; TensorBoard
logs and per-epoch metrics in the log.

Output (atomic), ``models/two_tower/dt=D/``: ``model/`` (Keras archive for warm start),
``user_tower/`` and ``item_tower/`` (SavedModels with raw-feature serving signatures),
``tensorboard/``, ``_manifest.json`` (history, warm-start stats, examples/s, model version).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.registry import model_dir, warm_start_source
from dailyrec.step import begin
from dailyrec.training import model_version, training_callbacks

NAME = "two_tower"


def _warm_start(run: Any, model: Any) -> dict[str, Any]:
    """Copy the newest gate-passed model before ``cur_date`` into ``model``; ``{"from": ...}``."""
    from models.two_tower import load_model, warm_start_from

    src = warm_start_source(run.store, NAME, run.cur_date) if run.cfg.training.warm_start else None
    if src is None:
        run.log.info("cold start (no gate-passed model before %s)", run.cur_date)
        return {"from": None}
    with run.timer.step("warm_start"):
        stats = warm_start_from(model, load_model(f"{src[1]}/model", compile=False))
    run.log.info("warm start from %s: %s", src[0], json.dumps(stats.get("embeddings", stats), default=str)[:500])
    return {"from": src[0], "path": src[1], "stats": stats}


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Train (warm start, checkpoints) and export the day's two-tower model and towers."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    from dailyrec.inputs import dataset, feature_arrays
    from models.serving import export_towers
    from models.two_tower import build_two_tower, save_model

    run = begin("train_two_tower", cur_date, cfg)
    store, tc = run.store, cfg.training
    samples, vocab_path = run.path("samples", "train.parquet"), run.path("features", "vocabularies.json")
    run.require(samples, vocab_path, hint=f"run the features and sample steps for {run.cur_date} first")
    with run.timer.step("load"):
        table = pq.read_table(samples, filesystem=store.fs)
        vocabularies = store.read_json(vocab_path)
        arrays = feature_arrays(table, cfg.features.spec, extra={"label": "float32", "log_q": "float32"}, where=samples)
    n, n_pos = table.num_rows, int(arrays["label"].sum())
    if n_pos == 0:
        raise ValueError(f"{samples}: no positive rows to train on")
    run.log.info("training %s on %d rows (%d positives) from %s, loss=%s", run.cur_date, n, n_pos, samples, tc.loss)

    tf.keras.utils.set_random_seed(tc.seed)
    with run.timer.step("build"):
        model = build_two_tower(tc, cfg.features, vocabularies)
    warm = _warm_start(run, model)
    ckpt_dir = store.local_path(run.partition(f"checkpoints/{NAME}"))
    shutil.rmtree(ckpt_dir, ignore_errors=True)   # a re-run starts its own checkpoints
    final = model_dir(store, NAME, run.cur_date)
    with store.atomic_output(final) as tmp:
        ds = dataset(arrays, tc.batch_size, shuffle_seed=tc.seed)
        t0 = time.perf_counter()
        with run.timer.step("fit"):
            hist = model.fit(ds, epochs=tc.epochs, verbose=0,
                             callbacks=training_callbacks(model, run.log, "two_tower", tc.epochs, str(ckpt_dir),
                                                          f"{tmp}/tensorboard", tc.checkpoint_every_steps,
                                                          tc.checkpoints_keep))
        fit_s = time.perf_counter() - t0
        with run.timer.step("save"):
            save_model(model, f"{tmp}/model")
            export_towers(model, tmp)
        history = {k: [round(float(x), 6) for x in v] for k, v in hist.history.items()}
        version = model_version("tt", run.cur_date, cfg)
        manifest = run.manifest(
            inputs=[samples, vocab_path], rows={"train": n, "positives": n_pos},
            model_version=version, history=history, warm_start=warm,
            examples_per_s=round(n * tc.epochs / fit_s, 1), loss=tc.loss,
            checkpoints=str(ckpt_dir), final_loss=history.get("loss", [None])[-1])
        store.write_json(f"{tmp}/_manifest.json", manifest)
    run.log.info("model %s written to %s (%.0f examples/s)", version, final, manifest["examples_per_s"])
    return {"model_dir": final, "model_version": version, "rows": n, "final_loss": manifest["final_loss"],
            "examples_per_s": manifest["examples_per_s"], "warm_start_from": warm["from"]}


if __name__ == "__main__":
    cli.main(step)
