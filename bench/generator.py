"""Benchmark of the demo data generator (dailyrec/demo/generator.py).

Simulates ``--events`` events (default 10M, split over ``--days`` days) in memory with
``simulate_day`` -- the event simulation plus the construction of the Arrow tables -- ``--repeats``
times, then writes one day of ``--write-events`` events as Parquet through the pipeline's writer
(24 hourly partitions, zstd, manifests) to a temporary data root.

Metrics (bench/results/generator.json, summarised in bench/RESULTS.md):

* ``events_per_s``: events / wall seconds of the simulation, median over the repeats;
  ``events_per_s_first`` the first repeat alone (it also pays the process's first touch of the
  memory of the tables), ``events_per_s_cpu`` events per second of process CPU time summed over
  the threads (median; less sensitive to other load on the machine); ``threads`` the generator's
  thread count;
* ``peak_rss_mb``: peak RSS of the process after the simulation (``VmHWM``);
* ``universe_s``: one-off construction of the users, items and samplers (not in ``events_per_s``);
* ``parquet_*``: write speed of the Parquet partitions.

    ./dev bench generator [--events 10000000] [--days 1] [--users 100000] [--items 20000]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import load_avg, peak_rss_mb, save_result  # noqa: E402
from dailyrec.config import load_config  # noqa: E402
from dailyrec.dates import date_range  # noqa: E402
from dailyrec.storage import Timer  # noqa: E402
from dailyrec.demo import generator as g, impressions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench generator", description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="events simulated per repeat")
    ap.add_argument("--days", type=int, default=1, help="days the events are split over")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--categories", type=int, default=None, help="default: demo.n_categories")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write-events", type=int, default=2_000_000, help="events of the day written as Parquet (0: skip)")
    ap.add_argument("--start-date", default="2026-11-01")
    ap.add_argument("--threads", type=int, default=None, help="generator threads (default: dailyrec.demo.impressions.THREADS)")
    ap.add_argument("--no-save", action="store_true", help="print only; do not write results")
    args = ap.parse_args(argv)
    if args.events < 24 * args.days or args.repeats < 1:
        ap.error("need --events >= 24 * --days and --repeats >= 1")

    if args.threads:
        impressions.THREADS = args.threads
    base = {"demo.n_users": args.users, "demo.n_items": args.items, "demo.start_date": args.start_date}
    if args.categories:
        base["demo.n_categories"] = args.categories
    per_day = args.events // args.days
    cfg = load_config(overrides={**base, "demo.events_per_day": per_day})
    dates = date_range(args.start_date, args.days)

    t = time.perf_counter()
    for d in dates:
        g.catalog(cfg, d)
    universe_s = time.perf_counter() - t
    print(f"universe + catalogs: {universe_s:.2f}s ({args.users:,} users, {args.items:,} items)", flush=True)

    runs = []
    steps: dict[str, list[float]] = {}
    clicks = conversions = table_bytes = 0
    for rep in range(args.repeats):
        wall = cpu = 0.0
        for d in dates:
            timer = Timer()
            w0, c0 = time.perf_counter(), time.process_time()
            tables = g.simulate_day(cfg, d, timer)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            for k, v in timer.timings.items():
                steps.setdefault(k, []).append(v)
            logs = tables["logs"]
            if rep == 0:
                clicks += g._count(logs.column("click"))
                conversions += g._count(logs.column("conversion"))
                table_bytes += logs.nbytes
            del tables, logs
            gc.collect()
        n = per_day * len(dates)
        runs.append({"wall": wall, "cpu": cpu})
        print(f"repeat {rep + 1}/{args.repeats}: {n:,} events in {wall:.2f}s wall, {cpu:.2f}s cpu "
              f"-> {n / wall:,.0f} events/s", flush=True)
    rss = peak_rss_mb()
    n = per_day * len(dates)

    metrics: dict[str, object] = {
        "events": n,
        "days": len(dates),
        "users": args.users,
        "items": args.items,
        "categories": cfg.demo.n_categories,
        "repeats": args.repeats,
        "threads": impressions.THREADS,
        "events_per_s": round(n / statistics.median(r["wall"] for r in runs)),
        "events_per_s_first": round(n / runs[0]["wall"]),
        "events_per_s_cpu": round(n / statistics.median(r["cpu"] for r in runs)),
        "peak_rss_mb": rss,
        "logs_table_mb": round(table_bytes / len(dates) / 2**20, 1),
        "universe_s": round(universe_s, 3),
        "simulate_steps_s": {k: round(statistics.median(v), 3) for k, v in steps.items() if k != "universe"},
        "ctr": round(clicks / n, 4),
        "cvr": round(conversions / max(clicks, 1), 4),
        "load_avg_1m": load_avg(),
    }

    if args.write_events > 0:
        wcfg_root = tempfile.mkdtemp(prefix="dailyrec-bench-")
        try:
            wcfg = load_config(overrides={**base, "demo.events_per_day": max(24, args.write_events),
                                          "storage.data_root": wcfg_root})
            tables = g.simulate_day(wcfg, dates[0])
            mem_mb = tables["logs"].nbytes / 2**20
            w0 = time.perf_counter()
            g.write_day(wcfg, dates[0], tables)
            write_s = time.perf_counter() - w0
            disk = sum(p.stat().st_size for p in Path(wcfg_root).rglob("*.parquet"))
            nw = tables["logs"].num_rows
            metrics.update({
                "parquet_events": nw,
                "parquet_write_s": round(write_s, 3),
                "parquet_events_per_s": round(nw / write_s),
                "parquet_arrow_mb_per_s": round(mem_mb / write_s, 1),
                "parquet_mb": round(disk / 2**20, 1),
                "parquet_bytes_per_event": round(disk / nw, 1),
            })
            print(f"parquet: {nw:,} events in {write_s:.2f}s -> {nw / write_s:,.0f} events/s, "
                  f"{disk / 2**20:.1f} MB on disk", flush=True)
        finally:
            shutil.rmtree(wcfg_root, ignore_errors=True)

    for k, v in metrics.items():
        print(f"  {k}: {v}")
    if not args.no_save:
        save_result("generator", argv, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
