"""Publish one pass's delta to Redis: a new version on top of ``current`` that costs what the pass changed.

    publish_delta(cfg, "2026-11-02", 5)   # deltas/two_tower/dt=2026-11-02/hour=05/ -> version 2026-11-02T05_<model>

Input (written by the passes helper's ``hourly.export_delta``; docs/hourly-design, "Storage")::

    deltas/two_tower/dt=D/hour=HH/delta.parquet    item_id string, op string (upsert|delete),
                                                   vector fixed_size_list<float32>[dim] (zeros for delete)
    deltas/two_tower/dt=D/hour=HH/_manifest.json   model_version, pass_dir, user_tower, counts {upsert, delete}, dim

Protocol (single Redis server; the same lock, stage, verify and switch as the full publish,
:mod:`dailyrec.publishing.publish`; layout: docs/redis-layout.md, "Delta versions"):

1. take ``ns:lock``; ``parent`` := ``current`` (a re-run of the same pass re-applies on the parent of
   the current delta); a pass older than ``current`` (a later pass, or the daily full version of its
   date or later) is skipped as a backfill; nothing published is :class:`NothingPublished`;
2. only the delta's items are staged, in ``ns:stage:<ver>:vec:<b>`` (an upsert is the vector, a delete
   an empty value: a tombstone), read back and compared with the Parquet field for field;
3. the recall gate: the version as readers will serve it (the base's index with the chain as an
   :class:`dailyrec.publishing.overlay.OverlayIndex`) against exact search over the served vectors;
   below ``index.min_recall_at_k`` :class:`dailyrec.errors.RecallTooLow` and the stage is dropped;
4. the meta (``kind: "delta"``, ``parent``, ``base``, ``chain``, ``depth``, ``hour``, ``user_tower``,
   ``model_version`` ...) is staged, then ONE ``WATCH``ed MULTI/EXEC renames the stage onto
   ``ns:v:<ver>:``, sets ``complete``, ``ZADD``s ``versions`` and moves ``previous``/``current``;
5. retention (a kept delta keeps its whole chain), then the pass's registry entry
   ``registry/two_tower/dt=D/hour=HH/published.json`` (with the switch time and the freshness).

A crash at any point before the EXEC leaves ``ns:stage:*`` keys and the lock; readers stay on the
old complete version. A chain deeper than ``passes.max_delta_chain`` is squashed: the chain's changes
and this delta become one delta on the base (depth 1; cost: the items changed since the base).
Redis Cluster: refused with :class:`DeltaNotSupportedOnCluster` (publish full versions there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dailyrec.config import Config, ConfigError
from dailyrec.dates import check_hour, parse_date
from dailyrec.errors import ContractError, RecallTooLow
from dailyrec.publishing.chain import TOMBSTONE, chain_of, is_delta, read_chain, read_fields
from dailyrec.publishing.connection import describe, get_redis, keys_for
from dailyrec.publishing.integrity import NothingPublished, missing_keys_error, no_current_error
from dailyrec.publishing.layout import (Keys, bucket_of, delta_version_id, n_buckets, scan_keys, text, unlink_all,
                                        version_position)
from dailyrec.publishing.lock import PublishError, PublishLock
from dailyrec.publishing.policy import check_policy
from dailyrec.storage import MANIFEST, Store, Timer, open_store

__all__ = ["DELTA_DATASET", "DeltaConflict", "DeltaInput", "DeltaNotSupportedOnCluster", "publish_delta",
           "read_delta"]

log = logging.getLogger("dailyrec.publish")

DELTA_DATASET = "deltas/two_tower"
DELTA_FILE = "delta.parquet"
NORM_TOLERANCE = 1e-3
RECALL_QUERIES = 250
"""At most this many queries (and ``index.recall_queries``) for a delta's recall gate: it runs on every
pass, and exact search over the served catalog costs queries x items (250 queries x K=100 put the
standard error of the recall near 0.005)."""


class DeltaNotSupportedOnCluster(ConfigError):
    """``redis.url`` names a Redis Cluster: delta versions are published to one Redis server only."""


class DeltaConflict(PublishError):
    """The pass's version already exists on another parent (published, then rolled back past it)."""


@dataclass
class DeltaInput:
    """A read delta partition: ``upsert[i]`` is True for an upsert, False for a delete;
    ``vectors``: ``float32[n, dim]``."""

    item_ids: list[str]
    upsert: np.ndarray
    vectors: np.ndarray
    manifest: dict[str, Any]
    path: str
    sha256: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def fields(self) -> dict[str, bytes]:
        """``{item_id: float32 LE bytes | TOMBSTONE}``: the hash fields of the delta's buckets."""
        vec = np.ascontiguousarray(self.vectors, dtype="<f4")
        return {item: (vec[i].tobytes() if self.upsert[i] else TOMBSTONE) for i, item in enumerate(self.item_ids)}


def read_delta(store: Store, cur_date: str, hour: int) -> DeltaInput:
    """Read and check the delta of pass ``(cur_date, hour)``.

    Raises:
        FileNotFoundError: no ``delta.parquet`` or no ``_manifest.json`` (the export did not finish).
        ContractError: a missing/mistyped/null column, an ``op`` other than upsert/delete, duplicated
            ids, a non-finite or non-normalised upsert vector, or counts/dim differing from the
            manifest; the message names the file, the column and the item.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dailyrec.embeddings import vectors_from_column

    part = store.partition(DELTA_DATASET, cur_date, hour)
    path, man_path = f"{part}/{DELTA_FILE}", f"{part}/{MANIFEST}"
    for p in (path, man_path):
        if not store.exists(p):
            raise FileNotFoundError(f"{p} is missing: run hourly.export_delta for dt={cur_date} hour={hour:02d} first")
    manifest = store.read_json(man_path)
    for key in ("model_version", "dim", "counts", "user_tower"):
        if key not in manifest:
            raise ContractError(f"{man_path}: missing key {key!r}")
    with store.fs.open_input_stream(path) as f:
        raw = f.read()
    table = pq.read_table(pa.BufferReader(raw))
    for col in ("item_id", "op", "vector"):
        if col not in table.column_names:
            raise ContractError(f"{path}: missing column {col!r} (found {table.column_names})")
        if table.column(col).null_count:
            raise ContractError(f"{path}: column {col!r} has {table.column(col).null_count} null(s)")
    for col in ("item_id", "op"):
        if not pa.types.is_string(table.schema.field(col).type) and not pa.types.is_large_string(
                table.schema.field(col).type):
            raise ContractError(f"{path}: column {col!r} must be string, found {table.schema.field(col).type}")
    vectors = vectors_from_column(table.column("vector"), path) if table.num_rows else np.zeros(
        (0, int(manifest["dim"])), np.float32)
    ids, ops = table.column("item_id").to_pylist(), table.column("op").to_pylist()
    bad = [(i, op) for i, op in zip(ids, ops) if op not in ("upsert", "delete")]
    if bad:
        raise ContractError(f"{path}: column 'op' must be 'upsert' or 'delete'; item {bad[0][0]!r} has {bad[0][1]!r}")
    if table.num_rows and pc.count_distinct(table.column("item_id")).as_py() != table.num_rows:
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ContractError(f"{path}: column 'item_id' has duplicated ids, e.g. {dup}")
    if vectors.shape[1] != int(manifest["dim"]):
        raise ContractError(f"{path}: column 'vector' has dim {vectors.shape[1]}, the manifest says {manifest['dim']}")
    upsert = np.array([op == "upsert" for op in ops], dtype=bool)
    norms = np.linalg.norm(vectors[upsert], axis=1)
    off = ~np.isfinite(norms) | (np.abs(norms - 1.0) > NORM_TOLERANCE)
    if off.any():
        item = np.asarray(ids, dtype=object)[upsert][int(np.argmax(off))]
        raise ContractError(f"{path}: column 'vector' of upsert {item!r} is not finite and L2-normalised")
    counts = {"upsert": int(upsert.sum()), "delete": int((~upsert).sum())}
    if {k: int(v) for k, v in manifest["counts"].items()} != counts:
        raise ContractError(f"{path}: {counts} rows, the manifest {man_path} says {manifest['counts']}")
    return DeltaInput(ids, upsert, vectors, manifest, path, hashlib.sha256(raw).hexdigest())


def publish_delta(cfg: Config, cur_date: str, hour: int, *, store: Store | None = None) -> dict[str, Any]:
    """Publish pass ``(cur_date, hour)``'s delta as version ``<D>T<HH>_<model_version>`` on top of
    ``current`` (the module doc gives the protocol).

    Returns ``{skipped, version, current, previous, parent, base, depth, squashed, upserts, deletes,
    fields_written, keys_written, bytes_written, vectors (items served), recall_at_k, recall_k,
    deleted_versions, switched_at (epoch s), freshness_s, registry, timings_s, seconds}``;
    ``freshness_s``: seconds from the ``_SUCCESS`` marker of the pass's last hour
    (``logs/dt=D/hour=HH``, ``training.split_per_pass``) to the switch (``None`` without the marker).

    Raises:
        DeltaNotSupportedOnCluster: ``redis.url`` is a Redis Cluster.
        NothingPublished: no ``current`` version to apply the delta on (publish a full version first).
        FileNotFoundError, ContractError: the delta input (:func:`read_delta`); a dim other than the parent's.
        DeltaConflict: the pass's version exists on another parent; ``current`` unchanged.
        RecallTooLow: the served index's recall@K is below ``index.min_recall_at_k``; ``current`` unchanged.
        PublishError: verification failed or the lock was lost; ``current`` unchanged.
        MissingVersionKeys: keys of the parent's chain are gone.
    """
    from dailyrec.publishing.publish import _retention, _switch

    hour = check_hour(hour)
    cur_date = parse_date(cur_date).isoformat()
    store = store or open_store(cfg)
    timer = Timer()
    r = get_redis(cfg)
    keys = keys_for(r, cfg.redis.namespace)
    if keys.cluster:
        raise DeltaNotSupportedOnCluster(f"delta versions are not supported on a Redis Cluster ({describe(cfg)}): "
                                         "set passes.delta_publish=false there and publish full versions")
    policy = check_policy(r, cfg, describe(cfg))
    with timer.step("read_delta"):
        d = read_delta(store, cur_date, hour)
    ver = delta_version_id(cur_date, hour, str(d.manifest["model_version"]))
    with PublishLock(r, keys) as lock:
        cur = text(r.get(keys.current))
        if cur is None:
            err = no_current_error(r, keys, describe(cfg))
            raise err if not isinstance(err, NothingPublished) else NothingPublished(
                f"no current version under {keys.ns!r} to apply the delta of dt={cur_date} hour={hour:02d} on: "
                "publish a full version first (`python -m tasks.retrieval.publish_redis --cur-date D`)")
        if version_position(cur) > version_position(ver):
            log.warning("delta %s is older than the current version %s: backfill not published", ver, cur)
            return {"skipped": True, "reason": "older than current (backfill)", "version": ver, "current": cur,
                    "previous": text(r.get(keys.previous)), "keys_written": 0, "fields_written": 0,
                    "seconds": timer.total()}
        with timer.step("resolve_parent"):
            parent_meta, fields, squashed = _parent_and_fields(r, keys, cur, ver, d, cfg)
        parent = parent_meta["version"]
        chain = [parent] + chain_of(parent_meta)
        existing = r.get(keys.v(ver, "meta"))
        if existing is not None and json.loads(existing).get("parent") != parent:
            raise DeltaConflict(f"version {ver} exists on parent {json.loads(existing).get('parent')}, but it would "
                                f"now apply on {parent}: roll forward to it (`python -m dailyrec.publishing rollback "
                                f"--to-version {ver}`) or export the pass again under a new model_version")
        with timer.step("clean_stage"):
            stale = unlink_all(r, list(scan_keys(r, keys.stage_pattern())))
            if stale:
                log.warning("deleted %d staged key(s) left by an interrupted publish", stale)
        buckets = n_buckets(len(fields), cfg.redis.vectors_per_bucket)
        by_bucket: dict[int, dict[str, bytes]] = {}
        for item, value in fields.items():
            by_bucket.setdefault(bucket_of(item, buckets), {})[item] = value
        with timer.step("stage_vectors"):
            _stage(r, keys, ver, by_bucket, lock, cfg)
        staged = [f"vec:{b}" for b in sorted(by_bucket)]
        with timer.step("verify"):
            back, gone = read_fields(r, [keys.stage(ver, s) for s in staged])
            present = set(scan_keys(r, keys.stage_pattern(ver)))
            if back != fields or gone or present != {keys.stage(ver, s) for s in staged}:
                unlink_all(r, list(present))
                raise PublishError(f"verification of delta {ver} failed, current unchanged: staged fields differ "
                                   f"from {d.path} (missing buckets {gone[:3]})")
        with timer.step("recall_check"):
            base_meta, served, recall = _served(r, keys, parent_meta, fields, cfg)
            if recall["recall_at_k"] < cfg.index.min_recall_at_k:
                unlink_all(r, list(present))
                raise RecallTooLow(f"delta {ver}: recall@{recall['recall_k']} of the served index (base "
                                   f"{base_meta['version']} + chain overlay) is {recall['recall_at_k']}, below "
                                   f"index.min_recall_at_k {cfg.index.min_recall_at_k}; current unchanged")
        lock.check(lock.renew())
        n_up = sum(1 for v in fields.values() if v != TOMBSTONE)
        meta = {"kind": "delta", "version": ver, "cur_date": cur_date, "hour": hour, "created": f"{cur_date}T{hour:02d}",
                "model_version": str(d.manifest["model_version"]), "parent": parent, "base": chain[-1],
                "base_cur_date": base_meta["cur_date"], "chain": chain, "depth": len(chain), "squashed": squashed,
                "count": served, "dim": d.dim, "dtype": "float32-le",
                "vectors": {"key": "vec:<bucket>", "buckets": buckets, "bucket_of": "crc32(utf8(item_id)) % buckets",
                            "empty_buckets": [b for b in range(buckets) if b not in by_bucket],
                            "tombstone": "empty value: the item is deleted"},
                "delta": {"upserts": n_up, "deletes": len(fields) - n_up, "fields": len(fields)},
                "user_tower": d.manifest["user_tower"],
                "index": {"type": "overlay", "base": chain[-1], "base_type": (base_meta.get("index") or {}).get("type"),
                          **recall},
                "source": {"delta": d.path, "delta_sha256": d.sha256, "pass_dir": d.manifest.get("pass_dir")}}
        meta_blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        r.set(keys.stage(ver, "meta"), meta_blob)
        if r.get(keys.stage(ver, "meta")) != meta_blob:
            unlink_all(r, list(scan_keys(r, keys.stage_pattern(ver))))
            raise PublishError(f"verification of delta {ver} failed, current unchanged: the staged meta differs")
        with timer.step("commit"):
            previous, _, written = _switch(r, keys, ver, cur, cur_date, staged + ["meta"], served, lock)
            switched_at = time.time()  # a measurement (freshness), not task logic
        with timer.step("retention"):
            deleted = _retention(r, keys, cfg.redis.keep_versions, lock)
        result = {"skipped": False, "kind": "delta", "version": ver, "current": ver, "previous": previous,
                  "parent": parent, "base": chain[-1], "depth": len(chain), "squashed": squashed,
                  "upserts": n_up, "deletes": len(fields) - n_up, "fields_written": len(fields),
                  "keys_written": written, "bytes_written": sum(len(k.encode()) + len(v) for k, v in fields.items())
                  + len(meta_blob), "vectors": served, "dim": d.dim, **recall, "deleted_versions": deleted,
                  "switched_at": round(switched_at, 3), "freshness_s": _freshness(store, cfg, cur_date, hour, switched_at),
                  "user_tower": d.manifest["user_tower"], "model_version": meta["model_version"],
                  "timings_s": timer.timings, "seconds": timer.total(), "redis": describe(cfg), "namespace": keys.ns,
                  "maxmemory_policy": policy["maxmemory_policy"]}
        result["registry"] = _record(store, cur_date, hour, result)
    log.info("published delta %s on %s (base %s, depth %d): %d upserts, %d deletes, %d keys, recall@%d %.3f, "
             "%.2fs; freshness %s s", ver, parent, chain[-1], len(chain), n_up, len(fields) - n_up, written,
             recall["recall_k"], recall["recall_at_k"], result["seconds"], result["freshness_s"])
    return result


def _parent_and_fields(r: Any, keys: Keys, cur: str, ver: str, d: DeltaInput, cfg: Config
                       ) -> tuple[dict[str, Any], dict[str, bytes], list[str]]:
    """``(parent meta, fields to write, squashed versions)``: the parent is ``current``, or its parent
    when ``current`` is a delta of the same pass (a re-run); past ``passes.max_delta_chain`` the chain's
    changes are merged into this delta, which then applies on the base."""
    from dailyrec.publishing.reader import read_meta

    parent_meta = read_meta(r, keys.ns, cur)
    if is_delta(parent_meta) and version_position(cur) == version_position(ver):
        parent_meta = read_meta(r, keys.ns, parent_meta["parent"])
    if int(parent_meta["dim"]) != d.dim:
        raise ContractError(f"{d.path}: vectors of dim {d.dim}, the version {parent_meta['version']} it applies on "
                            f"has dim {parent_meta['dim']}")
    fields = d.fields()
    if len(chain_of(parent_meta)) + 1 <= cfg.passes.max_delta_chain:
        return parent_meta, fields, []
    base_meta, merged, missing = read_chain(r, keys, parent_meta)
    if missing:
        raise missing_keys_error(r, keys, parent_meta["version"], missing)
    log.info("delta %s: chain of %s reached passes.max_delta_chain=%d: squashed onto the base %s", ver,
             parent_meta["version"], cfg.passes.max_delta_chain, base_meta["version"])
    return base_meta, {**merged, **fields}, [parent_meta["version"]] + chain_of(parent_meta)[:-1]


def _stage(r: Any, keys: Keys, ver: str, by_bucket: dict[int, dict[str, bytes]], lock: PublishLock,
           cfg: Config) -> None:
    """``HSET ns:stage:<ver>:vec:<b>``, ``redis.publish_batch`` fields per round trip, the lock renewed
    (and checked) with each; ``redis.publish_batch_delay_s`` after each."""
    batch = cfg.redis.publish_batch
    for b in sorted(by_bucket):
        items = list(by_bucket[b].items())
        for s in range(0, len(items), batch):
            pipe = r.pipeline(transaction=False)
            pipe.hset(keys.stage(ver, f"vec:{b}"), mapping=dict(items[s:s + batch]))
            lock.renew(pipe)
            lock.check(pipe.execute()[-1])
            if cfg.redis.publish_batch_delay_s:
                time.sleep(cfg.redis.publish_batch_delay_s)


def _served(r: Any, keys: Keys, parent_meta: dict[str, Any], fields: dict[str, bytes], cfg: Config
            ) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """``(base meta, items served, recall)`` of the version ``fields`` make on ``parent_meta``: the
    base's index and ids (as readers read them) with the chain's and this delta's changes as an
    overlay, against exact search over the served vectors (the base's as its index stores them, or,
    for a lossy index, read from its buckets: ``exact_vectors_from``)."""
    import faiss

    from dailyrec.publishing.chain import delta_bucket_keys
    from dailyrec.publishing.overlay import build_overlay, overlay_recall, served_vectors, stored_vectors
    from dailyrec.publishing.reader import _read_version

    if is_delta(parent_meta):
        base_meta, merged, missing = read_chain(r, keys, parent_meta)
        if missing:
            raise missing_keys_error(r, keys, parent_meta["version"], missing)
    else:
        base_meta, merged = parent_meta, {}
    base = base_meta["version"]
    _, got, bad = _read_version(r, keys, base)
    if bad:
        raise missing_keys_error(r, keys, base, bad)
    ids = np.array(json.loads(got["ids"]), dtype=object)
    base_index = faiss.deserialize_index(np.frombuffer(got["index"], dtype=np.uint8))
    base_vecs, exact_from = stored_vectors(base_index), "index"
    if base_vecs is None:  # a lossy index: the base's vectors from its buckets
        base_fields, gone = read_fields(r, delta_bucket_keys(keys, base, base_meta))
        if gone:
            raise missing_keys_error(r, keys, base, gone)
        base_vecs, exact_from = np.frombuffer(b"".join(base_fields[i] for i in ids.tolist()),
                                              dtype="<f4").reshape(len(ids), -1), "redis"
    index, _, to_served = build_overlay(base_index, ids, {**merged, **fields}, int(base_meta["dim"]))
    recall = overlay_recall(index, to_served, served_vectors(base_vecs, index), cfg.index.recall_k,
                            min(cfg.index.recall_queries, RECALL_QUERIES))
    return base_meta, int(index.ntotal), recall | {"exact_vectors_from": exact_from}


def _freshness(store: Store, cfg: Config, cur_date: str, hour: int, switched_at: float) -> float | None:
    """Seconds from the ``_SUCCESS`` marker of the pass's last hour to ``switched_at`` (``None`` without it)."""
    last = min(23, hour + cfg.training.split_per_pass - 1)
    info = store.fs.get_file_info(f"{store.partition('logs', cur_date, last)}/_SUCCESS")
    if info.mtime is None:
        return None
    return round(switched_at - info.mtime.timestamp(), 3)


def _record(store: Store, cur_date: str, hour: int, result: dict[str, Any]) -> str:
    """The pass's registry entry (:func:`dailyrec.registry.mark_pass_published`): what went online and when."""
    from dailyrec.publishing.publish import MODEL
    from dailyrec.registry import mark_pass_published

    keep = ("version", "previous", "parent", "base", "depth", "squashed", "upserts", "deletes", "keys_written",
            "bytes_written", "vectors", "recall_at_k", "recall_k", "switched_at", "freshness_s", "user_tower",
            "model_version", "redis", "namespace")
    return mark_pass_published(store, MODEL, cur_date, hour, {k: result[k] for k in keep} | {"kind": "delta"})
