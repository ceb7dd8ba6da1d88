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


def test_undated_manual_run_uses_last_complete_interval():
    """`airflow dags trigger DAG` / REST "logical_date": null: no logical date, no data interval;
    the day (hour) that ended before the trigger time, run_after (issue 15, 2)."""
    from types import SimpleNamespace

    run = SimpleNamespace(run_after=dt.datetime(2026, 11, 30, 13, 10, 5, tzinfo=UTC), conf={})
    ctx = {"params": {"cur_date": None}, "logical_date": None, "data_interval_start": None, "dag_run": run}
    assert resolve_cur_date(ctx) == "2026-11-29"
    assert resolve_hour({**ctx, "params": {"cur_date": None, "hour": None}}) == ("2026-11-30", 12)
    # a trigger exactly at midnight: the day that just ended, never the one starting
    run.run_after = dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert resolve_cur_date(ctx) == "2026-11-30"
    with pytest.raises(ValueError, match="neither a cur_date param, a logical_date nor a run_after"):
        resolve_cur_date({"params": {}})


def test_deterministic_errors_are_not_retried():
    """The retry policy every task gets: bad input/config/data fails at once, I/O is retried."""
    from airflow.sdk import RetryAction

    from dailyrec.config import ConfigError
    from dailyrec.errors import ContractError, GateRejected, MissingPassError
    from dailyrec.runctx import retry_policy

    policy = retry_policy()
    for exc in (ValueError("x"), ContractError("x"), ConfigError("x"), KeyError("x"), TypeError("x"),
                GateRejected("x"), MissingPassError("pass (2026-11-02, 05): the previous pass is missing")):
        assert policy.evaluate(exc, try_number=1, max_tries=3).action == RetryAction.FAIL, exc
    for exc in (FileNotFoundError("logs not there yet"), ConnectionError("redis down"), TimeoutError()):
        assert policy.evaluate(exc, try_number=1, max_tries=3).action == RetryAction.DEFAULT, exc


def test_run_verdict():
    from dailyrec.runctx import run_verdict

    ok = {"start": "success", "evaluate_gate": "success", "publish_redis": "success", "report": "running"}
    assert run_verdict(ok, {"passed": True, "reasons": []}) == "gate passed; published"
    skipped = {**ok, "publish_redis": "skipped"}
    assert run_verdict(skipped, {"passed": False, "reasons": ["recall@50 0.1 < 0.2"]}) == (
        "gate failed: recall@50 0.1 < 0.2; nothing published")
    assert run_verdict(skipped, {"passed": True}) == "gate passed; not published (publish param off)"
    failed = {**ok, "evaluate_gate": "failed", "publish_redis": "upstream_failed"}
    assert run_verdict(failed, None) == "FAILED: evaluate_gate (see their logs); nothing was published"


def test_pass_verdict():
    from dailyrec.runctx import pass_verdict

    ok = {"start": "success", "train_pass": "success", "publish_delta": "success", "report": "running"}
    assert pass_verdict(ok, {"version": "2026-11-02T05_tt-x"}) == ("pass trained; delta published", "2026-11-02T05_tt-x")
    off = {**ok}
    assert pass_verdict(off, {"skipped": True, "reason": "passes.delta_publish is off"}) == (
        "pass trained; no delta published (passes.delta_publish is off)", None)
    failed = {**ok, "wait_for_previous_pass": "failed", "train_pass": "upstream_failed"}
    assert pass_verdict(failed, None) == (
        "FAILED: wait_for_previous_pass (see their logs); the chain stops at this pass", None)


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
