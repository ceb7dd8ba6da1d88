"""The same SQL on Spark (``sql.engine: spark``, ``local[2]``) and on DuckDB: on a generated demo day,
the features step and the sample selection give the same outputs.

* features: ``item_counters``, ``user_counters``, ``catalog``, ``vocab_state`` (schema and rows)
  and ``vocabularies.json`` identical, the Parquet files byte for byte;
* samples: what the SQL decides alone (the holdout, the window's events and clicks, the candidate
  positives, users, catalog, the popularity distribution, the exposure candidates) identical; the
  random draws (subsampling, negatives), seeded with the recorded ``(sampling.seed, cur_date)``,
  within the tolerances below. (They are in fact identical: the Spark text of
  ``sql/sample_clicks.sql`` sorts the clicks into DuckDB's scan order, so the seeded generator sees
  the same sequence; the last assertion checks that.)

While a Spark step runs, every socket its JVM listens on is on 127.0.0.1; when the step ends, the
JVM is gone. Skipped when no Java runtime is installed.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from dailyrec.config import load_config

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
    reason="no Java runtime (java on PATH or JAVA_HOME): Spark SQL cannot run here")

DAYS = ("2026-11-01", "2026-11-02")
DAY = DAYS[-1]
SMALL = {"demo.events_per_day": 20_000, "demo.n_users": 800, "demo.n_items": 300,
         "validation.min_rows_per_day": 100, "sampling.hard_negative_sources": ["exposed", "same_category"]}
FEATURE_FILES = ("item_counters.parquet", "user_counters.parquet", "catalog.parquet", "vocab_state.parquet")
DETERMINISTIC_STATS = ("events_in_window", "clicks_in_window", "clicks_on_items_outside_catalog",
                       "candidate_positives", "users_with_positives", "catalog_items", "catalog_cold_share",
                       "random_q_max", "random_q_min", "holdout_clicks", "skipped_sources")
# the random draws: counts within REL_TOL (relative), shares and mean log popularities within ABS_TOL
REL_TOL = 0.05
ABS_TOL = 0.05


class JvmSockets:
    """Samples, every 0.2 s, the listening sockets of the java processes under this process."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.jvms: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            for p in me.children(recursive=True):
                try:
                    if "java" not in p.name():
                        continue
                    self.jvms.add(p.pid)
                    for c in p.net_connections("inet"):
                        if c.status == psutil.CONN_LISTEN:
                            self.seen.add(c.laddr.ip)
                except psutil.Error:
                    continue

    def __enter__(self) -> "JvmSockets":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _snapshot(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _java_children() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True) if "java" in p.name()]


def _spark_step(fn, *args):
    with JvmSockets() as socks:
        out = fn(*args)
    assert socks.jvms, "no Spark JVM was seen during the step"
    assert socks.seen and socks.seen <= {"127.0.0.1", "::ffff:127.0.0.1"}, f"the JVM listened on {socks.seen}"
    assert not _java_children(), "the Spark JVM outlived its step"
    return out


def test_features_and_samples_are_the_same_on_spark_and_duckdb(tmp_path):
    from dailyrec.demo.generator import generate
    from tasks.ingest.validate_day import step as validate_day
    from tasks.retrieval.features import step as features
    from tasks.retrieval.sample import step as sample

    cfg = load_config(overrides={"storage.data_root": str(tmp_path / "data"), **SMALL}, environ={})
    spark = cfg.with_overrides({"sql.engine": "spark"})
    generate(cfg, DAYS[0], len(DAYS))
    for d in DAYS:
        validate_day(d, cfg)
    features(DAYS[0], cfg)              # the vocab state both engines chain from

    # ---- features ----------------------------------------------------------------------------
    duck_f = _snapshot(features(DAY, cfg)["path"], tmp_path / "features_duckdb")
    t0 = time.perf_counter()
    spark_res = _spark_step(features, DAY, spark)
    spark_f = Path(spark_res["path"])
    features_spark_s = time.perf_counter() - t0
    for name in FEATURE_FILES:
        a, b = pq.read_table(duck_f / name), pq.read_table(spark_f / name)
        assert a.schema.equals(b.schema, check_metadata=True), (name, a.schema, b.schema)
        assert a.num_rows > 0 and a.equals(b), name
        assert filecmp.cmp(duck_f / name, spark_f / name, shallow=False), f"{name} differs in bytes"
    assert (duck_f / "vocabularies.json").read_text() == (spark_f / "vocabularies.json").read_text()
    man_d, man_s = (json.loads((p / "_manifest.json").read_text()) for p in (duck_f, spark_f))
    assert man_d["rows"] == man_s["rows"]
    assert man_d["sql_engine"] == {"engine": "duckdb"}
    assert man_s["sql_engine"] == {"engine": "spark", "master": "local[2]"}
    assert sorted(os.listdir(duck_f)) == sorted(os.listdir(spark_f))

    # ---- sample selection --------------------------------------------------------------------
    duck_s = _snapshot(sample(DAY, cfg)["path"], tmp_path / "samples_duckdb")
    t0 = time.perf_counter()
    spark_s = Path(_spark_step(sample, DAY, spark)["path"])
    sample_spark_s = time.perf_counter() - t0
    assert sorted(os.listdir(duck_s)) == sorted(os.listdir(spark_s))
    man_d, man_s = (json.loads((p / "_manifest.json").read_text()) for p in (duck_s, spark_s))
    seed = [cfg.sampling.seed, int(DAY.replace("-", ""))]
    assert man_d["seed"] == man_s["seed"] == seed, "the seed of the draws is recorded, the same on both"
    sd, ss = man_d["stats"], man_s["stats"]
    for key in DETERMINISTIC_STATS:
        assert sd[key] == ss[key], key
    assert sd["sources"]["exposed"]["candidates"] == ss["sources"]["exposed"]["candidates"]
    hd, hs = pq.read_table(duck_s / "holdout.parquet"), pq.read_table(spark_s / "holdout.parquet")
    assert hd.num_rows > 0 and hd.schema.equals(hs.schema) and hd.equals(hs)

    # random draws: within tolerance
    def close(a: float, b: float, rel: float = REL_TOL) -> bool:
        return abs(a - b) <= rel * max(abs(a), abs(b), 1)

    assert close(sd["dropped_by_subsampling"], ss["dropped_by_subsampling"])
    assert set(sd["sources"]) == set(ss["sources"]) == {"positive", "random", "exposed", "same_category"}
    for src, a in sd["sources"].items():
        b = ss["sources"][src]
        assert close(a["count"], b["count"]) and close(a["distinct_items"], b["distinct_items"]), src
        for k in ("mean_log_popularity", "cold_share", "mean_log_q"):
            assert abs(a[k] - b[k]) <= ABS_TOL, (src, k, a[k], b[k])
    assert close(man_d["rows"]["train"], man_s["rows"]["train"])
    td, ts = pq.read_table(duck_s / "train.parquet"), pq.read_table(spark_s / "train.parquet")
    assert td.schema.equals(ts.schema)

    # ...and in fact identical, as the clicks reach the generator in the same order
    assert td.equals(ts) and sd == ss
    for name in ("train.parquet", "holdout.parquet", "seen.parquet"):
        assert filecmp.cmp(duck_s / name, spark_s / name, shallow=False), name
    print(f"spark steps: features {features_spark_s:.1f}s, sample {sample_spark_s:.1f}s "
          f"(load {os.getloadavg()[0]:.1f}); seed {seed}")
