"""Airflow's metadata DB on PostgreSQL (the production choice; SQLite is the local default)."""

from __future__ import annotations

import pytest

from tests.helpers import run_airflow


@pytest.mark.slow
def test_migrate_and_serialize_dags_on_postgres(airflow_home, pg_database):
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_database}
    res = run_airflow(airflow_home, "db", "migrate", extra_env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_airflow(airflow_home, "dags", "reserialize", extra_env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_airflow(airflow_home, "dags", "list", "-o", "plain", extra_env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for dag_id in ["hourly_log_check", "daily_retrieval"]:
        assert dag_id in res.stdout
