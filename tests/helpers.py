"""The tests' shared builders: small hand-made inputs (exact control over the rows), real log
partitions of synthetic days (24 hourly partitions with ``_SUCCESS`` plus users/items snapshots,
written through ``dailyrec.contract.write_partition``), and the ``airflow`` subprocess runner."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dailyrec.config import load_config
from dailyrec.contract import ITEM_SCHEMA, LOG_SCHEMA, USER_SCHEMA, write_partition

REPO = Path(__file__).resolve().parents[1]

# A demo small enough for a DAG run in a test (environment variables of the airflow subprocesses).
SMALL_DEMO_ENV = {
    "DAILYREC__DEMO__EVENTS_PER_DAY": "40000",
    "DAILYREC__DEMO__N_USERS": "1500",
    "DAILYREC__DEMO__N_ITEMS": "600",
    "DAILYREC__TRAINING__EPOCHS": "6",
    "DAILYREC__TRAINING__BATCH_SIZE": "512",
    "DAILYREC__VALIDATION__MIN_ROWS_PER_DAY": "100",
}

# A tiny world for step-by-step runs (a few thousand events, one epoch); the retrieval gate only
# refuses a collapse, so day 1 always becomes the next day's warm-start source.
TINY_ENV = {
    "DAILYREC__DEMO__EVENTS_PER_DAY": "4000", "DAILYREC__DEMO__N_USERS": "300", "DAILYREC__DEMO__N_ITEMS": "150",
    "DAILYREC__VALIDATION__MIN_ROWS_PER_DAY": "100", "DAILYREC__TRAINING__EPOCHS": "1",
    "DAILYREC__TRAINING__BATCH_SIZE": "256", "DAILYREC__RANKING__EPOCHS": "1", "DAILYREC__RANKING__BATCH_SIZE": "512",
    "DAILYREC__EVALUATION__REQUIRE_BEAT_POPULARITY": "false", "DAILYREC__EVALUATION__MAX_DROP_VS_PREVIOUS": "1.0",
}


def run_tiny(root: Path, *args: str, check: bool = False, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repo root in a fresh process, with :data:`TINY_ENV` and the data root
    ``root`` (e.g. ``run_tiny(root, "-m", "tasks.retrieval.sample", "--cur-date", D)``); ``check``:
    fail the test unless it exits 0."""
    import os
    import sys

    env = {**os.environ, **TINY_ENV, "DAILYREC_DATA_ROOT": str(root)}
    res = subprocess.run([sys.executable, *args], cwd=str(REPO), env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert not check or res.returncode == 0, res.stderr[-5000:]
    return res



def run_isolated(root: Path, env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repo root in a fresh process whose environment has no ``DAILYREC*`` variable
    and no ``REDIS_URL`` of the caller's (so only ``env`` and the data root ``root`` configure it: the embedded
    Redis under ``root``); fails the test unless it exits 0."""
    import os
    import sys

    full = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("DAILYREC")}
    full.update(env, DAILYREC_DATA_ROOT=str(root))
    res = subprocess.run([sys.executable, *args], cwd=str(REPO), env=full, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr[-5000:]
    return res

_STAGES = "import sys\nfrom dailyrec import stages\nfor s in sys.argv[2:]:\n    stages.call(s, {'cur_date': sys.argv[1]})"


def run_stages(root: Path, cur_date: str, *stages: str) -> None:
    """Run registry stages (``"retrieval.features"`` ...) for ``cur_date`` in order, in one fresh
    process with :data:`TINY_ENV` (as the DAG's tasks call them); fails the test on an error."""
    run_tiny(root, "-c", _STAGES, cur_date, *stages, check=True)


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
        elif f.name == "request_id":   # unique (the contract's key)
            cols[f.name] = pa.array([f"r{cur_date}-{hour:02d}-{i}" for i in range(n)], f.type)
        elif pa.types.is_string(f.type):
            cols[f.name] = pa.array([f"{f.name}-{i % 5}" for i in range(n)], f.type)
        else:
            cols[f.name] = pa.array([i % 3 for i in range(n)], f.type)
    return pa.table(cols, schema=LOG_SCHEMA)


def run_airflow(env: dict[str, str], *args: str, timeout: int = 900, extra_env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    """``airflow ARGS`` in the environment of the ``airflow_home`` fixture, from the repo root."""
    full = {**env, **(extra_env or {})}
    return subprocess.run([env["DAILYREC_AIRFLOW_BIN"], *args], env=full, capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO))


# ---- synthetic days of real partitions ----------------------------------------------------------
DAY0 = "2026-11-01"


# ---- synthetic data -----------------------------------------------------------------------
def make_events(day: str, user_ids, item_ids, clicks, hours=None, seed: int = 0, **context) -> pa.Table:
    """One day of log events: parallel sequences of users, items, clicks (0/1) and hours."""
    n = len(user_ids)
    rng = np.random.default_rng(seed)
    hours = np.asarray(hours if hours is not None else rng.integers(0, 24, n), dtype=np.int64)
    base = pd.Timestamp(day, tz="UTC")
    secs = rng.integers(0, 3600, n)
    times = base + pd.to_timedelta(hours * 3600 + secs, unit="s")
    cols: dict[str, object] = {
        "event_time": pa.array(times.to_numpy(), pa.timestamp("us", tz="UTC")),
        "request_id": [f"{day}-{i}" for i in range(n)],
        "user_id": [str(u) for u in user_ids],
        "item_id": [str(i) for i in item_ids],
        "click": pa.array(np.asarray(clicks, dtype=np.int8)),
        "conversion": pa.array(np.zeros(n, dtype=np.int8)),
        "device_model": context.get("device_model", [f"dm{int(x)}" for x in rng.integers(0, 5, n)]),
        "device_type": pa.array(context.get("device_type", rng.integers(0, 4, n)), pa.int32()),
        "device_conn_type": pa.array(context.get("device_conn_type", rng.integers(0, 3, n)), pa.int32()),
        "banner_pos": pa.array(context.get("banner_pos", rng.integers(0, 2, n)), pa.int32()),
    }
    for f in LOG_SCHEMA:
        if f.name in cols:
            continue
        cols[f.name] = (pa.array([f"{f.name}-0"] * n, f.type) if pa.types.is_string(f.type)
                        else pa.array(np.zeros(n, dtype=np.int32), f.type))
    t = pa.table({f.name: cols[f.name] for f in LOG_SCHEMA})
    return t.cast(LOG_SCHEMA)


def write_logs(store, day: str, events: pa.Table) -> None:
    """Split one day of events into its 24 hourly partitions (empty hours included)."""
    hours = pa.compute.hour(events["event_time"]).to_numpy()
    for h in range(24):
        write_partition(store, "logs", events.filter(pa.array(hours == h)), day, h)


def make_users(user_ids) -> pa.Table:
    ids = [str(u) for u in user_ids]
    return pa.table({
        "user_id": ids,
        "user_gender": [("f", "m")[i % 2] for i in range(len(ids))],
        "user_age_bucket": pa.array([i % 7 for i in range(len(ids))], pa.int32()),
        "user_segment": [f"seg{i % 3}" for i in range(len(ids))],
    }, schema=USER_SCHEMA)


def make_items(item_ids, categories=None) -> pa.Table:
    ids = [str(i) for i in item_ids]
    cats = list(categories) if categories is not None else [f"cat{i % 4}" for i in range(len(ids))]
    return pa.table({
        "item_id": ids,
        "item_category": cats,
        "item_domain": [f"dom{i % 5}" for i in range(len(ids))],
        "item_publisher": [f"pub{i % 6}" for i in range(len(ids))],
        "item_created_dt": pa.array([dt.date(2026, 10, 1)] * len(ids), pa.date32()),
    }, schema=ITEM_SCHEMA)


# The synthetic days are tiny: their validation drops the volume thresholds (the contract stays).
SMALL_DAY_VALIDATION = {"validation.min_rows_per_hour": 0, "validation.min_rows_per_day": 0,
                        "validation.min_clicks_per_day": 0, "validation.max_drop_vs_previous_day": 1.0}


def validate_day(store, day: str) -> dict:
    """The real ``tasks.ingest.validate_day`` step on ``day`` (volume thresholds relaxed): writes
    the validation record the steps reading logs require."""
    from tasks.ingest.validate_day import step

    cfg = load_config(overrides={"storage.data_root": store.uri, **SMALL_DAY_VALIDATION}, environ={})
    return step(day, cfg)


def write_day(store, day: str, events: pa.Table, users: pa.Table, items: pa.Table, validate: bool = True) -> None:
    """One day's 24 hourly log partitions and snapshots, then (``validate``) its validation."""
    write_logs(store, day, events)
    write_partition(store, "users", users, day)
    write_partition(store, "items", items, day)
    if validate:
        validate_day(store, day)


def random_day(day: str, n: int, n_users: int, n_items: int, seed: int, ctr: float = 0.2,
               zipf: float = 1.1) -> pa.Table:
    """Events with Zipf-ish item popularity over users u0.. and items i0.."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_items + 1) ** zipf
    items = rng.choice(n_items, n, p=w / w.sum())
    users = rng.integers(0, n_users, n)
    clicks = (rng.random(n) < ctr).astype(np.int8)
    return make_events(day, [f"u{u}" for u in users], [f"i{i}" for i in items], clicks, seed=seed)


def config(tmp_path, **overrides):
    return load_config(overrides={"storage.data_root": str(tmp_path / "data"), **overrides}, environ={})


def read(path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()




# ---- publish inputs -------------------------------------------------------------------------------
VECTOR_DIM = 16


def make_day(cfg, day: str, k: int, n: int = 2000, seed: int | None = None) -> tuple[list[str], np.ndarray]:
    """Embeddings + (exact) index for ``day`` whose vectors all encode ``k``; model_version ``m<k>``."""
    from dailyrec.ann import build_index
    from dailyrec.embeddings import write_embeddings
    from dailyrec.storage import open_store

    rng = np.random.default_rng(k if seed is None else seed)
    rest = rng.standard_normal((n, VECTOR_DIM - 1)).astype(np.float32)
    rest /= np.linalg.norm(rest, axis=1, keepdims=True)
    a = np.float32(0.1 * k)
    vectors = np.concatenate([np.full((n, 1), a, np.float32), rest * np.sqrt(1 - a * a)], axis=1)
    ids = [f"it{i:05d}" for i in range(n)]
    store = open_store(cfg)
    write_embeddings(store, day, ids, vectors, f"m{k}")
    build_index(day, cfg)
    return ids, vectors


def k_of(vec: np.ndarray) -> int:
    return int(round(float(vec[0]) * 10))


def write_delta(cfg, day: str, hour: int, upserts: dict, deletes: list, model_version: str,
                user_tower: str | None = None) -> str:
    """A pass's delta partition ``deltas/two_tower/dt=D/hour=HH/`` in the contract of
    docs/hourly-design ("Storage"): ``upserts`` ``{item_id: float32 vector}``, ``deletes`` item ids
    (zero vectors), the manifest (``user_tower`` defaults to the pass's path). Returns the partition."""
    from dailyrec.embeddings import embeddings_table
    from dailyrec.storage import open_store

    store = open_store(cfg)
    ids = list(upserts) + list(deletes)
    dim = len(next(iter(upserts.values()))) if upserts else VECTOR_DIM
    vecs = np.array([upserts[i] for i in upserts] + [np.zeros(dim, np.float32)] * len(deletes),
                    dtype=np.float32).reshape(len(ids), dim)
    t = embeddings_table(ids, vecs, model_version)
    table = pa.table({"item_id": t.column("item_id"),
                      "op": pa.array(["upsert"] * len(upserts) + ["delete"] * len(deletes), pa.string()),
                      "vector": t.column("vector")})
    part = store.partition("deltas/two_tower", day, hour)
    pass_dir = store.partition("passes/two_tower", day, hour)
    with store.atomic_output(part) as tmp:
        pq.write_table(table, f"{tmp}/delta.parquet", filesystem=store.fs)
        store.write_json(f"{tmp}/_manifest.json", {
            "model_version": model_version, "pass_dir": pass_dir, "user_tower": user_tower or f"{pass_dir}/user_tower",
            "counts": {"upsert": len(upserts), "delete": len(deletes)}, "dim": dim})
    return part


def without_keys(obj, volatile: set[str]):
    """``obj`` (parsed JSON) without the keys in ``volatile``, at any depth."""
    if isinstance(obj, dict):
        return {k: without_keys(v, volatile) for k, v in obj.items() if k not in volatile}
    if isinstance(obj, list):
        return [without_keys(v, volatile) for v in obj]
    return obj


def file_digests(files, root: Path, volatile: set[str]) -> dict[str, str]:
    """``{path relative to root: sha256}`` of ``files`` (an iterable of paths; directories are skipped); a
    ``.json`` file is hashed as its canonical dump without the ``volatile`` keys (what describes the run,
    not the output: timings, pids, rates)."""
    import hashlib
    import json

    out = {}
    for p in sorted(Path(f) for f in files):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(without_keys(json.loads(data), volatile), sort_keys=True).encode()
        out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out
