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

Two engines run the same files (``sql.engine``, docs/features-and-sampling.md): DuckDB (this
module) and Spark SQL (:mod:`dailyrec.spark`). :func:`run`, :func:`query_arrow`,
:func:`register_arrow` and :func:`register_parquet` take either a DuckDB connection or a
:class:`dailyrec.spark.SparkEngine`, so the callers do not change. The files are written in the
dialect both accept; the few differences are applied to the rendered text by
:func:`to_dialect` (named in :data:`SPARK_RULES`, tested in tests/unit/test_sql_dialects.py):

* ``spark_params``: a ``$name`` parameter is written ``:name`` (Spark's named parameter marker;
  values are still bound, never spliced);
* ``spark_identifiers``: a ``{{slot}}`` identifier is quoted with backticks (in Spark ``"x"`` is
  a string literal);
* ``spark_trailing_comma``: a comma that ends a select list right before ``FROM`` (DuckDB
  accepts it; the ``-- @for`` blocks leave one) is dropped;
* ``spark_line_variant``: a line ``<duckdb text> -- spark: <spark text>`` is ``<spark text>`` on
  Spark (the DuckDB text may be empty: a Spark-only line).
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


DIALECTS = ("duckdb", "spark")
"""The SQL dialects of ``sql.engine``."""
_QUOTE = {"duckdb": '"', "spark": "`"}
_SPARK_VARIANT = re.compile(r"^(?P<indent>\s*)(?P<duck>.*?)\s*--\s*spark:\s?(?P<spark>.*)$")
_TRAILING_COMMA = re.compile(r",(?P<gap>\s*(?:--[^\n]*\n\s*)*)(?P<kw>FROM\b)", re.IGNORECASE)
_CODE_PARTS = re.compile(r"(--[^\n]*|'(?:[^']|'')*')")
SPARK_RULES = ("spark_line_variant", "spark_params", "spark_trailing_comma", "spark_identifiers")
"""The named rewrites :func:`to_dialect` applies for Spark, in order (``spark_identifiers`` is
applied by :func:`render` when a slot is filled)."""


def _check_dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; one of {list(DIALECTS)}")
    return dialect


def _outside_comments_and_strings(sql: str, fn: Any) -> str:
    """``sql`` with ``fn`` applied to the parts that are neither ``--`` comments nor '...' strings."""
    parts = _CODE_PARTS.split(sql)
    return "".join(p if i % 2 else fn(p) for i, p in enumerate(parts))


def to_dialect(sql: str, dialect: str) -> str:
    """The rendered text of a query for ``dialect``: unchanged for DuckDB; for Spark the rules of
    :data:`SPARK_RULES` (``-- spark:`` line variants, ``$name`` -> ``:name``, no trailing comma
    before ``FROM``). ``ValueError`` for an unknown dialect."""
    if _check_dialect(dialect) == "duckdb":
        return sql
    out = _outside_comments_and_strings(_line_variants(sql), lambda code: _PARAM.sub(r":\1", code))
    return _TRAILING_COMMA.sub(lambda m: f"{m['gap'] or ' '}{m['kw']}", out)


def _line_variants(sql: str) -> str:
    """``spark_line_variant``: each ``<duckdb text> -- spark: <spark text>`` line -> ``<spark text>``."""
    lines = []
    for line in sql.splitlines():
        m = _SPARK_VARIANT.match(line)
        lines.append(f"{m['indent']}{m['spark']}" if m else line)
    return "\n".join(lines)


def prepared_statements(name: str, params: dict[str, Any] | None, slots: dict[str, Any] | None,
                        dialect: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(statement text, its parameters), ...]`` of ``sql/<name>.sql`` rendered for ``dialect``
    (the parameters a statement uses, named without the marker; ``ValueError`` naming the file
    for a missing one or an empty file)."""
    text = render(load_sql(name), slots, dialect)
    if dialect != "duckdb":
        text = _line_variants(text)
    stmts = statements(text)
    if not stmts:
        raise ValueError(f"sql/{name}.sql holds no statement")
    return [(to_dialect(st, dialect), _prepared(name, st, params or {})) for st in stmts]


def _slot_value(name: str, value: Any, inside_word: bool, quote: str = '"') -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"template slot {{{{{name}}}}} takes an int or an identifier, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if not _IDENT.match(value):
        raise ValueError(f"template slot {{{{{name}}}}}: {value!r} is not a plain identifier")
    if inside_word:
        raise ValueError(f"template slot {{{{{name}}}}} inside an identifier only takes ints, got {value!r}")
    return f"{quote}{value}{quote}"


def _fill_slots(line: str, slots: dict[str, Any], quote: str = '"') -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in slots:
            raise ValueError(f"template slot {{{{{name}}}}} has no value")
        before = line[m.start() - 1] if m.start() > 0 else " "
        after = line[m.end()] if m.end() < len(line) else " "
        inside = bool(re.match(r"\w", before) or re.match(r"\w", after))
        return _slot_value(name, slots[name], inside, quote)

    return _SLOT.sub(repl, line)


def render(sql: str, slots: dict[str, Any] | None = None, dialect: str = "duckdb") -> str:
    """Expand ``-- @for`` blocks and ``{{slot}}`` values (see the module doc); ``$params`` stay.
    ``dialect`` picks the identifier quote of the slots (``"`` for DuckDB, a backtick for Spark);
    :func:`to_dialect` does the rest of a dialect's rewrites."""
    slots = dict(slots or {})
    quote = _QUOTE[_check_dialect(dialect)]
    lines = sql.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _FOR.match(lines[i])
        if not m:
            out.append(_fill_slots(lines[i], slots, quote) if "{{" in lines[i] else lines[i])
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
            out.extend(_fill_slots(line, inner, quote) for line in lines[i + 1:j])
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
    if _is_engine(con):
        return con.run(name, params, slots)
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
    if _is_engine(con):
        return con.query_arrow(name, params, slots)
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
    if _is_engine(con):
        con.register_parquet(view, store, files, base_dir)
        return
    if isinstance(store.fs, pafs.LocalFileSystem):
        rel = con.read_parquet(files, hive_partitioning=base_dir is not None, union_by_name=True)
        rel.create_view(view, replace=True)
        return
    part = pads.partitioning(flavor="hive") if base_dir is not None else None
    dataset = pads.dataset(files, filesystem=store.fs, format="parquet", partitioning=part,
                           partition_base_dir=base_dir)
    con.register(view, dataset)


def register_arrow(con: duckdb.DuckDBPyConnection, view: str, table: pa.Table) -> None:
    """Expose the Arrow ``table`` as ``view`` (DuckDB: zero copy; Spark: a local DataFrame)."""
    if not _IDENT.match(view):
        raise ValueError(f"bad view name {view!r}")
    if _is_engine(con):
        con.register_arrow(view, table)
        return
    con.register(view, table)


def _is_engine(con: Any) -> bool:
    """True for an engine object of another dialect (:class:`dailyrec.spark.SparkEngine`), which
    runs the calls of this module itself; False for a DuckDB connection."""
    return getattr(con, "dialect", "duckdb") != "duckdb"
