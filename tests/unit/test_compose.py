"""docker-compose.yaml: no Docker engine here, so check its structure and that its env matches
the config's names and the local ./dev setup."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dailyrec.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
AIRFLOW_SERVICES = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                    "airflow-worker": "celery"}


def test_services_present():
    services = COMPOSE["services"]
    for name in ["postgres", "broker-redis", "online-redis", "airflow-init", *AIRFLOW_SERVICES]:
        assert name in services, name
    for name, cmd in AIRFLOW_SERVICES.items():
        assert services[name]["command"][0] == cmd
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_airflow_env_is_production_shaped():
    env = COMPOSE["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://broker-redis:")
    # the online store is a different Redis instance from the broker
    assert env["REDIS_URL"].startswith("redis://online-redis:")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/dailyrec/dags"
    vols = COMPOSE["services"]["airflow-worker"]["volumes"]
    assert "./:/opt/dailyrec" in vols


def test_env_names_match_config_and_dev_script():
    env = COMPOSE["services"]["airflow-worker"]["environment"]
    ours = {k for k in env if k.startswith("DAILYREC") or k == "REDIS_URL"}
    config_src = (REPO / "dailyrec" / "config.py").read_text()
    for name in ours:
        assert f'"{name}"' in config_src or name.startswith("DAILYREC__"), f"{name} is not read by dailyrec/config.py"
    # the values load into a valid config (unknown keys would be refused)
    environ = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}
    cfg = load_config(environ={k: v for k, v in environ.items() if k in ours and v})
    assert cfg.redis.url == "redis://online-redis:6379/0"
    assert cfg.storage.data_root == "/opt/dailyrec-data"
    dev = (REPO / "dev").read_text()
    for key in ["AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        assert key in env and key in dev, key


def test_celery_and_postgres_drivers_are_locked():
    lock = (REPO / "requirements.lock").read_text()
    assert re.search(r"^apache-airflow-providers-celery==", lock, re.M)
    assert re.search(r"^psycopg2-binary==", lock, re.M)
