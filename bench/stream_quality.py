"""Quality check of the streaming training input: recall@50 with the default bounded shuffle
buffer vs a full shuffle of the training file, on MovieLens-100K and on generated demo logs.

``dailyrec.stream.ParquetStream`` mixes rows only inside a buffer of
``training.shuffle_buffer_rows`` rows (row groups visited in a seeded order). Setting the buffer
above the file's row count makes every epoch a full shuffle of the whole file (what the in-memory
input did, once per run): the difference between the two is the price of bounded memory.

* MovieLens-100K: the protocol of ``bench/retrieval_quality_ml100k.py`` (time split at
  1998-04-01, its tuned softmax configuration, the pipeline's sample and training steps and the
  exported towers), for ``--seeds`` seeds; the default buffer vs the full shuffle.
* Demo logs: ``--days`` generated days (``demo.*`` defaults, 200k events a day), features, samples,
  cold-start training and ``tasks.retrieval.evaluate_two_tower`` on the last day; same comparison.

Both use the row groups the sample step writes (``dailyrec.stream.ROW_GROUP_ROWS``) and the default
``training.shuffle_buffer_rows``: the buffer holds two row groups of a file of several.

    ./dev bench stream_quality [--seeds 2] [--days 2] [--skip-movielens] [--skip-demo]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import load_avg, save_result  # noqa: E402
from dailyrec.config import REPO_ROOT  # noqa: E402

NAME = "stream_quality"
FULL = 10**9  # a buffer above any file: every epoch shuffles the whole file


def _rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def movielens(seeds: list[int], data: str) -> dict[str, Any]:
    from bench import retrieval_quality_ml100k as ml
    from dailyrec.config import load_config

    root = tempfile.mkdtemp(prefix="dailyrec-streamq-ml-")
    try:
        cfg = load_config(files=[REPO_ROOT / "config" / "imported-logs.yaml"],
                          overrides={**ml.PROTOCOL, "storage.data_root": root})
        ml.import_data(cfg, data)
        ev = ml.eval_set(cfg, ml.T_TEST, ml.DATA_END)
        out: dict[str, Any] = {"users": len(ev.users), "runs": {}}
        for seed in seeds:
            base = ml.run_config(cfg, "softmax_logq", seed, [])
            full = ml.run_two_tower(base.with_overrides({"training.shuffle_buffer_rows": FULL}), ev)
            rows = _rows(full["train_path"])
            buf = base.training.shuffle_buffer_rows
            bounded = ml.run_two_tower(base, ev)
            out["runs"][seed] = {"train_rows": rows, "buffer_rows": buf,
                                 "recall_at_50_full_shuffle": full["metrics"]["recall_at_50"],
                                 "recall_at_50_bounded": bounded["metrics"]["recall_at_50"]}
            print("movielens", seed, out["runs"][seed], flush=True)
        return _summary(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def demo(seeds: list[int], days: int) -> dict[str, Any]:
    from dailyrec.config import load_config
    from dailyrec.demo.generator import generate
    from dailyrec.validation import validate_days
    from dailyrec.storage import open_store

    root = tempfile.mkdtemp(prefix="dailyrec-streamq-demo-")
    try:
        base_over = {"storage.data_root": root, "training.warm_start": False}
        cfg = load_config(overrides=base_over)
        start = cfg.demo.start_date
        generate(cfg, start, days)
        store = open_store(cfg)
        validate_days(cfg, store.list_partitions("logs"))
        import datetime as dt

        day = (dt.date.fromisoformat(start) + dt.timedelta(days=days - 1)).isoformat()
        from tasks.retrieval.evaluate_two_tower import step as evaluate
        from tasks.retrieval.features import step as features
        from tasks.retrieval.sample import step as sample
        from tasks.retrieval.train_two_tower import step as train

        features(day, cfg)
        sample(day, cfg)
        rows = _rows(f"{store.partition('samples', day)}/train.parquet")
        out: dict[str, Any] = {"day": day, "train_rows": rows, "runs": {}}
        for seed in seeds:
            res = {}
            for name, buf in (("full_shuffle", FULL), ("bounded", cfg.training.shuffle_buffer_rows)):
                c = load_config(overrides={**base_over, "training.seed": seed, "training.shuffle_buffer_rows": buf})
                train(day, c)
                ev = evaluate(day, c)
                res[f"recall_at_50_{name}"] = ev["new"]  # the gate metric, evaluation.gate_metric = recall_at_50
            res["buffer_rows"] = cfg.training.shuffle_buffer_rows
            out["runs"][seed] = res
            print("demo", seed, res, flush=True)
        return _summary(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _summary(out: dict[str, Any]) -> dict[str, Any]:
    full = [r["recall_at_50_full_shuffle"] for r in out["runs"].values()]
    bounded = [r["recall_at_50_bounded"] for r in out["runs"].values()]
    out["recall_at_50_full_shuffle"] = round(statistics.mean(full), 4)
    out["recall_at_50_bounded"] = round(statistics.mean(bounded), 4)
    out["bounded_vs_full"] = round(out["recall_at_50_bounded"] / out["recall_at_50_full_shuffle"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.retrieval_quality_ml100k import DEFAULT_DATA

    ap = argparse.ArgumentParser(prog=f"./dev bench {NAME}", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--skip-movielens", action="store_true")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    t0, load0 = time.perf_counter(), load_avg()
    metrics: dict[str, Any] = {}
    if not args.skip_movielens:
        if Path(args.data).exists():
            metrics["movielens"] = movielens(seeds, args.data)
        else:
            metrics["movielens"] = {"skipped": f"no MovieLens-100K at {args.data}"}
    if not args.skip_demo:
        metrics["demo"] = demo(seeds, args.days)
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["load_avg_1m"] = {"start": load0, "end": load_avg()}
    save_result(NAME, argv, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
