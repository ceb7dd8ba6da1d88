"""A three-date backfill through a real Airflow scheduler (`airflow standalone`): the runs
process 2026-11-01..03, one at a time and in date order, each warm starting from the day before."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import REPO, SMALL_DEMO_ENV as SMALL, run_airflow

DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as r:
            h = json.loads(r.read())
        return all(h.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "dag_processor"))
    except Exception:
        return False


def _runs(env: dict[str, str]) -> list[dict]:
    """The backfill's runs (unpausing also lets the scheduler create today's scheduled run, which
    waits for logs that don't exist: it is not part of the backfill)."""
    res = run_airflow(env, "dags", "list-runs", "daily_retrieval", "-o", "json")
    for line in res.stdout.splitlines():
        if line.strip().startswith("[{"):
            return [r for r in json.loads(line) if r["run_id"].startswith("backfill__")]
    return []


@pytest.mark.slow
def test_backfill_runs_dates_in_order(airflow_home, pg_database, tmp_path):
    """Runs on PostgreSQL: a scheduler, a DAG processor and an API server writing at once lock SQLite."""
    port = _free_port()
    root = tmp_path / "data"
    env = {**airflow_home, **SMALL, "DAILYREC_DATA_ROOT": str(root),
           "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "2",
           "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_database}
    res = run_airflow(env, "db", "migrate")
    assert res.returncode == 0, res.stderr[-3000:]
    gen = subprocess.run([sys.executable, "-m", "dailyrec.demo.generator", "--start-date", DATES[0], "--days", "3"],
                         env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert run_airflow(env, "pools", "set", "dailyrec_training", "1", "training").returncode == 0
    assert run_airflow(env, "dags", "reserialize").returncode == 0

    log = open(tmp_path / "standalone.log", "w")
    proc = subprocess.Popen([env["DAILYREC_AIRFLOW_BIN"], "standalone"], env=env, cwd=str(REPO),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not _healthy(port):
            assert proc.poll() is None, (tmp_path / "standalone.log").read_text()[-4000:]
            assert time.time() < deadline, "airflow standalone did not become healthy"
            time.sleep(3)
        # Airflow starts no queued run of a paused DAG, backfill runs included
        assert run_airflow(env, "dags", "unpause", "daily_retrieval").returncode == 0
        res = run_airflow(env, "backfill", "create", "--dag-id", "daily_retrieval", "--from-date", DATES[0],
                          "--to-date", DATES[-1], "--max-active-runs", "1")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        deadline = time.time() + 1500
        while True:
            runs = _runs(env)
            if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
                break
            assert time.time() < deadline, f"backfill not done: {runs}"
            time.sleep(10)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()

    runs = sorted(runs, key=lambda r: r["logical_date"])
    assert [r["logical_date"][:10] for r in runs] == DATES
    assert all(r["state"] == "success" for r in runs), runs
    # one at a time, in date order: each run starts after the previous one ended
    for a, b in zip(runs, runs[1:]):
        assert a["end_date"] <= b["start_date"], (a, b)
    # and each date was processed as its own cur_date, warm starting from the day before
    for i, d in enumerate(DATES):
        m = json.loads((root / f"models/two_tower/dt={d}/_manifest.json").read_text())
        assert m["cur_date"] == d
        assert m["warm_start"]["from"] == (DATES[i - 1] if i else None)
