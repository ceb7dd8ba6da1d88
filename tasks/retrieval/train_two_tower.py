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
import logging
import shutil
import time
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.registry import model_dir, warm_start_source
from dailyrec.storage import Timer, make_manifest, open_store
from dailyrec.training import training_callbacks

log = logging.getLogger("dailyrec.train_two_tower")
NAME = "two_tower"


def model_version(cur_date: str, cfg: Config) -> str:
    return f"tt-{cur_date}-{cfg.digest()[:8]}"


def train_two_tower(cur_date: str, cfg: Config | None = None) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import tensorflow as tf

    from models.two_tower import build_two_tower, export_towers, load_model, save_model, warm_start_from
    from dailyrec.inputs import dataset, feature_arrays

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    tc = cfg.training
    samples = f"{store.partition('samples', cur_date)}/train.parquet"
    vocab_path = f"{store.partition('features', cur_date)}/vocabularies.json"
    for p in (samples, vocab_path):
        if not store.exists(p):
            raise FileNotFoundError(f"{p} is missing: run the features and sample steps for {cur_date} first")
    with timer.step("load"):
        table = pq.read_table(samples, filesystem=store.fs)
        vocabularies = store.read_json(vocab_path)
        specs = cfg.features.spec
        arrays = feature_arrays(table, specs, extra={"label": "float32", "log_q": "float32"}, where=samples)
    n = table.num_rows
    n_pos = int(arrays["label"].sum())
    if n_pos == 0:
        raise ValueError(f"{samples}: no positive rows to train on")
    log.info("training %s on %d rows (%d positives) from %s, loss=%s", cur_date, n, n_pos, samples, tc.loss)

    tf.keras.utils.set_random_seed(tc.seed)
    with timer.step("build"):
        model = build_two_tower(tc, cfg.features, vocabularies)
    warm: dict[str, Any] = {"from": None}
    src = warm_start_source(store, NAME, cur_date) if tc.warm_start else None
    if src is not None:
        with timer.step("warm_start"):
            old = load_model(f"{src[1]}/model", compile=False)
            stats = warm_start_from(model, old)
        warm = {"from": src[0], "path": src[1], "stats": stats}
        log.info("warm start from %s: %s", src[0], json.dumps(stats.get("embeddings", stats), default=str)[:500])
    else:
        log.info("cold start (no gate-passed model before %s)", cur_date)

    ckpt_dir = store.local_path(store.partition(f"checkpoints/{NAME}", cur_date))
    shutil.rmtree(ckpt_dir, ignore_errors=True)   # a re-run starts its own checkpoints
    final = model_dir(store, NAME, cur_date)
    with store.atomic_output(final) as tmp:
        ds = dataset(arrays, tc.batch_size, shuffle_seed=tc.seed)
        t0 = time.perf_counter()
        with timer.step("fit"):
            hist = model.fit(ds, epochs=tc.epochs, verbose=0,
                             callbacks=training_callbacks(model, log, "two_tower", tc.epochs, str(ckpt_dir),
                                                        f"{tmp}/tensorboard", tc.checkpoint_every_steps,
                                                        tc.checkpoints_keep))
        fit_s = time.perf_counter() - t0
        with timer.step("save"):
            save_model(model, f"{tmp}/model")
            export_towers(model, tmp)
        history = {k: [round(float(x), 6) for x in v] for k, v in hist.history.items()}
        version = model_version(cur_date, cfg)
        manifest = make_manifest(
            "train_two_tower", cfg, cur_date, inputs=[samples, vocab_path], rows={"train": n, "positives": n_pos},
            timings=timer.timings, model_version=version, history=history, warm_start=warm,
            examples_per_s=round(n * tc.epochs / fit_s, 1), loss=tc.loss,
            checkpoints=str(ckpt_dir), final_loss=history.get("loss", [None])[-1])
        store.write_json(f"{tmp}/_manifest.json", manifest)
    log.info("model %s written to %s (%.0f examples/s)", version, final, manifest["examples_per_s"])
    return {"model_dir": final, "model_version": version, "rows": n, "final_loss": manifest["final_loss"],
            "examples_per_s": manifest["examples_per_s"], "warm_start_from": warm["from"]}


def main() -> None:
    from dailyrec import cli

    args = cli.parser(__doc__.splitlines()[0]).parse_args()
    cli.run(lambda: train_two_tower(args.cur_date, cli.config_from_args(args)))


if __name__ == "__main__":
    main()
