"""Feature admission and eviction from per-id show/click statistics (issue 10, docs/hourly.md).

The streaming-trainer design (PaddleRec's online trainer: ``CtrCommonAccessor`` show/click score,
``shrink``, base/delta save thresholds; Monolith's frequency filter and expirable embeddings):
for every id of every ``vocab`` feature of ``features.spec`` the **state** keeps

* ``shows`` (events carrying the id) and ``clicks`` (those with ``click = 1``), float64, summed over
  the passes and multiplied by ``admission.show_click_decay_rate`` once per day (at the daily
  shrink, after the day's counts are added);
* ``score = click_coeff * clicks + nonclk_coeff * (shows - clicks)`` (:func:`score`);
* ``last_seen_dt`` (date32) / ``last_seen_hour`` (int32, NULL when unknown) and ``admitted`` (bool).

**Admission**: an id gets its own vocabulary (embedding) row once its score reaches
``admit_threshold`` (before that it shares the OOV row); once admitted it stays until evicted.
**Eviction (shrink)**: at the daily consolidation an id whose score is below ``delete_threshold``
or that was unseen for more than ``delete_after_unseen_days`` days leaves the state (an admitted
one is *evicted*: recorded in ``evicted.parquet`` until it is seen again, so the daily vocabulary
and the item export leave it out). Saving: :func:`base_ids`, :func:`delta_ids`.

Storage (every file atomic, byte-identical on a re-run):

* ``admission/dt=D/hour=HH/state.parquet`` + ``_manifest.json``: the state after pass (D, HH)
  (:func:`pass_vocabularies`), chained from the previous pass of D, or for the first pass of D from
  the daily state of D-1 (:func:`chain_state`);
* ``admission/dt=D/state.parquet``, ``evicted.parquet``, ``_manifest.json``: after the daily
  :func:`shrink` of D (state.parquet is written last: its presence marks a complete shrink).

Counting is SQL (``sql/pass_id_counts.sql``) run by DuckDB over the hourly Parquet logs.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec.config import Config
from dailyrec.dates import parse_date, previous
from dailyrec.storage import MANIFEST, Store, make_manifest

log = logging.getLogger("dailyrec.admission")

STATE_SCHEMA = pa.schema([
    pa.field("feature", pa.string(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("shows", pa.float64(), nullable=False),
    pa.field("clicks", pa.float64(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("last_seen_dt", pa.date32()),
    pa.field("last_seen_hour", pa.int32()),
    pa.field("admitted", pa.bool_(), nullable=False),
])
"""One row per (feature, id), sorted by feature then id."""
COUNTS_SCHEMA = pa.schema([
    pa.field("feature", pa.string(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("shows", pa.float64(), nullable=False),
    pa.field("clicks", pa.float64(), nullable=False),
    pa.field("last_hour", pa.int32()),
])
"""What :func:`pass_counts` returns (``last_hour``: the last hour of the day the id was seen)."""
DATASET = "admission"
STATE_FILE = "state.parquet"


class AdmissionChainError(FileNotFoundError):
    """The admission state a pass chains from is missing (the previous pass of the day was not
    run): the chain stops rather than skipping hours. Names the missing path."""


def vocab_features(cfg: Config) -> list[str]:
    """Names of the ``vocab`` features of ``features.spec`` (the ids admission is about), spec order."""
    return [f.name for f in cfg.features.spec if f.kind == "vocab"]


def pass_hours_of(cfg: Config, hour: int) -> list[int]:
    """The hours of the pass holding ``hour``: ``training.split_per_pass`` hours from its first."""
    s = cfg.training.split_per_pass
    start = int(hour) - int(hour) % s
    return list(range(start, start + s))


def score(shows: Any, clicks: Any, cfg: Config) -> np.ndarray:
    """``click_coeff * clicks + nonclk_coeff * (shows - clicks)`` (float64, shape of the inputs;
    the streaming-trainer frequency score, ``admission`` config)."""
    a = cfg.admission
    s = np.asarray(shows, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    return a.click_coeff * c + a.nonclk_coeff * (s - c)


# ---- counting ----------------------------------------------------------------------------------

def pass_counts(store: Store, cfg: Config, cur_date: str, hours: list[int]) -> pa.Table:
    """Per (feature, id) of every vocab feature: ``shows``, ``clicks`` (float64) and ``last_hour``
    over the hourly log partitions ``hours`` of ``cur_date`` (:data:`COUNTS_SCHEMA`, sorted).

    Each hour is checked against the log contract first. Raises ``ContractError`` naming the
    partition, file, column (bad partition) and ``FileNotFoundError`` naming a missing partition or
    ``_SUCCESS`` marker. An empty ``hours`` gives an empty table.
    """
    from dailyrec import sql
    from dailyrec.contract import ITEM_SCHEMA, USER_SCHEMA, validate_partition
    from dailyrec.events import open_events, read_snapshot
    from dailyrec.features import vocab_source

    d = parse_date(cur_date).isoformat()
    hours = sorted(set(int(h) for h in hours))
    features = vocab_features(cfg)
    files: list[str] = []
    for h in hours:
        validate_partition(store, "logs", d, h)
        files += store.list_files(store.partition("logs", d, h), ".parquet")
    if not features or not files:
        return COUNTS_SCHEMA.empty_table()
    sources = {f: vocab_source(f) for f in features}
    users = read_snapshot(store, "users", d) if "events_users" in sources.values() else USER_SCHEMA.empty_table()
    items = read_snapshot(store, "items", d) if "events_items" in sources.values() else ITEM_SCHEMA.empty_table()
    con = open_events(store, files, users, items)
    try:
        parts = [sql.query_arrow(con, "pass_id_counts",
                                 {"feature": f, "cur_date": d, "hour_lo": hours[0], "hour_hi": hours[-1]},
                                 {"column": f, "source": sources[f]}).cast(COUNTS_SCHEMA)
                 for f in features]
    finally:
        con.close()
    return _sorted(pa.concat_tables(parts))


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([("feature", "ascending"), ("id", "ascending")]).combine_chunks()


# ---- the state ---------------------------------------------------------------------------------

def update_state(prev: pa.Table, counts: pa.Table, cfg: Config, *, days_elapsed: float, cur_date: str,
                 hour: int | None) -> pa.Table:
    """The state after adding ``counts`` (:data:`COUNTS_SCHEMA`; ``last_hour`` optional) to ``prev``
    (:data:`STATE_SCHEMA`) decayed by ``show_click_decay_rate ** days_elapsed``.

    An id with counts gets ``last_seen_dt = cur_date`` and ``last_seen_hour`` = its ``last_hour``
    (or ``hour`` when ``counts`` has none); ``admitted`` = already admitted or ``score >=
    admit_threshold``. Nothing is evicted here (:func:`shrink`). Returns a table of
    :data:`STATE_SCHEMA` sorted by (feature, id); pure (no I/O).
    """
    rate = cfg.admission.show_click_decay_rate ** float(days_elapsed)
    prev = prev.select(STATE_SCHEMA.names).cast(STATE_SCHEMA)
    if "last_hour" not in counts.column_names:
        counts = counts.append_column("last_hour", pa.nulls(counts.num_rows, pa.int32()))
    c = counts.select(COUNTS_SCHEMA.names).cast(COUNTS_SCHEMA).rename_columns(
        ["feature", "id", "c_shows", "c_clicks", "c_last_hour"])
    j = _sorted(prev.join(c, keys=["feature", "id"], join_type="full outer"))
    seen = pc.is_valid(j["c_shows"]).to_numpy(zero_copy_only=False)
    ps = pc.fill_null(j["shows"], 0.0).to_numpy()
    pk = pc.fill_null(j["clicks"], 0.0).to_numpy()
    shows = ps * rate + pc.fill_null(j["c_shows"], 0.0).to_numpy()
    clicks = pk * rate + pc.fill_null(j["c_clicks"], 0.0).to_numpy()
    sc = score(shows, clicks, cfg)
    day = pa.scalar(parse_date(cur_date), pa.date32())
    last_dt = pc.if_else(pa.array(seen), day, j["last_seen_dt"])
    c_hour = j["c_last_hour"] if hour is None else pc.coalesce(j["c_last_hour"], pa.scalar(int(hour), pa.int32()))
    last_hour = pc.if_else(pa.array(seen), c_hour, j["last_seen_hour"])
    was = pc.fill_null(j["admitted"], False).to_numpy(zero_copy_only=False)
    admitted = was | (sc >= cfg.admission.admit_threshold)
    return pa.table([j["feature"], j["id"], pa.array(shows), pa.array(clicks), pa.array(sc),
                     last_dt, last_hour.cast(pa.int32()), pa.array(admitted)], schema=STATE_SCHEMA)


def read_state(store: Store, path: str) -> pa.Table:
    """A state file as :data:`STATE_SCHEMA` (``FileNotFoundError`` naming it when absent)."""
    if not store.exists(path):
        raise FileNotFoundError(f"admission state {path} does not exist")
    with store.fs.open_input_file(path) as fh:
        return pq.read_table(fh).select(STATE_SCHEMA.names).cast(STATE_SCHEMA)


def _only_features(t: pa.Table, features: list[str]) -> pa.Table:
    return _sorted(t.filter(pc.is_in(t["feature"], pa.array(features, pa.string()))))


def daily_state(store: Store, cfg: Config, day: str) -> tuple[pa.Table, str | None]:
    """``(state, path)`` at the end of ``day``: ``admission/dt=day/state.parquet`` (the shrink's),
    else the daily vocabulary state ``features/dt=day/vocab_state.parquet`` (every id admitted,
    ``shows = total_count``, ``clicks = 0``), else ``features/dt=day/vocabularies.json`` (every id
    admitted, no counts, last seen ``day``), else an empty state and ``None``. Only the current
    vocab features are kept."""
    features = vocab_features(cfg)
    path = f"{store.partition(DATASET, day)}/{STATE_FILE}"
    if store.exists(path):
        return _only_features(read_state(store, path), features), path
    if any(store.exists(_pass_state_path(store, day, h)) for h in range(24)):
        log.warning("%s has pass states but no daily shrink (%s): the counts of its passes are not carried "
                    "over (run the features step of %s with passes.enabled)", day, path, day)
    feat = store.partition("features", day)
    d = pa.scalar(parse_date(day), pa.date32())
    if store.exists(f"{feat}/vocab_state.parquet"):
        path = f"{feat}/vocab_state.parquet"
        with store.fs.open_input_file(path) as fh:
            vs = pq.read_table(fh, columns=["feature", "id", "last_seen_dt", "total_count"])
        shows = pc.cast(pc.fill_null(vs["total_count"], 0), pa.float64())
        last = pc.fill_null(pc.cast(vs["last_seen_dt"], pa.date32()), d)
    elif store.exists(f"{feat}/vocabularies.json"):
        path = f"{feat}/vocabularies.json"
        vocabs = store.read_json(path)
        pairs = [(f, str(i)) for f in sorted(vocabs) for i in vocabs[f]]
        vs = pa.table({"feature": pa.array([p[0] for p in pairs], pa.string()),
                       "id": pa.array([p[1] for p in pairs], pa.string())})
        shows = pa.array(np.zeros(vs.num_rows))
        last = pa.array([d.as_py()] * vs.num_rows, pa.date32())
    else:
        return STATE_SCHEMA.empty_table(), None
    n = vs.num_rows
    zeros = pa.array(np.zeros(n))
    t = pa.table([vs["feature"], vs["id"], shows, zeros, pa.array(score(shows, np.zeros(n), cfg)), last,
                  pa.nulls(n, pa.int32()), pa.array(np.ones(n, dtype=bool))], schema=STATE_SCHEMA)
    log.info("admission state of %s taken from %s (%d ids, all admitted)", day, path, n)
    return _only_features(t, features), path


def _pass_state_path(store: Store, cur_date: str, hour: int) -> str:
    return f"{store.partition(DATASET, cur_date, hour)}/{STATE_FILE}"


def chain_state(store: Store, cfg: Config, cur_date: str, hour: int) -> tuple[pa.Table, str | None, list[int]]:
    """``(state, its path, hours of cur_date it counted)`` a pass starting at ``hour`` chains from:
    the previous pass of the day (``AdmissionChainError`` when its state is missing), or for the
    first pass of the day :func:`daily_state` of the day before."""
    start = pass_hours_of(cfg, hour)[0]
    if start == 0:
        state, path = daily_state(store, cfg, previous(cur_date))
        return state, path, []
    prev_start = pass_hours_of(cfg, start - 1)[0]
    path = _pass_state_path(store, cur_date, prev_start)
    if not store.exists(path):
        raise AdmissionChainError(
            f"admission state {path} of the previous pass ({cur_date}, hour {prev_start:02d}) is missing: "
            f"pass ({cur_date}, hour {start:02d}) cannot chain from it (run the passes in hour order)")
    man = store.read_json(f"{store.partition(DATASET, cur_date, prev_start)}/{MANIFEST}")
    return _only_features(read_state(store, path), vocab_features(cfg)), path, list(man["day_hours"])


def _write_parquet(store: Store, table: pa.Table, path: str) -> None:
    """Write ``table`` (one chunk, zstd) to ``path`` atomically (temp file + move)."""
    parent = path.rsplit("/", 1)[0]
    store.fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:12]}.parquet"
    pq.write_table(table.combine_chunks(), tmp, filesystem=store.fs, compression="zstd")
    store.fs.move(tmp, path)


def _keys(t: pa.Table) -> pa.Array:
    """``feature \\x1f id`` per row (a vectorised (feature, id) key for ``is_in``)."""
    return pc.binary_join_element_wise(t["feature"], t["id"], "\x1f")


def _by_feature(t: pa.Table, features: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {f: [] for f in features}
    for f, i in zip(t["feature"].to_pylist(), t["id"].to_pylist()):  # sorted by (feature, id)
        out.setdefault(f, []).append(i)
    return out


# ---- passes ------------------------------------------------------------------------------------

def pass_vocabularies(store: Store, cfg: Config, cur_date: str, hour: int,
                      base_vocabularies: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Admission for the pass holding ``hour`` of ``cur_date``: counts its hours
    (:func:`pass_counts`), updates the chained state (:func:`chain_state`, no decay inside a day) and
    writes ``admission/dt=D/hour=HH/state.parquet`` + ``_manifest.json`` atomically (HH = the pass's
    first hour; a re-run writes the same bytes).

    Returns ``(vocabularies, summary)``: per vocab feature the ids of ``base_vocabularies`` in their
    order, then the admitted ids not in it, sorted (so existing rows keep their index and the table
    grows at the end); features of ``base_vocabularies`` that are not vocab features pass through.
    ``summary``: ``admitted`` ``{feature: [ids added to the base vocabulary]}``, ``newly_admitted``
    ``{feature: [ids admitted by this pass]}``, ``state`` (path), ``chained_from``, ``hours``,
    ``day_hours``, ``seen`` ``{feature: ids with events in the pass}``, ``vocab_sizes``.
    Raises :class:`AdmissionChainError`, ``ContractError``/``FileNotFoundError`` (bad/missing hour).
    """
    d = parse_date(cur_date).isoformat()
    hours = pass_hours_of(cfg, hour)
    features = vocab_features(cfg)
    prev, prev_path, day_hours = chain_state(store, cfg, d, hours[0])
    counts = pass_counts(store, cfg, d, hours)
    state = update_state(prev, counts, cfg, days_elapsed=0, cur_date=d, hour=hours[0])
    adm = state.filter(state["admitted"])
    newly = _by_feature(adm.filter(pc.invert(pc.is_in(_keys(adm), _keys(prev.filter(prev["admitted"]))))), features)
    vocabs = {f: list(v) for f, v in base_vocabularies.items()}
    added: dict[str, list[str]] = {}
    for f in features:
        ids = adm.filter(pc.equal(adm["feature"], f))["id"]
        added[f] = ids.filter(pc.invert(pc.is_in(ids, pa.array(vocabs.get(f, []), pa.string())))).to_pylist()
        vocabs[f] = vocabs.get(f, []) + added[f]
    day_hours = sorted(set(day_hours) | set(hours))
    seen = {f: len(v) for f, v in _by_feature(counts, features).items()}
    out = store.partition(DATASET, d, hours[0])
    manifest = make_manifest(
        "admission.pass", cfg, d, inputs={"logs": [store.partition("logs", d, h) for h in hours],
                                          "chained_from": prev_path},
        rows={"state": state.num_rows, "counts": counts.num_rows}, hour=hours[0], hours=hours,
        day_hours=day_hours, admitted={f: len(v) for f, v in _by_feature(adm, features).items()},
        newly_admitted={f: len(v) for f, v in newly.items()}, added_to_base={f: len(v) for f, v in added.items()},
        seen=seen, admission=cfg.admission.model_dump())
    with store.atomic_output(out) as tmp:
        pq.write_table(state, f"{tmp}/{STATE_FILE}", filesystem=store.fs, compression="zstd")
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    log.info("admission pass (%s, %02d) hours %s: %d ids seen, newly admitted %s, vocabularies %s",
             d, hours[0], hours, counts.num_rows, {f: len(v) for f, v in newly.items()},
             {f: len(v) for f, v in vocabs.items()})
    return vocabs, {"admitted": added, "newly_admitted": newly, "state": f"{out}/{STATE_FILE}",
                    "chained_from": prev_path, "hours": hours, "day_hours": day_hours, "seen": seen,
                    "vocab_sizes": {f: len(v) for f, v in vocabs.items()}}


# ---- the daily shrink (dailyrec/eviction.py) ----------------------------------------------------

def shrink(store: Store, cfg: Config, cur_date: str) -> dict[str, Any]:
    """The daily shrink of ``cur_date``: :func:`dailyrec.eviction.shrink` (decay once, evict, write
    ``admission/dt=D/state.parquet``); returns ``{"evicted": {feature: [ids]}, "kept": {feature: n}, ...}``."""
    from dailyrec.eviction import shrink as _shrink

    return _shrink(store, cfg, cur_date)


# ---- saving thresholds -------------------------------------------------------------------------

def base_ids(state: pa.Table, cfg: Config) -> dict[str, set[str]]:
    """``{feature: ids}`` saved in the base: admitted with ``score >= base_threshold``."""
    keep = pc.and_(state["admitted"], pc.greater_equal(state["score"], cfg.admission.base_threshold))
    return {f: set(v) for f, v in _by_feature(state.filter(keep), sorted(set(state["feature"].to_pylist()))).items()}


def delta_ids(state: pa.Table, cfg: Config, cur_date: str) -> dict[str, set[str]]:
    """``{feature: ids}`` allowed in a delta of ``cur_date``: admitted, ``score >= delta_threshold``
    and last seen at most ``delta_keep_days`` days before ``cur_date``."""
    a = cfg.admission
    oldest = pa.scalar(parse_date(cur_date) - dt.timedelta(days=a.delta_keep_days), pa.date32())
    keep = pc.and_(pc.and_(state["admitted"], pc.greater_equal(state["score"], a.delta_threshold)),
                   pc.fill_null(pc.greater_equal(state["last_seen_dt"], oldest), False))
    return {f: set(v) for f, v in _by_feature(state.filter(keep), sorted(set(state["feature"].to_pylist()))).items()}
