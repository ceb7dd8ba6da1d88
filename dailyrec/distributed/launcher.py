"""Local worker processes of a distributed training job: ``TF_CONFIG`` on free ``127.0.0.1``
ports, one session (process group) per worker, the wait for all, and the clean stop of every
worker when one fails (:class:`~dailyrec.errors.DistributedTrainingError`)."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dailyrec.errors import DistributedTrainingError

log = logging.getLogger("dailyrec.distributed")

STOP_GRACE_S = 5.0
"""Seconds a stopped worker gets between SIGTERM and SIGKILL."""
PARENT_PID_ENV = "DAILYREC_TRAINING_PARENT_PID"


def die_with_parent() -> None:
    """Linux: get SIGKILL when the launching task process dies (no orphan worker even if the task
    process is killed with -9); exit at once if it is already gone."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != int(parent):
        os._exit(1)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` now (bound to port 0, then released)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def tf_config(ports: list[int], index: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of one worker per port on ``host``."""
    return {"cluster": {"worker": [f"{host}:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


@dataclass
class WorkerProcess:
    """One launched worker: its index, ``subprocess.Popen`` (its own session and process group) and log file."""

    index: int
    proc: subprocess.Popen
    log_path: Path

    def ended(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"exited with signal {-code} ({signal.Signals(-code).name})"
        return f"exited with code {code}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [t for t in text if not t.startswith(("I0000", "W0000", "WARNING: All log messages"))]
    return "\n".join(keep[-lines:])


def stop(workers: list[WorkerProcess], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every worker's process group, SIGKILL what is left after ``grace_s``, reap them all."""
    for w in workers:
        try:
            os.killpg(w.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for w in workers:
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        w.proc.wait()


def launch(job_path: str | os.PathLike[str], workers: int, *, python: str = sys.executable, poll_s: float = 0.2,
           on_start: Any = None, forward: logging.Logger | None = None) -> list[dict[str, Any]]:
    """Run ``workers`` local worker processes of the job at ``job_path`` and wait for all.

    Each is ``python -m dailyrec.distributed --job JOB`` in its own session (process group), with
    ``TF_CONFIG`` = :func:`tf_config` on :func:`free_ports` of ``127.0.0.1``, the repo on
    ``PYTHONPATH``, stdout/stderr in ``<job dir>/worker-<i>.log``, and the parent-death signal set
    (a worker dies with the task process). ``on_start(list[WorkerProcess])`` is called once all are
    started (tests use it to kill one); ``forward``: a logger that gets worker 0's ``dailyrec`` log
    lines as they come (the Airflow task log).

    Returns:
        the workers' ``result-<i>.json`` dicts (:func:`train`), in worker order.
    Raises:
        DistributedTrainingError: a worker exited with a non-zero code or a signal, or ended without
            its result ("worker 1 exited with signal 9 (SIGKILL); ..."), naming its log and its last
            lines. Every worker's process group has been stopped (SIGTERM, then SIGKILL) when it is
            raised, and also when the waiting task is interrupted (its own SIGTERM, KeyboardInterrupt).
    """
    from dailyrec.config import REPO_ROOT

    job_path = Path(job_path)
    job_dir = job_path.parent
    ports = free_ports(workers)
    base_env = dict(os.environ)
    base_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [base_env.get("PYTHONPATH")])])
    base_env[PARENT_PID_ENV] = str(os.getpid())
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    procs: list[WorkerProcess] = []
    failed: WorkerProcess | None = None
    offset = 0
    try:
        for i in range(workers):
            env = {**base_env, "TF_CONFIG": json.dumps(tf_config(ports, i))}
            log_path = job_dir / f"worker-{i}.log"
            with open(log_path, "wb") as out:
                proc = subprocess.Popen([python, "-m", "dailyrec.distributed", "--job", str(job_path)],
                                        cwd=str(REPO_ROOT), env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            procs.append(WorkerProcess(i, proc, log_path))
        log.info("started %d training workers on 127.0.0.1 ports %s (pids %s); logs in %s", workers, ports,
                 [w.proc.pid for w in procs], job_dir)
        if on_start is not None:
            on_start(procs)
        while True:
            codes = [w.proc.poll() for w in procs]
            bad = [w for w, c in zip(procs, codes) if c not in (None, 0)]
            if forward is not None:
                offset = _forward(procs[0].log_path, offset, forward)
            if bad:
                # a signal (the cause) before an exit code (often a peer noticing the loss)
                failed = sorted(bad, key=lambda w: (w.proc.returncode >= 0, w.index))[0]
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(poll_s)
    finally:
        stop(procs)
    if failed is not None:
        others = [w.index for w in procs if w is not failed]
        raise DistributedTrainingError(
            f"worker {failed.index} {failed.ended()}; the other worker(s) {others} were stopped. "
            f"Log {failed.log_path}, last lines:\n{_tail(failed.log_path)}")
    results = []
    for w in procs:
        path = job_dir / f"result-{w.index}.json"
        if not path.exists():
            raise DistributedTrainingError(f"worker {w.index} exited with code 0 but wrote no {path.name}; log "
                                           f"{w.log_path}:\n{_tail(w.log_path)}")
        results.append(json.loads(path.read_text()))
    return results


def _forward(path: Path, offset: int, to: logging.Logger) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode(errors="replace").splitlines():
        if " dailyrec." in line:
            to.info("[worker 0] %s", line.split(" dailyrec.", 1)[1].split(": ", 1)[-1])
    return offset + end
