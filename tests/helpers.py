"""Small hand-made inputs for tests that need exact control over the rows."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from dailyrec.contract import LOG_SCHEMA


def tiny_logs(cur_date: str = "2026-11-01", hour: int = 3, n: int = 20) -> pa.Table:
    t0 = dt.datetime.fromisoformat(cur_date).replace(hour=hour, tzinfo=dt.timezone.utc)
    cols = {}
    for f in LOG_SCHEMA:
        if f.name == "event_time":
            cols[f.name] = pa.array([t0 + dt.timedelta(seconds=i) for i in range(n)], f.type)
        elif f.name == "click":
            cols[f.name] = pa.array([i % 2 for i in range(n)], f.type)
        elif f.name == "conversion":
            cols[f.name] = pa.array([1 if i % 4 == 1 else 0 for i in range(n)], f.type)
        elif pa.types.is_string(f.type):
            cols[f.name] = pa.array([f"{f.name}-{i % 5}" for i in range(n)], f.type)
        else:
            cols[f.name] = pa.array([i % 3 for i in range(n)], f.type)
    return pa.table(cols, schema=LOG_SCHEMA)
