"""End to end through Airflow: `airflow dags test daily_ranking` on generated data for two
consecutive dates, after the features of those dates were built directly (tasks.retrieval.features, the
retrieval DAG's step the ranking DAG waits for). Day 2 warm starts from day 1; the score CLI then
scores a few rows with the published model. Timings of each run are printed (pytest -s)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO, run_airflow

DATES = ["2026-11-01", "2026-11-02"]
SMALL = {
    "DAILYREC__DEMO__EVENTS_PER_DAY": "40000",
    "DAILYREC__DEMO__N_USERS": "1500",
    "DAILYREC__DEMO__N_ITEMS": "600",
    "DAILYREC__RANKING__BATCH_SIZE": "512",
    "DAILYREC__RANKING__EPOCHS": "4",
}


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=str(REPO),
                          env=env, input=stdin)


@pytest.mark.slow
def test_two_days_through_airflow(airflow_home, tmp_path):
    root = tmp_path / "data"
    env = {**airflow_home, **SMALL, "DAILYREC_DATA_ROOT": str(root)}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    gen = _run(["-m", "dailyrec.demo.generator", "--start-date", DATES[0], "--days", str(len(DATES))], env)
    assert gen.returncode == 0, gen.stderr[-3000:]
    for d in DATES:   # the retrieval DAG's first steps, by hand: validate the day, then its features
        for stage in ("tasks.ingest.validate_day", "tasks.retrieval.features"):
            res = _run(["-m", stage, "--cur-date", d], env)
            assert res.returncode == 0, res.stderr[-3000:]
    timings["generate + validate + features"] = time.perf_counter() - t0

    # day 2 also goes through the trigger-form params (dailyrec.runctx.RANKING_PARAM_KEYS)
    confs = {DATES[0]: [], DATES[1]: ["--conf", json.dumps({"loss_weight_conversion": 2.0, "epochs": 3})]}
    for d in DATES:
        t = time.perf_counter()
        res = run_airflow(airflow_home, "dags", "test", "daily_ranking", d, *confs[d], extra_env=env)
        timings[f"dags test daily_ranking {d}"] = time.perf_counter() - t
        out = res.stdout + res.stderr
        assert res.returncode == 0 and "state=success" in out, out[-6000:]

    m1 = json.loads((root / f"models/mmoe/dt={DATES[0]}/_manifest.json").read_text())
    m2 = json.loads((root / f"models/mmoe/dt={DATES[1]}/_manifest.json").read_text())
    assert m1["warm_start"]["from"] is None
    assert m2["warm_start"]["from"] == DATES[0]
    assert m2["warm_start"]["stats"]["encoder"]["user_id"]["kept"] > 0
    assert m2["baseline"]["warm_start"]["from"] == DATES[0]
    assert m1["loss_weights"] == {"click": 1.0, "conversion": 1.0} and len(m1["history"]["loss"]) == 4
    assert m2["loss_weights"] == {"click": 1.0, "conversion": 2.0} and len(m2["history"]["loss"]) == 3
    for d in DATES:
        samples = json.loads((root / f"ranking_samples/dt={d}/_manifest.json").read_text())
        assert samples["stats"]["labels"]["click"]["positives_after"] > 0
        ev = json.loads((root / f"eval/mmoe/dt={d}/report.json").read_text())
        assert {"new", "shared_bottom"} <= set(ev["table"]) and isinstance(ev["warnings"], list)
        published = root / f"registry/mmoe/dt={d}/published.json"
        assert published.exists() == ev["gate"]["passed"], "published exactly when the gate passed"
        report = (root / f"reports/daily_ranking/dt={d}/report.md").read_text()
        assert f"daily_ranking report for {d}" in report and "gate:" in report
    ev1 = json.loads((root / f"eval/mmoe/dt={DATES[0]}/report.json").read_text())
    assert ev1["gate"]["passed"], "the first model has nothing to compare with"
    ev2 = json.loads((root / f"eval/mmoe/dt={DATES[1]}/report.json").read_text())
    assert "previous" in ev2["table"] and ev2["gate"]["previous_model"] == DATES[0]
    assert 0.7 < ev2["table"]["new"]["click_calibration"] < 1.4, ev2["table"]["new"]  # calibrated, roughly

    # the score CLI on a few rows of day 2, with the newest published model
    rows = pq.read_table(root / f"ranking_samples/dt={DATES[1]}/holdout.parquet").slice(0, 5)
    pq.write_table(rows, tmp_path / "rows.parquet")
    t = time.perf_counter()
    res = _run(["-m", "dailyrec.scoring", "--input", str(tmp_path / "rows.parquet")], env)
    timings["score CLI (5 rows)"] = time.perf_counter() - t
    assert res.returncode == 0, res.stderr[-3000:]
    scored = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(scored) == 5
    assert [s["request_id"] for s in scored] == rows.column("request_id").to_pylist()
    assert all(0 < s["click"] < 1 and 0 < s["conversion"] < 1 for s in scored)
    newest = DATES[1] if ev2["gate"]["passed"] else DATES[0]
    assert f"published for {newest}" in res.stderr

    print("\ndaily_ranking e2e timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
