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

On a Redis Cluster (:class:`ClusterKeys`) the control keys share one hash slot through the tag
``{ns}`` and the bulk keys carry no tag, so they spread over every slot::

    {ns}:current, {ns}:previous, {ns}:versions, {ns}:lock    as above
    {ns}:v:<ver>:meta, {ns}:v:<ver>:complete                 as above; the meta names the generation <gen>
    {ns}:gens                       hash    registry: "<ver>/<gen>" -> JSON {"buckets", "index", "ids"[, "seen"]} (counts)
    ns:v:<ver>:<gen>:vec:<b>        hash    as vec:<b> above
    ns:v:<ver>:<gen>:index[:i], ns:v:<ver>:<gen>:ids[:i]     as above
    ns:v:<ver>:<gen>:seen:<b>       hash    as seen:<b> above

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


def _key_safe(model_version: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", model_version)[:64]
    if safe != model_version or not safe:
        safe = f"{safe}-{hashlib.sha1(model_version.encode()).hexdigest()[:8]}"
    return safe


def version_id(cur_date: str, model_version: str) -> str:
    """``<cur_date>_<model_version>``; a model_version with characters outside ``[A-Za-z0-9._-]``
    (or longer than 64) is sanitised and suffixed with 8 hex of its sha1, so the id stays unique
    and never contains ``:``. Raises ``ValueError`` if ``cur_date`` is not ``YYYY-MM-DD``."""
    return f"{parse_date(cur_date).isoformat()}_{_key_safe(model_version)}"


def delta_version_id(cur_date: str, hour: int, model_version: str) -> str:
    """The id of the delta version of pass ``(cur_date, hour)``: ``<cur_date>T<HH>_<model_version>``
    (``2026-11-02T05_tt-pass-a1``; the model_version made key-safe as in :func:`version_id`).
    ``ValueError`` for a bad date or an hour outside 0..23."""
    if not 0 <= int(hour) <= 23:
        raise ValueError(f"hour must be 0..23, got {hour!r}")
    return f"{parse_date(cur_date).isoformat()}T{int(hour):02d}_{_key_safe(model_version)}"


def version_position(ver: str) -> tuple[str, int, int]:
    """Where a version stands in publish order: ``(cur_date, 0, hour)`` for a delta ``<D>T<HH>_...``,
    ``(cur_date, 1, 0)`` for a full ``<D>_...`` (the daily full version of D consolidates D's passes, so
    it comes after every delta of D). The same order as sorting ids as strings within one date
    (``'T' < '_'``), which retention's tie-break relies on."""
    if len(ver) > 13 and ver[10] == "T" and ver[11:13].isdigit():
        return ver[:10], 0, int(ver[11:13])
    return ver[:10], 1, 0


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
    """Key names of one namespace on one Redis server (see the module doc)."""

    cluster = False
    """True for :class:`ClusterKeys`."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.current = f"{ns}:current"
        self.previous = f"{ns}:previous"
        self.versions = f"{ns}:versions"
        self.lock = f"{ns}:lock"

    def v(self, ver: str, suffix: str) -> str:
        """A key of published version ``ver``: ``ns:v:<ver>:<suffix>``."""
        return f"{self.ns}:v:{ver}:{suffix}"

    def data(self, ver: str, gen: str | None, suffix: str) -> str:
        """A vector, blob or seen-set key of version ``ver`` (``suffix`` ``vec:<b>``, ``index[:i]``, ``ids[:i]``,
        ``seen:<b>``);
        ``gen`` is the meta's ``generation`` (``None`` on one server: the key is ``ns:v:<ver>:<suffix>``)."""
        if gen is not None:
            raise ValueError(f"a single-server namespace has no generations (got {gen!r} for {ver})")
        return self.v(ver, suffix)

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


class ClusterKeys(Keys):
    """Key names of one namespace on a Redis Cluster (see the module doc and docs/redis-layout.md).

    Control keys (``current``, ``previous``, ``versions``, ``lock``, ``gens`` and every version's
    ``meta``/``complete``) carry the hash tag ``{ns}``: one slot, so the switch and the rollback stay
    one ``WATCH``ed ``MULTI/EXEC`` and the lock's Lua scripts touch one key. Vector hashes, blob
    chunks and seen-set hashes carry no tag: CRC16 of the whole key spreads them over all 16384
    slots. They live under a generation ``<gen>`` (16 hex of the sha256 of the meta without it: same
    content, same keys) that only the version's meta names, since a cluster cannot ``RENAME`` across
    slots.
    ``ValueError`` if ``ns`` contains a brace (it would change the tag).
    """

    cluster = True

    def __init__(self, ns: str) -> None:
        if "{" in ns or "}" in ns:
            raise ValueError(f"namespace {ns!r} must not contain braces on a Redis Cluster")
        super().__init__(ns)
        self.tag = "{" + ns + "}"
        self.current = f"{self.tag}:current"
        self.previous = f"{self.tag}:previous"
        self.versions = f"{self.tag}:versions"
        self.lock = f"{self.tag}:lock"
        self.gens = f"{self.tag}:gens"

    def v(self, ver: str, suffix: str) -> str:
        """``{ns}:v:<ver>:meta`` or ``{ns}:v:<ver>:complete`` (every other key of a version is :meth:`data`)."""
        if suffix not in ("meta", "complete"):
            raise ValueError(f"on a Redis Cluster only meta/complete are control keys, not {suffix!r}: use data()")
        return f"{self.tag}:v:{ver}:{suffix}"

    def data(self, ver: str, gen: str | None, suffix: str) -> str:
        """``ns:v:<ver>:<gen>:<suffix>`` (no hash tag: spread over the slots)."""
        if not gen:
            raise ValueError(f"a cluster key of version {ver} needs its generation")
        return f"{self.ns}:v:{ver}:{gen}:{suffix}"

    def gen_field(self, ver: str, gen: str) -> str:
        """The ``{ns}:gens`` field of a generation: ``<ver>/<gen>``."""
        return f"{ver}/{gen}"

    def gen_keys(self, ver: str, gen: str, spec: dict[str, Any]) -> list[str]:
        """Every data key a generation may have, from its registry entry ``{"buckets", "index", "ids"}``
        plus ``"seen"`` (the number of ``seen:<b>`` hashes) when the version carries seen sets."""
        out = [self.data(ver, gen, f"vec:{b}") for b in range(int(spec["buckets"]))]
        for name in ("index", "ids"):
            out += [self.data(ver, gen, s) for s in blob_suffixes(name, int(spec[name]))]
        out += [self.data(ver, gen, f"seen:{b}") for b in range(int(spec.get("seen") or 0))]
        return out


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


def queue_pointer_switch(pipe: Any, keys: Any, ver: str, cur: str | None) -> int:
    """Queue, in the publish's switch transaction ``pipe``, ``previous = cur`` and ``current = ver``
    (nothing when ``ver`` is already current); returns how many keys that writes (0-2). Shared by
    the single-server and the Redis Cluster switch (docs/redis-layout.md)."""
    if cur == ver:
        return 0
    if cur is not None:
        pipe.set(keys.previous, cur)
    pipe.set(keys.current, ver)
    return 1 + (cur is not None)
