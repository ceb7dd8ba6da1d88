"""Import an Avazu CTR ``train.csv`` into the log contract (hourly logs + daily users/items).

    python -m dailyrec.ingest.avazu --input PATH/train.csv [--data-root DIR] [--set key=value]
        [--start YYYY-MM-DD --end YYYY-MM-DD] [--no-fill-empty-hours] [--unsorted]
        [--event-time spread|hour_start]

The CSV (plain or ``.gz``/``.bz2``) is streamed in blocks with ``pyarrow.csv.open_csv``, so a
multi-GB file is imported in bounded memory. Avazu's ``train.csv`` is sorted by ``hour``: each hour
is written as soon as a later hour shows up. If the first block already shows the file is not
sorted, the import switches to spilling every hour to a temporary Arrow file and writes them all at
the end (``--unsorted`` forces this, still in bounded memory); an out-of-order row found after hours
were written stops the import with an error naming the line. Any failure removes the partitions
the run had written (a bad block never leaves a partition behind).

Mapping (docs/importers.md):

* ``hour`` YYMMDDHH (read as UTC) -> ``logs/dt=20YY-MM-DD/hour=HH``; ``event_time`` = the hour
  start plus ``i/n`` of the hour for the i-th of the hour's n rows (``--event-time spread``, keeps
  the file order) or exactly the hour start (``--event-time hour_start``);
* ``request_id`` = ``id``; ``click`` = ``click``; ``conversion`` = 0 (Avazu has no conversions);
* ``user_id`` = ``device_id``, except the anonymous ``device_id`` "a99f214a" (and an empty one):
  ``device_id + ":" + device_ip``;
* ``item_id`` = ``"site:" + site_id`` when ``app_id`` is the "no app" value "ecad2386", else
  ``"app:" + app_id``; items snapshot of a day: its distinct items, ``item_category``/``item_domain``
  = the site's or the app's category/domain (the item's most frequent combination that day),
  ``item_publisher`` = "site"/"app", ``item_created_dt`` = first day the item appears in the file;
* users snapshot of a day: its distinct users, ``user_gender``/``user_segment`` "unknown",
  ``user_age_bucket`` null (Avazu has no user attributes);
* every other contract column is copied from the column of the same name;
* an exact repeat of a line (within its hour) is dropped and counted (``duplicate_rows_dropped``);
  the same ``id`` with other values in the same hour is an error naming both lines.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.contract import INT_SIDE, ITEM_SCHEMA, STR_SIDE
from dailyrec.ingest.common import (InputError, PartitionWriter, check_mask, complete_logs, concat_str,
                                    date_filter, date_span, day_of, duplicate_lines, hour_bounds,
                                    hour_event_times, in_range_mask, items_table, line_ref, parse_int,
                                    print_summary, users_table, with_data_root)
from dailyrec.storage import open_store

log = logging.getLogger("dailyrec.import")

AVAZU_COLUMNS = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
                 "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
                 "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
NO_APP = "ecad2386"          # app_id of a site impression ("no app")
ANONYMOUS_DEVICE = "a99f214a"  # device_id shared by most devices (no id)
ITEM_SIDE = ["item_category", "item_domain", "item_publisher"]
DEFAULT_BLOCK_SIZE = 16 << 20


# ---- reading --------------------------------------------------------------------------------------

def _open_text(path: Path) -> io.TextIOBase:
    return io.TextIOWrapper(pa.input_stream(str(path), compression="detect"), encoding="utf-8",
                            errors="replace", newline="")


def read_header(path: Path) -> list[str]:
    with _open_text(path) as fh:
        line = fh.readline()
    if not line.strip():
        raise InputError(f"{path}: line 1: empty file (expected a CSV header with {', '.join(AVAZU_COLUMNS)})")
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")]


def check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in AVAZU_COLUMNS if c not in header]
    if missing:
        hint = (" (Avazu test.csv has no 'click' labels and cannot be imported as a log)"
                if missing == ["click"] else "")
        raise InputError(f"{path}: line 1 (header): column(s) {', '.join(repr(c) for c in missing)} "
                         f"missing; an Avazu train.csv has {', '.join(AVAZU_COLUMNS)}{hint}")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(f"{path}: line 1 (header): duplicate column(s) {dup}")
    extra = [c for c in header if c not in AVAZU_COLUMNS]
    if extra:
        log.warning("%s: ignoring extra column(s) %s", path, extra)


def _locate_parse_error(path: Path, first_line: int, n_fields: int) -> str:
    """After a CSV parse error: the first line at or after ``first_line`` with a wrong field count."""
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno < first_line:
                continue
            got = line.rstrip("\r\n").count(",") + 1
            if got != n_fields:
                return f"line {lineno}: expected {n_fields} fields, got {got}"
            if lineno > first_line + 5_000_000:
                break
    return f"at or after line {first_line}"


def _convert(batch: pa.RecordBatch, path: Path, first_line: int) -> pa.Table:
    """One block of raw CSV strings -> contract columns + item side + ``_hour`` (epoch hour)."""
    file, at = str(path), line_ref(first_line)
    col = batch.column
    rid = pc.utf8_trim_whitespace(col("id"))
    check_mask(pc.equal(rid, ""), rid, file=file, column="id", line_of=at, what="empty id")
    click_s = pc.utf8_trim_whitespace(col("click"))
    check_mask(pc.invert(pc.is_in(click_s, pa.array(["0", "1"]))), click_s, file=file, column="click",
               line_of=at, what="click must be 0 or 1")
    hour_s = pc.utf8_trim_whitespace(col("hour"))
    ts = pc.strptime(hour_s, format="%y%m%d%H", unit="s", error_is_null=True)
    bad_hour = pc.or_(pc.invert(pc.match_substring_regex(hour_s, r"^[0-9]{8}$")), pc.is_null(ts))
    check_mask(bad_hour, hour_s, file=file, column="hour", line_of=at,
               what="cannot parse as YYMMDDHH")
    hour_key = pc.divide(pc.cast(pc.cast(ts, pa.timestamp("s")), pa.int64()), 3600)

    cols: dict[str, Any] = {"request_id": rid, "click": pc.cast(click_s, pa.int8())}
    for c in INT_SIDE:
        cols[c] = parse_int(col(c), file=file, column=c, line_of=at, allow_empty=True)
    for c in STR_SIDE:
        cols[c] = col(c)
    device_id, device_ip = col("device_id"), col("device_ip")
    anon = pc.or_(pc.equal(device_id, ANONYMOUS_DEVICE), pc.equal(device_id, ""))
    cols["user_id"] = pc.if_else(anon, concat_str(device_id, ":", device_ip), device_id)
    is_site = pc.equal(col("app_id"), NO_APP)
    cols["item_id"] = pc.if_else(is_site, concat_str("site:", col("site_id")), concat_str("app:", col("app_id")))
    cols["item_category"] = pc.if_else(is_site, col("site_category"), col("app_category"))
    cols["item_domain"] = pc.if_else(is_site, col("site_domain"), col("app_domain"))
    cols["item_publisher"] = pc.if_else(is_site, "site", "app")
    cols["_hour"] = hour_key
    cols["_line"] = pa.array(np.arange(first_line, first_line + batch.num_rows, dtype=np.int64))
    return pa.table(cols)


# ---- per-hour buffering ---------------------------------------------------------------------------

class _Spill:
    """``--unsorted``: every hour's rows appended to its own Arrow IPC file in a temp directory."""

    def __init__(self, spill_dir: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="avazu-spill-", dir=spill_dir))
        self.writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self.sinks: dict[int, Any] = {}

    def add(self, hour: int, table: pa.Table) -> None:
        if hour not in self.writers:
            self.sinks[hour] = pa.OSFile(str(self.dir / f"{hour}.arrow"), "wb")
            self.writers[hour] = pa.ipc.new_stream(self.sinks[hour], table.schema)
        self.writers[hour].write_table(table)

    def hours(self) -> list[int]:
        return sorted(self.writers)

    def read(self, hour: int) -> pa.Table:
        self.writers.pop(hour).close()
        self.sinks.pop(hour).close()
        with pa.memory_map(str(self.dir / f"{hour}.arrow")) as src:
            table = pa.ipc.open_stream(src).read_all()
        (self.dir / f"{hour}.arrow").unlink()
        return table

    def close(self) -> None:
        for w in self.writers.values():
            with contextlib.suppress(Exception):
                w.close()
        for s in self.sinks.values():
            with contextlib.suppress(Exception):
                s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _DayState:
    """What a day's snapshots need: its distinct users and its items' side-feature counts."""

    def __init__(self) -> None:
        self.users: list[pa.Array] = []
        self.n_user_values = 0
        self.items: list[pa.Table] = []

    def add(self, table: pa.Table) -> None:
        u = pc.unique(table.column("user_id"))
        self.users.append(u.combine_chunks() if isinstance(u, pa.ChunkedArray) else u)
        self.n_user_values += len(u)
        if self.n_user_values > 2_000_000 and len(self.users) > 1:   # keep memory bounded
            self.users = [pc.unique(pa.concat_arrays(self.users))]
            self.n_user_values = len(self.users[0])
        self.items.append(_count_item_features(table))


def _count_item_features(table: pa.Table) -> pa.Table:
    """``item_id, item_category, item_domain, item_publisher, n``: rows per side-feature combination."""
    keys = ["item_id", *ITEM_SIDE]
    agg = table.group_by(keys).aggregate([("item_id", "count")])
    return pa.table({**{k: agg.column(k) for k in keys}, "n": agg.column("item_id_count")})


def _mode_per_item(counts: pa.Table) -> pa.Table:
    """One row per item: its most frequent side-feature combination (ties: the smallest values).

    Independent of the row order, so sorted and unsorted inputs give the same snapshot.
    """
    keys = ["item_id", *ITEM_SIDE]
    agg = counts.group_by(keys).aggregate([("n", "sum")])
    total = pa.table({**{k: agg.column(k) for k in keys}, "n": agg.column("n_sum")})
    total = total.sort_by([("item_id", "ascending"), ("n", "descending"), ("item_category", "ascending"),
                           ("item_domain", "ascending"), ("item_publisher", "ascending")])
    ids = total.column("item_id").to_numpy()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return total.filter(pa.array(first)).select(keys)


def _fmt_hour(hour_key: int) -> str:
    return f"{day_of(int(hour_key) // 24)} {int(hour_key) % 24:02d}:00"


def _hash_ids(values: pa.Array) -> np.ndarray:
    return pd.util.hash_array(values.to_numpy(zero_copy_only=False).astype(object))


# ---- import ---------------------------------------------------------------------------------------

def _blocks(path: Path, header: list[str], block_size: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    """``(batch of raw CSV strings, physical line of its first row)`` for every non-empty block.

    A CSV parse error raises :class:`InputError` naming the first line with a wrong field count.
    """
    try:   # opening reads (and parses) the first block
        reader = pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(block_size=block_size),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                 include_columns=AVAZU_COLUMNS),
        )
    except pa.ArrowInvalid as exc:
        where = _locate_parse_error(path, 2, len(header))
        raise InputError(f"{path}: {where}: CSV parse error ({exc})") from None
    line = 2   # physical line of the next data row (line 1 is the header)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise InputError(f"{path}: {_locate_parse_error(path, line, len(header))}: "
                             f"CSV parse error ({exc})") from None
        if batch.num_rows == 0:
            continue
        yield batch, line
        line += batch.num_rows


class _AvazuRun:
    """One import run: the per-hour buffers (or the spill), the per-day states and the counters.

    Blocks go in with :meth:`add`; an hour is written as soon as a later hour shows up (sorted
    input) or at :meth:`finish` (spilled input); a day's snapshots once all its hours are written.
    """

    def __init__(self, path: Path, writer: PartitionWriter, event_time: str, lo: int | None, hi: int | None,
                 spill: _Spill | None, spill_dir: str | None) -> None:
        self.path, self.writer, self.event_time, self.lo, self.hi = path, writer, event_time, lo, hi
        self.spill, self.spill_dir = spill, spill_dir
        self.item_first_day: dict[str, int] = {}
        self.user_hashes = np.empty(0, dtype=np.uint64)
        self.days: dict[int, _DayState] = {}
        self.buffers: dict[int, list[pa.Table]] = {}
        self.flushed: set[int] = set()
        self.imported_items: set[str] = set()
        self.filtered_out = 0
        self.repeats_dropped = 0
        self.max_hour = -1

    def _drop_repeats(self, table: pa.Table) -> pa.Table:
        """Drop exact repeats of a line within the hour (a repeated line has the same ``hour``);
        the same ``id`` with other values is an :class:`InputError` naming the lines."""
        rid = table.column("request_id")
        if pc.count_distinct(rid).as_py() == table.num_rows:
            return table
        counts = table.group_by("request_id").aggregate([("request_id", "count")])
        repeated = counts.filter(pc.greater(counts.column("request_id_count"), 1)).column("request_id")
        rows = table.filter(pc.is_in(rid, repeated)).drop_columns(["_hour"]).to_pandas()
        lines = duplicate_lines(rows, ["request_id"], "_line", file=str(self.path))
        self.repeats_dropped += len(lines)
        return table.filter(pc.invert(pc.is_in(table.column("_line"), pa.array(lines, pa.int64()))))

    def flush_hour(self, hour_key: int, table: pa.Table) -> None:
        day = hour_key // 24
        table = self._drop_repeats(table).drop_columns(["_hour", "_line"])
        n = table.num_rows
        table = table.append_column("event_time", hour_event_times(hour_key, n, self.event_time))
        table = table.append_column("conversion", pa.repeat(pa.scalar(0, pa.int8()), n))
        self.writer.write_hour(complete_logs(table), day_of(day), hour_key % 24, source_rows=n)
        self.days.setdefault(day, _DayState()).add(table)
        self.flushed.add(hour_key)

    def finalize_day(self, day: int) -> None:
        """Write the users and items snapshots of ``day`` (all its hours are written)."""
        state = self.days.pop(day, None)
        if state is None:
            return
        date, writer = day_of(day), self.writer
        users = pc.unique(pa.chunked_array(state.users, pa.string()))
        users = users.take(pc.sort_indices(users))
        self.user_hashes = np.union1d(self.user_hashes, _hash_ids(users))
        writer.write_snapshot("users", users_table(users), date)
        items = _mode_per_item(pa.concat_tables(state.items))   # sorted by item_id
        self.imported_items.update(items.column("item_id").to_pylist())
        created = pa.array([self.item_first_day[i] for i in items.column("item_id").to_pylist()], pa.int32())
        items_t = items_table(items.column("item_id").combine_chunks(),
                              *[items.column(c).combine_chunks() for c in ITEM_SIDE],
                              created.cast(pa.date32()))
        writer.write_snapshot("items", items_t, date)
        log.info("%s: %d hour(s), %d users, %d items", date,
                 len(writer.hours_written.get(date, ())), len(users), items_t.num_rows)

    def _check_sorted(self, table: pa.Table, hours: np.ndarray) -> None:
        """Streaming needs hours in non-decreasing file order: else spill (nothing written yet) or fail."""
        steps = np.diff(hours)
        late = self.max_hour >= 0 and hours[0] < self.max_hour
        if not (late or np.any(steps < 0)):
            return
        i = 0 if late else int(np.argmax(steps < 0)) + 1
        bad_line = int(table.column("_line")[i].as_py())
        if self.flushed:
            raise InputError(
                f"{self.path}, line {bad_line}, column 'hour': the file is not sorted by hour "
                f"(hour {_fmt_hour(hours[i])} after hour "
                f"{_fmt_hour(hours[i - 1] if i else self.max_hour)}); re-run with --unsorted")
        log.warning("%s, line %d: not sorted by hour; buffering every hour in temporary "
                    "files (as with --unsorted)", self.path, bad_line)
        self.spill = _Spill(self.spill_dir)
        for h in sorted(self.buffers):
            for part in self.buffers.pop(h):
                self.spill.add(h, part)

    def add(self, table: pa.Table) -> None:
        """One converted block (:func:`_convert`)."""
        # first day of every item, over the whole file (also rows outside --start/--end)
        firsts = table.group_by("item_id").aggregate([("_hour", "min")])
        for item, h in zip(firsts.column("item_id").to_pylist(), firsts.column("_hour_min").to_pylist()):
            d = h // 24
            if self.item_first_day.get(item, d + 1) > d:
                self.item_first_day[item] = d
        hours = table.column("_hour").to_numpy()
        keep = in_range_mask(hours // 24, self.lo, self.hi)
        if keep is not None:
            self.filtered_out += int((~keep).sum())
            table, hours = table.filter(pa.array(keep)), hours[keep]
        if table.num_rows == 0:
            return
        if self.spill is None:
            self._check_sorted(table, hours)
        order = np.argsort(hours, kind="stable")
        if np.any(order != np.arange(len(order))):
            table, hours = table.take(pa.array(order)), hours[order]
        for h, a, b in hour_bounds(hours):
            part = table.slice(a, b - a)
            if self.spill is not None:
                self.spill.add(h, part)
            else:
                self.buffers.setdefault(h, []).append(part)
        if self.spill is not None:
            return
        self.max_hour = max(self.max_hour, int(hours[-1]))
        for h in sorted(k for k in self.buffers if k < self.max_hour):
            self.flush_hour(h, pa.concat_tables(self.buffers.pop(h)))
        for d in sorted(d for d in self.days
                        if d < self.max_hour // 24 and not any(k // 24 == d for k in self.buffers)):
            self.finalize_day(d)

    def finish(self) -> None:
        """End of file: write the hours still buffered (or spilled) and the last days' snapshots."""
        if self.spill is not None:
            for h in self.spill.hours():
                self.flush_hour(h, self.spill.read(h))
                if not any(k // 24 == h // 24 for k in self.spill.hours()):
                    self.finalize_day(h // 24)
        else:
            for h in sorted(self.buffers):
                self.flush_hour(h, pa.concat_tables(self.buffers.pop(h)))
        for d in sorted(self.days):
            self.finalize_day(d)

    def fill_empty(self) -> None:
        """Empty snapshots for the days of the span without events, then 24 empty hours for them."""
        writer = self.writer
        span = date_span(writer.dates())
        for date in span:
            if date not in writer.snapshots.get("users", {}):
                writer.write_snapshot("users", users_table(pa.array([], pa.string())), date)
                writer.write_snapshot("items", items_table(*[pa.array([], f.type) for f in ITEM_SCHEMA]), date)
        writer.fill_empty_hours(span)


def import_avazu(cfg: Config, path: str | Path, *, start: str | None = None, end: str | None = None,
                 fill_empty_hours: bool = True, unsorted: bool = False, event_time: str = "spread",
                 validate: bool = True, block_size: int = DEFAULT_BLOCK_SIZE,
                 spill_dir: str | None = None) -> dict[str, Any]:
    """Import one Avazu train.csv; returns the summary dict (dates, hours, rows, users, items ...).

    Raises :class:`InputError` for a malformed file (naming file, line and column),
    ``FileNotFoundError`` for a missing one, ``ValueError`` for bad options; a failure removes the
    partitions this run had written.
    """
    t_start = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Avazu input {path} does not exist or is not a file")
    if event_time not in ("spread", "hour_start"):
        raise ValueError(f"event_time must be 'spread' or 'hour_start', got {event_time!r}")
    lo, hi = date_filter(start, end)
    header = read_header(path)
    check_header(path, header)

    inputs = {"source": str(path.resolve()), "format": "avazu", "event_time": event_time}
    writer = PartitionWriter(cfg, open_store(cfg), "import_avazu", inputs, validate=validate)
    run = _AvazuRun(path, writer, event_time, lo, hi, _Spill(spill_dir) if unsorted else None, spill_dir)
    rows_read = 0
    with writer.all_or_nothing():
        try:
            for batch, line in _blocks(path, header, block_size):
                table = _convert(batch, path, line)
                rows_read += batch.num_rows
                run.add(table)
            run.finish()
        finally:
            if run.spill is not None:
                run.spill.close()
        if fill_empty_hours:
            run.fill_empty()
    summary = writer.summary(
        source=str(path), format="avazu", rows_read=rows_read, rows_filtered_out=run.filtered_out,
        duplicate_rows_dropped=run.repeats_dropped,
        users=int(len(run.user_hashes)),
        items=len(run.imported_items),
        seconds=round(time.perf_counter() - t_start, 3),
    )
    log.info("avazu import done: %d rows, %d hour(s) + %d empty, %d date(s) in %.2fs", summary["rows"],
             summary["hours"], summary["empty_hours_filled"], summary["n_dates"], summary["seconds"])
    return summary


# ---- CLI ------------------------------------------------------------------------------------------

def import_avazu_cli(cfg: Config, input: str, start: str | None = None, end: str | None = None,
                     fill_empty_hours: bool = True, unsorted: bool = False,
                     event_time: Literal["spread", "hour_start"] = "spread", validate: bool = True,
                     block_size: int = DEFAULT_BLOCK_SIZE, spill_dir: str | None = None,
                     data_root: str | None = None) -> dict[str, Any]:
    """Import an Avazu train.csv into the log contract.

    ``input``: the CSV (a local path; plain, .gz or .bz2); ``start``/``end``: inclusive
    YYYY-MM-DD date filter; ``fill_empty_hours``: write empty, valid, _SUCCESS-marked partitions
    for the hours without events of every imported date; ``unsorted``: the file is not sorted by
    hour (spill every hour to a temporary file in ``spill_dir``, write all at the end);
    ``event_time``: spread the hour's rows over the hour in file order, or put them all at the
    hour start; ``validate``: re-read every written partition with validate_partition;
    ``block_size``: CSV read block in bytes; ``data_root`` overrides storage.data_root.
    Returns :func:`import_avazu`'s summary.
    """
    return import_avazu(with_data_root(cfg, data_root), input, start=start, end=end,
                        fill_empty_hours=fill_empty_hours, unsorted=unsorted, event_time=event_time,
                        validate=validate, block_size=block_size, spill_dir=spill_dir)


if __name__ == "__main__":
    cli.main(import_avazu_cli, render=print_summary)
