"""Scale-out part ``features``: the features step on DuckDB vs Spark SQL ``local[2]`` (issue 11, part 3).

Run through the driver: ``./dev bench scaleout --only features [--sizes 1000000,10000000]
[--repeats 1] [--timeout-min 45] [--keep]``.

For each size N (events of one generated day; default 1M and 10M), in a fresh temp directory,
each command in its own process (measured by ``bench/scale.py``'s ``run_measured``: wall and CPU
seconds, the process tree's peak RSS, killed past the timeout or when the machine runs low on
memory):

1. ``python -m dailyrec.demo.generator --start-date 2026-11-01 --days 1 --events-per-day N``
   with ``demo.n_users = N / 50`` and ``demo.n_items = N / 200`` (as ``bench/scale.py``), then
   ``python -m tasks.ingest.validate_day`` (the features step refuses an unvalidated day);
2. ``python -m tasks.retrieval.features --cur-date 2026-11-01 --set sql.engine=duckdb`` (the
   baseline), then the same with ``sql.engine=spark`` (``local[2]``, the config's defaults:
   8 shuffle partitions, 1 GB driver heap), alternating ``--repeats`` times.

Figures (the issue's keys): ``features_s_duckdb_1m``, ``features_s_spark_1m``,
``features_s_duckdb_10m``, ``features_s_spark_10m``: the step's process wall seconds (what the
Airflow task costs: interpreter, for Spark the JVM and session start, the SQL, the writes; the
median over the repeats), and ``spark_vs_duckdb_1m`` / ``_10m`` (Spark seconds / DuckDB seconds,
same run). ``features_detail.per_size`` keeps per engine the step's own phases from its manifest (``timings_s``:
``engine`` is the session start and the views; ``item_counters``... the queries; ``write``), the
Spark seconds without the session start (``spark_s_after_session_start``), peak RSS (the JVM
included), and ``outputs_identical`` (the Parquet files and ``vocabularies.json`` byte for byte).
Spark is expected to be slower on one 2-core machine: the point is the path to a cluster
(docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import load_avg, mem_available_mb  # noqa: E402
from bench.scale import clean_env, run_measured, size_label  # noqa: E402

DAY = "2026-11-01"
ENGINES = ("duckdb", "spark")
DEFAULT_SIZES = (1_000_000, 10_000_000)
OUTPUTS = ("item_counters.parquet", "user_counters.parquet", "catalog.parquet", "vocab_state.parquet",
           "vocabularies.json")


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [features]", *a, flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="./dev bench scaleout --only features", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="events per day, comma-separated")
    ap.add_argument("--repeats", type=int, default=1, help="runs of the step per engine (median reported)")
    ap.add_argument("--timeout-min", type=float, default=45, help="minutes per size (all its commands)")
    ap.add_argument("--min-available-mb", type=float, default=1536,
                    help="kill a command when the system's MemAvailable falls below this (shared machine)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directories (printed)")
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return args


def _digests(out: Path) -> dict[str, str]:
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in OUTPUTS if (out / n).exists()}


def run_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    users, items = max(1000, n // 50), max(500, n // 200)
    sdir = work / f"size-{size_label(n)}"
    root = sdir / "data"
    sdir.mkdir(parents=True)
    env = clean_env({"DAILYREC_DATA_ROOT": str(root), "DAILYREC__DEMO__N_USERS": str(users),
                     "DAILYREC__DEMO__N_ITEMS": str(items), "DAILYREC__SAMPLING__WINDOW_DAYS": "1"})
    py, deadline = sys.executable, time.monotonic() + args.timeout_min * 60
    row: dict[str, Any] = {"events": n, "users": users, "items": items, "status": "ok",
                           "load_avg_1m_start": load_avg(), "mem_available_mb_start": round(mem_available_mb())}

    def measured(name: str, cmd: list[str]) -> dict[str, Any]:
        res = run_measured(f"{size_label(n)} {name}", cmd, env, sdir / f"{name}.log", deadline, args.min_available_mb)
        if res["status"] != "ok":
            row["status"] = res["status"]
        return res

    for name, cmd in (("generate", [py, "-m", "dailyrec.demo.generator", "--start-date", DAY, "--days", "1",
                                    "--events-per-day", str(n)]),
                      ("validate_day", [py, "-m", "tasks.ingest.validate_day", "--cur-date", DAY])):
        row[name] = measured(name, cmd)
        if row[name]["status"] != "ok":
            return row
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
    digests: dict[str, dict[str, str]] = {}
    out = root / "features" / f"dt={DAY}"
    for rep in range(args.repeats):
        for engine in ENGINES:
            res = measured(f"features_{engine}_{rep}", [py, "-m", "tasks.retrieval.features", "--cur-date", DAY,
                                                        "--set", f"sql.engine={engine}"])
            if res["status"] == "ok":
                man = json.loads((out / "_manifest.json").read_text())
                res["timings_s"] = man["timings_s"]
                res["sql_engine"] = man.get("sql_engine")
                res["rows"] = man["rows"]
                digests[engine] = _digests(out)
            runs[engine].append(res)
            if res["status"] != "ok":
                break
        if row["status"] != "ok":
            break
    for engine in ENGINES:
        ok = [r for r in runs[engine] if r["status"] == "ok"]
        row[engine] = {"runs": runs[engine]}
        if ok:
            row[engine]["wall_s"] = round(statistics.median(r["wall_s"] for r in ok), 2)
            row[engine]["step_total_s"] = round(statistics.median(r["timings_s"]["total"] for r in ok), 2)
            row[engine]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    sp = [r for r in runs["spark"] if r["status"] == "ok"]
    if sp:
        row["spark"]["session_start_s"] = round(statistics.median(r["timings_s"].get("engine", 0) for r in sp), 2)
        row["spark"]["spark_s_after_session_start"] = round(statistics.median(
            r["timings_s"]["total"] - r["timings_s"].get("engine", 0) for r in sp), 2)
    if len(digests) == 2:
        row["outputs_identical"] = digests["duckdb"] == digests["spark"]
    if "wall_s" in row["duckdb"] and "wall_s" in row["spark"]:
        row["spark_vs_duckdb"] = round(row["spark"]["wall_s"] / row["duckdb"]["wall_s"], 2)
    row["load_avg_1m_end"] = load_avg()
    if args.keep:
        log(f"kept {sdir}")
    return row


def measure(argv: list[str]) -> dict[str, Any]:
    """Run the sizes; returns the issue's keys, the ratios and the per-size table (see the module doc)."""
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="dailyrec-scaleout-features-"))
    log(f"work dir {work}; sizes {args.sizes}; repeats {args.repeats}; load {load_avg()}")
    rows = []
    try:
        for n in args.sizes:
            rows.append(run_size(n, args, work))
            r = rows[-1]
            log(f"{size_label(n)}: duckdb {r.get('duckdb', {}).get('wall_s')} s, spark {r.get('spark', {}).get('wall_s')} s, "
                f"identical {r.get('outputs_identical')}, status {r['status']}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {}
    for n in DEFAULT_SIZES:                     # the keys: null when a size was not measured
        label = size_label(n)
        r = next((x for x in rows if x["events"] == n), None)
        for engine in ENGINES:
            out[f"features_s_{engine}_{label}"] = (r or {}).get(engine, {}).get("wall_s")
        out[f"spark_vs_duckdb_{label}"] = (r or {}).get("spark_vs_duckdb")
        out[f"outputs_identical_{label}"] = (r or {}).get("outputs_identical")
    for r in rows:
        if r["events"] not in DEFAULT_SIZES:
            label = size_label(r["events"])
            for engine in ENGINES:
                out[f"features_s_{engine}_{label}"] = r.get(engine, {}).get("wall_s")
            out[f"spark_vs_duckdb_{label}"] = r.get("spark_vs_duckdb")
    out["features_spark_master"] = "local[2]"
    out["features_note"] = ("seconds: wall time of the features step's process (median of --repeats), "
                            f"repeats={args.repeats}; null: size not measured or failed (see features_detail)")
    out["features_detail"] = {"per_size": rows}     # a dict: the driver keeps it out of the top-level keys
    return out


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1:]), indent=1))
