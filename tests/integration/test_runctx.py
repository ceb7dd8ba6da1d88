"""The cur_date rule, as plain functions and through real Airflow runs of hourly_log_check."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dailyrec.runctx import overrides_from_params, resolve_cur_date, resolve_hour
from dailyrec.contract import write_partition
from dailyrec.storage import open_store
from tests.helpers import run_airflow
from tests.helpers import tiny_logs

UTC = dt.timezone.utc


def test_param_wins():
    ctx = {"params": {"cur_date": "2026-11-05"}, "logical_date": dt.datetime(2026, 11, 1, tzinfo=UTC)}
    assert resolve_cur_date(ctx) == "2026-11-05"


def test_scheduled_and_backfill_runs_use_logical_date():
    # CronDataIntervalTimetable: logical_date == data_interval_start == the day processed
    d = dt.datetime(2026, 11, 2, tzinfo=UTC)
    assert resolve_cur_date({"params": {}, "logical_date": d, "data_interval_start": d}) == "2026-11-02"


def test_dags_test_date_uses_logical_date_not_inferred_interval():
    ctx = {"params": {}, "logical_date": dt.datetime(2026, 11, 1, tzinfo=UTC),
           "data_interval_start": dt.datetime(2026, 10, 31, tzinfo=UTC)}
    assert resolve_cur_date(ctx) == "2026-11-01"


def test_manual_trigger_now_uses_last_complete_interval():
    ctx = {"params": {}, "logical_date": dt.datetime(2026, 11, 22, 15, 7, 3, tzinfo=UTC),
           "data_interval_start": dt.datetime(2026, 11, 21, tzinfo=UTC)}
    assert resolve_cur_date(ctx) == "2026-11-21"
    ctx_h = {"params": {}, "logical_date": dt.datetime(2026, 11, 22, 15, 7, tzinfo=UTC),
             "data_interval_start": dt.datetime(2026, 11, 22, 14, tzinfo=UTC)}
    assert resolve_hour(ctx_h) == ("2026-11-22", 14)


def test_hour_params_must_come_together():
    with pytest.raises(ValueError, match="both cur_date and hour"):
        resolve_hour({"params": {"hour": 3}})
    assert resolve_hour({"params": {"cur_date": "2026-11-01", "hour": 0}}) == ("2026-11-01", 0)


def test_overrides_from_params():
    params = {"epochs": 3, "loss": None, "config_overrides": {"sampling.popularity_alpha": 0.5}}
    out = overrides_from_params(params, {"epochs": "training.epochs", "loss": "training.loss"})
    assert out == {"training.epochs": 3, "sampling.popularity_alpha": 0.5}


@pytest.mark.slow
def test_hourly_check_dag_runs_in_airflow(airflow_home, tmp_path):
    """`airflow dags test` of hourly_log_check: a scheduled-style run and a param-named hour."""
    root = tmp_path / "data"
    store = open_store(str(root))
    write_partition(store, "logs", tiny_logs("2026-11-01", 3, 30), "2026-11-01", 3)
    write_partition(store, "logs", tiny_logs("2026-11-01", 4, 12), "2026-11-01", 4)
    env = {"DAILYREC_DATA_ROOT": str(root)}

    res = run_airflow(airflow_home, "dags", "test", "hourly_log_check", "2026-11-01T03:00:00+00:00",
                      extra_env=env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    rep = json.loads((root / "log_checks/dt=2026-11-01/hour=03/report.json").read_text())
    assert rep["rows"] == {"logs": 30} and rep["hour"] == 3

    res = run_airflow(airflow_home, "dags", "test", "hourly_log_check", "2026-11-02T09:00:00+00:00",
                      "--conf", json.dumps({"cur_date": "2026-11-01", "hour": 4}), extra_env=env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    rep = json.loads((root / "log_checks/dt=2026-11-01/hour=04/report.json").read_text())
    assert rep["rows"] == {"logs": 12}
