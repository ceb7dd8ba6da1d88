"""Runs in date order whatever creates them, through a real Airflow scheduler (`airflow standalone`
on PostgreSQL), with the users' exact commands (issue 15, items 1, 2, 3 and 5):

* `airflow backfill create --dag-id daily_retrieval --from-date D1 --to-date D3` with the default
  flags (the backfill's own max_active_runs, 10): the runs start together, yet they work one date
  at a time, oldest first (`wait_for_earlier_runs`), each warm starting from the day before;
* the scheduled run that unpausing creates (the latest day, whose logs never come) waits for its
  logs without holding the backfill of earlier dates;
* `airflow dags trigger daily_retrieval` / `hourly_log_check` with no date process the last
  complete interval (the run has no logical date and no data interval);
* a waiting sensor's log names the date and the missing markers at each poke.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dailyrec.contract import write_partition
from dailyrec.storage import open_store
from tests.helpers import REPO, SMALL_DEMO_ENV as SMALL, run_airflow, tiny_logs

DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
UTC = dt.timezone.utc


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


def _json_out(res: subprocess.CompletedProcess) -> list[dict]:
    for line in res.stdout.splitlines():
        if line.strip().startswith("[{"):
            return json.loads(line)
    return []


def _runs(env: dict[str, str], dag_id: str = "daily_retrieval") -> list[dict]:
    return _json_out(run_airflow(env, "dags", "list-runs", dag_id, "-o", "json"))


def _task_times(env: dict[str, str], run_id: str) -> dict[str, dict]:
    res = run_airflow(env, "tasks", "states-for-dag-run", "daily_retrieval", run_id, "-o", "json")
    return {t["task_id"]: t for t in _json_out(res)}


def _task_log(env: dict[str, str], dag_id: str, run_id: str, task_id: str) -> str:
    logs = Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]) / f"dag_id={dag_id}" / f"run_id={run_id}"
    logs = logs / f"task_id={task_id}"
    return "\n".join(p.read_text() for p in sorted(logs.glob("*.log")))


def _start_standalone(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    proc = subprocess.Popen([env["DAILYREC_AIRFLOW_BIN"], "standalone"], env=env, cwd=str(REPO),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.time() + 240
    while not _healthy(port):
        assert proc.poll() is None, log_path.read_text()[-4000:]
        assert time.time() < deadline, "airflow standalone did not become healthy"
        time.sleep(3)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _env(airflow_home, pg_database, root, port) -> dict[str, str]:
    return {**airflow_home, **SMALL, "DAILYREC_DATA_ROOT": str(root),
            "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_database}


@pytest.mark.slow
def test_backfill_runs_dates_in_order(airflow_home, pg_database, tmp_path):
    """Runs on PostgreSQL: a scheduler, a DAG processor and an API server writing at once lock SQLite."""
    port = _free_port()
    root = tmp_path / "data"
    env = _env(airflow_home, pg_database, root, port)
    assert run_airflow(env, "db", "migrate").returncode == 0
    gen = subprocess.run([sys.executable, "-m", "dailyrec.demo.generator", "--start-date", DATES[0], "--days", "3"],
                         env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    # the hours an undated hourly trigger may process (the last complete one, either side of a clock tick)
    now = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    store = open_store(str(root))
    for t in (now - dt.timedelta(hours=1), now - dt.timedelta(hours=2)):
        write_partition(store, "logs", tiny_logs(t.date().isoformat(), t.hour, 30), t.date().isoformat(), t.hour)
    assert run_airflow(env, "pools", "set", "dailyrec_training", "1", "training").returncode == 0
    assert run_airflow(env, "dags", "reserialize").returncode == 0

    proc = _start_standalone(env, port, tmp_path / "standalone.log")
    try:
        # Airflow starts no queued run of a paused DAG; unpausing also creates the latest day's
        # scheduled run, whose logs never come: it must not hold the backfill of earlier dates
        for dag_id in ("daily_retrieval", "hourly_log_check"):
            assert run_airflow(env, "dags", "unpause", dag_id).returncode == 0
        # the command of the DAG's doc_md and docs/scheduling.md, default flags
        res = run_airflow(env, "backfill", "create", "--dag-id", "daily_retrieval", "--from-date", DATES[0],
                          "--to-date", DATES[-1])
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        for dag_id in ("daily_retrieval", "hourly_log_check"):  # no date: the last complete interval
            res = run_airflow(env, "dags", "trigger", dag_id)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        deadline = time.time() + 1800
        while True:
            runs = [r for r in _runs(env) if r["run_id"].startswith("backfill__")]
            hourly = [r for r in _runs(env, "hourly_log_check") if r["run_id"].startswith("manual__")]
            done = len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs)
            if done and hourly and hourly[0]["state"] in ("success", "failed"):
                break
            assert time.time() < deadline, f"backfill not done: {runs} {hourly}"
            time.sleep(10)
        others = [r for r in _runs(env) if not r["run_id"].startswith("backfill__")]
        waits = {r["run_id"]: _task_log(env, "daily_retrieval", r["run_id"], "wait_for_logs") for r in others}
        times = {r["run_id"]: _task_times(env, r["run_id"]) for r in runs}
        order_log = _task_log(env, "daily_retrieval", sorted(r["run_id"] for r in runs)[1], "wait_for_earlier_runs")
    finally:
        _stop(proc)

    runs = sorted(runs, key=lambda r: r["logical_date"])
    assert [r["logical_date"][:10] for r in runs] == DATES
    assert all(r["state"] == "success" for r in runs), runs
    # the backfill started its runs together (its own max_active_runs) ...
    assert any(b["start_date"] < a["end_date"] for a, b in zip(runs, runs[1:])), runs
    # ... yet each date's work began only once the date before had ended: the DAG keeps the order
    for a, b in zip(runs, runs[1:]):
        assert times[b["run_id"]]["validate_day"]["start_date"] >= a["end_date"], (a, times[b["run_id"]])
    assert f"waits for the earlier run {runs[0]['run_id']} (cur_date {DATES[0]}" in order_log, order_log[-3000:]
    # and each date was processed as its own cur_date, warm starting from the day before
    for i, d in enumerate(DATES):
        m = json.loads((root / f"models/two_tower/dt={d}/_manifest.json").read_text())
        assert m["cur_date"] == d
        assert m["warm_start"]["from"] == (DATES[i - 1] if i else None)

    # the scheduled run and the undated manual run both process the day that just ended and wait
    # for its logs (still running: they did not hold the backfill); the sensor says what is missing
    day = (now.date() - dt.timedelta(days=1)).isoformat()
    kinds = {r["run_id"].split("__")[0]: r for r in others}
    assert set(kinds) == {"scheduled", "manual"}, others
    assert kinds["scheduled"]["logical_date"][:10] == day and kinds["manual"]["logical_date"] == ""
    assert all(r["state"] == "running" for r in others), others
    # (the hour the undated hourly trigger below checks is written first: just after midnight it is an
    # hour of `day`, so the count of complete hours is not always 0)
    for run_id, log in waits.items():
        assert re.search(rf"ingest\.validate_day for {day}: \d+/24 hours complete; missing \[\d", log), \
            (run_id, log[-3000:])

    # the undated hourly trigger checked the last complete hour
    h = hourly[0]
    assert h["state"] == "success", h
    after = dt.datetime.fromisoformat(h["run_after"]).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    last = after - dt.timedelta(hours=1)
    rep = json.loads((root / f"log_checks/dt={last.date()}/hour={last.hour:02d}/report.json").read_text())
    assert rep["rows"] == {"logs": 30} and rep["hour"] == last.hour
