"""A tiny DuckDB helper for the SQL steps: open a connection, expose Parquet partitions as views,
load a query from ``sql/<name>.sql``, fill it in safely and run it.

Filling a query in (no string formatting of values, ever):

* ``$name``: a DuckDB prepared parameter (dates, numbers, lists of values). Left in the SQL text
  and passed to ``execute`` as a named parameter, so values are never spliced into SQL.
* ``{{name}}``: a *structural* slot (a column name or a small integer that becomes part of a
  column name, e.g. ``impressions_{{W}}d``). Only an ``int`` or an identifier matching
  ``[A-Za-z_][A-Za-z0-9_]*`` is accepted; identifiers are emitted double-quoted unless the slot
  is written inside a larger identifier (``impressions_{{W}}d``), where only ints are allowed.
* ``-- @for W in windows`` ... ``-- @end``: the lines in between are repeated once per element
  of the list ``windows`` (ints or identifiers) with ``{{W}}`` bound to the element; used for
  one column per counter window.

Views over Parquet: :func:`register_parquet` exposes a list of files as a view. On a local data
root DuckDB's own reader scans them (``hive_partitioning`` gives the ``dt``/``hour`` columns of
``.../dt=YYYY-MM-DD/hour=HH/`` paths); on any other pyarrow filesystem (object stores) the files
go through a ``pyarrow.dataset`` with the same hive partition columns, so the SQL is the same.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from dailyrec.storage import Store

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SLOT = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_FOR = re.compile(r"^\s*--\s*@for\s+([A-Za-z_]\w*)\s+in\s+([A-Za-z_]\w*)\s*$")
_END = re.compile(r"^\s*--\s*@end\s*$")
_PARAM = re.compile(r"(?<![\w$:])\$([A-Za-z_][A-Za-z0-9_]*)")

log = logging.getLogger("dailyrec.duck")


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC (dates of ``TIMESTAMPTZ`` values are UTC dates) that
    preserves insertion order."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    # results of queries without ORDER BY keep the scan order (files in the order given, rows in
    # file order): the sampling step relies on it for determinism without a sort
    con.execute("SET preserve_insertion_order = true")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def load_sql(name: str) -> str:
    path = SQL_DIR / (name if name.endswith(".sql") else f"{name}.sql")
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {path} does not exist")
    return path.read_text()


def _slot_value(name: str, value: Any, inside_word: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"template slot {{{{{name}}}}} takes an int or an identifier, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if not _IDENT.match(value):
        raise ValueError(f"template slot {{{{{name}}}}}: {value!r} is not a plain identifier")
    if inside_word:
        raise ValueError(f"template slot {{{{{name}}}}} inside an identifier only takes ints, got {value!r}")
    return f'"{value}"'


def _fill_slots(line: str, slots: dict[str, Any]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in slots:
            raise ValueError(f"template slot {{{{{name}}}}} has no value")
        before = line[m.start() - 1] if m.start() > 0 else " "
        after = line[m.end()] if m.end() < len(line) else " "
        inside = bool(re.match(r"\w", before) or re.match(r"\w", after))
        return _slot_value(name, slots[name], inside)

    return _SLOT.sub(repl, line)


def render(sql: str, slots: dict[str, Any] | None = None) -> str:
    """Expand ``-- @for`` blocks and ``{{slot}}`` values (see the module doc); ``$params`` stay."""
    slots = dict(slots or {})
    lines = sql.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _FOR.match(lines[i])
        if not m:
            out.append(_fill_slots(lines[i], slots) if "{{" in lines[i] else lines[i])
            i += 1
            continue
        var, seq_name = m.groups()
        j = i + 1
        while j < len(lines) and not _END.match(lines[j]):
            if _FOR.match(lines[j]):
                raise ValueError("nested -- @for blocks are not supported")
            j += 1
        if j == len(lines):
            raise ValueError(f"-- @for {var} in {seq_name} has no matching -- @end")
        seq = slots.get(seq_name)
        if not isinstance(seq, (list, tuple)):
            raise ValueError(f"-- @for {var} in {seq_name}: {seq_name!r} must be a list slot")
        for value in seq:
            inner = {**slots, var: value}
            out.extend(_fill_slots(line, inner) for line in lines[i + 1:j])
        i = j + 1
    return "\n".join(out)


def params_used(sql: str) -> set[str]:
    """Names of the ``$params`` a rendered query uses (comments and string literals excluded)."""
    text = re.sub(r"--[^\n]*", "", sql)
    text = re.sub(r"'(?:[^']|'')*'", "''", text)
    return set(_PARAM.findall(text))


def statements(sql: str) -> list[str]:
    """Split a rendered file into statements at a ``;`` that ends a line (comments ignored)."""
    out, cur = [], []
    for line in sql.splitlines():
        cur.append(line)
        if re.sub(r"--.*$", "", line).rstrip().endswith(";"):
            out.append("\n".join(cur))
            cur = []
    if "\n".join(cur).strip() and re.sub(r"--[^\n]*", "", "\n".join(cur)).strip():
        out.append("\n".join(cur))
    return out


def _prepared(name: str, stmt: str, params: dict[str, Any]) -> dict[str, Any]:
    used = params_used(stmt)
    missing = used - set(params)
    if missing:
        raise ValueError(f"sql/{name}.sql needs parameter(s) {sorted(missing)}")
    return {k: params[k] for k in used}


def run(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any] | None = None,
        slots: dict[str, Any] | None = None) -> None:
    """Render ``sql/<name>.sql`` and execute its statement(s) in order (DDL, temp tables).

    Each statement gets the ``$params`` it uses; a parameter a statement uses but ``params``
    lacks is an error naming the file. Statements end with ``;`` at the end of a line.
    """
    params = params or {}
    t0 = time.perf_counter()
    stmts = statements(render(load_sql(name), slots))
    if not stmts:
        raise ValueError(f"sql/{name}.sql holds no statement")
    for stmt in stmts:
        con.execute(stmt, _prepared(name, stmt, params))
    log.debug("sql/%s.sql ran in %.3fs", name, time.perf_counter() - t0)


def query_arrow(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any] | None = None,
                slots: dict[str, Any] | None = None) -> pa.Table:
    """Like :func:`run`; the last statement is a query whose result comes back as Arrow."""
    params = params or {}
    t0 = time.perf_counter()
    stmts = statements(render(load_sql(name), slots))
    if not stmts:
        raise ValueError(f"sql/{name}.sql holds no statement")
    for stmt in stmts[:-1]:
        con.execute(stmt, _prepared(name, stmt, params))
    last = stmts[-1].rstrip().rstrip(";")
    table = con.sql(last, params=_prepared(name, last, params) or None).to_arrow_table()
    log.debug("sql/%s.sql: %d rows in %.3fs", name, table.num_rows, time.perf_counter() - t0)
    return table


def register_parquet(con: duckdb.DuckDBPyConnection, view: str, store: Store, files: list[str],
                     base_dir: str | None = None) -> None:
    """Expose ``files`` (Parquet, under ``base_dir`` with hive ``key=value`` folders) as ``view``.

    The types of the hive partition columns (``dt``, ``hour``) depend on the reader; the SQL
    casts them (see ``sql/events_view.sql``).
    """
    if not _IDENT.match(view):
        raise ValueError(f"bad view name {view!r}")
    if not files:
        raise FileNotFoundError(f"no Parquet file to expose as view {view!r}")
    if isinstance(store.fs, pafs.LocalFileSystem):
        rel = con.read_parquet(files, hive_partitioning=base_dir is not None, union_by_name=True)
        rel.create_view(view, replace=True)
        return
    part = pads.partitioning(flavor="hive") if base_dir is not None else None
    dataset = pads.dataset(files, filesystem=store.fs, format="parquet", partitioning=part,
                           partition_base_dir=base_dir)
    con.register(view, dataset)


def register_arrow(con: duckdb.DuckDBPyConnection, view: str, table: pa.Table) -> None:
    if not _IDENT.match(view):
        raise ValueError(f"bad view name {view!r}")
    con.register(view, table)
