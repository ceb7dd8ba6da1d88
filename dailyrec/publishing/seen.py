"""Per-user seen sets, published with each Redis version: what serving must not recommend again.

With ``serving.exclude_seen`` (the default) a version carries, next to its vectors and index, the
items each user clicked recently (docs/redis-layout.md, "Seen sets")::

    ns:v:<ver>:seen:<b>   hash  user_id -> JSON array of item ids, most recent click first;
                                b = crc32(utf8(user_id)) % meta.seen.buckets

* :func:`seen_sets` computes them from the logs (``sql/serving_seen.sql``): the distinct items a
  user clicked in the ``serving.seen_lookback_days`` days ending with the version's ``cur_date``
  (default ``sampling.window_days``: the training window plus the held-out hours, so a superset of
  what the evaluation gate excludes), restricted to the version's items, the most recent
  ``serving.max_seen_per_user`` kept (bounded memory and over-fetch).
* :func:`stage_seen` writes them under ``ns:stage:<ver>:`` like every other key of the version
  (renamed onto ``ns:v:<ver>:`` by the publish's one switch transaction: atomic with the rest),
  checks the per-bucket counts and returns the meta's ``seen`` section.
* :func:`read_seen` is what serving reads: one ``HGET`` (plus an ``EXISTS`` to tell a missing bucket
  from an absent user). Serving then searches ``k + |seen|`` neighbours and drops the seen ones.

Users beyond the bound keep only their latest clicks: an older click may come back.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import pyarrow as pa

from dailyrec.publishing.layout import Keys

SEEN_BATCH = 2048
"""Users per pipelined round trip while staging."""


def bucket_of_user(user_id: str, buckets: int) -> int:
    """``crc32(utf8(user_id)) % buckets``: the ``seen:<b>`` hash holding a user."""
    return zlib.crc32(user_id.encode()) % buckets


def seen_sets(store: Any, cfg: Any, cur_date: str, item_ids: list[str]) -> pa.Table:
    """``user_id: string, items: list<string>`` (most recent first), one row per user with a click
    on one of ``item_ids`` in the look-back, sorted by ``user_id``.

    Raises:
        FileNotFoundError: ``cur_date`` has no complete log hour, or a snapshot is missing.
    """
    from dailyrec import sql
    from dailyrec.dates import window
    from dailyrec.events import log_inputs, open_events, read_snapshot

    days = cfg.serving.seen_lookback_days or cfg.sampling.window_days
    files, _ = log_inputs(store, window(cur_date, days), cur_date)
    con = open_events(store, files, read_snapshot(store, "users", cur_date), read_snapshot(store, "items", cur_date))
    try:
        sql.register_arrow(con, "index_items", pa.table({"item_id": pa.array(item_ids, pa.string())}))
        return sql.query_arrow(con, "serving_seen", {"cur_date": cur_date, "lookback_days": days,
                                                     "max_items": cfg.serving.max_seen_per_user})
    finally:
        con.close()


def stage_seen(r: Any, keys: Keys, ver: str, seen: pa.Table, lock: Any, cfg: Any) -> tuple[list[str], dict[str, Any]]:
    """Write ``seen`` (:func:`seen_sets`) as ``ns:stage:<ver>:seen:<b>`` hashes, renewing ``lock``
    every :data:`SEEN_BATCH` users, then check every bucket's ``HLEN``.

    Returns ``(staged key suffixes, the meta's "seen" section)``; raises
    :class:`dailyrec.publishing.lock.PublishError` when a bucket's count differs.
    """
    from dailyrec.publishing.lock import PublishError

    users = seen.column("user_id").to_pylist()
    items = seen.column("items").to_pylist()
    buckets = max(1, math.ceil(len(users) / cfg.serving.seen_users_per_bucket))
    counts = [0] * buckets
    for start in range(0, len(users), SEEN_BATCH):
        by_bucket: dict[int, dict[str, bytes]] = {}
        for u, its in zip(users[start:start + SEEN_BATCH], items[start:start + SEEN_BATCH]):
            b = bucket_of_user(u, buckets)
            by_bucket.setdefault(b, {})[u] = json.dumps(its, separators=(",", ":"), ensure_ascii=False).encode()
            counts[b] += 1
        pipe = r.pipeline(transaction=False)
        for b, mapping in by_bucket.items():
            pipe.hset(keys.stage(ver, f"seen:{b}"), mapping=mapping)
        lock.renew(pipe)
        lock.check(pipe.execute()[-1])
    pipe = r.pipeline(transaction=False)
    for b in range(buckets):
        pipe.hlen(keys.stage(ver, f"seen:{b}"))
    got = pipe.execute()
    bad = [b for b in range(buckets) if got[b] != counts[b]]
    if bad:
        raise PublishError(f"seen set of version {ver}: bucket {bad[0]} has {got[bad[0]]} users, expected "
                           f"{counts[bad[0]]} ({len(bad)} bucket(s) differ); current unchanged")
    suffixes = [f"seen:{b}" for b in range(buckets) if counts[b]]
    meta = {"key": "seen:<bucket>", "buckets": buckets, "bucket_of": "crc32(utf8(user_id)) % buckets",
            "empty_buckets": [b for b in range(buckets) if not counts[b]], "users": len(users),
            "items": int(sum(len(i) for i in items)), "max_per_user": cfg.serving.max_seen_per_user,
            "lookback_days": cfg.serving.seen_lookback_days or cfg.sampling.window_days,
            "format": "json-array, most recent click first"}
    return suffixes, meta


def seen_keys(keys: Keys, ver: str, meta: dict[str, Any]) -> list[str]:
    """The ``seen:<b>`` keys a version has according to its meta (none for a version without seen sets)."""
    s = meta.get("seen")
    if not s:
        return []
    empty = set(s.get("empty_buckets") or [])
    return [keys.v(ver, f"seen:{b}") for b in range(int(s["buckets"])) if b not in empty]


def read_seen(r: Any, ns: str, meta: dict[str, Any], user_id: str) -> list[str] | None:
    """The items ``user_id`` has seen according to the version of ``meta`` (most recent first; ``[]``
    for a user without clicks), or ``None`` when the version carries no seen sets (published before
    them, or with ``serving.exclude_seen`` off).

    Raises:
        MissingVersionKeys: the user's bucket is gone while the version is still published.
        VersionNotPublished: the version was deleted meanwhile (read ``current`` again).
    """
    from dailyrec.publishing.integrity import VersionNotPublished, missing_keys_error

    s = meta.get("seen")
    if not s:
        return None
    keys, ver = Keys(ns), meta["version"]
    b = bucket_of_user(user_id, int(s["buckets"]))
    key = keys.v(ver, f"seen:{b}")
    pipe = r.pipeline(transaction=False)
    pipe.hget(key, user_id)
    pipe.exists(key)
    raw, there = pipe.execute()
    if raw is not None:
        return json.loads(raw)
    if not there and b not in set(s.get("empty_buckets") or []):
        if r.zscore(keys.versions, ver) is not None:
            raise missing_keys_error(r, keys, ver, [key])
        raise VersionNotPublished(f"version {ver!r} was deleted under {ns!r} while reading it: read current again")
    return []
