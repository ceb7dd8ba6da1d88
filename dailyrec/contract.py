"""The log contract: Arrow schemas of the inputs and the check that enforces them.

See docs/data-contract.md. A violation raises :class:`ContractError` whose message names the
partition, the file, the column, the expected and the found type (or the bad values and their rows,
numbered from 0 in file order); the check reads only and writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dailyrec.errors import ContractError
from dailyrec.storage import SUCCESS_MARKER, Store


INT_SIDE = ["C1", "banner_pos", "device_type", "device_conn_type",
            "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
STR_SIDE = ["site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
            "device_id", "device_ip", "device_model"]

LOG_SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        *[pa.field(c, pa.int32()) for c in ["C1", "banner_pos"]],
        *[pa.field(c, pa.string()) for c in STR_SIDE],
        *[pa.field(c, pa.int32()) for c in ["device_type", "device_conn_type"]],
        *[pa.field(c, pa.int32()) for c in ["C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]],
        pa.field("click", pa.int8(), nullable=False),
        pa.field("conversion", pa.int8(), nullable=False),
    ]
)

USER_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_gender", pa.string()),
        pa.field("user_age_bucket", pa.int32()),
        pa.field("user_segment", pa.string()),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("item_category", pa.string()),
        pa.field("item_domain", pa.string()),
        pa.field("item_publisher", pa.string()),
        pa.field("item_created_dt", pa.date32()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {"logs": LOG_SCHEMA, "users": USER_SCHEMA, "items": ITEM_SCHEMA}
#: The column whose values are unique within a partition (logs: also within a day, across hours).
KEYS: dict[str, str] = {"logs": "request_id", "users": "user_id", "items": "item_id"}
HOUR_DIR = re.compile(r"hour=(0[0-9]|1[0-9]|2[0-3])")


def _compatible(expected: pa.DataType, found: pa.DataType) -> bool:
    if expected.equals(found):
        return True
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found) or pa.types.is_string_view(found)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(found) and found.tz is not None and found.tz.upper() in ("UTC", "+00:00", "Z")
    return False


def check_schema(schema: pa.Schema, expected: pa.Schema, where: str) -> list[str]:
    """Raise on a missing or mistyped column; return the names of extra (ignored) columns."""
    found = {f.name: f for f in schema}
    for f in expected:
        if f.name not in found:
            raise ContractError(
                f"{where}: column '{f.name}' is missing (expected type {f.type})")
        if not _compatible(f.type, found[f.name].type):
            raise ContractError(
                f"{where}: column '{f.name}' has type {found[f.name].type}, expected {f.type}")
    return [n for n in found if n not in expected.names]


def conform(table: pa.Table, expected: pa.Schema) -> pa.Table:
    """Select and cast the contract's columns in the contract's order (after :func:`check_schema`)."""
    return table.select(expected.names).cast(expected)


@dataclass
class PartitionReport:
    dataset: str
    partition: str
    files: list[str]
    rows: int
    extra_columns: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "partition": self.partition, "files": self.files,
                "rows": self.rows, "extra_columns": self.extra_columns, **self.stats}


def _rows(mask: pa.Array | pa.ChunkedArray, limit: int = 5) -> str:
    """``"row 3"`` / ``"rows 3, 9 and 4 more"``: the positions (from 0) where ``mask`` is true."""
    idx = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"row{'s' if len(idx) > 1 else ''} {', '.join(map(str, idx[:limit]))}{more}"


def _binary_type(t: pa.DataType) -> pa.DataType:
    return pa.large_binary() if pa.types.is_large_string(t) else (
        pa.binary_view() if pa.types.is_string_view(t) else pa.binary())


def _check_utf8(table: pa.Table, where: str) -> None:
    """Every string column is valid UTF-8 (Parquet readers do not check it; DuckDB fails on it)."""
    for name in table.column_names:
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                or pa.types.is_string_view(col.type)):
            continue
        try:
            col.validate(full=True)
        except pa.ArrowInvalid:
            raw = [b for c in col.chunks for b in c.view(_binary_type(c.type)).to_pylist()]
            bad = [b is not None and not _decodes(b) for b in raw]
            raise ContractError(f"{where}: column '{name}' is not valid UTF-8 at {_rows(pa.array(bad))} "
                                f"(bytes {raw[bad.index(True)].hex(' ')})") from None


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _check_values(dataset: str, table: pa.Table, where: str, hour_bounds: tuple[Any, Any] | None) -> None:
    expected = SCHEMAS[dataset]
    _check_utf8(table, where)
    for f in expected:
        if not f.nullable:
            col = table.column(f.name)
            if col.null_count:
                raise ContractError(f"{where}: column '{f.name}' has {col.null_count} null value(s) "
                                    f"({_rows(pc.is_null(col))}); it may not be null")
    if dataset == "logs":
        _check_labels(table, where, hour_bounds)


def _check_labels(table: pa.Table, where: str, hour_bounds: tuple[Any, Any] | None) -> None:
    for col in ("click", "conversion"):
        bad = pc.invert(pc.is_in(table.column(col), pa.array([0, 1], table.column(col).type)))
        if pc.any(bad).as_py():
            raise ContractError(f"{where}: column '{col}' has {pc.sum(bad).as_py()} value(s) other than 0/1 "
                                f"({_rows(bad)})")
    conv_no_click = pc.and_(pc.equal(table.column("conversion"), 1), pc.equal(table.column("click"), 0))
    if pc.any(conv_no_click).as_py():
        raise ContractError(
            f"{where}: column 'conversion' is 1 on {pc.sum(conv_no_click).as_py()} row(s) where 'click' is 0 "
            f"({_rows(conv_no_click)}; a conversion must follow a click)")
    if hour_bounds is not None and table.num_rows:
        lo, hi = hour_bounds
        t = table.column("event_time").cast(pa.timestamp("us", tz="UTC"))
        mn, mx = pc.min(t).as_py(), pc.max(t).as_py()
        if mn < lo or mx >= hi:
            outside = pc.or_(pc.less(t, pa.scalar(lo, t.type)), pc.greater_equal(t, pa.scalar(hi, t.type)))
            raise ContractError(
                f"{where}: column 'event_time' has values outside the partition's hour "
                f"[{lo.isoformat()}, {hi.isoformat()}): min {mn.isoformat()}, max {mx.isoformat()} "
                f"({_rows(outside)})")


def check_unique(keys: list[tuple[str, pa.ChunkedArray]], column: str, where: str, limit: int = 3) -> None:
    """Raise naming the files and rows of the first duplicated values of ``column``.

    ``keys``: ``(file label, the column's values in that file)`` for every file of the scope.
    """
    keys = [(label, col.cast(pa.string())) for label, col in keys]
    allkeys = pa.chunked_array([c for _, col in keys for c in col.chunks], pa.string())
    if pc.count_distinct(allkeys).as_py() == len(allkeys):
        return
    counts = pa.table({column: allkeys}).group_by(column).aggregate([(column, "count")])
    dups = counts.filter(pc.greater(counts.column(f"{column}_count"), 1))
    shown = []
    for value in sorted(dups.column(column).to_pylist())[:limit]:
        places = [f"{label} {_rows(pc.equal(col, value))}" for label, col in keys
                  if pc.any(pc.equal(col, value)).as_py()]
        shown.append(f"{value!r} at {'; '.join(places)}")
    more = f" (and {dups.num_rows - limit} more duplicated value(s))" if dups.num_rows > limit else ""
    raise ContractError(f"{where}: column '{column}' has duplicate values (it must be unique): "
                        f"{' | '.join(shown)}{more}")


def check_layout(store: Store, path: str, hours: bool = False) -> None:
    """Refuse an entry the contract does not know under a partition folder, naming every one.

    ``hours=True`` (a day of logs): only folders ``hour=00`` .. ``hour=23``; otherwise (an hour,
    a snapshot): only ``*.parquet`` files. Names starting with ``_`` (``_SUCCESS``,
    ``_manifest.json``) or ``.`` (writes in progress, hidden files) are allowed everywhere.
    """
    if not store.is_dir(path):
        return
    bad = []
    for info in store.fs.get_file_info(pafs.FileSelector(path, recursive=False)):
        name, is_dir = info.base_name, info.type == pafs.FileType.Directory
        if name.startswith(("_", ".")):
            continue
        ok = (is_dir and HOUR_DIR.fullmatch(name) is not None) if hours else (
            not is_dir and name.endswith(".parquet"))
        if not ok:
            bad.append(f"{'folder' if is_dir else 'file'} '{name}'")
    if bad:
        allowed = "folders hour=00 .. hour=23" if hours else "*.parquet files"
        raise ContractError(
            f"{path}: unexpected {', '.join(sorted(bad))} (the contract allows only {allowed}, plus names "
            "starting with '_' or '.'); its data would be ignored: move it out of the partition or fix its name")


def check_day_keys(store: Store, cur_date: str) -> None:
    """``request_id`` is unique over the whole day (every file of its 24 hours)."""
    keys = []
    for h in range(24):
        part = store.partition("logs", cur_date, h)
        for path in store.list_files(part, ".parquet"):
            with store.fs.open_input_file(path) as fh:
                keys.append((f"hour={h:02d}/{path.rsplit('/', 1)[1]}",
                             pq.ParquetFile(fh).read(columns=[KEYS["logs"]]).column(0)))
    check_unique(keys, KEYS["logs"], f"logs {store.partition('logs', cur_date)}")


def validate_partition(
    store: Store, dataset: str, cur_date: str, hour: int | None = None, require_success: bool = True,
    min_rows: int = 0,
) -> PartitionReport:
    """Check every Parquet file of one partition against the contract; read only.

    Raises :class:`ContractError` (an entry other than ``*.parquet`` in the partition, schema,
    invalid UTF-8, nulls in a key, label values, event times outside the hour, a duplicated key of
    :data:`KEYS` across the partition's files, too few rows) or :class:`FileNotFoundError` (no
    partition, no files, no ``_SUCCESS`` marker for an hourly log partition).
    """
    import datetime as dt

    if dataset not in SCHEMAS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SCHEMAS)}")
    part = store.partition(dataset, cur_date, hour)
    if not store.is_dir(part):
        raise FileNotFoundError(f"partition {part} does not exist")
    if require_success and dataset == "logs" and not store.exists(f"{part}/{SUCCESS_MARKER}"):
        raise FileNotFoundError(f"partition {part} has no {SUCCESS_MARKER} marker (the hour is not complete)")
    check_layout(store, part)
    files = store.list_files(part, ".parquet")
    if not files:
        raise FileNotFoundError(f"partition {part} holds no .parquet file")
    bounds = None
    if dataset == "logs" and hour is not None:
        lo = dt.datetime.combine(dt.date.fromisoformat(str(cur_date)), dt.time(hour), tzinfo=dt.timezone.utc)
        bounds = (lo, lo + dt.timedelta(hours=1))
    rows, extras, keys = 0, set(), []
    clicks = conversions = 0
    for path in files:
        where = f"partition {part}, file {path.rsplit('/', 1)[1]}"
        with store.fs.open_input_file(path) as fh:
            try:
                pf = pq.ParquetFile(fh)
            except Exception as exc:
                raise ContractError(f"{where}: not a readable Parquet file ({exc})") from None
            extras.update(check_schema(pf.schema_arrow, SCHEMAS[dataset], where))
            table = pf.read(columns=SCHEMAS[dataset].names)
        _check_values(dataset, table, where, bounds)
        keys.append((f"file {path.rsplit('/', 1)[1]}", table.column(KEYS[dataset])))
        rows += table.num_rows
        if dataset == "logs":
            clicks += int(pc.sum(table.column("click")).as_py() or 0)
            conversions += int(pc.sum(table.column("conversion")).as_py() or 0)
    check_unique(keys, KEYS[dataset], f"partition {part}")
    if rows < min_rows:
        raise ContractError(f"partition {part}: {rows} row(s), fewer than the minimum {min_rows}")
    stats: dict[str, Any] = {}
    if dataset == "logs":
        stats = {"clicks": clicks, "conversions": conversions,
                 "ctr": round(clicks / rows, 6) if rows else 0.0}
    return PartitionReport(dataset, part, [f.rsplit("/", 1)[1] for f in files], rows, sorted(extras), stats)


def read_partition(store: Store, dataset: str, cur_date: str, hour: int | None = None,
                   columns: list[str] | None = None) -> pa.Table:
    """Read one partition (all hours of a day for ``logs`` when ``hour`` is None), conformed."""
    expected = SCHEMAS[dataset]
    if dataset == "logs" and hour is None:
        tables = [read_partition(store, dataset, cur_date, h, columns) for h in range(24)
                  if store.is_dir(store.partition(dataset, cur_date, h))]
        if not tables:
            raise FileNotFoundError(f"no hourly partitions under {store.partition(dataset, cur_date)}")
        return pa.concat_tables(tables)
    part = store.partition(dataset, cur_date, hour)
    files = store.list_files(part, ".parquet")
    if not files:
        raise FileNotFoundError(f"partition {part} holds no .parquet file")
    out = []
    for path in files:
        with store.fs.open_input_file(path) as fh:
            pf = pq.ParquetFile(fh)
            check_schema(pf.schema_arrow, expected, f"partition {part}, file {path.rsplit('/', 1)[1]}")
            t = conform(pf.read(columns=expected.names), expected)
        out.append(t.select(columns) if columns else t)
    return pa.concat_tables(out)


def write_partition(store: Store, dataset: str, table: pa.Table, cur_date: str, hour: int | None = None,
                    manifest: dict[str, Any] | None = None, mark_success: bool = True) -> str:
    """Write one partition atomically (conformed to the contract) with its ``_SUCCESS`` marker."""
    table = conform(table, SCHEMAS[dataset])
    final = store.partition(dataset, cur_date, hour)
    with store.atomic_output(final) as tmp:
        pq.write_table(table, f"{tmp}/part-00000.parquet", filesystem=store.fs, compression="zstd")
        if manifest is not None:
            store.write_json(f"{tmp}/_manifest.json", manifest)
        if mark_success:
            with store.fs.open_output_stream(f"{tmp}/{SUCCESS_MARKER}"):
                pass
    return final


# ---- completeness and volumes of a day ------------------------------------------------------------

def hour_complete(store: Store, cur_date: str, hour: int) -> bool:
    """True when ``logs/dt=cur_date/hour=HH/_SUCCESS`` exists."""
    return store.exists(f"{store.partition('logs', cur_date, hour)}/{SUCCESS_MARKER}")


def missing_hours(store: Store, cur_date: str) -> list[int]:
    """Hours (0-23) of ``cur_date`` whose ``_SUCCESS`` marker is not there yet."""
    return [h for h in range(24) if not hour_complete(store, cur_date, h)]


def check_day_volumes(day: str, rows: int, clicks: int, previous_rows: int | None, vcfg: Any) -> None:
    """Refuse an empty, click-less or truncated day (``vcfg``: ``dailyrec.config.ValidationConfig``).

    Raises:
        ContractError: fewer rows than ``min_rows_per_day``, fewer clicks than
            ``min_clicks_per_day``, or fewer rows than ``(1 - max_drop_vs_previous_day)`` x the
            previous day's ``previous_rows``; the message names the partition ``day``.
    """
    if rows < vcfg.min_rows_per_day:
        raise ContractError(f"{day}: {rows} rows in the day, fewer than validation.min_rows_per_day="
                            f"{vcfg.min_rows_per_day} (empty or truncated day)")
    if clicks < vcfg.min_clicks_per_day:
        raise ContractError(f"{day}: {clicks} clicks in the day, fewer than validation.min_clicks_per_day="
                            f"{vcfg.min_clicks_per_day}")
    if previous_rows is not None and rows < (1 - vcfg.max_drop_vs_previous_day) * previous_rows:
        raise ContractError(
            f"{day}: {rows} rows, less than {1 - vcfg.max_drop_vs_previous_day:.0%} of the "
            f"previous day's {previous_rows} (truncated day? see validation.max_drop_vs_previous_day)")
