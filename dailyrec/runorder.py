"""Runs of a chained DAG go in date order (hourly: in (date, hour) order), whatever created them
(docs/scheduling.md, "Run order").

A daily run warm starts from the previous date's model and publishes over it, so the runs of one
DAG must do their work in date order; an hourly pass (``hourly_training``) warm starts from the
previous pass, so its runs go in ``(cur_date, hour)`` order. The DAG enforces it itself, not a flag
the user must remember: its task ``wait_for_earlier_runs`` (``wait_for_previous_pass`` in the
hourly DAG; a reschedule-mode sensor, no worker slot held) waits while another **unfinished**
(queued or running) run of the same DAG comes first in the order ``(cur_date[, hour], run_after,
run_id)``: an earlier date (hour), or the same one triggered earlier.
Scheduled runs, backfills from the CLI, UI or API (any ``--max-active-runs``, any reprocess
behaviour) and manual triggers all go through it. A finished run (success or failed) never
blocks: after a failed date the next date goes on, warm starting from what exists (the hourly
chain instead stops at a failed pass: :mod:`dailyrec.passchain`).

The unfinished runs are read through Airflow's Task SDK: the runs with a logical date by walking
"the previous run before T in state S" back from the far future; the runs without one (``airflow
dags trigger DAG`` with no date, REST ``"logical_date": null``) through a claim their ``start``
task writes (an Airflow Variable ``dailyrec_run_order.<dag_id>.<hash of run_id>``), removed by
the first poke that finds the run finished or gone.

Light module (no Airflow import at module level): the pure part (:class:`RunRef`,
:func:`blockers`) is unit-tested; the Airflow part runs inside tasks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

UNFINISHED = ("queued", "running")
CLAIM_PREFIX = "dailyrec_run_order."
_FAR_FUTURE = dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class RunRef:
    """A run of the DAG, ordered by ``(cur_date, hour, run_after, run_id)`` (``hour`` None for a
    daily DAG's run; a run whose hour is unknown sorts first in its day)."""

    cur_date: str
    run_after: str
    run_id: str
    state: str = field(default="running", compare=False)
    hour: int | None = None

    def key(self) -> tuple[str, int, str, str]:
        return (self.cur_date, -1 if self.hour is None else self.hour, self.run_after, self.run_id)

    def __lt__(self, other: "RunRef") -> bool:
        return self.key() < other.key()

    def describe(self) -> str:
        hour = "" if self.hour is None else f" hour {self.hour:02d}"
        return f"{self.run_id} (cur_date {self.cur_date or '?'}{hour}, {self.state})"


def _iso(value: Any) -> str:
    from dailyrec.runctx import as_utc

    t = as_utc(value)
    return t.isoformat() if t is not None else ""


def run_ref(dag_run: Any, hourly: bool = False) -> RunRef:
    """The :class:`RunRef` of an Airflow ``DagRun``: its ``cur_date`` (and, ``hourly``, its hour) by
    the rule of :mod:`dailyrec.runctx`, from its conf, logical date and ``run_after``. A run whose
    conf names no valid date sorts first (its ``start`` task refuses it at once, and then it no
    longer blocks)."""
    from dailyrec.runctx import resolve_cur_date, resolve_hour

    ctx = {"params": dict(dag_run.conf or {}), "logical_date": dag_run.logical_date, "dag_run": dag_run,
           "run_after": dag_run.run_after}
    hour = None
    try:
        if hourly:
            cur, hour = resolve_hour(ctx)
        else:
            cur = resolve_cur_date(ctx)
    except ValueError:
        cur = ""
    state = getattr(dag_run.state, "value", dag_run.state)
    return RunRef(cur, _iso(dag_run.run_after), dag_run.run_id, str(state), hour)


def blockers(me: RunRef, others: Iterable[RunRef]) -> list[RunRef]:
    """The unfinished runs that come before ``me`` (``me`` itself excluded), earliest first."""
    return sorted(o for o in others if o.run_id != me.run_id and o.state in UNFINISHED and o < me)


# ---- Airflow side (inside a task) -------------------------------------------------------------
def _send(msg: Any) -> Any:
    from airflow.sdk.execution_time import task_runner

    return task_runner.SUPERVISOR_COMMS.send(msg)


def _dated_unfinished(dag_id: str) -> Iterator[Any]:
    """The unfinished runs of ``dag_id`` that have a logical date, newest first per state."""
    from airflow.sdk.execution_time.comms import GetPreviousDagRun

    for state in UNFINISHED:
        cutoff = _FAR_FUTURE
        while (dr := _send(GetPreviousDagRun(dag_id=dag_id, logical_date=cutoff, state=state)).dag_run) is not None:
            yield dr
            cutoff = dr.logical_date


def claim_key(dag_id: str, run_id: str) -> str:
    return f"{CLAIM_PREFIX}{dag_id}.{hashlib.sha1(run_id.encode()).hexdigest()[:16]}"


def claim(dag_id: str, dag_run: Any, cur_date: str, hour: int | None = None) -> None:
    """Called by ``start``: a run without a logical date makes itself visible to the others."""
    from airflow.sdk import Variable

    if dag_run is None or dag_run.logical_date is not None:
        return
    what = {"run_id": dag_run.run_id, "cur_date": cur_date, **({} if hour is None else {"hour": hour})}
    Variable.set(claim_key(dag_id, dag_run.run_id), json.dumps(what),
                 description=f"run order of {dag_id}: an undated run (dailyrec.runorder); removed when it ends")


def _claimed_unfinished(dag_id: str) -> Iterator[Any]:
    """The unfinished runs of ``dag_id`` without a logical date (their claims); stale claims go."""
    from airflow.sdk import Variable
    from airflow.sdk.execution_time.comms import GetDagRun

    for key in Variable.keys(prefix=f"{CLAIM_PREFIX}{dag_id}."):
        run_id = json.loads(Variable.get(key))["run_id"]
        try:
            dr = _send(GetDagRun(dag_id=dag_id, run_id=run_id))
        except Exception:  # noqa: BLE001 - the run was deleted: its claim is stale
            dr = None
        state = getattr(getattr(dr, "state", None), "value", getattr(dr, "state", None))
        if state not in UNFINISHED:
            Variable.delete(key)
            continue
        yield dr


def unfinished(dag_id: str, hourly: bool = False) -> list[RunRef]:
    """Every unfinished (queued or running) run of ``dag_id`` (another DAG's too), in run order."""
    return sorted(run_ref(dr, hourly) for src in (_dated_unfinished(dag_id), _claimed_unfinished(dag_id))
                  for dr in src)


def first_blocker(dag_id: str, me: RunRef, hourly: bool = False) -> RunRef | None:
    """The earliest unfinished run of ``dag_id`` that comes before ``me``, or None."""
    found = blockers(me, unfinished(dag_id, hourly))
    return found[0] if found else None


def check_order(dag_run: Any, cur_date: str, hour: int | None = None) -> tuple[bool, str]:
    """``wait_for_earlier_runs``' poke (``hour`` given: the hourly DAG's ``wait_for_previous_pass``):
    ``(True, ...)`` when no unfinished run of the DAG comes before this one, else ``(False, which run
    it waits for and what the user can do)``."""
    me = RunRef(cur_date, _iso(dag_run.run_after), dag_run.run_id, hour=hour)
    blocker = first_blocker(dag_run.dag_id, me, hourly=hour is not None)
    if blocker is None:
        return True, f"{dag_run.dag_id}: no unfinished run before {me.describe()}: this run goes on"
    if hour is not None:
        return False, (f"{dag_run.dag_id}: {me.describe()} waits for the earlier run {blocker.describe()}: "
                       "passes go in hour order (docs/scheduling.md, 'Run order'). It goes on when that run "
                       "ends; if that run fails, this pass fails too (a missing hour stops the chain)")
    return False, (f"{dag_run.dag_id}: {me.describe()} waits for the earlier run {blocker.describe()}: "
                   "runs go in date order (docs/scheduling.md, 'Run order'). It goes on when that run "
                   "ends; to go on without it, mark that run failed (a failed date does not block later ones)")
