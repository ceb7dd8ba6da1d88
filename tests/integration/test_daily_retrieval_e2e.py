"""End to end through Airflow: `airflow dags test daily_retrieval` on generated data for three
consecutive dates. Day 2 warm starts from day 1 and becomes `current` in Redis; day 3 is trained
deliberately badly (per-run params), its gate fails and day 2 stays online. The serving CLI then
answers for a known user and for a user with no history."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, SMALL_DEMO_ENV as SMALL, run_airflow

DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=str(REPO),
                          env=env)


@pytest.mark.slow
def test_three_days_through_airflow(airflow_home, tmp_path):
    root = tmp_path / "data"
    env = {**airflow_home, **SMALL, "DAILYREC_DATA_ROOT": str(root)}
    gen = _run(["-m", "dailyrec.demo.generator", "--start-date", DATES[0], "--days", "3"], env)
    assert gen.returncode == 0, gen.stderr[-3000:]

    for d in DATES[:2]:
        res = run_airflow(airflow_home, "dags", "test", "daily_retrieval", d, extra_env=env)
        assert res.returncode == 0 and "state=success" in res.stdout + res.stderr, (res.stdout + res.stderr)[-6000:]

    m1 = json.loads((root / f"models/two_tower/dt={DATES[0]}/_manifest.json").read_text())
    m2 = json.loads((root / f"models/two_tower/dt={DATES[1]}/_manifest.json").read_text())
    assert m1["warm_start"]["from"] is None
    assert m2["warm_start"]["from"] == DATES[0]
    kept = m2["warm_start"]["stats"]
    assert json.dumps(kept)  # stats are recorded
    ev2 = json.loads((root / f"eval/two_tower/dt={DATES[1]}/report.json").read_text())
    assert ev2["gate"]["passed"] and set(ev2["table"]) == {"new", "previous", "popularity"}
    assert ev2["table"]["new"]["recall_at_50"] > ev2["table"]["popularity"]["recall_at_50"]

    status = _run(["-m", "dailyrec.publishing", "status"], env)
    assert status.returncode == 0, status.stderr[-3000:]
    st = json.loads(status.stdout)
    assert st["current"].startswith(DATES[1]) and st["previous"].startswith(DATES[0])

    # day 3: a deliberately bad model (no warm start, a learning rate that cannot learn)
    bad = {"config_overrides": {"training.optimizer.learning_rate": 1e-9, "training.optimizer.floor": 0.0,
                                "training.warm_start": False, "training.epochs": 1}}
    res = run_airflow(airflow_home, "dags", "test", "daily_retrieval", DATES[2], "--conf", json.dumps(bad),
                      extra_env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    ev3 = json.loads((root / f"eval/two_tower/dt={DATES[2]}/report.json").read_text())
    assert not ev3["gate"]["passed"] and ev3["gate"]["reasons"]
    assert not (root / f"embeddings/dt={DATES[2]}").exists()
    st = json.loads(_run(["-m", "dailyrec.publishing", "status"], env).stdout)
    assert st["current"].startswith(DATES[1]), "a failed gate must keep the last good model online"
    report = (root / f"reports/daily_retrieval/dt={DATES[2]}/report.md").read_text()
    assert "FAILED" in report and "nothing published" in report

    # serving: a user active on day 2 and a user nobody has seen
    hold = json.loads((root / f"day_checks/dt={DATES[1]}/report.json").read_text())
    assert hold["rows"]["logs"] > 0
    for user in ["u00001", "someone-new"]:
        rec = _run(["-m", "dailyrec.serving", "--user-id", user, "--k", "20", "--json"], env)
        assert rec.returncode == 0, rec.stderr[-3000:]
        out = json.loads(rec.stdout)
        assert len(out["items"]) == 20 and out["cur_date"] == DATES[1]
        assert out["items"][0]["score"] >= out["items"][-1]["score"]
    assert "unknown user" in out["path"]
