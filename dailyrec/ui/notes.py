"""Run notes: each daily run's note in Airflow says which day it processed and whether it shipped.

The ``report`` task (:func:`dailyrec.dag_tasks.report`) returns ``note`` (:func:`run_note`) in its
XCom. Airflow 3.3's Task SDK cannot set a run's note (its execution API only takes a note when a
run is *triggered*), and the REST API's ``PATCH .../dagRuns/{run_id}`` would need a user's
credentials in the task. So the ``dailyrec`` plugin registers this module as a *listener*: when a
run ends (success or failure), :func:`on_dag_run_success` / :func:`on_dag_run_failed` run in the
scheduler (or ``airflow dags test``), which holds the run in its DB session, read the ``report``
task's XCom and set ``dag_run.note``. A note a user already wrote is kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("dailyrec.ui.notes")

NOTE_PREFIX = "dailyrec: "
"""Every note this module writes starts with it (a note without it is a user's and is kept)."""


def run_note(cur_date: str, verdict: str, published_version: str | None = None) -> str:
    """One line for the run list: ``"dailyrec: 2026-11-02 | gate passed; published | version V"``.

    Args:
        cur_date: the day the run processed (``YYYY-MM-DD``).
        verdict: :func:`dailyrec.runctx.run_verdict`'s line.
        published_version: the version that went online for this date (Redis version or model
            version), ``None`` when nothing was published.
    """
    parts = [cur_date, verdict]
    if published_version:
        parts.append(f"version {published_version}")
    return NOTE_PREFIX + " | ".join(parts)


def _session_run(dag_run: Any) -> tuple[Any, Any]:
    """``(session, run)``: the caller's DB session and the run in it. The scheduler passes a run
    bound to its session; ``airflow dags test`` passes a detached one, and its loop commits the
    thread's scoped session (``settings.Session()``) right after, so the run is loaded there."""
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    from airflow import settings
    from airflow.models.dagrun import DagRun

    session = object_session(dag_run)
    if session is not None:
        return session, dag_run
    session = settings.Session()
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_run.dag_id, DagRun.run_id == dag_run.run_id))
    return session, run


def _report_note(session: Any, dag_id: str, run_id: str) -> str | None:
    """The ``note`` of the run's ``report`` task XCom."""
    from sqlalchemy import select

    from airflow.models.xcom import XComModel

    value = session.scalar(select(XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == "report",
        XComModel.key == "return_value", XComModel.map_index == -1))
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return value.get("note") if isinstance(value, dict) else None


def set_note(dag_run: Any) -> str | None:
    """Set the run's note from its report, in the caller's session (the caller commits); a user's
    own note is kept. Returns the note set, if any."""
    session, run = _session_run(dag_run)
    if run is None:
        return None
    current = run.note
    if current and not str(current).startswith(NOTE_PREFIX):
        return None
    note = _report_note(session, run.dag_id, run.run_id)
    if note:
        run.note = note
    return note


def _safe(dag_run: Any) -> None:
    try:
        note = set_note(dag_run)
        if note:
            log.info("note of %s %s: %s", dag_run.dag_id, dag_run.run_id, note)
    except Exception:  # a listener must never break the scheduler
        log.exception("could not set the note of %s %s", getattr(dag_run, "dag_id", "?"),
                      getattr(dag_run, "run_id", "?"))


def _hookimpl(f):
    from airflow.listeners import hookimpl

    return hookimpl(f)


@_hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    """Listener: the run succeeded; note its day, verdict and version."""
    _safe(dag_run)


@_hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    """Listener: the run failed; note its day and which tasks failed."""
    _safe(dag_run)
