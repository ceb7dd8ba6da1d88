"""Airflow's CeleryExecutor with real workers (issue 11, part 1).

The test starts, on loopback, the deployment of docker-compose.yaml with the same settings
(``config/celery.env``, ``config/pools.json``, the workers of ``dailyrec.deployment.WORKERS``):

* metadata DB and Celery result backend: a fresh database on the PostgreSQL of 127.0.0.1:5432
  (``db+postgresql+psycopg2://``), dropped at the end;
* broker: the Redis of 127.0.0.1:6379, DB 13 (``DAILYREC_TEST_BROKER_URL``), with a key prefix of
  its own (``global_keyprefix``) so that a concurrent run on the same server never shares a queue;
* ``airflow api-server`` (the execution API the tasks report to), ``scheduler``, ``dag-processor``
  and two ``airflow celery worker`` processes: ``training`` (queue ``training``, concurrency 1) and
  ``default`` (queue ``default``, concurrency 2).

It runs ``daily_retrieval`` for one demo date (the tiny demo world of tests/helpers.py) end to end
through the workers and checks that the run succeeded, that every task instance ran on the queue
and the worker it should (task instance ``queue``/``hostname``, the workers' own logs, Celery's
result rows in PostgreSQL), that the published version is in Redis and whole, and that every
process the test started is gone. Skipped when PostgreSQL or Redis does not answer.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import uuid

import psutil
import pytest

from dailyrec.deployment import DEFAULT_QUEUE, TRAINING_QUEUE, WORKERS, LocalStack, free_port, stack_env
from tests.conftest import fresh_pg_database
from tests.helpers import REPO, TINY_ENV

pytestmark = pytest.mark.slow

DAY = "2026-11-01"
DAG_ID = "daily_retrieval"
RUN_ID = f"celery_test__{DAY}"
TRAINING_TASKS = {"train_two_tower"}
BROKER_URL = os.environ.get("DAILYREC_TEST_BROKER_URL", "redis://127.0.0.1:6379/13")
ONLINE_REDIS_URL = os.environ.get("DAILYREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def _redis_or_skip(url: str):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis at {url} for the Celery broker / online store: {exc}")
    return client


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory):
    """The stack started, the run done and what the assertions need read; everything stopped and
    dropped whatever happened."""
    broker = _redis_or_skip(BROKER_URL)
    online = _redis_or_skip(ONLINE_REDIS_URL)
    tmp = tmp_path_factory.mktemp("celery")
    tag = uuid.uuid4().hex[:10]
    prefix, namespace = f"dailyrec-test-{tag}:", f"test-celery-{tag}"
    root = tmp / "data"
    with fresh_pg_database("dailyrec_celery") as db:
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
        env = stack_env(tmp / "airflow", db, port, secrets.token_hex(32), "celery", BROKER_URL, base=base)
        env.update({**TINY_ENV, "TF_CPP_MIN_LOG_LEVEL": "2", "DAILYREC_DATA_ROOT": str(root),
                    "REDIS_URL": ONLINE_REDIS_URL, "DAILYREC__REDIS__NAMESPACE": namespace,
                    # the only setting beyond docker-compose.yaml's: isolates this run's queues on a shared Redis
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": prefix})
        gen = subprocess.run([sys.executable, "-m", "dailyrec.demo.generator", "--start-date", DAY, "--days", "1"],
                             env=env, cwd=str(REPO), capture_output=True, text=True, timeout=600)
        assert gen.returncode == 0, gen.stderr[-3000:]
        stack = LocalStack(env, tmp / "stack", port)
        try:
            stack.prepare()
            stack.start()
            pids = stack.pids()
            children = {n: [c.pid for c in psutil.Process(p).children(recursive=True)] for n, p in pids.items()}
            run = stack.run_dag(DAG_ID, RUN_ID, {"cur_date": DAY}, timeout=1500)
            tis = stack.task_instances(DAG_ID, RUN_ID)
            logs = {w.name: stack.log(f"worker-{w.name}") for w in WORKERS}
            taskmeta = _celery_results(db)
            online_status = _online_status(root, namespace)   # before the clean-up below removes the keys
        finally:
            left = stack.stop()
            for pattern in (f"{prefix}*", f"{namespace}:*"):
                for client in (broker, online):
                    keys = list(client.scan_iter(match=pattern, count=1000))
                    if keys:
                        client.delete(*keys)
        yield {"run": run, "tis": tis, "logs": logs, "taskmeta": taskmeta, "pids": pids, "children": children,
               "left": left, "root": root, "online": online_status}


def _celery_results(db: str) -> dict[str, int]:
    """Celery's task results in the metadata DB (the ``db+`` result backend's ``celery_taskmeta``): count
    per status."""
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, count(*) FROM celery_taskmeta GROUP BY status")).all()
    finally:
        engine.dispose()
    return {status: n for status, n in rows}


def test_the_run_succeeds_through_the_workers(celery_run):
    run, tis = celery_run["run"], celery_run["tis"]
    bad = {t: ti["state"] for t, ti in tis.items() if ti["state"] != "success"}
    assert run["state"] == "success" and not bad, (run, bad)
    assert len(tis) == 15, sorted(tis)   # with wait_for_last_pass (issue 10; passes off: it goes on at once)
    assert all(ti.get("executor") in (None, "CeleryExecutor") for ti in tis.values())
    # Celery recorded every task it ran, successful, in PostgreSQL (the result backend)
    assert celery_run["taskmeta"].get("SUCCESS", 0) >= len(tis), celery_run["taskmeta"]
    assert not celery_run["taskmeta"].get("FAILURE"), celery_run["taskmeta"]


def test_each_task_ran_on_its_queue_and_worker(celery_run):
    """The task instance's queue, the host that ran it, and the worker whose log says it executed it."""
    tis, logs = celery_run["tis"], celery_run["logs"]
    host = socket.getfqdn()
    for task_id, ti in tis.items():
        want = TRAINING_QUEUE if task_id in TRAINING_TASKS else DEFAULT_QUEUE
        assert ti["queue"] == want, (task_id, ti["queue"])
        assert ti["hostname"] and ti["hostname"] in (host, socket.gethostname()), (task_id, ti["hostname"])
        ran_on = {name for name, text in logs.items() if _executed(text, task_id)}
        assert ran_on == {want}, (task_id, ran_on)
    assert tis["train_two_tower"]["pool"] == "dailyrec_training"


def _executed(worker_log: str, task_id: str) -> bool:
    """The worker log has a "[celery id] Executing workload in Celery: ..." line for the task of this run."""
    return any("Executing workload in Celery" in line and f"task_id='{task_id}'" in line and RUN_ID in line
               for line in worker_log.splitlines())


def test_the_workers_are_the_deployments(celery_run):
    for w in WORKERS:
        text = celery_run["logs"][w.name]
        assert re.search(rf"{w.name}@\S+ ready\.", text), text[-2000:]
        assert f"concurrency: {w.concurrency} (prefork)" in text
        for q in w.queues:
            assert re.search(rf"\.> {q}\s+exchange={q}", text), text[:3000]


def _online_status(root, namespace: str) -> dict:
    """``dailyrec.publishing status`` of the run's namespace on the online Redis."""
    from dailyrec.config import load_config
    from dailyrec.publishing.admin import status

    return status(load_config(environ={"REDIS_URL": ONLINE_REDIS_URL, "DAILYREC__REDIS__NAMESPACE": namespace,
                                       "DAILYREC_DATA_ROOT": str(root)}))


def test_the_published_version_is_in_redis(celery_run):
    """The registry entry the publish task wrote names the version Redis serves, and it is whole."""
    import json

    pub = json.loads((celery_run["root"] / f"registry/two_tower/dt={DAY}/published.json").read_text())
    online = celery_run["online"]
    assert online["current"] == pub["version"], (online["current"], pub)
    assert online["healthy"], online["problems"]
    (version,) = [v for v in online["versions"] if v["version"] == pub["version"]]
    assert version["complete"] and version["cur_date"] == DAY and version["count"] > 0, version


def test_everything_the_test_started_is_stopped(celery_run):
    assert celery_run["left"] == [], celery_run["left"]
    every = [*celery_run["pids"].values(), *[p for ps in celery_run["children"].values() for p in ps]]
    alive = [p for p in every if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], alive
