"""Delta versions in Redis: a chain of deltas on a full version, and what it adds up to.

A **delta** version (``meta.kind == "delta"``, written by :func:`dailyrec.publishing.delta.publish_delta`)
holds only the items one pass changed, in the same bucket hashes as a full version::

    ns:v:<ver>:vec:<b>   hash   item_id -> dim float32 LE (upsert) | b"" (tombstone: the item is deleted)

and its meta names ``parent`` (the version it applies on), ``chain`` (``[parent, ..., base]``, nearest
first, ending with the **base**: the full version at the root) and ``depth`` (``len(chain)``: deltas
from the base up to this one). A version's served content is the base's items, then each delta of
the chain from the oldest to this one: an upsert replaces (or adds) the item's vector, a tombstone
removes the item. A full version (``kind`` ``"full"``, or no ``kind``: written before deltas existed)
is its own base. Layout and reasons: docs/redis-layout.md, "Delta versions".

Light module (no numpy): readers in other languages only need what is written here.
"""

from __future__ import annotations

import json
from typing import Any

from dailyrec.publishing.layout import Keys

TOMBSTONE = b""
"""The value of a deleted item in a delta's bucket hash."""
HGETALL_PER_TRIP = 64
"""Delta buckets read per pipelined round trip."""


def is_delta(meta: dict[str, Any]) -> bool:
    """``meta`` is a delta version's (a missing ``kind`` is a full version)."""
    return meta.get("kind") == "delta"


def chain_of(meta: dict[str, Any]) -> list[str]:
    """``[parent, ..., base]`` of a delta (nearest first); ``[]`` for a full version."""
    return list(meta.get("chain") or []) if is_delta(meta) else []


def base_of(meta: dict[str, Any]) -> str:
    """The full version at the root of ``meta``'s chain (a full version is its own base)."""
    return meta["base"] if is_delta(meta) else meta["version"]


def delta_bucket_keys(keys: Keys, ver: str, meta: dict[str, Any]) -> list[str]:
    """The non-empty bucket hashes of delta ``ver`` (``meta.vectors.empty_buckets`` have no key)."""
    empty = set(meta["vectors"].get("empty_buckets") or [])
    return [keys.v(ver, f"vec:{b}") for b in range(int(meta["vectors"]["buckets"])) if b not in empty]


def read_fields(r: Any, bucket_keys: list[str]) -> tuple[dict[str, bytes], list[str]]:
    """``({item_id: value}, missing keys)`` of the bucket hashes ``bucket_keys`` (``HGETALL``,
    :data:`HGETALL_PER_TRIP` per round trip); a value is ``dim * 4`` bytes or :data:`TOMBSTONE`."""
    fields: dict[str, bytes] = {}
    missing: list[str] = []
    for s in range(0, len(bucket_keys), HGETALL_PER_TRIP):
        part = bucket_keys[s:s + HGETALL_PER_TRIP]
        pipe = r.pipeline(transaction=False)
        for key in part:
            pipe.hgetall(key)
        for key, got in zip(part, pipe.execute()):
            if not got:
                missing.append(key)
            fields.update({k.decode() if isinstance(k, bytes) else k: v for k, v in got.items()})
    return fields, missing


def read_chain(r: Any, keys: Keys, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes], list[str]]:
    """What delta ``meta`` adds up to: ``(base meta, merged fields, missing keys)``.

    ``merged fields``: ``{item_id: vector bytes | TOMBSTONE}`` over the deltas of the chain, the newest
    value of each item winning; items absent from it are served as the base has them. Cost: one
    ``GET`` per chain version and one ``HGETALL`` per delta bucket (proportional to the items the
    chain changed, not to the catalog). ``missing``: metas or buckets that are gone."""
    deltas = [meta["version"]] + chain_of(meta)[:-1]  # newest first
    base = chain_of(meta)[-1]
    pipe = r.pipeline(transaction=False)
    for ver in deltas[1:] + [base]:
        pipe.get(keys.v(ver, "meta"))
    raws = pipe.execute()
    metas = {meta["version"]: meta}
    missing = []
    for ver, raw in zip(deltas[1:] + [base], raws):
        if raw is None:
            missing.append(keys.v(ver, "meta"))
        else:
            metas[ver] = json.loads(raw)
    if missing:
        return {}, {}, missing
    merged: dict[str, bytes] = {}
    for ver in reversed(deltas):  # oldest first: newer values overwrite
        fields, gone = read_fields(r, delta_bucket_keys(keys, ver, metas[ver]))
        missing += gone
        merged.update(fields)
    return metas[base], merged, missing


def live_members(r: Any, keys: Keys, versions: set[str]) -> set[str]:
    """``versions`` plus every version their delta chains need (a kept delta keeps its parents and
    its base): what retention must not delete."""
    names = sorted(v for v in versions if v)
    pipe = r.pipeline(transaction=False)
    for ver in names:
        pipe.get(keys.v(ver, "meta"))
    out = set(names)
    for raw in pipe.execute():
        if raw is not None:
            out.update(chain_of(json.loads(raw)))
    return out
