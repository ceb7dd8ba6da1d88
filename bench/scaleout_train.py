"""Scale-out benchmark, part ``train``: multi-worker two-tower training on this machine
(``./dev bench scaleout --only train [--train-events N] [--train-batch-size B] [--train-epochs E]``).

One demo day (``dailyrec.demo.generator``, ``--train-events`` events, the demo's users and items)
goes through the real features and sample steps; then the pipeline's two-tower (softmax with logQ,
the default config) trains on that day's ``train.parquet`` with ``--train-epochs`` epochs of global
batch ``--train-batch-size``:

* ``1 worker`` and ``2 workers``: the same launcher the training step uses under
  ``training.distribute=multi_worker`` (``dailyrec.distributed.prepare`` + ``launch``: worker
  processes with ``TF_CONFIG`` on 127.0.0.1, ``MultiWorkerMirroredStrategy``, the custom loop,
  ``shard_by=batch``); a one-worker cluster is the baseline of the ratio, measured in the same run.
  Examples/s = global rows of the **last** epoch / its seconds on the chief (steady state: the first
  epoch also traces the step function; process start-up is reported apart as ``*_startup_s``).
* ``model.fit``: the one-process path (``training.distribute=none``) on the same stream and model,
  last epoch, for reference.

Communication per step (measured by the workers from the gradient tensors they hand to the
all-reduce, not computed from a formula): ``comm_dense_grad_bytes_per_step`` (dense gradients:
ring all-reduce), ``comm_sparse_grad_bytes_per_step`` (embedding rows a worker's batch touches, as
``IndexedSlices`` values + int64 indices: all-gathered), ``comm_gather_bytes_per_step`` (the
softmax's all-gathered candidate vectors, keys and log q, and their gradient), per worker, with 2
workers; ``dense_equivalent_grad_bytes`` = 4 x trainable parameters (what a dense all-reduce of
every variable would move). ``four_node_note`` turns these into what a 4-node run needs.

On 2 cores, two workers share the cores the one worker had: expect no speed-up (ratio <= 1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = "2026-11-01"
MB = 1024 * 1024


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scaleout --only train")
    ap.add_argument("--train-events", type=int, default=200_000, help="events of the demo day")
    ap.add_argument("--train-batch-size", type=int, default=1024, help="global batch")
    ap.add_argument("--train-epochs", type=int, default=2, help="epochs (the last one is timed)")
    ap.add_argument("--train-root", default=None, help="data root (default .work/bench/scaleout_train)")
    args, _ = ap.parse_known_args(argv)
    if args.train_epochs < 2:
        ap.error("--train-epochs must be >= 2 (the first epoch traces; the last is timed)")
    return args


def _world(args: argparse.Namespace) -> tuple[Any, str]:
    from dailyrec.config import REPO_ROOT, load_config
    from dailyrec.demo.generator import generate
    from dailyrec.storage import open_store
    from tasks.ingest.validate_day import step as validate
    from tasks.retrieval.features import step as features
    from tasks.retrieval.sample import step as sample

    root = Path(args.train_root or REPO_ROOT / ".work" / "bench" / "scaleout_train")
    shutil.rmtree(root, ignore_errors=True)
    cfg = load_config(overrides={
        "storage.data_root": str(root), "demo.events_per_day": args.train_events, "demo.days": 1,
        "sampling.window_days": 1, "validation.min_rows_per_day": 100, "training.warm_start": False,
        "training.epochs": args.train_epochs, "training.batch_size": args.train_batch_size}, environ={})
    generate(cfg, DAY, 1)
    validate(DAY, cfg)
    features(DAY, cfg)
    sample(DAY, cfg)
    return cfg, open_store(cfg).partition("samples", DAY) + "/train.parquet"


def _model_and_stream(cfg: Any, samples: str) -> tuple[Any, Any]:
    from dailyrec.storage import open_store
    from dailyrec.stream import ParquetStream, id_encoders
    from dailyrec.training import deterministic_training
    from models.two_tower import build_two_tower

    store, tc = open_store(cfg), cfg.training
    vocab = store.read_json(store.partition("features", DAY) + "/vocabularies.json")
    deterministic_training(tc.seed)
    model = build_two_tower(tc, cfg.features, vocab)
    stream = ParquetStream(samples, id_encoders(cfg.features.spec, vocab), extra={"label": "float32", "log_q": "float32"},
                           batch_size=tc.batch_size, seed=tc.seed, buffer_rows=tc.shuffle_buffer_rows, filesystem=store.fs)
    return model, stream


def _workers(cfg: Any, samples: str, n: int, scratch: Path) -> dict[str, Any]:
    from dailyrec.distributed import JOB_FILE, launch, prepare

    model, stream = _model_and_stream(cfg, samples)
    job = prepare(cfg, model, stream, epochs=cfg.training.epochs, label=f"bench-{n}w",
                  ckpt_dir=str(scratch / f"ckpt-{n}"), tb_dir=str(scratch / f"tb-{n}"), strategy="multi_worker")
    t0 = time.perf_counter()
    results = launch(Path(job.job_dir) / JOB_FILE, n)
    wall = time.perf_counter() - t0
    chief = results[0]
    last_rows = chief["examples"] / cfg.training.epochs
    return {**chief, "wall_s": round(wall, 2), "startup_s": round(wall - chief["seconds"], 2),
            "examples_per_s": round(last_rows / chief["epoch_seconds"][-1], 1),
            "final_loss": chief["history"]["loss"][-1]}


def _model_fit(cfg: Any, samples: str) -> dict[str, Any]:
    import keras

    model, stream = _model_and_stream(cfg, samples)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.t0)

    hist = model.fit(stream.dataset(), epochs=cfg.training.epochs, verbose=0, callbacks=[Clock()])
    return {"examples_per_s": round(stream.num_rows / times[-1], 1), "epoch_seconds": [round(t, 3) for t in times],
            "final_loss": round(float(hist.history["loss"][-1]), 6)}


def four_node_note(batch: int, dim: int, two: dict[str, Any], one_step_s: float) -> str:
    """What a 4-node run needs, from the measured 2-worker payloads and the 1-worker step time."""
    w = 4
    dense = two["dense_grad_bytes_per_step"]
    sparse2 = two["sparse_grad_bytes_per_step"]
    sparse4 = sparse2 * 2 / w        # rows touched per worker shrink with the local batch (upper bound: sparse2)
    gather = two["gather_bytes_per_step"]
    wire = 2 * (w - 1) / w * dense + (w - 1) * sparse4 + (w - 1) / w * gather
    step4 = one_step_s / w            # the compute of a step split over 4 nodes, if it scaled perfectly
    gbit = wire * 8 / step4 / 1e9 if step4 > 0 else float("nan")
    return (f"A 4-node run (one worker per node, global batch {batch}, shard_by=batch) moves about "
            f"{wire / MB:.2f} MB per worker per step: ring all-reduce of {dense / MB:.2f} MB dense gradients "
            f"(2*3/4 of it on the wire), all-gather of the sparse embedding-row gradients ({sparse4 / MB:.2f} MB "
            f"per worker, from {sparse2 / MB:.2f} MB measured with 2 workers, halved for half the rows) from 3 "
            f"peers, and the softmax's all-gathered candidates ({gather / MB:.2f} MB, {dim}-d vectors + keys + "
            f"log q and their gradient). With the measured 1-worker step of {one_step_s * 1000:.0f} ms split 4 "
            f"ways ({step4 * 1000:.0f} ms), hiding it needs about {gbit:.1f} Gbit/s per node; below that the "
            f"step is network-bound (then raise the global batch, or shard_by=row_group, which does not remove "
            f"the all-reduce). Each node needs: TF_CONFIG listing the 4 worker addresses and its own index (a "
            f"pod per worker: docs/scale-out.md), the day's samples and vocabularies on storage every node reads "
            f"(storage.data_root as an object-store URI), the chief's checkpoint folder on shared storage, "
            f"and the task process that restores the final checkpoint and exports the towers.")


def measure(argv: list[str]) -> dict[str, Any]:
    """The ``train`` part's metrics (module doc)."""
    args = _args(argv)
    cfg, samples = _world(args)
    scratch = Path(cfg.storage.data_root) / "bench-train"
    one = _workers(cfg, samples, 1, scratch)
    two = _workers(cfg, samples, 2, scratch)
    fit = _model_fit(cfg, samples)
    batch = cfg.training.batch_size
    steps = one["steps"] / cfg.training.epochs
    one_step_s = one["epoch_seconds"][-1] / steps
    comm = {k: two[f"{k}_bytes_per_step"] for k in ("dense_grad", "sparse_grad", "gather")}
    import pyarrow.parquet as pq

    return {
        "train_examples_per_s_1_worker": one["examples_per_s"],
        "train_examples_per_s_2_workers": two["examples_per_s"],
        "train_2_vs_1_worker_ratio": round(two["examples_per_s"] / one["examples_per_s"], 3),
        "train_examples_per_s_model_fit": fit["examples_per_s"],
        "train_rows": pq.ParquetFile(samples).metadata.num_rows,
        "train_global_batch": batch,
        "train_epochs": cfg.training.epochs,
        "train_steps_per_epoch": int(steps),
        "train_1_worker_startup_s": one["startup_s"],
        "train_2_workers_startup_s": two["startup_s"],
        "train_final_loss_1_worker": one["final_loss"],
        "train_final_loss_2_workers": two["final_loss"],
        "train_final_loss_model_fit": fit["final_loss"],
        "trainable_params": two["trainable_params"],
        "dense_equivalent_grad_bytes": 4 * two["trainable_params"],
        "comm_dense_grad_bytes_per_step": comm["dense_grad"],
        "comm_sparse_grad_bytes_per_step": comm["sparse_grad"],
        "comm_gather_bytes_per_step": comm["gather"],
        "comm_bytes_per_step_2_workers": round(sum(comm.values()), 1),
        "four_node_note": four_node_note(batch, cfg.training.output_dim, two, one_step_s),
        "detail": {"1_worker": {k: one[k] for k in ("epoch_seconds", "wall_s", "steps", "examples", "history")},
                   "2_workers": {k: two[k] for k in ("epoch_seconds", "wall_s", "steps", "examples", "history")},
                   "model_fit": fit},
        "note": ("2 cores: the 2 workers share the cores 1 worker had, so no speed-up is expected; the ratio "
                 "measures the cost of the all-reduce and the repeated reading of shard_by=batch here."),
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1:]), indent=2))
