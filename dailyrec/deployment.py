"""Where the pipeline's Airflow tasks run: the CeleryExecutor deployment (queues, workers, pool and
the settings every component shares) and a local stack of real Airflow processes, started and
stopped by PID.

The deployment (docs/operations.md#running-with-celery; Airflow's CeleryExecutor,
https://airflow.apache.org/docs/apache-airflow-providers-celery/stable/celery_executor.html):

* queues: :data:`TRAINING_QUEUE` (``training``) takes the tasks that train a model
  (``train_two_tower``, ``train_mmoe``: their DAG tasks carry ``queue=TRAINING_QUEUE``);
  :data:`DEFAULT_QUEUE` (``default``, Airflow's ``[operators] default_queue``) every other task
  (sensors, validation, SQL features and samples, evaluation, FAISS, Redis, reports);
* workers (:data:`WORKERS`): an ``airflow celery worker`` on ``training`` with concurrency 1 (one
  training uses every core of its machine) and one on ``default`` with concurrency 2;
* the pool ``dailyrec_training`` (``config/pools.json``, 1 slot): one training at a time over the
  whole deployment, however many training workers run;
* ``config/celery.env``: the settings every Airflow component shares. docker-compose.yaml reads
  the same file (``env_file``); what names a host or a secret is an argument of :func:`airflow_env`.

:class:`LocalStack` runs api-server (whose execution API the workers' tasks report to), scheduler,
dag-processor and, under the CeleryExecutor, the :data:`WORKERS`, as processes of this machine on
loopback (tests/integration/test_celery_executor.py, bench/scaleout_celery.py, and
``python -m dailyrec.deployment`` for people).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
CELERY_ENV_FILE = REPO / "config" / "celery.env"
POOLS_FILE = REPO / "config" / "pools.json"
TRAINING_QUEUE = "training"
"""The Celery queue of the tasks that train a model (a worker with concurrency 1 serves it)."""
DEFAULT_QUEUE = "default"
"""Every other task's queue (``[operators] default_queue`` in config/celery.env)."""
EXECUTORS = {"celery": "CeleryExecutor", "local": "LocalExecutor"}


@dataclass(frozen=True)
class Worker:
    """One ``airflow celery worker``: its Celery node name prefix, the queues it serves and how many
    tasks it runs at once (Celery's prefork ``--concurrency``)."""

    name: str
    queues: tuple[str, ...]
    concurrency: int

    def command(self) -> list[str]:
        """The ``airflow`` arguments that start it; docker-compose.yaml's worker services run the same.
        ``--celery-hostname NAME@%h`` names the node (Celery expands ``%h`` to the host name);
        ``--skip-serve-logs``: task logs go to the shared log folder, no log server per worker."""
        return ["celery", "worker", "--queues", ",".join(self.queues), "--concurrency", str(self.concurrency),
                "--celery-hostname", f"{self.name}@%h", "--skip-serve-logs"]


WORKERS = (Worker("training", (TRAINING_QUEUE,), 1), Worker("default", (DEFAULT_QUEUE,), 2))
"""The deployment's workers (docker-compose.yaml: ``airflow-worker-training``, ``airflow-worker``)."""


def celery_env(path: Path = CELERY_ENV_FILE) -> dict[str, str]:
    """The ``KEY=VALUE`` settings of ``config/celery.env`` (comments and blank lines skipped), read with
    python-dotenv as docker compose reads an ``env_file``.

    Raises:
        ValueError: a line is not ``KEY=VALUE`` or its value is quoted or has ``$`` (compose and
            dotenv would not read it alike), naming the file and line."""
    from dotenv import dotenv_values

    for no, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        key, sep, value = s.partition("=")
        if not sep or not key.isidentifier() or any(c in value for c in "\"'$ #"):
            raise ValueError(f"{path}:{no}: expected a plain KEY=VALUE line (no quotes, spaces, $ or #): {line!r}")
    return {k: str(v) for k, v in dotenv_values(path, interpolate=False).items()}


def pools(path: Path = POOLS_FILE) -> dict[str, dict[str, Any]]:
    """The pools of ``config/pools.json`` (``airflow pools import`` format: name -> slots, description)."""
    return json.loads(path.read_text())


def airflow_env(executor: Literal["celery", "local"], sql_alchemy_conn: str, execution_api_url: str, jwt_secret: str,
                broker_url: str | None = None, result_backend: str | None = None) -> dict[str, str]:
    """The ``AIRFLOW__*`` variables of every component of a deployment.

    ``celery``: :func:`celery_env` plus the broker (``redis://host:port/db``) and the result backend
    (``db+postgresql://...``: Celery's task states in the metadata database). ``local``: the same
    settings with ``LocalExecutor`` and no broker (the baseline of bench/scaleout_celery.py). The
    host-specific rest: the metadata DB URL, the execution API URL the tasks report to
    (``http://host:port/execution/``) and the JWT secret the scheduler signs task tokens with and the
    api-server checks (the same in every component).

    Raises:
        ValueError: ``celery`` without a broker URL or a result backend."""
    env = celery_env()
    env.update({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": execution_api_url,
                "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret})
    if executor == "celery":
        if not broker_url or not result_backend:
            raise ValueError("the CeleryExecutor needs broker_url and result_backend")
        env.update({"AIRFLOW__CELERY__BROKER_URL": broker_url, "AIRFLOW__CELERY__RESULT_BACKEND": result_backend})
    else:
        env = {k: v for k, v in env.items() if not k.startswith(("AIRFLOW__CELERY", "AIRFLOW__OPERATORS"))}
        env["AIRFLOW__CORE__EXECUTOR"] = EXECUTORS[executor]
    return env


def stack_env(home: Path, sql_alchemy_conn: str, port: int, jwt_secret: str,
              executor: Literal["celery", "local"] = "celery", broker_url: str | None = None,
              base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of a :class:`LocalStack`: ``base`` (default ``os.environ``)
    without its ``AIRFLOW__*``, the project's folders (DAGs, plugins, ``PYTHONPATH``), ``home`` as
    ``AIRFLOW_HOME`` (logs in ``home/logs``), and :func:`airflow_env` with the api-server on
    ``127.0.0.1:port`` and ``db+<sql_alchemy_conn>`` as Celery's result backend. docker-compose.yaml's
    ``x-airflow-common`` sets the same variables (tests/unit/test_compose.py compares them)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("AIRFLOW__")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(Path(home) / "logs"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    })
    env.update(airflow_env(executor, sql_alchemy_conn, f"http://127.0.0.1:{port}/execution/", jwt_secret,
                           broker_url=broker_url, result_backend=f"db+{sql_alchemy_conn}"))
    return env


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_bin() -> str:
    """The ``airflow`` executable of this interpreter's environment."""
    return shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"


class LocalStack:
    """A real Airflow deployment as processes of this machine: api-server on ``127.0.0.1:port``,
    scheduler, dag-processor and, when ``env`` says ``CeleryExecutor``, one ``airflow celery worker``
    per :data:`WORKERS` entry. Each process runs in its own session (process group) with its output in
    ``workdir/<name>.log``; :meth:`stop` ends them and every process they started, by PID.

    ``env``: the full environment (``AIRFLOW_HOME``, :func:`airflow_env`, ``DAILYREC_*``...);
    ``port``: the api-server's, the one of ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL``."""

    def __init__(self, env: dict[str, str], workdir: Path, port: int, workers: tuple[Worker, ...] = WORKERS) -> None:
        self.env, self.workdir, self.port = dict(env), Path(workdir), port
        self.celery = env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor"
        self.workers = workers if self.celery else ()
        self.procs: dict[str, subprocess.Popen] = {}
        self.workdir.mkdir(parents=True, exist_ok=True)

    def airflow(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """``airflow ARGS`` in the stack's environment (raises ``RuntimeError`` with its output on failure)."""
        res = subprocess.run([airflow_bin(), *args], env=self.env, cwd=str(REPO), capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({res.returncode}):\n"
                               f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def prepare(self) -> None:
        """Migrate the metadata DB, import ``config/pools.json``, serialize the DAGs (what
        docker-compose.yaml's ``airflow-init`` does)."""
        self.airflow("db", "migrate")
        self.airflow("pools", "import", str(POOLS_FILE))
        self.airflow("dags", "reserialize")

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen([airflow_bin(), *args], env=self.env, cwd=str(REPO), stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        """The output so far of the process ``name`` (``api-server``, ``scheduler``, ``worker-training``...)."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def health(self) -> dict[str, Any]:
        """The api-server's ``/api/v2/monitor/health`` ({} while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return {}

    def start(self, timeout: float = 420) -> "LocalStack":
        """Start every process and wait until the api-server reports a healthy metadata DB, scheduler
        and dag-processor and each worker has said ``ready``.

        Raises:
            RuntimeError: a process exited, or not ready after ``timeout`` seconds (the stack is
                stopped first; the message has the log tail of what was not ready)."""
        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"])
        self._spawn("scheduler", ["scheduler", "--skip-serve-logs"])
        self._spawn("dag-processor", ["dag-processor"])
        for w in self.workers:
            self._spawn(f"worker-{w.name}", w.command())
        deadline = time.time() + timeout
        while True:
            waiting = self._not_ready()
            if not waiting:
                return self
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.time() > deadline:
                why = f"exited: {dead}" if dead else f"not ready after {timeout:.0f} s: {waiting}"
                tails = "\n".join(f"--- {n}.log ---\n{self.log(n)[-2500:]}" for n in (dead or waiting))
                self.stop()
                raise RuntimeError(f"the Airflow stack did not start ({why})\n{tails}")
            time.sleep(2)

    def _not_ready(self) -> list[str]:
        h = self.health()
        waiting = [k for k, n in (("metadatabase", "api-server"), ("scheduler", "scheduler"),
                                  ("dag_processor", "dag-processor"))
                   if h.get(k, {}).get("status") != "healthy"]
        return waiting + [f"worker-{w.name}" for w in self.workers if " ready." not in self.log(f"worker-{w.name}")]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One call of the api-server's REST API (``/api/v2/...``) as the simple auth manager's
        ``admin`` (its password from ``AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``);
        returns the decoded JSON.

        Raises:
            RuntimeError: an HTTP error, with the status and the response body."""
        if not getattr(self, "_token", None):
            home = Path(self.env["AIRFLOW_HOME"])
            password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
            self._token = self._http("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]
        return self._http(method, path, body, self._token)

    def _http(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        import urllib.error

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')[:2000]}") from None

    def run_dag(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
        """Unpause ``dag_id``, trigger the run ``run_id`` (no logical date; ``conf`` its params, e.g.
        ``{"cur_date": "2026-11-01"}``) and wait until it ends. Returns ``state``, ``wall_s`` (from the
        trigger to the end seen here, polled every 2 s: scheduling and queueing included) and the run's
        ``start_date``/``end_date`` as Airflow recorded them.

        Raises:
            RuntimeError: a process of the stack exited, or the run is unfinished after ``timeout`` s."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        t0 = time.perf_counter()
        self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        while True:
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return {"state": run["state"], "wall_s": round(time.perf_counter() - t0, 1),
                        "start_date": run["start_date"], "end_date": run["end_date"]}
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"run {run_id} of {dag_id} unfinished ({run['state']}); "
                                   + (f"exited: {dead}" if dead else f"after {timeout:.0f} s"))
            time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's task instances by ``task_id`` (REST fields: state, queue, pool, hostname, pid,
        try_number, start_date, end_date, duration...)."""
        got = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return {ti["task_id"]: ti for ti in got["task_instances"]}

    def pids(self) -> dict[str, int]:
        """The PID of each process the stack started (its process group leader)."""
        return {n: p.pid for n, p in self.procs.items()}

    def stop(self, timeout: float = 60) -> list[int]:
        """SIGTERM to each process the stack started and to all their descendants (scheduler first,
        then workers, dag-processor, api-server), SIGKILL to what is left after ``timeout`` seconds;
        returns the PIDs still alive after that (none expected)."""
        import psutil

        order = ["scheduler", *[f"worker-{w.name}" for w in self.workers], "dag-processor", "api-server"]
        every: list[psutil.Process] = []
        for name in [n for n in order if n in self.procs]:
            proc = self.procs[name]
            try:
                ps = psutil.Process(proc.pid)
                family = [ps, *ps.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in family:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.NoSuchProcess:
                    pass
            every += family
            psutil.wait_procs(family, timeout=timeout / 2)
        for p in psutil.wait_procs(every, timeout=timeout / 2)[1]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        left = []
        for p in every:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return left

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(db: str, broker: str = "redis://127.0.0.1:6379/13", executor: Literal["celery", "local"] = "celery",
          port: int = 8080, home: str = ".work/airflow-celery", jwt_secret: str = "") -> dict[str, Any]:
    """Run the deployment on this machine until Ctrl-C: ``db`` the metadata DB
    (``postgresql+psycopg2://user@host:port/name``, also Celery's result backend), ``broker`` the
    Celery broker, ``port`` the api-server's (the UI: http://127.0.0.1:PORT), ``home`` AIRFLOW_HOME.
    Returns the PIDs it ran and any left behind (none expected)."""
    import secrets

    home_path = Path(home).resolve()
    env = stack_env(home_path, db, port, jwt_secret or secrets.token_hex(32), executor, broker)
    stack = LocalStack(env, home_path / "stack", port)
    stack.prepare()
    stack.start()
    print(f"Airflow ({EXECUTORS[executor]}) on http://127.0.0.1:{port}; logs in {stack.workdir}; Ctrl-C stops it",
          file=sys.stderr, flush=True)
    try:
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(5)
    except KeyboardInterrupt:
        pass
    pids = stack.pids()
    return {"pids": pids, "left_behind": stack.stop()}


if __name__ == "__main__":
    from dailyrec import cli

    cli.main(serve)
