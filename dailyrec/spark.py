"""Spark SQL as the engine of ``sql/*.sql`` (``sql.engine: spark``; docs/scale-out.md).

:class:`SparkEngine` stands where a DuckDB connection stands in :mod:`dailyrec.sql`: the same
``register_parquet`` / ``register_arrow`` / ``run`` / ``query_arrow`` calls, the same SQL files
(rendered for the ``spark`` dialect by :func:`dailyrec.sql.to_dialect`), results handed back as
Arrow tables with the types and nullability DuckDB gives, so the steps write the same files
through the same atomic :meth:`dailyrec.storage.Store.atomic_output`. The scan and the
aggregations run on Spark (``local[N]`` threads here, a cluster's executors in production); the
query results (per-key aggregates, the window's clicks) come back to the driver, which writes them.

The session starts lazily on the first call that needs it and :meth:`SparkEngine.close` stops it
(the steps close their engine when they end). It binds to ``sql.spark_driver_host`` (loopback by
default; ``SPARK_LOCAL_IP`` is set to it unless already set), has no UI, downloads nothing (no ``spark.jars.packages``), runs in UTC and logs only
errors (a log4j2 configuration written to a temp file). Spark resolves ``$name`` parameters as
named parameter markers (``spark.sql(text, args=...)``), so values are never spliced into SQL.

Row order: Spark does not keep the files' order the way DuckDB's ``preserve_insertion_order``
does, so the Parquet view carries the scan position (``_scan_file``, ``_scan_row``: the file name
inside its ``dt=/hour=`` folder and the row's index in it) and a query that relies on the scan
order sorts by it on Spark (``sql/sample_clicks.sql``'s ``-- spark:`` line): the same order as
DuckDB's, hence the same seeded draws downstream.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from dailyrec import sql
from dailyrec.config import SqlConfig
from dailyrec.storage import Store

log = logging.getLogger("dailyrec.spark")

SCAN_COLUMNS = ("_scan_file", "_scan_row")
"""Columns the Parquet views get on Spark: the file name (in its partition folder) and the row
index in that file, for queries that must see rows in DuckDB's scan order."""

_URI_SCHEMES = {"s3": "s3a", "gs": "gs", "gcs": "gs", "hdfs": "hdfs", "abfs": "abfs", "abfss": "abfss"}

_LOG4J2 = """\
status = error
# warn: the level pyspark's shell start compares with (it prints a banner when they differ); the
# session lowers it to errors once started (setLogLevel)
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = error
"""
_PY_QUERY_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
"""pyspark's loggers of a failing query's context: the error is raised in Python with its message
anyway, so they are silenced (no second, JSON-formatted copy of every stack trace)."""


def spark_path(store: Store, path: str) -> str:
    """The URI Spark reads ``path`` of ``store`` at: ``file://`` for a local data root, the
    Hadoop scheme of an object store (``s3://`` -> ``s3a://``, ``gs://``, ``hdfs://``...).

    Raises:
        ValueError: a filesystem Spark has no scheme for here (names the data root).
    """
    if isinstance(store.fs, pafs.LocalFileSystem):
        return "file://" + os.path.abspath(path)
    scheme = store.uri.split("://", 1)[0].lower() if "://" in store.uri else ""
    if scheme not in _URI_SCHEMES:
        raise ValueError(f"sql.engine=spark cannot read the data root {store.uri!r}: schemes "
                         f"{sorted(_URI_SCHEMES)} or a local path (a cluster needs a shared data root)")
    return f"{_URI_SCHEMES[scheme]}://{path.lstrip('/')}"


def union_schema(store: Store, files: list[str], base_dir: str | None) -> pa.Schema:
    """The union of the Parquet schemas of ``files`` (by name, first file's order first) plus the
    hive ``key=value`` folders between ``base_dir`` and each file as string columns."""
    import pyarrow.parquet as pq
    from concurrent.futures import ThreadPoolExecutor

    def footer(path: str) -> pa.Schema:
        with store.fs.open_input_file(path) as fh:
            return pq.read_schema(fh)

    with ThreadPoolExecutor(8) as pool:
        schema = pa.unify_schemas(list(pool.map(footer, files)), promote_options="permissive")
    keys: list[str] = []
    if base_dir is not None:
        for f in files:
            rel = f[len(base_dir.rstrip("/")) + 1:] if f.startswith(base_dir.rstrip("/") + "/") else ""
            for part in rel.split("/")[:-1]:
                if "=" in part and part.split("=", 1)[0] not in keys:
                    keys.append(part.split("=", 1)[0])
    meta = schema.metadata
    schema = pa.schema([f.with_nullable(True) for f in schema if f.name not in keys]
                       + [pa.field(k, pa.string()) for k in keys])
    return schema.with_metadata(meta) if meta else schema


def arrow_like_duckdb(table: pa.Table) -> pa.Table:
    """``table`` (a Spark result) with DuckDB's Arrow types: every field nullable, ``large_string``
    / ``large_binary`` as ``string`` / ``binary``, timestamps with a time zone in UTC."""
    def norm(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t):
            return pa.string()
        if pa.types.is_large_binary(t):
            return pa.binary()
        if pa.types.is_timestamp(t) and t.tz is not None:
            return pa.timestamp(t.unit, tz="UTC")
        return t

    schema = pa.schema([pa.field(f.name, norm(f.type), nullable=True) for f in table.schema])
    return table if schema.equals(table.schema) else table.cast(schema)


class SparkEngine:
    """A lazily started Spark session running :mod:`dailyrec.sql`'s calls (``dialect = "spark"``).

    Args:
        cfg: the ``sql`` section (``spark_master``, ``spark_driver_host``, ``spark_driver_memory``,
            ``spark_conf``).
        app_name: the Spark application's name (the step's).
    """

    dialect = "spark"

    def __init__(self, cfg: SqlConfig, app_name: str = "dailyrec") -> None:
        self.cfg = cfg
        self.app_name = app_name
        self._spark: Any = None
        self._own_jvm = False
        self._tmp: str | None = None
        self.startup_s: float | None = None

    # ---- session --------------------------------------------------------------------------------
    def conf(self, tmp: str) -> dict[str, str]:
        """The Spark settings of the session (``tmp``: a private folder for log4j and scratch)."""
        c = self.cfg
        base = {
            "spark.master": c.spark_master,
            "spark.app.name": self.app_name,
            "spark.driver.host": c.spark_driver_host,
            "spark.driver.bindAddress": c.spark_driver_host,
            "spark.driver.memory": c.spark_driver_memory,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.ansi.enabled": "true",
            "spark.sql.shuffle.partitions": str(c.spark_shuffle_partitions),
            # the log files are listed by path: on the driver, not by a Spark job past 32 paths
            "spark.sql.sources.parallelPartitionDiscovery.threshold": "4096",
            # dt=/hour= folder values stay strings: sql/events_view.sql casts them (as on DuckDB)
            "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
            "spark.sql.warehouse.dir": os.path.join(tmp, "warehouse"),
            "spark.log.structuredLogging.enabled": "false",
            "spark.driver.extraJavaOptions":
                f"-Dlog4j2.configurationFile=file:{os.path.join(tmp, 'log4j2.properties')}",
        }
        return {**base, **c.spark_settings()}

    @property
    def spark(self) -> Any:
        """The session, started on first use (``RuntimeError`` naming the cause when Java or
        pyspark is missing)."""
        if self._spark is None:
            self._start()
        return self._spark

    def _start(self) -> None:
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise RuntimeError("sql.engine=spark needs a Java runtime (java on PATH or JAVA_HOME); "
                               "none found: install Java 17 or set sql.engine=duckdb")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # pyspark's note on the pandas version
            try:
                from pyspark import SparkContext
                from pyspark.logger import PySparkLogger
                from pyspark.sql import SparkSession
            except ImportError as exc:
                raise RuntimeError(f"sql.engine=spark needs pyspark (pinned in requirements.lock): {exc}") from exc
        for name in _PY_QUERY_LOGGERS:   # created as PySparkLogger: pyspark passes it extra keywords
            PySparkLogger.getLogger(name).setLevel(logging.CRITICAL + 1)
        self._tmp = tempfile.mkdtemp(prefix="dailyrec-spark-")
        with open(os.path.join(self._tmp, "log4j2.properties"), "w") as fh:
            fh.write(_LOG4J2)
        if "SPARK_LOCAL_IP" not in os.environ:
            # the address Spark's own services (block manager, shuffle) pick: the driver's, not the
            # first non-loopback interface it would otherwise find (read when the JVM starts)
            os.environ["SPARK_LOCAL_IP"] = self.cfg.spark_driver_host
        self._own_jvm = SparkContext._gateway is None   # launched here: stopped by close()
        builder = SparkSession.builder
        for k, v in self.conf(self._tmp).items():
            builder = builder.config(k, v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self._spark = builder.getOrCreate()
        self._spark.sparkContext.setLogLevel("ERROR")
        self.startup_s = round(time.perf_counter() - t0, 3)
        log.info("Spark %s session on %s started in %.1fs", self._spark.version, self.cfg.spark_master,
                 self.startup_s)

    def close(self) -> None:
        """Stop the session (when it was started), then the driver JVM when this engine launched
        it (pyspark would keep it for the next session of the process), and remove the scratch
        folder."""
        if self._spark is not None:
            self._spark.stop()
            self._spark = None
            if self._own_jvm:
                _stop_gateway()
            log.info("Spark session stopped")
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "SparkEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- the calls of dailyrec.sql --------------------------------------------------------------
    def register_parquet(self, view: str, store: Store, files: list[str], base_dir: str | None = None) -> None:
        """Expose ``files`` as ``view`` with the hive columns of ``base_dir`` (strings, as the SQL
        casts them), the union of the files' columns (DuckDB's ``union_by_name``; the schema is
        read from the footers here, not by a Spark job), and :data:`SCAN_COLUMNS`."""
        from pyspark.sql.pandas.types import from_arrow_schema

        schema = union_schema(store, files, base_dir)
        reader = self.spark.read.schema(from_arrow_schema(schema))
        if base_dir is not None:
            reader = reader.option("basePath", spark_path(store, base_dir))
        df = reader.parquet(*[spark_path(store, f) for f in files])
        df = df.select("*", df["_metadata.file_name"].alias(SCAN_COLUMNS[0]),
                       df["_metadata.row_index"].alias(SCAN_COLUMNS[1]))
        df.createOrReplaceTempView(view)

    def register_arrow(self, view: str, table: pa.Table) -> None:
        """Expose the Arrow ``table`` as ``view`` (a DataFrame built on the driver)."""
        if isinstance(table, pa.Table):
            table = table.combine_chunks()
        self.spark.createDataFrame(table).createOrReplaceTempView(view)

    def run(self, name: str, params: dict[str, Any] | None = None, slots: dict[str, Any] | None = None) -> None:
        """Run every statement of ``sql/<name>.sql`` (views, DDL)."""
        t0 = time.perf_counter()
        for text, args in sql.prepared_statements(name, params, slots, self.dialect):
            self.spark.sql(_strip(text), args=args or None)
        log.debug("sql/%s.sql ran on Spark in %.3fs", name, time.perf_counter() - t0)

    def query_arrow(self, name: str, params: dict[str, Any] | None = None,
                    slots: dict[str, Any] | None = None) -> pa.Table:
        """Run ``sql/<name>.sql``; the last statement's rows come back as Arrow (DuckDB's types)."""
        t0 = time.perf_counter()
        stmts = sql.prepared_statements(name, params, slots, self.dialect)
        for text, args in stmts[:-1]:
            self.spark.sql(_strip(text), args=args or None)
        text, args = stmts[-1]
        table = arrow_like_duckdb(self.spark.sql(_strip(text), args=args or None).toArrow())
        log.debug("sql/%s.sql on Spark: %d rows in %.3fs", name, table.num_rows, time.perf_counter() - t0)
        return table


def _stop_gateway() -> None:
    """Shut pyspark's gateway down and wait for its JVM to exit (it exits when its stdin closes)."""
    import subprocess

    from pyspark import SparkContext

    gw = SparkContext._gateway
    if gw is None:
        return
    proc = getattr(gw, "proc", None)
    try:
        gw.shutdown()
    finally:
        SparkContext._gateway = None
        SparkContext._jvm = None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def _strip(text: str) -> str:
    return text.rstrip().rstrip(";")
