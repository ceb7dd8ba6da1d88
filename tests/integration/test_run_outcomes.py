"""What a run's state says, through `airflow dags test` (issue 15, items 6 and 7):

* a date before any `start_date` is processed like any other (`airflow dags test daily_retrieval
  2001-01-31`, the issue's exact command, used to create no task and "succeed");
* a failed task fails the run while the report still runs and gives the verdict, for both daily
  DAGs (`evaluate_gate` raising: a day with no holdout hours, too sparse to evaluate, fails with the
  named error `NothingToEvaluate`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, SMALL_DEMO_ENV, run_airflow

OLD = "2001-01-31"
NO_HOLDOUT = json.dumps({"config_overrides": {"training.holdout_hours": 0}})


def _state(env: dict[str, str], dag_id: str) -> str:
    res = run_airflow(env, "dags", "list-runs", dag_id, "-o", "json")
    runs = next(json.loads(line) for line in res.stdout.splitlines() if line.strip().startswith("[{"))
    return next(r["state"] for r in runs if r["logical_date"].startswith(OLD))


@pytest.mark.slow
def test_old_date_runs_and_a_failed_task_fails_the_run(airflow_home, tmp_path):
    root = tmp_path / "data"
    env = {**airflow_home, **SMALL_DEMO_ENV, "DAILYREC_DATA_ROOT": str(root), "DAILYREC__RANKING__EPOCHS": "2",
           "DAILYREC__RANKING__BATCH_SIZE": "512",
           "DAILYREC__DEMO__START_DATE": f'"{OLD}"'}  # quoted: the environment's values are YAML
    gen = subprocess.run([sys.executable, "-m", "dailyrec.demo.generator", "--start-date", OLD, "--days", "1"],
                         env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]

    # 6: the exact command processes that date
    res = run_airflow(airflow_home, "dags", "test", "daily_retrieval", OLD, extra_env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "state=success" in out, out[-6000:]
    manifest = json.loads((root / f"models/two_tower/dt={OLD}/_manifest.json").read_text())
    assert manifest["cur_date"] == OLD
    assert _state(env, "daily_retrieval") == "success"
    assert f"verdict for {OLD}: gate " in out, out[-6000:]

    # 7: evaluate_gate raises -> the run fails, and the report still ran and says why
    for dag_id, pipeline in (("daily_retrieval", "retrieval"), ("daily_ranking", "ranking")):
        report = root / f"reports/daily_{pipeline}/dt={OLD}"
        shutil.rmtree(report, ignore_errors=True)
        res = run_airflow(airflow_home, "dags", "test", dag_id, OLD, "--conf", NO_HOLDOUT, extra_env=env)
        out = res.stdout + res.stderr
        assert _state(env, dag_id) == "failed", dag_id
        assert "NothingToEvaluate" in out and "nothing to evaluate, the day is too sparse" in out, out[-6000:]
        assert json.loads((report / "report.json").read_text())["cur_date"] == OLD
        assert f"verdict for {OLD}: FAILED: evaluate_gate (see their logs)" in out, out[-6000:]
