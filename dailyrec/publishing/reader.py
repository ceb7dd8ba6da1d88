"""What serving reads from Redis: the ``current`` pointer, a version's meta, vectors and index.

Read ``current`` once, then only that version's keys: a version's keys are created by the switch
transaction and deleted only once it is neither ``current`` nor ``previous`` nor among the newest
``redis.keep_versions`` (docs/redis-layout.md, "Readers"). A key of the version that is missing
while the version is still published is a :class:`MissingVersionKeys` naming it (deleted or evicted
outside the publisher: re-publish or roll back), never a retry.

The same functions read a single server and a Redis Cluster (:func:`dailyrec.publishing.connection.keys_for`):
on a cluster the version's meta names the generation its vector and blob keys live under, and a
reader that finds them gone while the meta moved to another generation (a rewrite of the same
version) reads again, as for a ``current`` that moved.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np

from dailyrec.config import Config
from dailyrec.publishing.connection import describe, get_redis, keys_for
from dailyrec.publishing.integrity import (CurrentKeptChanging, MissingVersionKeys, NothingPublished,
                                           VersionNotPublished, missing_keys_error, no_current_error)
from dailyrec.publishing.chain import TOMBSTONE, chain_of, is_delta, read_chain
from dailyrec.publishing.layout import Keys, blob_suffixes, bucket_of, text

__all__ = ["CurrentKeptChanging", "MissingVersionKeys", "NothingPublished", "VersionNotPublished",
           "current_version", "load_current", "read_meta", "read_vectors"]

log = logging.getLogger("dailyrec.serving")

READ_ATTEMPTS = 5
"""Reads of ``current`` and its version before :class:`CurrentKeptChanging`."""


def current_version(cfg: Config) -> str | None:
    """The version id ``ns:current`` points at (``None`` before the first publish)."""
    r = get_redis(cfg)
    return text(r.get(keys_for(r, cfg.redis.namespace).current))


def _is_published(r: Any, keys: Keys, version: str) -> bool:
    return r.zscore(keys.versions, version) is not None or text(r.get(keys.current)) == version


def read_meta(r: Any, ns: str, version: str) -> dict[str, Any]:
    """The JSON meta of a version.

    Raises:
        VersionNotPublished: the version is not (or no longer) published under ``ns``.
        MissingVersionKeys: the version is published but its meta key is gone.
    """
    return json.loads(_meta_raw(r, keys_for(r, ns), version))


def _meta_raw(r: Any, keys: Keys, version: str) -> bytes:
    raw = r.get(keys.v(version, "meta"))
    if raw is None:
        ns = keys.ns
        if _is_published(r, keys, version):
            raise missing_keys_error(r, keys, version, [keys.v(version, "meta")])
        raise VersionNotPublished(f"version {version!r} is not published under {ns!r} (deleted by retention, or "
                                  "never published): read current again")
    return raw


def read_vectors(r: Any, ns: str, version: str, item_ids: list[str]) -> dict[str, np.ndarray]:
    """``{item_id: (dim,) float32 vector}`` of one version (ids the version does not have are absent).

    One ``HMGET`` per bucket, in one pipeline (on a cluster, one batch per node). Reads only the
    version's keys (its meta, then the buckets the meta names): read ``current`` once, then pass
    that version here. If buckets are gone and the meta changed meanwhile (the version was
    rewritten), it reads again, up to :data:`READ_ATTEMPTS` times (then :class:`CurrentKeptChanging`).
    ``ValueError`` if a stored vector is not ``dim * 4`` bytes; :class:`MissingVersionKeys` if a
    bucket the meta says exists is gone while the version is still published,
    :class:`VersionNotPublished` if the version was deleted meanwhile.
    """
    keys = keys_for(r, ns)
    meta = json.loads(_meta_raw(r, keys, version))
    if is_delta(meta):
        return _read_delta_vectors(r, keys, meta, item_ids)
    for _ in range(READ_ATTEMPTS):
        raw = _meta_raw(r, keys, version)
        meta = json.loads(raw)
        buckets, dim, gen = int(meta["vectors"]["buckets"]), int(meta["dim"]), meta.get("generation")
        empty = set(meta["vectors"].get("empty_buckets") or [])
        groups: dict[int, list[str]] = {}
        for item in item_ids:
            groups.setdefault(bucket_of(item, buckets), []).append(item)
        pipe = r.pipeline(transaction=False)
        for b, items in groups.items():
            pipe.exists(keys.data(version, gen, f"vec:{b}"))
            pipe.hmget(keys.data(version, gen, f"vec:{b}"), items)
        res = pipe.execute()
        gone = [keys.data(version, gen, f"vec:{b}") for b, there in zip(groups, res[::2])
                if not there and b not in empty]
        if not gone:
            break
        if r.get(keys.v(version, "meta")) not in (raw, None):
            continue  # rewritten meanwhile (a cluster's new generation): read it again
        if _is_published(r, keys, version):
            raise missing_keys_error(r, keys, version, gone)
        raise VersionNotPublished(f"version {version!r} was deleted under {ns!r} while reading it: read current again")
    else:
        raise CurrentKeptChanging(f"the meta of {version!r} under {ns!r} changed during each of {READ_ATTEMPTS} "
                                  "reads (rewrites in quick succession): retry")
    out: dict[str, np.ndarray] = {}
    for items, values in zip(groups.values(), res[1::2]):
        for item, raw in zip(items, values):
            if raw is None:
                continue
            if len(raw) != dim * 4:
                raise ValueError(f"vector of {item!r} in {version} has {len(raw)} bytes, expected {dim * 4}")
            out[item] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return out


def _read_delta_vectors(r: Any, keys: Keys, meta: dict[str, Any], item_ids: list[str]) -> dict[str, np.ndarray]:
    """:func:`read_vectors` of a delta version: each id is looked up in the delta, then its chain
    (newest first: an upsert is the vector, a tombstone means deleted), then in the base; one
    pipelined ``HMGET`` per delta bucket, then the base's read."""
    ver, dim = meta["version"], int(meta["dim"])
    out: dict[str, np.ndarray] = {}
    todo = list(dict.fromkeys(item_ids))
    for dver in [ver] + chain_of(meta)[:-1]:
        if not todo:
            break
        dmeta = meta if dver == ver else read_meta(r, keys.ns, dver)
        groups: dict[int, list[str]] = {}
        for item in todo:
            groups.setdefault(bucket_of(item, int(dmeta["vectors"]["buckets"])), []).append(item)
        empty = set(dmeta["vectors"].get("empty_buckets") or [])
        groups = {b: items for b, items in groups.items() if b not in empty}
        pipe = r.pipeline(transaction=False)
        for b, items in groups.items():
            pipe.exists(keys.v(dver, f"vec:{b}"))
            pipe.hmget(keys.v(dver, f"vec:{b}"), items)
        res = pipe.execute()
        gone = [keys.v(dver, f"vec:{b}") for b, there in zip(groups, res[::2]) if not there]
        if gone:
            if _is_published(r, keys, ver):
                raise missing_keys_error(r, keys, ver, gone)
            raise VersionNotPublished(f"version {ver!r} was deleted under {keys.ns!r} while reading it: "
                                      "read current again")
        decided = set()
        for items, values in zip(groups.values(), res[1::2]):
            for item, raw in zip(items, values):
                if raw is None:
                    continue
                decided.add(item)
                if raw == TOMBSTONE:
                    continue
                if len(raw) != dim * 4:
                    raise ValueError(f"vector of {item!r} in {dver} has {len(raw)} bytes, expected {dim * 4}")
                out[item] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        todo = [item for item in todo if item not in decided]
    if todo:
        out.update(read_vectors(r, keys.ns, meta["base"], todo))
    return out


def _read_blob(r: Any, keys: Keys, ver: str, gen: str | None, name: str,
               info: dict[str, Any]) -> tuple[bytes | None, list[str]]:
    """``(blob, [])``, or ``(None, bad keys)`` if chunks are gone or the sha256 differs from the meta's."""
    names = [keys.data(ver, gen, s) for s in blob_suffixes(name, int(info["chunks"]))]
    pipe = r.pipeline(transaction=False)
    for key in names:
        pipe.get(key)
    parts = pipe.execute()
    gone = [key for key, p in zip(names, parts) if p is None]
    if gone:
        return None, gone
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != info["sha256"]:
        return None, [f"{key} (content differs from the meta's sha256)" for key in names]
    return blob, []


def _read_version(r: Any, keys: Keys, ver: str) -> tuple[bytes | None, dict[str, Any], list[str]]:
    """``(raw meta, {"meta", "index", "ids"}, bad keys)`` of one version, as far as it could be read."""
    raw = r.get(keys.v(ver, "meta"))
    if raw is None:
        return None, {}, [keys.v(ver, "meta")]
    meta = json.loads(raw)
    got: dict[str, Any] = {"meta": meta}
    blobs_of = meta
    if is_delta(meta):  # the base's index and ids, and what the chain changed
        blobs_of, got["merged"], bad = read_chain(r, keys, meta)
        if bad:
            return raw, got, bad
    gen = blobs_of.get("generation")
    got["index"], bad = _read_blob(r, keys, blobs_of["version"], gen, "index", blobs_of["index"])
    got["ids"], bad_ids = _read_blob(r, keys, blobs_of["version"], gen, "ids", blobs_of["ids"])
    return raw, got, bad + bad_ids


def load_current(cfg: Config) -> tuple[dict[str, Any], Any, np.ndarray]:
    """``(meta, faiss index, ids)`` of the current version, for serving: ``ids[label]`` (object
    array of str) is the item id of faiss label ``label``. For a delta version (``meta.kind ==
    "delta"``) the index is the base's, with the chain applied in memory as an
    :class:`dailyrec.publishing.overlay.OverlayIndex` (same ``search``/``ntotal``; the chain's upserts
    replace vectors, its tombstones remove items; docs/redis-layout.md, "Delta versions").

    If a key is missing, ``current`` (and the meta) are read again: when they moved, a publish or a
    rollback switched versions meanwhile and the read is retried; when they did not, the version
    itself lost keys.

    Raises:
        NothingPublished: nothing was ever published under the namespace.
        MissingVersionKeys: ``current`` is gone while versions are published, or the current version
            lacks keys (names them, the version and the repairs: re-publish or roll back).
        CurrentKeptChanging: ``current`` moved during each of :data:`READ_ATTEMPTS` reads (transient).
        ValueError: index, ids and meta disagree on the count.
    """
    import faiss

    r = get_redis(cfg)
    keys = keys_for(r, cfg.redis.namespace)
    seen: list[str] = []
    for _ in range(READ_ATTEMPTS):
        ver = text(r.get(keys.current))
        if ver is None:
            raise no_current_error(r, keys, describe(cfg))
        seen.append(ver)
        raw, got, bad = _read_version(r, keys, ver)
        if not bad:
            return _assemble(faiss, ver, got)
        if text(r.get(keys.current)) != ver or r.get(keys.v(ver, "meta")) != raw:
            log.info("%s moved while reading %s (%s): reading it again", keys.current, ver, bad[0])
            continue  # switched or rewritten meanwhile
        raise missing_keys_error(r, keys, ver, bad, role="current")
    raise CurrentKeptChanging(f"{keys.current} changed during each of {READ_ATTEMPTS} reads (versions seen: {seen}); "
                              "publishes or rollbacks in quick succession: retry")


def _assemble(faiss: Any, ver: str, got: dict[str, Any]) -> tuple[dict[str, Any], Any, np.ndarray]:
    meta = got["meta"]
    index = faiss.deserialize_index(np.frombuffer(got["index"], dtype=np.uint8))
    ids = np.array(json.loads(got["ids"]), dtype=object)
    if "merged" in got:  # a delta: the base's index with the chain as an overlay (dailyrec.publishing.overlay)
        from dailyrec.publishing.overlay import build_overlay

        index, ids, _ = build_overlay(index, ids, got["merged"], int(meta["dim"]))
        if index.ntotal != meta["count"]:
            raise ValueError(f"version {ver}: base + chain serve {index.ntotal} items, the meta says {meta['count']}")
        return meta, index, ids
    if index.ntotal != len(ids) or len(ids) != meta["count"]:
        raise ValueError(f"version {ver}: index has {index.ntotal} vectors, ids {len(ids)}, meta {meta['count']}")
    return meta, index, ids
