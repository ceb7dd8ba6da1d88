"""The Redis key layout of published item vectors: key names, version ids, buckets, blob chunks.

All keys live under ``ns = cfg.redis.namespace`` (the full description, with the reasons, is
docs/redis-layout.md)::

    ns:current                      string  version id serving reads (only ever a complete, verified version)
    ns:previous                     string  the version ``current`` pointed at before (rollback target)
    ns:versions                     zset    published versions, score = cur_date as YYYYMMDD
    ns:lock                         string  publisher lock (JSON host/pid/token, PX TTL, renewed per batch)
    ns:v:<ver>:meta                 string  JSON: cur_date, created, model_version, count, dim, buckets, index ...
    ns:v:<ver>:vec:<b>              hash    item_id -> dim float32 little-endian; b = crc32(utf8(item_id)) % buckets
    ns:v:<ver>:ids                  string  JSON array of item ids, faiss label i = element i (chunks: :ids:1 ...)
    ns:v:<ver>:index                string  faiss.serialize_index bytes (chunks of redis.blob_chunk_bytes: :index:1 ...)
    ns:v:<ver>:seen:<b>             hash    user_id -> JSON array of recently clicked item ids (serving.exclude_seen;
                                            b = crc32(utf8(user_id)) % meta.seen.buckets; dailyrec.publishing.seen)
    ns:v:<ver>:complete             string  marker, set in the same transaction that makes the version visible
    ns:stage:<ver>:...              the same keys while a publish is loading (never read by readers)

Light module (no numpy): readers in other languages only need what is written here.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections.abc import Iterator
from typing import Any

from dailyrec.dates import parse_date

SCAN_COUNT = 1000
"""``SCAN ... COUNT`` hint when listing a namespace's keys."""
DELETE_BATCH = 1000
"""Keys per ``UNLINK`` command."""


def version_id(cur_date: str, model_version: str) -> str:
    """``<cur_date>_<model_version>``; a model_version with characters outside ``[A-Za-z0-9._-]``
    (or longer than 64) is sanitised and suffixed with 8 hex of its sha1, so the id stays unique
    and never contains ``:``. Raises ``ValueError`` if ``cur_date`` is not ``YYYY-MM-DD``."""

    cur_date = parse_date(cur_date).isoformat()
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", model_version)[:64]
    if safe != model_version or not safe:
        safe = f"{safe}-{hashlib.sha1(model_version.encode()).hexdigest()[:8]}"
    return f"{cur_date}_{safe}"


def date_score(cur_date: str) -> int:
    """The ``ns:versions`` score of a date: ``2026-11-01`` -> ``20261101``."""
    return int(parse_date(cur_date).strftime("%Y%m%d"))


def bucket_of(item_id: str, buckets: int) -> int:
    """The hash bucket ``b`` of ``ns:v:<ver>:vec:<b>`` holding ``item_id``: ``crc32(utf8(id)) % buckets``."""
    return zlib.crc32(item_id.encode()) % buckets


def n_buckets(count: int, per_bucket: int) -> int:
    """Number of vector hashes for ``count`` items, ``per_bucket`` (``redis.vectors_per_bucket``) each."""
    return max(1, math.ceil(count / per_bucket))


def blob_suffixes(name: str, chunks: int) -> list[str]:
    """Key suffixes of a blob in ``chunks`` parts: ``[name, name:1, name:2, ...]``."""
    return [name] + [f"{name}:{i}" for i in range(1, chunks)]


def glob_escape(s: str) -> str:
    """``s`` with the ``SCAN MATCH`` glob characters escaped."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


class Keys:
    """Key names of one namespace (see the module doc)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.current = f"{ns}:current"
        self.previous = f"{ns}:previous"
        self.versions = f"{ns}:versions"
        self.lock = f"{ns}:lock"

    def v(self, ver: str, suffix: str) -> str:
        """A key of published version ``ver``: ``ns:v:<ver>:<suffix>``."""
        return f"{self.ns}:v:{ver}:{suffix}"

    def stage(self, ver: str, suffix: str) -> str:
        """A key of version ``ver`` while it loads: ``ns:stage:<ver>:<suffix>``."""
        return f"{self.ns}:stage:{ver}:{suffix}"

    def version_pattern(self, ver: str | None = None) -> str:
        """``SCAN MATCH`` pattern of one version's keys (every version's when ``ver`` is None)."""
        return f"{glob_escape(self.ns)}:v:{glob_escape(ver) + ':' if ver else ''}*"

    def stage_pattern(self, ver: str | None = None) -> str:
        """``SCAN MATCH`` pattern of staged keys (of one version, or all)."""
        return f"{glob_escape(self.ns)}:stage:{glob_escape(ver) + ':' if ver else ''}*"

    def version_of(self, key: str) -> str:
        """The version id of a ``ns:v:<ver>:...`` key."""
        return key[len(self.ns) + 3:].split(":", 1)[0]


def text(v: bytes | str | None) -> str | None:
    """A Redis reply as ``str`` (clients here do not decode responses)."""
    return v.decode() if isinstance(v, bytes) else v


def scan_keys(r: Any, pattern: str) -> Iterator[str]:
    """Every key matching ``pattern`` (``SCAN``, never ``KEYS``)."""
    for key in r.scan_iter(match=pattern, count=SCAN_COUNT):
        yield text(key)


def unlink_all(r: Any, keys: list[str]) -> int:
    """``UNLINK`` ``keys`` in batches of :data:`DELETE_BATCH`; returns how many were given."""
    for i in range(0, len(keys), DELETE_BATCH):
        r.unlink(*keys[i:i + DELETE_BATCH])
    return len(keys)
