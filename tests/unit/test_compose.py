"""docker-compose.yaml: no Docker engine here, so check its structure, that its env matches the
config's names and the local ./dev setup, and that its Celery deployment is the one
tests/integration/test_celery_executor.py runs (dailyrec.deployment: config/celery.env, config/pools.json,
the workers, the same AIRFLOW__* names and values but for hosts and secrets)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from dailyrec.config import load_config
from dailyrec.deployment import (CELERY_ENV_FILE, DEFAULT_QUEUE, POOLS_FILE, TRAINING_QUEUE, WORKERS, celery_env,
                                 pools, stack_env)

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
AIRFLOW_SERVICES = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                    "airflow-worker": "celery", "airflow-worker-training": "celery"}
WORKER_SERVICES = {"training": "airflow-worker-training", "default": "airflow-worker"}


def _env(service: str) -> dict[str, str]:
    """A service's environment as docker compose builds it: its ``env_file``s, then ``environment``."""
    svc = COMPOSE["services"][service]
    env: dict[str, str] = {}
    for f in svc.get("env_file", []):
        env.update(celery_env(REPO / f))
    env.update({k: str(v) for k, v in svc.get("environment", {}).items()})
    return env


def test_services_present():
    services = COMPOSE["services"]
    for name in ["postgres", "broker-redis", "online-redis", "airflow-init", *AIRFLOW_SERVICES]:
        assert name in services, name
    for name, cmd in AIRFLOW_SERVICES.items():
        assert services[name]["command"][0] == cmd
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_airflow_env_is_production_shaped():
    env = _env("airflow-scheduler")
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


# ---- the Celery deployment: the same as tests/integration/test_celery_executor.py ----------------
def test_every_airflow_service_reads_the_shared_celery_settings():
    shared = celery_env()
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        svc = COMPOSE["services"][name]
        assert svc["env_file"] == [str(CELERY_ENV_FILE.relative_to(REPO))], name
        # nothing of config/celery.env is overridden per service: the file is the one place
        assert not set(shared) & set(svc["environment"]), (name, set(shared) & set(svc["environment"]))


def _modulo_host(name: str, value: str) -> str:
    """The value without what names a location: a URL keeps its scheme (driver included) and, for the
    execution API, its path; host, port, user, database name and Redis DB number go (compose has a
    dedicated broker Redis, DB 0; the test shares the machine's, DB 13 plus a key prefix of its own).
    The project's mount point stands for the repo."""
    value = value.replace(str(REPO), "/opt/dailyrec")
    if "://" in value:
        u = urlsplit(value)
        return f"{u.scheme}://HOST" + (u.path if u.scheme.startswith("http") else "")
    return value


def test_compose_env_is_the_local_stacks_but_for_hosts():
    """Every AIRFLOW__* variable of the compose stack is one the local stack sets, with the same value
    but for locations (:func:`_modulo_host`) and the JWT secret, which are each deployment's own."""
    compose = {k: v for k, v in _env("airflow-worker").items() if k.startswith("AIRFLOW")}
    local = {k: v for k, v in stack_env(Path("/opt/airflow"), "postgresql+psycopg2://airflow@127.0.0.1:5432/db", 8080,
                                         "secret", "celery", "redis://127.0.0.1:6379/13", base={}).items()
             if k.startswith("AIRFLOW")}
    assert set(compose) == set(local), (set(compose) ^ set(local))
    secrets = {"AIRFLOW__API_AUTH__JWT_SECRET"}
    for key in sorted(set(local) - secrets):
        assert _modulo_host(key, compose[key]) == _modulo_host(key, local[key]), (key, compose[key], local[key])
    # the result backend is the metadata DB through Celery's database backend, in both
    for env in (compose, local):
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")


def test_worker_services_are_the_deployments_workers():
    services = COMPOSE["services"]
    celery = {n for n, s in services.items() if s.get("command", [None])[0] == "celery"}
    assert celery == set(WORKER_SERVICES.values())
    for w in WORKERS:
        svc = services[WORKER_SERVICES[w.name]]
        assert svc["command"] == w.command(), w
        assert svc.get("deploy", {}).get("replicas", 1) == 1, "the test runs one process of each worker"
    by_queue = {q: w for w in WORKERS for q in w.queues}
    assert set(by_queue) == {TRAINING_QUEUE, DEFAULT_QUEUE}
    assert by_queue[TRAINING_QUEUE].concurrency == 1
    assert celery_env()["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == DEFAULT_QUEUE


def test_the_pools_are_imported_and_the_dags_use_them():
    from dailyrec.dag_tasks import TRAINING_POOL

    assert pools()[TRAINING_POOL]["slots"] == 1
    init = " ".join(COMPOSE["services"]["airflow-init"]["entrypoint"])
    assert f"airflow pools import /opt/dailyrec/{POOLS_FILE.relative_to(REPO)}" in init
    assert "airflow db migrate" in init and "airflow dags reserialize" in init


def test_the_training_tasks_go_to_the_training_queue():
    """In dags/*.py, the tasks that train a model (``train_*``) carry ``queue=TRAINING_QUEUE`` and the
    training pool; no other task names a queue (they take Airflow's default queue)."""
    seen = {}
    for path in sorted((REPO / "dags").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "override":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                task_id = ast.literal_eval(kw.get("task_id", "None"))
                seen[task_id] = (kw.get("queue"), kw.get("pool"))
    training = {t: v for t, v in seen.items() if t and t.startswith("train_")}
    assert set(training) == {"train_two_tower", "train_mmoe", "train_pass", "train_mmoe_pass"}, training
    assert all(v == ("TRAINING_QUEUE", "TRAINING_POOL") for v in training.values()), training
    assert all(q is None for t, (q, _) in seen.items() if t not in training), seen
