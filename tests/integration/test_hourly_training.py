"""Hourly passes through Airflow (issue 10): the `hourly_training` DAG with the users' exact commands.

* after a daily base (`airflow dags test daily_retrieval` / `daily_ranking` of D1),
  `airflow dags test hourly_training <D2>T0H:00:00+00:00` for three consecutive hours: each pass is
  scored by the serving model before training (prequential metrics recorded), warm starts from the
  previous pass (hour 0: the daily base), and its delta becomes Redis' current version; the MMoE
  passes chain the same way;
* a pass whose previous hour is missing fails at once with `MissingPassError` naming that hour;
* with `passes.enabled` off an hourly run does nothing and says so;
* `airflow backfill create --dag-id hourly_training --from-date ... --to-date ...` (default flags,
  through a real scheduler on PostgreSQL) runs the hours in hour order, each from the one before;
* the daily runs of D2 consolidate: they wait for D2's passes and start from the newest one.

The tests continue one chain in file order (same data root: one module fixture).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, SMALL_DEMO_ENV, run_airflow
from tests.integration.test_backfill import _env, _free_port, _json_out, _start_standalone, _stop, _task_log

D1, D2 = "2026-11-01", "2026-11-02"
# a small world (about 500 impressions an hour) and short daily training: the passes' chain is under
# test, not the models' quality (the daily gates only refuse a collapse, as in tests.helpers.TINY_ENV)
ENV = {**SMALL_DEMO_ENV, "DAILYREC__DEMO__EVENTS_PER_DAY": "12000", "DAILYREC__DEMO__N_USERS": "600",
       "DAILYREC__DEMO__N_ITEMS": "300", "DAILYREC__TRAINING__EPOCHS": "2", "DAILYREC__RANKING__EPOCHS": "1",
       "DAILYREC__EVALUATION__REQUIRE_BEAT_POPULARITY": "false", "DAILYREC__EVALUATION__MAX_DROP_VS_PREVIOUS": "1.0",
       "DAILYREC__PASSES__ENABLED": "true"}


def _ok(res: subprocess.CompletedProcess) -> bool:
    return res.returncode == 0 and "state=success" in res.stdout + res.stderr


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def base(airflow_home, tmp_path_factory):
    """Two generated days; D1's daily runs (passes on: D1 had none, so they start as before)."""
    root = tmp_path_factory.mktemp("hourly") / "data"
    env = {**airflow_home, **ENV, "DAILYREC_DATA_ROOT": str(root)}
    gen = subprocess.run([sys.executable, "-m", "dailyrec.demo.generator", "--start-date", D1, "--days", "2"],
                         env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    for dag_id in ("daily_retrieval", "daily_ranking"):
        res = run_airflow(env, "dags", "test", dag_id, D1)
        assert _ok(res), (res.stdout + res.stderr)[-6000:]
    return root, env


@pytest.mark.slow
def test_three_passes_after_a_daily_base(base):
    root, env = base
    out = {}
    for h in (0, 1, 2):   # the exact command: the run's logical date is the hour it processes
        res = run_airflow(env, "dags", "test", "hourly_training", f"{D2}T{h:02d}:00:00+00:00")
        out[h] = res.stdout + res.stderr
        assert _ok(res), out[h][-6000:]
    previous = {0: D1, 1: f"{D2}T00", 2: f"{D2}T01"}
    versions = {}
    for h in (0, 1, 2):
        part = f"dt={D2}/hour={h:02d}"
        man = _json(root / "passes/two_tower" / part / "_manifest.json")
        assert man["warm_start"]["from"] == previous[h], man["warm_start"]
        versions[h] = man["model_version"]
        mm = _json(root / "passes/mmoe" / part / "_manifest.json")
        assert mm["warm_start"]["from"] == previous[h], mm["warm_start"]
        # predict-then-train: the serving model (the warm source) scored the pass before training on it
        pq = _json(root / "prequential/two_tower" / part / "metrics.json")
        assert pq["scored_by"]["from"] == previous[h] and pq["impressions"] > 0 and pq["clicks"] > 0
        assert 0 <= pq["recall_at_50"] <= 1 and 0 < pq["auc"] < 1 and "new_item_recall_at_50" in pq
        rq = _json(root / "prequential/mmoe" / part / "metrics.json")
        assert 0 < rq["click_auc"] < 1
        delta = _json(root / "deltas/two_tower" / part / "_manifest.json")
        assert delta["model_version"] == versions[h] and delta["counts"]["upsert"] > 0
        rep = _json(root / "reports/hourly_training" / part / "report.json")
        assert rep["prequential"]["recall_at_50"] == pq["recall_at_50"]
        assert f"verdict for {D2} {h:02d}:00: pass trained; delta published" in out[h]
    assert _json(root / f"prequential/two_tower/dt={D2}/hour=01/metrics.json")["model_version"] == versions[0]
    status = subprocess.run([sys.executable, "-m", "dailyrec.publishing", "status"], env=env, cwd=str(REPO),
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout)["current"].startswith(f"{D2}T02_{versions[2]}")


@pytest.mark.slow
def test_a_missing_hour_stops_the_chain_and_passes_off_do_nothing(base):
    root, env = base
    assert (root / f"passes/two_tower/dt={D2}/hour=02/_manifest.json").exists(), "runs after the three passes"
    res = run_airflow(env, "dags", "test", "hourly_training", f"{D2}T05:00:00+00:00")
    log = res.stdout + res.stderr
    assert res.returncode != 0 or "state=failed" in log, log[-6000:]
    assert f"MissingPassError: pass ({D2}, 05) cannot start and nothing is left to wait for (no unfinished run " \
           f"of hour 04)" in log and f"previous pass {D2}T04" in log, log[-6000:]
    assert "try_number=2" not in log   # a missing hour is not retried
    assert not (root / f"pass_samples/dt={D2}/hour=05").exists()
    assert not (root / f"passes/two_tower/dt={D2}/hour=05").exists()

    off = json.dumps({"cur_date": D2, "hour": 3, "config_overrides": {"passes.enabled": False}})
    res = run_airflow(env, "dags", "test", "hourly_training", "--conf", off)
    log = res.stdout + res.stderr
    assert _ok(res), log[-6000:]
    assert "hour 03: passes are disabled (config passes.enabled: false): nothing to do" in log
    assert not (root / f"pass_samples/dt={D2}/hour=03").exists()

def _runs(env: dict[str, str]) -> list[dict]:
    return _json_out(run_airflow(env, "dags", "list-runs", "hourly_training", "-o", "json"))


def _times(env: dict[str, str], run_id: str) -> dict[str, dict]:
    res = run_airflow(env, "tasks", "states-for-dag-run", "hourly_training", run_id, "-o", "json")
    return {t["task_id"]: t for t in _json_out(res)}


@pytest.mark.slow
def test_hourly_backfill_runs_in_hour_order(base, airflow_home, pg_database, tmp_path):
    """The next two hours of D2 (pass 03 starts from pass 02), backfilled at once (two hours keep the
    test short: the second run starts with the first, waits for it, then trains from its pass)."""
    root, _ = base
    assert (root / f"passes/two_tower/dt={D2}/hour=02/_manifest.json").exists(), "runs after the three passes"
    port = _free_port()
    env = {**_env(airflow_home, pg_database, root, port), **ENV}
    assert run_airflow(env, "db", "migrate").returncode == 0
    assert run_airflow(env, "pools", "set", "dailyrec_training", "1", "training").returncode == 0
    assert run_airflow(env, "dags", "reserialize").returncode == 0
    hours = [3, 4]
    proc = _start_standalone(env, port, tmp_path / "standalone.log")
    try:
        assert run_airflow(env, "dags", "unpause", "hourly_training").returncode == 0
        res = run_airflow(env, "backfill", "create", "--dag-id", "hourly_training",
                          "--from-date", f"{D2}T03:00:00", "--to-date", f"{D2}T04:00:00")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        deadline = time.time() + 900
        while True:
            runs = sorted((r for r in _runs(env) if r["run_id"].startswith("backfill__")),
                          key=lambda r: r["logical_date"])
            if len(runs) == len(hours) and all(r["state"] in ("success", "failed") for r in runs):
                break
            assert time.time() < deadline, f"backfill not done: {runs}"
            time.sleep(10)
        times = {r["run_id"]: _times(env, r["run_id"]) for r in runs}
        waits = _task_log(env, "hourly_training", runs[1]["run_id"], "wait_for_previous_pass")
    finally:
        _stop(proc)
    assert [r["logical_date"][:13] for r in runs] == [f"{D2}T{h:02d}" for h in hours]
    assert all(r["state"] == "success" for r in runs), runs
    assert any(b["start_date"] < a["end_date"] for a, b in zip(runs, runs[1:])), runs  # started together ...
    for a, b in zip(runs, runs[1:]):   # ... yet each pass began once the hour before had ended
        assert times[b["run_id"]]["pass_samples"]["start_date"] >= a["end_date"], (a, times[b["run_id"]])
    assert f"waits for the earlier run {runs[0]['run_id']} (cur_date {D2} hour 03" in waits, waits[-3000:]
    for h in hours:
        man = _json(root / f"passes/two_tower/dt={D2}/hour={h:02d}/_manifest.json")
        assert man["warm_start"]["from"] == f"{D2}T{h - 1:02d}"


@pytest.mark.slow
def test_daily_run_consolidates_the_days_last_pass(base):
    """With passes on, the daily runs of D2 wait for D2's passes and start from the newest (hour 04:
    the chain stopped there in these tests; the log says it is not the day's last), the two-tower
    and the MMoE alike."""
    root, env = base
    assert (root / f"passes/two_tower/dt={D2}/hour=04/_manifest.json").exists(), "runs after the backfill"
    res = run_airflow(env, "dags", "test", "daily_retrieval", D2)
    log = res.stdout + res.stderr
    assert _ok(res), log[-6000:]
    assert f"{D2}'s newest pass is ({D2}, 04) (not the day's last pass, hour 23: the chain stopped)" in log
    assert f"the newest pass of {D2} is hour 04, not the day's last (23)" in log
    man = _json(root / f"models/two_tower/dt={D2}/_manifest.json")
    assert man["warm_start"]["from"] == f"{D2}T04"
    last = _json(root / f"passes/two_tower/dt={D2}/hour=04/_manifest.json")
    assert man["warm_start"]["model_version"] == last["model_version"]
    # the ranking model too (daily_ranking waits for D2's features, which come after that sensor)
    res = run_airflow(env, "dags", "test", "daily_ranking", D2)
    assert _ok(res), (res.stdout + res.stderr)[-6000:]
    mm = _json(root / f"models/mmoe/dt={D2}/_manifest.json")
    assert mm["warm_start"]["from"] == f"{D2}T04"
    assert mm["warm_start"]["model_version"] == _json(root / f"passes/mmoe/dt={D2}/hour=04/_manifest.json")[
        "model_version"]
