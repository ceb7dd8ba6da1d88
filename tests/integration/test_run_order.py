"""The run order of a chained DAG (dailyrec.runorder): which unfinished runs hold a run back.
The real-scheduler side is tests/integration/test_backfill.py."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from dailyrec.runorder import RunRef, blockers, run_ref

UTC = dt.timezone.utc


def _dr(run_id, logical=None, after=None, conf=None, state="running"):
    after = after or (logical + dt.timedelta(days=1) if logical else dt.datetime(2026, 11, 30, 13, tzinfo=UTC))
    return SimpleNamespace(run_id=run_id, logical_date=logical, run_after=after, conf=conf or {}, state=state)


def test_run_ref_reads_each_kind_of_run():
    day = dt.datetime(2026, 11, 2, tzinfo=UTC)
    assert run_ref(_dr("backfill__2026-11-02", day)).cur_date == "2026-11-02"
    assert run_ref(_dr("manual__x", conf={"cur_date": "2026-10-05"})).cur_date == "2026-10-05"
    assert run_ref(_dr("manual__undated")).cur_date == "2026-11-29"  # last complete day before run_after
    assert run_ref(_dr("manual__bad", conf={"cur_date": "yesterday"})).cur_date == ""  # sorts first


def test_an_earlier_unfinished_date_blocks_a_later_one_only():
    d = {n: run_ref(_dr(f"backfill__2026-11-0{n}", dt.datetime(2026, 11, n, tzinfo=UTC), state="queued"))
         for n in (1, 2, 3)}
    runs = list(d.values())
    assert blockers(d[1], runs) == []
    assert blockers(d[2], runs) == [d[1]]
    assert blockers(d[3], runs) == [d[1], d[2]]


def test_finished_runs_never_block():
    done = RunRef("2026-11-01", "2026-11-02T00:00:00+00:00", "a", "failed")
    ok = RunRef("2026-11-01", "2026-11-02T00:00:00+00:00", "b", "success")
    me = RunRef("2026-11-02", "2026-11-03T00:00:00+00:00", "c")
    assert blockers(me, [done, ok, me]) == []


def test_same_date_goes_by_trigger_time_and_a_later_date_never_blocks():
    """The scheduled run of D (waiting for its logs) holds a manual re-run of D triggered later, and a
    run of D+1; it never holds a run for an earlier date (issue 15, 3)."""
    sched = RunRef("2026-11-29", "2026-11-30T00:00:00+00:00", "scheduled__2026-11-29")
    rerun = RunRef("2026-11-29", "2026-11-30T13:00:00+00:00", "manual__1")
    later = RunRef("2026-11-30", "2026-12-01T00:00:00+00:00", "manual__2")
    old = RunRef("2026-11-05", "2026-11-30T14:00:00+00:00", "manual__3")
    runs = [sched, rerun, later, old]
    assert blockers(sched, runs) == [old]
    assert blockers(rerun, runs) == [old, sched]
    assert blockers(old, runs) == []
    assert blockers(later, runs) == [old, sched, rerun]
