"""Airflow's metadata DB on PostgreSQL (the production choice; SQLite is the local default)."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import run_airflow

PG = os.environ.get("DAILYREC_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


@pytest.fixture
def pg_database():
    import psycopg2

    name = f"dailyrec_af_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except Exception as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


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
