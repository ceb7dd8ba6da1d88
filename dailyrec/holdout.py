"""How many hours the retrieval holdout takes: enough users and clicks for the gate to decide.

The holdout is the last ``H`` hours ending with ``cur_date``; the training window is the sampling
window minus those hours, so the two never overlap whatever ``H`` is (the sample step passes ``H``
to ``sql/sample_clicks.sql``, ``sample_popularity.sql`` and ``sample_exposed.sql``, which all split
on the same hour index). :func:`choose_holdout` starts from ``training.holdout_hours`` and, when
those hours have fewer than ``evaluation.min_holdout_users`` users or
``evaluation.min_holdout_clicks`` clicks, takes more hours, hour by hour backwards (the rest of
``cur_date``, then the days before), until both minimums are met or the bound is reached:

    H_max = max(holdout_hours, min(24 * evaluation.max_holdout_days, 24 * (sampling.window_days - 1)))

(the training window always keeps at least its first day, and its first day with logs: a log's
first day is never extended). If the bound is reached first, the
holdout is the whole bound and is reported as too small (the gate's verdict is then
"undecided", ``evaluation.when_undecided``). ``training.holdout_hours = 0`` means no holdout and
is never extended.

The choice is recorded in the samples manifest (``holdout``) and repeated by the gate's result
and the run report: hours, users, clicks, start/end (UTC), whether and why it was extended.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dailyrec.dates import parse_date


def max_holdout_hours(cfg: Any, days_with_logs: int | None = None) -> int:
    """``H_max`` of the module doc (``training.holdout_hours`` when that is 0); with
    ``days_with_logs`` (days of the sampling window that have logs) the training window also keeps
    at least its first day *with logs* (so the first day of a log is never extended)."""
    base = cfg.training.holdout_hours
    if base == 0:
        return 0
    days = cfg.sampling.window_days if days_with_logs is None else min(cfg.sampling.window_days, days_with_logs)
    return max(base, min(24 * cfg.evaluation.max_holdout_days, 24 * (days - 1)))


def span_bounds(cur_date: str, hours: int) -> tuple[str, str]:
    """``(start, end)`` ISO UTC timestamps of the last ``hours`` hours ending with ``cur_date``
    (start inclusive, end exclusive = midnight after ``cur_date``)."""
    end = dt.datetime.combine(parse_date(cur_date) + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return (end - dt.timedelta(hours=hours)).isoformat(), end.isoformat()


def decide(per_hour: list[tuple[int, int, int]], cfg: Any, cur_date: str, days_with_logs: int | None = None
           ) -> dict[str, Any]:
    """The holdout span from ``per_hour`` = ``[(h, clicks, users), ...]`` newest first (the rows of
    ``sql/holdout_hours.sql``; ``h`` = hour index relative to ``cur_date``, 23 = its last hour).

    Returns the manifest's ``holdout`` dict: ``hours``, ``configured_hours``, ``max_hours``,
    ``users``, ``clicks``, ``start``/``end`` (ISO UTC), ``extended`` (bool), ``enough`` (both
    minimums met), ``min_users``, ``min_clicks``, ``reason`` (a sentence for the report).
    """
    ev = cfg.evaluation
    base, top = cfg.training.holdout_hours, max_holdout_hours(cfg, days_with_logs)

    def totals(hours: int) -> tuple[int, int]:
        rows = [r for r in per_hour if r[0] >= 24 - hours]
        return sum(r[2] for r in rows), sum(r[1] for r in rows)

    def ok(users: int, clicks: int) -> bool:
        return users >= ev.min_holdout_users and clicks >= ev.min_holdout_clicks

    users0, clicks0 = totals(base)
    hours = base
    if base and not ok(users0, clicks0):
        hours = top
        for h, _, _ in per_hour:  # the hour boundaries where the totals change, newest first
            cand = 24 - h
            if base < cand <= top and ok(*totals(cand)):
                hours = cand
                break
    users, clicks = totals(hours)
    enough = ok(users, clicks)
    start, end = span_bounds(cur_date, hours)
    need = f"(minimum {ev.min_holdout_users} users and {ev.min_holdout_clicks} clicks)"
    if base == 0:
        reason = "training.holdout_hours is 0: no holdout"
    elif hours == base:
        reason = (f"the last {base} hour(s) of {cur_date} hold {users} users and {clicks} clicks "
                  + ("" if enough else f"{need}, and no more hours may be taken (max {top})"))
    else:
        reason = (f"the last {base} hour(s) held only {users0} users and {clicks0} clicks {need}: extended to "
                  f"{hours} hours" + ("" if enough else f", the most allowed (evaluation.max_holdout_days="
                                      f"{ev.max_holdout_days}, sampling.window_days={cfg.sampling.window_days}, "
                                      f"{days_with_logs if days_with_logs is not None else '?'} day(s) with logs), "
                                      "still too small"))
    return {"hours": hours, "configured_hours": base, "max_hours": top, "users": users, "clicks": clicks,
            "start": start, "end": end, "extended": hours > base, "enough": enough,
            "min_users": ev.min_holdout_users, "min_clicks": ev.min_holdout_clicks, "reason": reason.strip()}


def choose_holdout(con: Any, cfg: Any, cur_date: str, days_with_logs: int | None = None) -> dict[str, Any]:
    """:func:`decide` over the clicks of the DuckDB connection ``con`` (views of
    :func:`dailyrec.events.open_events` over the sampling window); ``days_with_logs``: how many days
    of that window have logs (see :func:`max_holdout_hours`)."""
    from dailyrec import sql

    top = max_holdout_hours(cfg, days_with_logs)
    if top == 0:
        return decide([], cfg, cur_date, days_with_logs)
    t = sql.query_arrow(con, "holdout_hours", {"cur_date": cur_date, "lookback_days": -(-top // 24)})
    rows = list(zip(*(t.column(c).to_pylist() for c in ("h", "clicks", "users"))))
    return decide(rows, cfg, cur_date, days_with_logs)
