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


def test_hourly_runs_go_in_date_and_hour_order():
    """hourly_training: a pass waits for the unfinished runs of every earlier (date, hour), whatever
    created them (scheduler, backfill, trigger with cur_date + hour, trigger without date)."""
    def hourly(run_id, t, conf=None, after=None, state="running"):
        return run_ref(_dr(run_id, t, after=after or (t + dt.timedelta(hours=1)) if t else after, conf=conf,
                           state=state), hourly=True)

    h = {n: hourly(f"backfill__2026-11-02T0{n}", dt.datetime(2026, 11, 2, n, tzinfo=UTC), state="queued")
         for n in (0, 1, 2)}
    assert [r.hour for r in h.values()] == [0, 1, 2] and h[2].cur_date == "2026-11-02"
    late = hourly("scheduled__2026-11-01T23", dt.datetime(2026, 11, 1, 23, tzinfo=UTC),
                  after=dt.datetime(2026, 11, 2, 5, tzinfo=UTC))
    trig = hourly("manual__x", None, conf={"cur_date": "2026-11-02", "hour": 1},
                  after=dt.datetime(2026, 11, 1, 0, tzinfo=UTC))
    undated = hourly("manual__undated", None, after=dt.datetime(2026, 11, 2, 2, 10, tzinfo=UTC))
    assert (undated.cur_date, undated.hour) == ("2026-11-02", 1)   # the last complete hour
    runs = [*h.values(), late, trig, undated]
    assert blockers(late, runs) == []                          # the day before's hour 23 comes first
    assert blockers(h[0], runs) == [late]
    assert blockers(h[1], runs) == [late, h[0], trig]             # hour 1 triggered earlier
    assert blockers(h[2], runs) == [late, h[0], trig, h[1], undated]   # same hour: by trigger time
    assert "hour 02" in h[2].describe()


def test_pass_gate_and_span():
    from dailyrec.config import load_config
    from dailyrec.passchain import pass_gate, pass_span

    off = load_config(environ={})
    assert pass_gate(off, 5) == (False, pass_gate(off, 5)[1]) and "passes are disabled" in pass_gate(off, 5)[1]
    on = load_config(overrides={"passes.enabled": True, "training.split_per_pass": 3}, environ={})
    assert [pass_span(on, h) for h in (0, 2, 3, 23)] == [(0, 2), (0, 2), (3, 5), (21, 23)]
    assert [pass_gate(on, h)[0] for h in range(6)] == [False, False, True, False, False, True]
    assert "the pass of hours 00-02 trains in the run of hour 02" in pass_gate(on, 1)[1]
    assert pass_gate(on, 23) == (True, "hour 23 ends the pass of hours 21-23: it trains")
