"""Scale-out benchmark: the distributed engines of docs/scale-out.md, each measured on this machine.

Usage::

    ./dev bench scaleout [--only celery,train,features] [--no-save]

Parts (each in its own module, ``measure(args) -> dict`` of metrics, keys named by the issue):

- ``celery`` (``bench/scaleout_celery.py``): ``celery_dag_wall_s``, one demo date of
  ``daily_retrieval`` through CeleryExecutor workers, with the local executor's wall time of the
  same run as the baseline.
- ``train`` (``bench/scaleout_train.py``): ``train_examples_per_s_1_worker``,
  ``train_examples_per_s_2_workers`` (MultiWorkerMirroredStrategy on loopback), communication volume
  per step.
- ``features`` (``bench/scaleout_features.py``): ``features_s_duckdb_10m``, ``features_s_spark_10m``
  (and the 1M figures).
- ``redis`` (``bench/scaleout_redis.py``): ``redis_publish_vectors_per_s_single`` / ``_cluster``, the
  publish into one redis-server vs a 3-master Redis Cluster started on loopback, and how evenly a
  version spreads over the primaries.

A run of some parts keeps the other parts' figures of ``bench/results/scaleout.json``: ``parts``
holds per part the command, date, load average at start/end and the part's own ``metrics``, and every
part's metrics are also copied to the top level (the issue's keys), so the file always holds the latest
measurement of every part; ``parts_in_last_run`` names what the last command measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS_DIR, command_line, load_avg, save_result  # noqa: E402

NAME = "scaleout"
PARTS = {"celery": "bench.scaleout_celery", "train": "bench.scaleout_train", "features": "bench.scaleout_features",
         "redis": "bench.scaleout_redis"}


def previous_metrics() -> dict[str, Any]:
    """The metrics of the last ``bench/results/scaleout.json`` ({} when there is none)."""
    path = RESULTS_DIR / f"{NAME}.json"
    return json.loads(path.read_text())["metrics"] if path.exists() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    ap.add_argument("--no-save", action="store_true", help="print the metrics; write nothing")
    args, rest = ap.parse_known_args(argv)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in only if p not in PARTS]
    if bad:
        ap.error(f"--only: unknown part(s) {bad}; parts: {', '.join(PARTS)}")
    metrics = previous_metrics()
    parts = dict(metrics.get("parts") or {})
    for name in only:
        mod = importlib.import_module(PARTS[name])
        load0 = load_avg()
        got = mod.measure(rest)
        parts[name] = {"command": command_line(NAME, argv), "date": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"), "load_avg_1m_start": load0, "load_avg_1m_end": load_avg(), "metrics": got}
        print(f"[scaleout] {name}: {json.dumps(got)}", flush=True)
    flat: dict[str, Any] = {}
    for name in PARTS:                                   # the keys at the top level
        flat.update((parts.get(name) or {}).get("metrics") or {})
    metrics = {**flat, "parts": parts, "parts_in_last_run": only}
    if args.no_save:
        print(json.dumps(metrics, indent=2))
    else:
        save_result(NAME, argv, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
