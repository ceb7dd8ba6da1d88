"""The named SQL dialect differences between DuckDB and Spark (dailyrec/sql.py ``SPARK_RULES``),
the ``sql`` config section's rules, and the Spark engine's settings: all without Java (the
engines themselves are compared by tests/integration/test_spark_parity.py)."""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
import pytest

from dailyrec import sql
from dailyrec.config import SPARK_RESERVED_CONF, ConfigError, load_config
from dailyrec.contract import LOG_SCHEMA, USER_SCHEMA
from dailyrec.features import vocab_source
from dailyrec.spark import SCAN_COLUMNS, SparkEngine, arrow_like_duckdb, spark_path, union_schema


# ---- each rule on its own -------------------------------------------------------------------------
def test_duckdb_text_is_the_file_as_rendered():
    text = "SELECT a, -- spark: SELECT b\n  c,\nFROM t WHERE d = $x"
    assert sql.to_dialect(text, "duckdb") == text


def test_spark_params_become_named_markers_outside_comments_and_strings():
    text = "SELECT '$lit' AS s, $a + $b_2 AS v -- costs $c\nFROM t WHERE x = $a"
    out = sql.to_dialect(text, "spark")
    assert out == "SELECT '$lit' AS s, :a + :b_2 AS v -- costs $c\nFROM t WHERE x = :a"


def test_spark_trailing_comma_before_from_is_dropped_even_across_comment_lines():
    text = "SELECT\n    a,\n    b,\n    -- the end\nFROM t"
    out = sql.to_dialect(text, "spark")
    assert re.sub(r"\s+", " ", out) == "SELECT a, b -- the end FROM t"
    # a comma before anything else, or before a word that only starts with "from", stays
    assert sql.to_dialect("SELECT a, from_unixtime(b) FROM t", "spark") == "SELECT a, from_unixtime(b) FROM t"


def test_spark_line_variants_replace_their_line_and_may_be_spark_only():
    text = "SELECT *\n  FROM t  -- spark: FROM t2\n-- spark: ORDER BY a"
    assert sql.to_dialect(text, "spark") == "SELECT *\n  FROM t2\nORDER BY a"
    assert sql.to_dialect(text, "duckdb") == text


def test_slot_identifiers_are_quoted_per_dialect():
    text = "SELECT {{key}} AS key, clicks_{{W}}d FROM t"
    assert sql.render(text, {"key": "item_id", "W": 7}) == 'SELECT "item_id" AS key, clicks_7d FROM t'
    assert sql.render(text, {"key": "item_id", "W": 7}, "spark") == "SELECT `item_id` AS key, clicks_7d FROM t"


def test_unknown_dialect_is_refused():
    with pytest.raises(ValueError, match="unknown SQL dialect 'postgres'"):
        sql.to_dialect("SELECT 1", "postgres")
    with pytest.raises(ValueError, match="unknown SQL dialect"):
        sql.render("SELECT 1", {}, "postgres")


# ---- every file of sql/ the engine switch covers ---------------------------------------------------
CFG = load_config(environ={})
USER = [f.name for f in CFG.features.by_side("user") if f.name != "user_id"]
CONTEXT = [f.name for f in CFG.features.by_side("context")]
FILES = {  # file: (params, slots), as dailyrec/features.py and dailyrec/sampling/select.py fill them
    "events_view": ({}, {}),
    "counters": ({"cur_date": "2026-11-03", "max_window": 7, "prior_strength": 20.0},
                 {"key": "item_id", "windows": [1, 7]}),
    "catalog": ({}, {"windows": [1, 7]}),
    "vocab_counts": ({"feature": "user_id", "cur_date": "2026-11-03", "vocab_days": 2},
                     {"column": "user_id", "source": vocab_source("user_id")}),
    "vocab_state": ({"cur_date": "2026-11-03", "min_count": 1, "evict_after_days": 30}, {}),
    "sample_clicks": ({"cur_date": "2026-11-03", "window_days": 2, "holdout_hours": 3}, {"context": CONTEXT}),
    "sample_popularity": ({"cur_date": "2026-11-03", "window_days": 2, "holdout_hours": 3}, {}),
    "sample_users": ({}, {"user_features": USER}),
    "sample_exposed": ({"cur_date": "2026-11-03", "window_days": 2, "holdout_hours": 3}, {}),
    "sample_holdout": ({}, {"user_features": USER, "context": CONTEXT}),
}
DUCKDB_ONLY = {  # constructs Spark SQL does not parse (each checked on a real Spark in the parity test)
    "REPLACE (": r"\bREPLACE\s*\(", "EXCLUDE (": r"\bEXCLUDE\s*\(", "VARCHAR without a length": r"\bVARCHAR\b(?!\s*\()",
    "double-quoted identifier": r'"[A-Za-z_]\w*"', "$param": r"\$[A-Za-z_]", "trailing comma": r",\s*FROM\b",
    "date - date compared to a number": r"DATE\)\s*-\s*\w+\s*<=",
}


def _code(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


@pytest.mark.parametrize("name", sorted(FILES))
def test_spark_text_of_each_file_has_no_duckdb_only_construct(name):
    params, slots = FILES[name]
    stmts = sql.prepared_statements(name, params, slots, "spark")
    for text, args in stmts:
        code = _code(text)
        for what, pattern in DUCKDB_ONLY.items():
            assert not re.search(pattern, code, re.I), f"sql/{name}.sql on Spark still has a {what}:\n{text}"
        assert set(args) <= set(params) and set(re.findall(r":([A-Za-z_]\w*)", code)) == set(args), name


def test_the_duckdb_only_patterns_find_what_they_name():
    """The check above is not vacuous: the DuckDB texts do hold these constructs."""
    found = set()
    for name, (params, slots) in FILES.items():
        for text, _ in sql.prepared_statements(name, params, slots, "duckdb"):
            found |= {what for what, p in DUCKDB_ONLY.items() if re.search(p, _code(text), re.I)}
    assert {"double-quoted identifier", "$param", "trailing comma"} <= found
    old = "SELECT * REPLACE (CAST(dt AS DATE) AS dt), u.* EXCLUDE (user_id), CAST(x AS VARCHAR) FROM t"
    assert {w for w, p in DUCKDB_ONLY.items() if re.search(p, old)} == {"REPLACE (", "EXCLUDE (",
                                                                         "VARCHAR without a length"}


@pytest.mark.parametrize("name", sorted(FILES))
def test_both_dialects_bind_the_same_parameters(name):
    params, slots = FILES[name]
    duck = sql.prepared_statements(name, params, slots, "duckdb")
    spark = sql.prepared_statements(name, params, slots, "spark")
    assert [a for _, a in duck] == [a for _, a in spark]


def test_the_one_spark_only_line_is_the_scan_order_of_the_clicks():
    """Files differ between the engines only where sql/ says ``-- spark:`` (today: the clicks'
    order, which DuckDB keeps without a sort)."""
    variants = {name: [ln for ln in sql.load_sql(name).splitlines() if re.search(r"--\s*spark:", ln)]
                for name in FILES}
    assert {k: v for k, v in variants.items() if v} == {
        "sample_clicks": ["-- spark: ORDER BY e.dt, e.hour, e._scan_file, e._scan_row"]}
    assert all(c in variants["sample_clicks"][0] for c in SCAN_COLUMNS)


def test_portable_events_view_runs_on_duckdb_with_the_old_column_order(tmp_path):
    """``* EXCEPT`` (both engines) gives the columns ``* REPLACE`` / ``* EXCLUDE`` gave."""
    import pyarrow.parquet as pq

    p = tmp_path / "logs" / "dt=2026-11-03" / "hour=05"
    p.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["i1"], "click": pa.array([1], pa.int8())}), p / "a.parquet")
    con = sql.connect()
    con.read_parquet([str(p / "a.parquet")], hive_partitioning=True).create_view("logs_raw")
    sql.register_arrow(con, "users", pa.table({"user_id": ["u1"], "user_gender": ["f"]}))
    sql.register_arrow(con, "items", pa.table({"item_id": ["i1"], "item_category": ["c"]}))
    sql.run(con, "events_view")
    ev = con.sql("SELECT * FROM events").to_arrow_table()
    assert ev.column_names == ["user_id", "item_id", "click", "dt", "hour", "hour_of_day"]
    assert str(ev.schema.field("dt").type) == "date32[day]" and ev["hour"].to_pylist() == [5]
    assert con.sql("SELECT * FROM events_users").columns == ev.column_names + ["user_gender"]
    assert con.sql("SELECT * FROM events_items").columns == ev.column_names + ["item_category"]
    old = con.sql("SELECT * REPLACE (CAST(dt AS DATE) AS dt, CAST(hour AS INTEGER) AS hour), "
                  "CAST(hour AS INTEGER) AS hour_of_day FROM logs_raw").to_arrow_table()
    assert old.equals(ev)


def test_portable_rewrites_mean_the_same_on_duckdb():
    """The texts changed to be portable compute what the DuckDB-only ones did."""
    con = duckdb.connect()
    assert con.execute("SELECT CAST(7 AS STRING), CAST(7 AS VARCHAR)").fetchone() == ("7", "7")
    for last in ("2026-10-01", "2026-10-04", "2026-10-05"):    # evict_after_days = 30 from 2026-11-03
        old = con.execute(f"SELECT DATE '2026-11-03' - DATE '{last}' <= 30").fetchone()[0]
        new = con.execute(f"SELECT DATE '{last}' >= DATE '2026-11-03' - 30").fetchone()[0]
        assert old == new, last


# ---- the engine's settings and Arrow results (no JVM) ------------------------------------------------
def test_spark_settings_are_loopback_without_ui_or_downloads(tmp_path):
    conf = SparkEngine(CFG.sql).conf(str(tmp_path))
    assert conf["spark.master"] == "local[2]"
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false" and conf["spark.sql.session.timeZone"] == "UTC"
    assert not any(k.startswith("spark.jars") for k in conf)
    assert "log4j2.configurationFile" in conf["spark.driver.extraJavaOptions"]
    extra = load_config(overrides={"sql.spark_conf": ["spark.executor.memory=4g", "spark.sql.shuffle.partitions=64"]},
                        environ={}).sql
    conf = SparkEngine(extra).conf(str(tmp_path))
    assert conf["spark.executor.memory"] == "4g" and conf["spark.sql.shuffle.partitions"] == "64"


def test_spark_results_get_duckdbs_arrow_types():
    t = pa.table({"s": pa.array(["a"], pa.large_string()), "n": pa.array([1], pa.int64()),
                  "ts": pa.array([0], pa.timestamp("us", tz="Etc/UTC"))},
                 schema=pa.schema([pa.field("s", pa.large_string(), nullable=False), pa.field("n", pa.int64(), False),
                                   pa.field("ts", pa.timestamp("us", tz="Etc/UTC"))]))
    out = arrow_like_duckdb(t)
    assert out.schema == pa.schema([pa.field("s", pa.string()), pa.field("n", pa.int64()),
                                    pa.field("ts", pa.timestamp("us", tz="UTC"))])
    assert all(f.nullable for f in out.schema)


def test_union_schema_adds_the_hive_folders_as_strings(store):
    import pyarrow.parquet as pq

    base = store.path("logs")
    paths = []
    for h, cols in ((0, {"a": [1]}), (1, {"a": [2], "b": ["x"]})):
        part = f"{base}/dt=2026-11-03/hour={h:02d}"
        store.fs.create_dir(part)
        pq.write_table(pa.table(cols), f"{part}/part-0.parquet", filesystem=store.fs)
        paths.append(f"{part}/part-0.parquet")
    s = union_schema(store, paths, base)
    assert s.names == ["a", "b", "dt", "hour"] and s.field("dt").type == pa.string()
    assert spark_path(store, paths[0]) == "file://" + paths[0]


# ---- the sql config section ----------------------------------------------------------------------------
def test_sql_defaults_and_engine_choice():
    assert CFG.sql.engine == "duckdb" and CFG.sql.spark_master == "local[2]"
    assert load_config(overrides={"sql.engine": "spark"}, environ={}).sql.engine == "spark"
    with pytest.raises(ConfigError, match="sql.engine"):
        load_config(overrides={"sql.engine": "presto"}, environ={})
    with pytest.raises(ConfigError, match="unknown key 'sql.spark_ui'"):
        load_config(overrides={"sql.spark_ui": True}, environ={})


@pytest.mark.parametrize("overrides, message", [
    ({"sql.spark_conf": ["spark.jars.packages=org.apache.hadoop:hadoop-aws:3.4.1"]}, "may not set"),
    ({"sql.spark_conf": ["spark.ui.enabled=true"]}, "may not set"),
    ({"sql.spark_conf": ["executor.memory=4g"]}, "spark.*=value"),
    ({"sql.spark_conf": ["spark.executor.memory"]}, "spark.*=value"),
    ({"sql.spark_master": "spark://10.0.0.5:7077"}, "cannot reach a loopback driver"),
    ({"sql.spark_driver_memory": "lots"}, "spark_driver_memory"),
])
def test_sql_cross_field_rules(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=overrides, environ={})


def test_a_cluster_master_with_a_reachable_driver_address_is_accepted():
    s = load_config(overrides={"sql.spark_master": "spark://10.0.0.5:7077", "sql.spark_driver_host": "10.0.0.9"},
                    environ={}).sql
    assert s.spark_master.startswith("spark://") and "spark.master" in SPARK_RESERVED_CONF


def test_the_contract_columns_the_spark_view_reads_exist():
    """The hive columns and the scan columns do not clash with log or user columns."""
    assert not {"dt", "hour", *SCAN_COLUMNS} & set(LOG_SCHEMA.names + USER_SCHEMA.names)
