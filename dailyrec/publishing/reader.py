"""What serving reads from Redis: the ``current`` pointer, a version's meta, vectors and index.

Read ``current`` once, then only that version's keys: a version's keys are created by the switch
transaction and deleted only once it is neither ``current`` nor ``previous`` nor among the newest
``redis.keep_versions`` (docs/redis-layout.md, "Readers").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from dailyrec.config import Config
from dailyrec.publishing.connection import describe, get_redis
from dailyrec.publishing.layout import Keys, blob_suffixes, bucket_of, text


def current_version(cfg: Config) -> str | None:
    """The version id ``ns:current`` points at (``None`` before the first publish)."""
    return text(get_redis(cfg).get(Keys(cfg.redis.namespace).current))


def read_meta(r: Any, ns: str, version: str) -> dict[str, Any]:
    """The JSON meta of a version (``LookupError`` if the version is not published under ``ns``)."""
    raw = r.get(Keys(ns).v(version, "meta"))
    if raw is None:
        raise LookupError(f"version {version!r} is not published under {ns!r}")
    return json.loads(raw)


def read_vectors(r: Any, ns: str, version: str, item_ids: list[str]) -> dict[str, np.ndarray]:
    """``{item_id: (dim,) float32 vector}`` of one version (ids the version does not have are absent).

    One ``HMGET`` per bucket, in one pipeline. Reads only ``ns:v:<version>:*`` keys: read
    ``current`` once, then pass that version here. ``ValueError`` if a stored vector is not
    ``dim * 4`` bytes.
    """
    meta = read_meta(r, ns, version)
    buckets, dim = int(meta["vectors"]["buckets"]), int(meta["dim"])
    keys = Keys(ns)
    groups: dict[int, list[str]] = {}
    for item in item_ids:
        groups.setdefault(bucket_of(item, buckets), []).append(item)
    pipe = r.pipeline(transaction=False)
    for b, items in groups.items():
        pipe.hmget(keys.v(version, f"vec:{b}"), items)
    out: dict[str, np.ndarray] = {}
    for items, values in zip(groups.values(), pipe.execute()):
        for item, raw in zip(items, values):
            if raw is None:
                continue
            if len(raw) != dim * 4:
                raise ValueError(f"vector of {item!r} in {version} has {len(raw)} bytes, expected {dim * 4}")
            out[item] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return out


def _read_blob(r: Any, keys: Keys, ver: str, name: str, info: dict[str, Any]) -> bytes | None:
    """A chunked blob, or ``None`` if a chunk is gone or the sha256 differs from the meta's."""
    pipe = r.pipeline(transaction=False)
    for suffix in blob_suffixes(name, int(info["chunks"])):
        pipe.get(keys.v(ver, suffix))
    parts = pipe.execute()
    if any(p is None for p in parts):
        return None
    blob = b"".join(parts)
    return blob if hashlib.sha256(blob).hexdigest() == info["sha256"] else None


def load_current(cfg: Config) -> tuple[dict[str, Any], Any, np.ndarray]:
    """``(meta, faiss index, ids)`` of the current version, for serving: ``ids[label]`` (object
    array of str) is the item id of faiss label ``label``. Retries if the version changes while it
    is being read; ``LookupError`` if nothing is published or ``current`` keeps changing,
    ``ValueError`` if index, ids and meta disagree on the count."""
    import faiss

    r = get_redis(cfg)
    keys = Keys(cfg.redis.namespace)
    for _ in range(5):
        ver = text(r.get(keys.current))
        if ver is None:
            raise LookupError(f"nothing is published under {keys.ns!r} ({describe(cfg)})")
        try:
            meta = read_meta(r, keys.ns, ver)
        except LookupError:
            continue
        index_bytes = _read_blob(r, keys, ver, "index", meta["index"])
        ids_bytes = _read_blob(r, keys, ver, "ids", meta["ids"])
        if index_bytes is None or ids_bytes is None:
            continue  # deleted or rewritten meanwhile: read current again
        index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
        ids = np.array(json.loads(ids_bytes), dtype=object)
        if index.ntotal != len(ids) or len(ids) != meta["count"]:
            raise ValueError(f"version {ver}: index has {index.ntotal} vectors, ids {len(ids)}, meta {meta['count']}")
        return meta, index, ids
    raise LookupError(f"{keys.current} kept changing while reading it")
