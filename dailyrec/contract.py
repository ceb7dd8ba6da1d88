"""The log contract: Arrow schemas of the inputs and the check that enforces them.

See docs/data-contract.md. A violation raises :class:`ContractError` whose message names the
partition, the file, the column, the expected and the found type (or the bad values); the check
reads only and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
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
KEYS: dict[str, str] = {"users": "user_id", "items": "item_id"}


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


def _check_values(dataset: str, table: pa.Table, where: str, hour_bounds: tuple[Any, Any] | None) -> None:
    expected = SCHEMAS[dataset]
    for f in expected:
        if not f.nullable:
            nulls = table.column(f.name).null_count
            if nulls:
                raise ContractError(f"{where}: column '{f.name}' has {nulls} null value(s); it may not be null")
    if dataset == "logs":
        for col in ("click", "conversion"):
            bad = pc.sum(pc.invert(pc.is_in(table.column(col), pa.array([0, 1], table.column(col).type)))).as_py()
            if bad:
                raise ContractError(f"{where}: column '{col}' has {bad} value(s) other than 0/1")
        conv_no_click = pc.sum(pc.and_(pc.equal(table.column("conversion"), 1),
                                       pc.equal(table.column("click"), 0))).as_py() or 0
        if conv_no_click:
            raise ContractError(
                f"{where}: column 'conversion' is 1 on {conv_no_click} row(s) where 'click' is 0 "
                "(a conversion must follow a click)")
        if hour_bounds is not None and table.num_rows:
            lo, hi = hour_bounds
            t = table.column("event_time").cast(pa.timestamp("us", tz="UTC"))
            mn, mx = pc.min(t).as_py(), pc.max(t).as_py()
            if mn < lo or mx >= hi:
                raise ContractError(
                    f"{where}: column 'event_time' has values outside the partition's hour "
                    f"[{lo.isoformat()}, {hi.isoformat()}): min {mn.isoformat()}, max {mx.isoformat()}")
    else:
        key = table.column(KEYS[dataset])
        if pc.count_distinct(key).as_py() != table.num_rows:
            raise ContractError(f"{where}: column '{KEYS[dataset]}' has duplicate ids")


def validate_partition(
    store: Store, dataset: str, cur_date: str, hour: int | None = None, require_success: bool = True,
    min_rows: int = 0,
) -> PartitionReport:
    """Check every Parquet file of one partition against the contract; read only.

    Raises :class:`ContractError` (schema, nulls, label values, event times outside the hour,
    duplicate dimension keys, too few rows) or :class:`FileNotFoundError` (no partition, no files,
    no ``_SUCCESS`` marker for an hourly log partition).
    """
    import datetime as dt

    if dataset not in SCHEMAS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SCHEMAS)}")
    part = store.partition(dataset, cur_date, hour)
    if not store.is_dir(part):
        raise FileNotFoundError(f"partition {part} does not exist")
    if require_success and dataset == "logs" and not store.exists(f"{part}/{SUCCESS_MARKER}"):
        raise FileNotFoundError(f"partition {part} has no {SUCCESS_MARKER} marker (the hour is not complete)")
    files = store.list_files(part, ".parquet")
    if not files:
        raise FileNotFoundError(f"partition {part} holds no .parquet file")
    bounds = None
    if dataset == "logs" and hour is not None:
        lo = dt.datetime.combine(dt.date.fromisoformat(str(cur_date)), dt.time(hour), tzinfo=dt.timezone.utc)
        bounds = (lo, lo + dt.timedelta(hours=1))
    rows, extras = 0, set()
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
        rows += table.num_rows
        if dataset == "logs":
            clicks += int(pc.sum(table.column("click")).as_py() or 0)
            conversions += int(pc.sum(table.column("conversion")).as_py() or 0)
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
