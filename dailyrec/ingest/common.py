"""Shared helpers of the public-log importers (``dailyrec.ingest.avazu``, ``dailyrec.ingest.movielens``).

* :class:`InputError`: bad input; the message names the file, the line (when known) and the column.
* vectorised value checks (:func:`parse_int`, :func:`check_mask`) that report the first bad row;
* :func:`duplicate_lines`: exact repeats of a line (dropped and counted) vs conflicting lines
  with the same key (an error);
* :func:`complete_logs`: fills the contract columns a source does not have with documented defaults;
* :class:`PartitionWriter`: writes log hours and dimension snapshots with
  :func:`dailyrec.contract.write_partition` (atomic, ``_SUCCESS``, ``_manifest.json``), checks each
  written partition with :func:`dailyrec.contract.validate_partition`, fills empty hours and keeps
  the counters of the summary.

See docs/importers.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from dailyrec.config import Config
from dailyrec.dates import parse_date
from dailyrec.contract import (INT_SIDE, ITEM_SCHEMA, LOG_SCHEMA, STR_SIDE, USER_SCHEMA, validate_partition,
                               write_partition)
from dailyrec.errors import ContractError
from dailyrec.storage import Store, make_manifest

log = logging.getLogger("dailyrec.import")

EPOCH = dt.date(1970, 1, 1)
US_PER_HOUR = 3_600_000_000

#: Defaults of the context columns a source does not have (the contract allows nulls there, but
#: downstream feature code hashes/embeds them, so a constant is friendlier than a null).
DEFAULT_INT = 0
DEFAULT_STR = "unknown"


class InputError(ContractError):
    """An input file is malformed. The message names the file, the line if known and the column.

    A :class:`~dailyrec.errors.ContractError` (so a task wrapper does not retry it).
    """


# ---- value checks ---------------------------------------------------------------------------------

LineOf = Callable[[int], str]


def line_ref(first_line: int) -> LineOf:
    """``index in batch -> "line N"`` for a batch whose row 0 is on physical line ``first_line``."""
    return lambda i: f"line {first_line + i}"


def check_mask(bad: pa.Array | pa.ChunkedArray, values: pa.Array | pa.ChunkedArray, *, file: str,
               column: str, line_of: LineOf, what: str) -> None:
    """Raise :class:`InputError` on the first row where ``bad`` is true (nulls count as fine)."""
    bad = pc.fill_null(bad, False)
    i = pc.index(bad, True).as_py()
    if i is None or i < 0:
        return
    n = pc.sum(bad).as_py()
    more = f" ({n} bad row(s) in this block)" if n > 1 else ""
    raise InputError(f"{file}, {line_of(i)}, column '{column}': {what}, got {values[i].as_py()!r}{more}")


_INT_RE = r"^-?[0-9]{1,18}$"


def parse_int(values: pa.Array | pa.ChunkedArray, *, file: str, column: str, line_of: LineOf,
              type: pa.DataType = pa.int32(), allow_empty: bool = False,
              lo: int | None = None, hi: int | None = None) -> pa.Array | pa.ChunkedArray:
    """Strings -> integers of ``type``; an unparsable or out-of-range value raises :class:`InputError`.

    ``allow_empty``: an empty string becomes null (else it is an error).
    """
    values = pc.utf8_trim_whitespace(values)
    empty = pc.equal(values, "")
    if allow_empty:
        values = pc.if_else(empty, pa.scalar(None, pa.string()), values)
    else:
        check_mask(empty, values, file=file, column=column, line_of=line_of, what="empty value")
    check_mask(pc.invert(pc.match_substring_regex(values, _INT_RE)), values, file=file, column=column,
               line_of=line_of, what="not an integer")
    ints = pc.cast(values, pa.int64())
    if pa.types.is_integer(type) and type.bit_width < 64:
        info = np.iinfo(type.to_pandas_dtype())
        lo = info.min if lo is None else max(lo, info.min)
        hi = info.max if hi is None else min(hi, info.max)
    if lo is not None:
        check_mask(pc.less(ints, lo), values, file=file, column=column, line_of=line_of,
                   what=f"integer below {lo}")
    if hi is not None:
        check_mask(pc.greater(ints, hi), values, file=file, column=column, line_of=line_of,
                   what=f"integer above {hi}")
    return pc.cast(ints, type)


def concat_str(*parts: pa.Array | pa.ChunkedArray | str) -> pa.Array | pa.ChunkedArray:
    """Element-wise string concatenation (scalars broadcast)."""
    return pc.binary_join_element_wise(*parts, "")


# ---- dates ----------------------------------------------------------------------------------------

def epoch_day(d: dt.date) -> int:
    return (d - EPOCH).days


def day_of(epoch_days: int) -> str:
    return (EPOCH + dt.timedelta(days=int(epoch_days))).isoformat()


def date_filter(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """``--start/--end`` (inclusive, YYYY-MM-DD) -> epoch-day bounds."""
    lo = epoch_day(parse_date(start)) if start else None
    hi = epoch_day(parse_date(end)) if end else None
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"--start {start} is after --end {end}")
    return lo, hi


def date_span(dates: list[str]) -> list[str]:
    """Every date from the first to the last of ``dates`` (the imported span, gap days included)."""
    if not dates:
        return []
    first, last = parse_date(min(dates)), parse_date(max(dates))
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def in_range_mask(days: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray | None:
    """Boolean mask of epoch days inside [lo, hi], or None when there is no filter."""
    if lo is None and hi is None:
        return None
    keep = np.ones(len(days), dtype=bool)
    if lo is not None:
        keep &= days >= lo
    if hi is not None:
        keep &= days <= hi
    return keep


def hour_bounds(hour_keys: np.ndarray) -> list[tuple[int, int, int]]:
    """For sorted epoch-hour keys: ``[(hour_key, start, stop), ...]`` slices of equal keys."""
    if len(hour_keys) == 0:
        return []
    cuts = np.flatnonzero(np.diff(hour_keys)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(hour_keys)]])
    return [(int(hour_keys[a]), int(a), int(b)) for a, b in zip(starts, stops)]


# ---- table building -------------------------------------------------------------------------------

def complete_logs(table: pa.Table) -> pa.Table:
    """Add the log-contract columns missing from ``table`` (ints 0, strings "unknown"), in order."""
    n = table.num_rows
    cols = []
    for f in LOG_SCHEMA:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        elif f.name in INT_SIDE:
            cols.append(pa.repeat(pa.scalar(DEFAULT_INT, f.type), n))
        elif f.name in STR_SIDE:
            cols.append(pa.repeat(pa.scalar(DEFAULT_STR, f.type), n))
        else:
            raise ValueError(f"log column '{f.name}' has no default and is missing")
    return pa.Table.from_arrays(cols, schema=LOG_SCHEMA)


def hour_event_times(hour_key: int, n: int, mode: str) -> pa.Array:
    """Event times of ``n`` rows of epoch hour ``hour_key``.

    ``hour_start``: all at the hour start; ``spread``: row ``i`` at ``start + i * 1h / n``, so the
    file order is kept and every time stays inside the hour.
    """
    start = hour_key * US_PER_HOUR
    if mode == "hour_start" or n == 0:
        us = np.full(n, start, dtype=np.int64)
    elif mode == "spread":
        us = start + (np.arange(n, dtype=np.int64) * US_PER_HOUR) // n
    else:
        raise ValueError(f"event-time mode must be 'spread' or 'hour_start', got {mode!r}")
    return pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


# ---- duplicates -----------------------------------------------------------------------------------

def duplicate_lines(rows: pd.DataFrame, key: list[str], line_col: str, *, file: str) -> list[int]:
    """The lines of ``rows`` that repeat an earlier line exactly (every column but ``line_col``).

    The import drops them (logged here, counted by the caller); two lines with the same ``key`` that differ anywhere
    else are not a repeat but a conflict: :class:`InputError` naming the file, both lines and the
    columns that differ. ``rows`` may be only the rows whose key is repeated (the rest cannot match).
    """
    if not rows[key].duplicated().any():
        return []
    content = [c for c in rows.columns if c != line_col]
    repeat = rows.duplicated(subset=content, keep="first")
    rest = rows[~repeat]
    clash = rest[rest[key].duplicated(keep=False)]
    if len(clash):
        first = clash.sort_values(line_col).iloc[0]
        same = clash[(clash[key] == first[key]).all(axis=1)].sort_values(line_col)
        differ = [c for c in content if c not in key and same[c].nunique(dropna=False) > 1]
        raise InputError(
            f"{file}: lines {', '.join(str(int(x)) for x in same[line_col])} have the same "
            f"{'/'.join(key)} {'/'.join(str(same[k].iloc[0]) for k in key)} but differ in column(s) "
            f"{', '.join(repr(c) for c in differ)}: not a repeated line, a conflict (fix the input)")
    lines = sorted(int(x) for x in rows.loc[repeat, line_col])
    log.warning("%s: dropping %d exact repeat(s) of an earlier line: line(s) %s%s", file, len(lines),
                ", ".join(map(str, lines[:5])), f" and {len(lines) - 5} more" if len(lines) > 5 else "")
    return lines


# ---- writing --------------------------------------------------------------------------------------

class PartitionWriter:
    """Writes and checks the partitions of one import run and counts what it wrote."""

    def __init__(self, cfg: Config, store: Store, step: str, inputs: dict[str, Any],
                 validate: bool = True) -> None:
        self.cfg, self.store, self.step, self.inputs, self.validate = cfg, store, step, inputs, validate
        self.hours_written: dict[str, set[int]] = {}
        self.rows = self.clicks = self.conversions = 0
        self.empty_hours = 0
        self.hours_with_events = 0
        self.skipped_existing = 0
        self.snapshots: dict[str, dict[str, int]] = {}
        self.written: list[str] = []   # partitions written by this run, in order

    def _check(self, dataset: str, date: str, hour: int | None) -> None:
        if not self.validate:
            return
        try:
            validate_partition(self.store, dataset, date, hour, require_success=True, min_rows=0)
        except (ContractError, FileNotFoundError):
            # never leave an invalid partition behind
            self.store.delete_dir(self.store.partition(dataset, date, hour))
            raise

    def write_hour(self, table: pa.Table, date: str, hour: int, **extra: Any) -> None:
        """One ``logs/dt=/hour=`` partition (``table`` is conformed to the contract on write)."""
        t0 = time.perf_counter()
        n = table.num_rows
        clicks = int(pc.sum(table.column("click")).as_py() or 0) if n else 0
        conversions = int(pc.sum(table.column("conversion")).as_py() or 0) if n else 0
        manifest = make_manifest(self.step, self.cfg, date, self.inputs, {"logs": n},
                                 hour=hour, clicks=clicks, conversions=conversions, **extra)
        self.written.append(write_partition(self.store, "logs", table, date, hour, manifest=manifest))
        self._check("logs", date, hour)
        self.hours_written.setdefault(date, set()).add(hour)
        self.hours_with_events += 1
        self.rows += n
        self.clicks += clicks
        self.conversions += conversions
        log.debug("logs %s hour %02d: %d rows (%.3fs)", date, hour, n, time.perf_counter() - t0)

    def write_snapshot(self, dataset: str, table: pa.Table, date: str, **extra: Any) -> None:
        """One ``users/dt=`` or ``items/dt=`` dimension snapshot."""
        manifest = make_manifest(self.step, self.cfg, date, self.inputs, {dataset: table.num_rows}, **extra)
        self.written.append(write_partition(self.store, dataset, table, date, manifest=manifest))
        self._check(dataset, date, None)
        self.snapshots.setdefault(dataset, {})[date] = table.num_rows

    def fill_empty_hours(self, dates: list[str]) -> int:
        """Zero-row, valid, ``_SUCCESS``-marked partitions for the hours of ``dates`` without events.

        ``dates`` is normally :func:`date_span` of the imported dates, so a day without any event
        inside the span gets its 24 hours too. An hour that already has a partition in the store
        (from an earlier import) is left alone.
        """
        empty = LOG_SCHEMA.empty_table()
        filled = 0
        for date in dates:
            have = self.hours_written.get(date, set())
            for hour in range(24):
                if hour in have:
                    continue
                part = self.store.partition("logs", date, hour)
                if self.store.exists(part):
                    self.skipped_existing += 1
                    continue
                manifest = make_manifest(self.step, self.cfg, date, self.inputs, {"logs": 0},
                                         hour=hour, empty_fill=True)
                self.written.append(write_partition(self.store, "logs", empty, date, hour, manifest=manifest))
                self._check("logs", date, hour)
                filled += 1
        self.empty_hours += filled
        if filled:
            log.info("filled %d empty hour partition(s) over %d date(s)", filled, len(dates))
        return filled

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """On any failure inside, remove what this run wrote and re-raise (an InputError says so)."""
        try:
            yield
        except BaseException as exc:
            n = self.rollback()
            if isinstance(exc, InputError) and n:
                raise InputError(
                    f"{exc} (the {n} partition(s) already written by this run were removed)") from None
            raise

    def rollback(self) -> int:
        """Delete every partition this run wrote (they could be incomplete); returns how many."""
        n = 0
        parents = set()
        for part in reversed(self.written):
            if self.store.is_dir(part):
                self.store.delete_dir(part)
                n += 1
            parents.add(part.rsplit("/", 1)[0])
        for parent in sorted(parents, key=len, reverse=True):   # dt= directories left empty
            if parent.rsplit("/", 1)[-1].startswith("dt=") and self.store.is_dir(parent) and not \
                    self.store.fs.get_file_info(pafs.FileSelector(parent)):
                self.store.delete_dir(parent)
        if n:
            log.warning("removed the %d partition(s) written by this run", n)
        self.written.clear()
        self.hours_written.clear()
        self.snapshots.clear()
        return n

    def dates(self) -> list[str]:
        """Dates that have at least one hour partition with events."""
        return sorted(d for d, hours in self.hours_written.items() if hours)

    def summary(self, **extra: Any) -> dict[str, Any]:
        dates = self.dates()
        span = date_span(dates)
        return {
            "data_root": self.store.uri,
            "dates": dates,
            "dates_without_events": [d for d in span if d not in set(dates)],
            "first_date": dates[0] if dates else None,
            "last_date": dates[-1] if dates else None,
            "n_dates": len(dates),
            "hours": self.hours_with_events,
            "empty_hours_filled": self.empty_hours,
            "existing_hours_kept": self.skipped_existing,
            "rows": self.rows,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "user_snapshots": len(self.snapshots.get("users", {})),
            "item_snapshots": len(self.snapshots.get("items", {})),
            **extra,
        }


def users_table(user_id: pa.Array, gender: pa.Array | None = None, age_bucket: pa.Array | None = None,
                segment: pa.Array | None = None) -> pa.Table:
    n = len(user_id)
    return pa.Table.from_arrays([
        user_id,
        gender if gender is not None else pa.repeat(pa.scalar(DEFAULT_STR), n),
        age_bucket if age_bucket is not None else pa.nulls(n, pa.int32()),
        segment if segment is not None else pa.repeat(pa.scalar(DEFAULT_STR), n),
    ], schema=USER_SCHEMA)


def items_table(item_id: pa.Array, category: pa.Array, domain: pa.Array, publisher: pa.Array,
                created: pa.Array) -> pa.Table:
    return pa.Table.from_arrays([item_id, category, domain, publisher, created], schema=ITEM_SCHEMA)


# ---- CLI ------------------------------------------------------------------------------------------

def with_data_root(cfg: Config, data_root: str | None) -> Config:
    """``cfg`` with ``storage.data_root`` replaced by ``data_root`` (the CLIs' ``--data-root``), if given."""
    return cfg.with_overrides({"storage.data_root": data_root}) if data_root else cfg


def print_summary(summary: dict[str, Any]) -> None:
    """The human summary of an import (the CLIs' output; ``--json`` prints the whole dict instead)."""
    s = summary
    print(f"imported {s.get('source')} ({s.get('format')}) into {s['data_root']}")
    print(f"  dates  : {s['n_dates']} ({s['first_date']} .. {s['last_date']})")
    print(f"  hours  : {s['hours']} with events, {s['empty_hours_filled']} empty filled"
          + (f", {s['existing_hours_kept']} existing kept" if s.get("existing_hours_kept") else ""))
    print(f"  rows   : {s['rows']:,} (clicks {s['clicks']:,}, conversions {s['conversions']:,}"
          + (f", skipped by date filter {s['rows_filtered_out']:,}" if s.get("rows_filtered_out") else "")
          + (f", repeated lines dropped {s['duplicate_rows_dropped']:,}" if s.get("duplicate_rows_dropped") else "")
          + ")")
    print(f"  users  : {s.get('users', 0):,} distinct; items: {s.get('items', 0):,} distinct")
    print(f"  time   : {s.get('seconds', 0):.2f}s")
