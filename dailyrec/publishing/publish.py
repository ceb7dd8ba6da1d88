"""Atomic, versioned publish of a day's item vectors and FAISS index to Redis, and its retention.

:func:`publish` loads everything under ``ns:stage:<ver>:`` (layout: :mod:`dailyrec.publishing.layout`),
verifies it (per-bucket counts, spot-checked vectors byte-equal to the Parquet, blob sizes/bytes,
meta), and then one MULTI/EXEC (WATCHing ``ns:current`` and ``ns:lock``) renames the staged keys
onto ``ns:v:<ver>:``, sets ``complete``, records the version and switches ``current``/``previous``.
A crash before EXEC leaves only ``ns:stage:*`` keys, which the next publish deletes first. Once
``current`` points at the new version the registry says so too
(``registry/two_tower/dt=D/published.json``, :func:`dailyrec.registry.mark_online`), whoever
called the publish. Protocol and reasons: docs/redis-layout.md.

On a Redis Cluster (``redis+cluster://`` URL) no ``RENAME`` can cross slots, so the vectors, seen
sets and blobs are written straight under a new generation ``ns:v:<ver>:<gen>:`` (registered first in
``{ns}:gens``), verified the same way, and the one ``WATCH``ed MULTI/EXEC on the slot of ``{ns}``
writes the meta naming that generation, ``complete``, ``versions``, ``previous`` and ``current``
(:class:`dailyrec.publishing.layout.ClusterKeys`, :mod:`dailyrec.publishing.cluster`).

Knobs (config only, part of its digest): ``redis.publish_batch`` (vectors per pipelined round
trip), ``redis.vectors_per_bucket``, ``redis.blob_chunk_bytes``, ``redis.publish_batch_delay_s``
(pause after each batch), ``redis.keep_versions``, ``redis.allow_evicting_policy`` (publish even to a
server whose ``maxmemory-policy`` may evict keys: :mod:`dailyrec.publishing.policy`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dailyrec.ann import read_index_output
from dailyrec.config import Config, RedisConfig, load_config
from dailyrec.dates import parse_date
from dailyrec.embeddings import read_embeddings
from dailyrec.errors import ContractError
from dailyrec.publishing.chain import live_members
from dailyrec.publishing.cluster import drop_unreferenced, publish_cluster, retention_cluster
from dailyrec.publishing.connection import describe, get_redis, keys_for
from dailyrec.publishing.layout import (Keys, blob_suffixes, date_score, n_buckets, queue_pointer_switch, scan_keys,
                                        text, unlink_all, version_id)
from dailyrec.publishing.lock import PublishError, PublishLock
from dailyrec.publishing.packing import RawPipe, VectorPacker, chunks
from dailyrec.publishing.policy import check_policy
from dailyrec.publishing.verify import SPOT_CHECKS, check_bucket_counts, check_content
from dailyrec.registry import mark_online
from dailyrec.storage import Store, Timer, open_store

__all__ = ["MODEL", "SPOT_CHECKS", "PublishError", "publish", "record_online"]

log = logging.getLogger("dailyrec.publish")

MODEL = "two_tower"
"""Registry name of the model whose item vectors a namespace serves."""


class _Inputs:
    """The day's embeddings and index output, checked to belong together (``ContractError`` if not)."""

    def __init__(self, store: Store, cur_date: str) -> None:
        self.emb = read_embeddings(store, cur_date)
        self.index_manifest, index_path, ids_path = read_index_output(store, cur_date)
        inputs = self.index_manifest.get("inputs") or {}
        if inputs.get("embeddings_sha256") != self.emb.sha256:
            raise ContractError(f"the index of {cur_date} was built from other embeddings than "
                                f"{self.emb.path} (sha256 differs): re-run tasks.retrieval.build_index first")
        with store.fs.open_input_file(ids_path) as f:
            ids = pq.read_table(f)
        faiss_ids = ids.column("faiss_id").to_numpy()
        id_col = ids.column("item_id").combine_chunks()
        self.ids: list[str] = id_col.to_pylist()
        n = self.emb.n
        same_order = (self.emb.item_ids_arrow is not None and len(id_col) == n and
                      id_col.cast(pa.large_string()).equals(self.emb.item_ids_arrow.cast(pa.large_string())))
        if len(self.ids) != n or not np.array_equal(faiss_ids, np.arange(n)) or not (
                same_order or set(self.ids) == set(self.emb.item_ids)):
            raise ContractError(f"{ids_path} does not map faiss ids 0..{n - 1} onto the {n} items of {self.emb.path}")
        with store.fs.open_input_stream(index_path) as f:
            self.index_bytes = f.read()
        self.index_dir = index_path.rsplit("/", 1)[0]


def _index_meta(manifest: dict[str, Any]) -> dict[str, Any]:
    ix = manifest.get("index") or {}
    return {k: ix.get(k) for k in ("type", "factory", "params", "recall_at_k", "recall_k", "recall_queries")}


def record_online(cfg: Config, store: Store, cur_date: str, info: dict[str, Any]) -> str:
    """Registry entry of ``cur_date``'s two-tower model as the one online (later entries withdrawn)."""
    path = mark_online(store, MODEL, cur_date, info | {"redis": describe(cfg), "namespace": cfg.redis.namespace})
    log.info("registry: %s is the published two-tower model (%s)", cur_date, path)
    return path


def publish(cur_date: str, cfg: Config | None = None, allow_backwards: bool = False) -> dict[str, Any]:
    """Load the vectors and index of ``cur_date`` as a new version and switch ``current`` to it.

    A ``cur_date`` older than the current version's is a backfill: without ``allow_backwards``
    nothing is written and the result says ``skipped`` (see docs/redis-layout.md). Otherwise the
    registry entry of ``cur_date`` is written once ``current`` points at the new version.

    Raises:
        FileNotFoundError: no embeddings or no index for ``cur_date``.
        ContractError: the index was built from other embeddings.
        PublishError: the staged version failed verification or the lock was lost (``current`` unchanged).
        TimeoutError: another publisher held the lock for longer than ``LOCK_WAIT_S``.
        EvictingPolicyError: the server's ``maxmemory-policy`` may evict published keys and
            ``redis.allow_evicting_policy`` is false (checked first: nothing read or written).
    """
    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    r = get_redis(cfg)
    policy = check_policy(r, cfg, describe(cfg))  # before any work: refuse a server that may evict our keys
    with timer.step("read_inputs"):
        inp = _Inputs(store, cur_date)
    emb = inp.emb
    ver = version_id(cur_date, emb.model_version)
    keys = keys_for(r, cfg.redis.namespace)

    with PublishLock(r, keys) as lock:
        cur = text(r.get(keys.current))
        if not allow_backwards and _is_backfill(r, keys, cur, ver, cur_date):
            log.warning("dt=%s is older than the current version %s: backfill not published "
                        "(pass allow_backwards to move current back)", cur_date, cur)
            return {"skipped": True, "reason": "older than current (backfill)", "version": ver,
                    "current": cur, "previous": text(r.get(keys.previous)), "keys_written": 0,
                    "vectors": 0, "seconds": timer.total()}
        with timer.step("clean_stage"):
            if keys.cluster:
                stale = drop_unreferenced(r, keys)
            else:
                stale = unlink_all(r, list(scan_keys(r, keys.stage_pattern())))
            if stale:
                log.warning("deleted %d staged key(s) left by an interrupted publish", stale)
        with timer.step("prepare"):
            buckets = n_buckets(emb.n, cfg.redis.vectors_per_bucket)
            packer = VectorPacker(emb, buckets)
        seen_meta: dict[str, Any] | None = None
        if keys.cluster:
            # the seen sets are bucketed first: their meta section is part of the generation's hash
            seen_plan = _plan_seen_sets(ver, cur_date, inp, store, cfg)
            seen_meta = {"seen": seen_plan.meta} if seen_plan is not None else None
            blobs, meta = _blobs_and_meta(ver, cur_date, inp, packer.counts, cfg.redis.blob_chunk_bytes, seen_meta)
            previous, existing, written = publish_cluster(r, keys, ver, cur, cur_date, emb, blobs, meta, packer,
                                                          cfg.redis, lock, timer, seen=seen_plan)
        else:
            with timer.step("stage_vectors"):
                _stage_vectors(r, keys, ver, packer, lock, cfg.redis)
            with timer.step("stage_seen"):  # serving.exclude_seen: the per-user seen sets (dailyrec.publishing.seen)
                seen_staged, seen_meta = _stage_seen_sets(r, keys, ver, cur_date, inp, store, cfg, lock)
            with timer.step("stage_blobs"):
                blobs, meta_blob = _stage_blobs(r, keys, ver, cur_date, inp, packer.counts,
                                                cfg.redis.blob_chunk_bytes, lock, extra_meta=seen_meta)
            # a catalog can leave buckets empty; they have no key
            staged = [f"vec:{b}" for b in range(buckets) if packer.counts[b]] + seen_staged
            staged += [sfx for name, parts in blobs.items() for sfx in blob_suffixes(name, len(parts))] + ["meta"]
            with timer.step("verify"):
                _verify(r, keys, ver, emb, packer.counts, blobs, meta_blob, staged, lock)
            with timer.step("commit"):
                previous, existing, written = _switch(r, keys, ver, cur, cur_date, staged, emb.n, lock)
        with timer.step("retention"):
            deleted = (retention_cluster if keys.cluster else _retention)(r, keys, cfg.redis.keep_versions, lock)
        result = {"skipped": False, "version": ver, "current": ver, "previous": previous,
                  "replaced": cur if cur != ver else None, "rewritten": cur == ver or bool(existing),
                  "keys_written": written, "vectors": emb.n, "dim": emb.dim, "buckets": buckets,
                  "index_bytes": len(inp.index_bytes), "deleted_versions": deleted,
                  "seen_users": ((seen_meta or {}).get("seen") or {}).get("users"),
                  "timings_s": timer.timings, "seconds": timer.total(),
                  # vector load rate: bucketing/packing + pipelined HSETs (not the Parquet read, not the blobs)
                  "vectors_per_s": round(emb.n / max(timer.timings["prepare"] + timer.timings["stage_vectors"],
                                                     1e-9), 1),
                  "redis": describe(cfg), "namespace": keys.ns, "maxmemory_policy": policy["maxmemory_policy"]}
        record_online(cfg, store, cur_date, {k: result[k] for k in ("version", "previous", "keys_written",
                                                                    "vectors", "seconds")}
                      | {"previous_version": previous})
    log.info("published %s (%d vectors x %d, %d keys, %.1f MB index) in %.1fs; current=%s previous=%s%s",
             ver, emb.n, emb.dim, written, len(inp.index_bytes) / 1e6, result["seconds"], ver, previous,
             f"; deleted {deleted}" if deleted else "")
    return result


def _is_backfill(r: Any, keys: Keys, cur: str | None, ver: str, cur_date: str) -> bool:
    """``current`` is another version of a later date than ``cur_date``."""
    if cur is None or cur == ver:
        return False
    cur_score = r.zscore(keys.versions, cur)
    return cur_score is not None and cur_score > date_score(cur_date)


def _stage_vectors(r: Any, keys: Keys, ver: str, packer: VectorPacker, lock: PublishLock, rc: RedisConfig) -> None:
    """Hashes ``ns:stage:<ver>:vec:<b>``, ``rc.publish_batch`` vectors per round trip, renewing the lock;
    a progress line at least every 30 s (:class:`dailyrec.progress.Progress`)."""
    from dailyrec.progress import Progress

    progress = Progress(log, f"publish {ver}: staging", total=int(packer.counts.sum()), unit="vectors")
    with RawPipe(r) as raw_pipe:
        for cmds in packer.batches(lambda b: keys.stage(ver, f"vec:{b}").encode(), rc.publish_batch):
            progress.add(min(rc.publish_batch, progress.total - progress.done_units))
            cmds.extend(lock.renew_command())
            # send this batch, then read the previous batch's replies: packing overlaps Redis's work
            raw_pipe.send(cmds, check=lambda replies: lock.check(replies[-1]))
            if rc.publish_batch_delay_s:
                raw_pipe.flush()
                time.sleep(rc.publish_batch_delay_s)
    progress.done()


def _seen_logs_exist(ver: str, cur_date: str, store: Store, cfg: Config) -> bool:
    """``serving.exclude_seen`` is on and ``cur_date`` has a log partition (else a warning when on)."""
    if not cfg.serving.exclude_seen:
        return False
    if not store.exists(store.partition("logs", cur_date)):
        # vectors made outside the pipeline (tests, benchmarks): no log to know what users clicked
        log.warning("publish %s: no logs for %s (%s), so no seen sets: this version is served unfiltered", ver,
                    cur_date, store.partition("logs", cur_date))
        return False
    return True


def _log_seen(ver: str, meta: dict[str, Any]) -> None:
    log.info("publish %s: seen sets of %d users (%d items, at most %d each, %d day(s))", ver, meta["users"],
             meta["items"], meta["max_per_user"], meta["lookback_days"])


def _stage_seen_sets(r: Any, keys: Keys, ver: str, cur_date: str, inp: _Inputs, store: Store, cfg: Config,
                     lock: PublishLock) -> tuple[list[str], dict[str, Any] | None]:
    """Stage the version's seen sets when ``serving.exclude_seen``: ``(staged suffixes, {"seen": meta})``,
    or ``([], None)`` when it is off, or when ``cur_date`` has no log partition at all (vectors made
    outside the pipeline: a warning; logs that exist but are incomplete raise ``FileNotFoundError``)
    (:mod:`dailyrec.publishing.seen`; one server)."""
    from dailyrec.publishing.seen import seen_sets, stage_seen

    if not _seen_logs_exist(ver, cur_date, store, cfg):
        return [], None
    suffixes, meta = stage_seen(r, keys, ver, seen_sets(store, cfg, cur_date, list(inp.ids)), lock, cfg)
    _log_seen(ver, meta)
    return suffixes, {"seen": meta}


def _plan_seen_sets(ver: str, cur_date: str, inp: _Inputs, store: Store, cfg: Config) -> Any:
    """The version's seen sets bucketed for a Redis Cluster publish
    (:class:`dailyrec.publishing.seen.SeenPlan`), or ``None`` in the cases :func:`_stage_seen_sets`
    returns ``([], None)``; ``FileNotFoundError`` as there."""
    from dailyrec.publishing.seen import plan_seen, seen_sets

    if not _seen_logs_exist(ver, cur_date, store, cfg):
        return None
    plan = plan_seen(seen_sets(store, cfg, cur_date, list(inp.ids)), cfg)
    _log_seen(ver, plan.meta)
    return plan


def _stage_blobs(r: Any, keys: Keys, ver: str, cur_date: str, inp: _Inputs, counts: np.ndarray, chunk: int,
                 lock: PublishLock, extra_meta: dict[str, Any] | None = None) -> tuple[dict[str, list[memoryview]], bytes]:
    """Stage the ``ids`` and ``index`` chunks and the meta; returns ``(blobs, meta bytes)``.

    ``counts[b]``: vectors of bucket ``b``; the empty ones have no key and are listed in the meta, so
    the meta alone gives the version's key set (``dailyrec.publishing.integrity.expected_keys``)."""
    blobs, meta = _blobs_and_meta(ver, cur_date, inp, counts, chunk, extra_meta)
    meta_blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    for name, parts in blobs.items():
        for suffix, part in zip(blob_suffixes(name, len(parts)), parts):
            pipe = r.pipeline(transaction=False)
            pipe.set(keys.stage(ver, suffix), part)
            lock.renew(pipe)
            lock.check(pipe.execute()[-1])
    r.set(keys.stage(ver, "meta"), meta_blob)
    return blobs, meta_blob


def _blobs_and_meta(ver: str, cur_date: str, inp: _Inputs, counts: np.ndarray, chunk: int,
                    extra_meta: dict[str, Any] | None = None) -> tuple[dict[str, list[memoryview]], dict[str, Any]]:
    """The ``ids``/``index`` chunks and the meta dict of a version (docs/redis-layout.md, "Meta")."""
    emb = inp.emb
    buckets = len(counts)
    ids_blob = json.dumps(inp.ids, separators=(",", ":"), ensure_ascii=False).encode()
    blobs = {"index": chunks(inp.index_bytes, chunk), "ids": chunks(ids_blob, chunk)}
    meta = {
        "kind": "full", "version": ver, "cur_date": cur_date, "created": cur_date, "model_version": emb.model_version,
        "count": emb.n, "dim": emb.dim, "dtype": "float32-le",
        "vectors": {"key": "vec:<bucket>", "buckets": buckets, "bucket_of": "crc32(utf8(item_id)) % buckets",
                    "empty_buckets": [int(b) for b in np.flatnonzero(counts == 0)]},
        "index": {**_index_meta(inp.index_manifest), "bytes": len(inp.index_bytes),
                  "chunks": len(blobs["index"]), "sha256": hashlib.sha256(inp.index_bytes).hexdigest()},
        "ids": {"format": "json-array", "bytes": len(ids_blob), "chunks": len(blobs["ids"]),
                "sha256": hashlib.sha256(ids_blob).hexdigest()},
        "source": {"embeddings": emb.path, "embeddings_sha256": emb.sha256, "index": inp.index_dir},
        **(extra_meta or {}),
    }
    return blobs, meta


def _switch(r: Any, keys: Keys, ver: str, cur: str | None, cur_date: str, staged: list[str], n: int,
            lock: PublishLock) -> tuple[str | None, set[str], int]:
    """The one MULTI/EXEC making the staged version visible; returns ``(previous, existing keys, keys written)``."""
    existing = set(scan_keys(r, keys.version_pattern(ver)))
    complete = json.dumps({"version": ver, "count": n, "verified": True}, sort_keys=True)
    with r.pipeline(transaction=True) as pipe:
        pipe.watch(keys.lock, keys.current)
        if pipe.get(keys.lock) != lock.value:
            raise PublishError(f"lost the publish lock {keys.lock} before the switch; current unchanged")
        if text(pipe.get(keys.current)) != cur:
            raise PublishError(f"{keys.current} changed during the publish; current unchanged")
        prev_before = text(pipe.get(keys.previous))
        pipe.multi()
        final = {keys.v(ver, s) for s in staged} | {keys.v(ver, "complete")}
        gone = sorted(existing - final)
        if gone:
            pipe.unlink(*gone)
        for s in staged:
            pipe.rename(keys.stage(ver, s), keys.v(ver, s))
        pipe.set(keys.v(ver, "complete"), complete)
        pipe.zadd(keys.versions, {ver: date_score(cur_date)})
        written = len(staged) + 2  # + complete marker, ns:versions
        written += queue_pointer_switch(pipe, keys, ver, cur)
        pipe.execute()
    previous = cur if (cur is not None and cur != ver) else prev_before
    return previous, existing, written


def _verify(r: Any, keys: Keys, ver: str, emb: Any, expected_counts: np.ndarray, blobs: dict[str, list[memoryview]],
            meta_blob: bytes, staged: list[str], lock: PublishLock) -> None:
    """Check the staged version against the inputs; raise PublishError (and drop the stage) if not equal."""
    key_of = lambda suffix: keys.stage(ver, suffix)  # noqa: E731
    problems = check_bucket_counts(r, key_of, expected_counts, lock)
    problems += check_content(r, key_of, ver, emb, len(expected_counts), blobs, meta_key=key_of("meta"),
                               meta_blob=meta_blob)
    present = set(scan_keys(r, keys.stage_pattern(ver)))
    want_keys = {keys.stage(ver, s) for s in staged}
    if present != want_keys:
        problems.append(f"staged keys differ: missing {sorted(want_keys - present)[:3]}, "
                        f"unexpected {sorted(present - want_keys)[:3]}")
    if problems:
        unlink_all(r, list(present))
        raise PublishError(f"verification of version {ver} failed, current unchanged: " + "; ".join(problems))


def _retention(r: Any, keys: Keys, keep: int, lock: PublishLock) -> list[str]:
    """Delete versions beyond the ``keep`` newest (by cur_date; within a date the deltas ``<D>T<HH>_``
    sort before the full ``<D>_``), never ``current``/``previous``, nor any version the delta chain of
    a kept one needs.

    Only keys under ``ns:v:<ver>:`` are deleted (plus the version's ``ns:versions`` member);
    versions with keys but no ``ns:versions`` entry (left by an interrupted deletion) go too.
    """
    current, previous = text(r.get(keys.current)), text(r.get(keys.previous))
    members = [(text(m), s) for m, s in r.zrange(keys.versions, 0, -1, withscores=True)]
    ranked = [m for m, _ in sorted(members, key=lambda t: (t[1], t[0]), reverse=True)]
    # a kept delta keeps its chain (parents and base): dailyrec.publishing.chain
    protected = live_members(r, keys, set(ranked[:keep]) | {v for v in (current, previous) if v})
    groups: dict[str, list[str]] = {}
    for key in scan_keys(r, keys.version_pattern()):
        groups.setdefault(keys.version_of(key), []).append(key)
    doomed = sorted((set(ranked) | set(groups)) - protected)
    for ver in doomed:
        with r.pipeline(transaction=True) as pipe:  # first make it not-a-version, then drop its keys
            pipe.unlink(keys.v(ver, "complete"))
            pipe.zrem(keys.versions, ver)
            pipe.execute()
        unlink_all(r, [k for k in groups.get(ver, []) if k != keys.v(ver, "complete")])
        lock.check(lock.renew())
        log.info("retention: deleted version %s (%d keys)", ver, len(groups.get(ver, [])))
    return doomed
