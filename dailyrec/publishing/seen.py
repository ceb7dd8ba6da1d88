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
  checks the per-bucket counts and returns the meta's ``seen`` section. On a Redis Cluster they are
  data keys of the version's generation, ``ns:v:<ver>:<gen>:seen:<b>`` (no hash tag: spread over the
  slots), registered in ``{ns}:gens`` with the vectors and written/checked by
  :func:`dailyrec.publishing.cluster.publish_cluster` (:func:`plan_seen`, :func:`write_seen`,
  :func:`check_seen`) before the switch writes the meta naming them.
* :func:`read_seen` is what serving reads: one ``HGET`` (plus an ``EXISTS`` to tell a missing bucket
  from an absent user). Serving then searches ``k + |seen|`` neighbours and drops the seen ones.

Users beyond the bound keep only their latest clicks: an older click may come back.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
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


class SeenPlan:
    """The seen sets of one version, bucketed but not written yet (:func:`plan_seen`).

    ``users``/``items``: the table's columns as lists; ``buckets``: the number of ``seen:<b>`` hashes
    (``ceil(users / serving.seen_users_per_bucket)``, at least 1); ``counts[b]``: users in bucket
    ``b``; ``meta``: the meta's ``seen`` section (known before any write, so a Redis Cluster
    publish can hash it into the generation id)."""

    def __init__(self, seen: pa.Table, cfg: Any) -> None:
        self.users: list[str] = seen.column("user_id").to_pylist()
        self.items: list[list[str]] = seen.column("items").to_pylist()
        self.buckets = max(1, math.ceil(len(self.users) / cfg.serving.seen_users_per_bucket))
        self.counts = [0] * self.buckets
        for u in self.users:
            self.counts[bucket_of_user(u, self.buckets)] += 1
        self.meta: dict[str, Any] = {
            "key": "seen:<bucket>", "buckets": self.buckets, "bucket_of": "crc32(utf8(user_id)) % buckets",
            "empty_buckets": [b for b in range(self.buckets) if not self.counts[b]], "users": len(self.users),
            "items": int(sum(len(i) for i in self.items)), "max_per_user": cfg.serving.max_seen_per_user,
            "lookback_days": cfg.serving.seen_lookback_days or cfg.sampling.window_days,
            "format": "json-array, most recent click first"}

    def suffixes(self) -> list[str]:
        """``seen:<b>`` of every non-empty bucket (the keys the version has)."""
        return [f"seen:{b}" for b in range(self.buckets) if self.counts[b]]


def plan_seen(seen: pa.Table, cfg: Any) -> SeenPlan:
    """Bucket ``seen`` (:func:`seen_sets`: ``user_id: string, items: list<string>``) for a publish."""
    return SeenPlan(seen, cfg)


def write_seen(r: Any, key_of: Callable[[str], str], plan: SeenPlan, lock: Any, renew_in_pipe: bool = True) -> None:
    """``HSET`` the plan's users into ``key_of(f"seen:{b}")``, :data:`SEEN_BATCH` users per pipelined
    round trip, renewing ``lock`` after each (in the same pipeline on one server; as its own call on
    a Redis Cluster, ``renew_in_pipe=False``, where the pipeline is redis-py's per-node cluster
    pipeline). Raises :class:`dailyrec.publishing.lock.PublishError` if the lock was lost."""
    users, items = plan.users, plan.items
    for start in range(0, len(users), SEEN_BATCH):
        by_bucket: dict[int, dict[str, bytes]] = {}
        for u, its in zip(users[start:start + SEEN_BATCH], items[start:start + SEEN_BATCH]):
            b = bucket_of_user(u, plan.buckets)
            by_bucket.setdefault(b, {})[u] = json.dumps(its, separators=(",", ":"), ensure_ascii=False).encode()
        pipe = r.pipeline(transaction=False)
        for b, mapping in by_bucket.items():
            pipe.hset(key_of(f"seen:{b}"), mapping=mapping)
        if renew_in_pipe:
            lock.renew(pipe)
            lock.check(pipe.execute()[-1])
        else:
            pipe.execute()
            lock.check(lock.renew())


def check_seen(r: Any, key_of: Callable[[str], str], plan: SeenPlan, ver: str) -> list[str]:
    """Every bucket's ``HLEN`` against the plan's counts (an empty bucket must have no key); the
    problems found (empty list: equal)."""
    pipe = r.pipeline(transaction=False)
    for b in range(plan.buckets):
        pipe.hlen(key_of(f"seen:{b}"))
    got = pipe.execute()
    bad = [b for b in range(plan.buckets) if got[b] != plan.counts[b]]
    if not bad:
        return []
    return [f"seen set of version {ver}: bucket {bad[0]} has {got[bad[0]]} users, expected "
            f"{plan.counts[bad[0]]} ({len(bad)} bucket(s) differ)"]


def stage_seen(r: Any, keys: Keys, ver: str, seen: pa.Table, lock: Any, cfg: Any) -> tuple[list[str], dict[str, Any]]:
    """Write ``seen`` (:func:`seen_sets`) as ``ns:stage:<ver>:seen:<b>`` hashes on one server, renewing
    ``lock`` every :data:`SEEN_BATCH` users, then check every bucket's ``HLEN``. (On a Redis Cluster
    :func:`dailyrec.publishing.cluster.publish_cluster` calls :func:`write_seen`/:func:`check_seen`
    with the generation's keys instead.)

    Returns ``(staged key suffixes, the meta's "seen" section)``; raises
    :class:`dailyrec.publishing.lock.PublishError` when a bucket's count differs.
    """
    from dailyrec.publishing.lock import PublishError

    plan = plan_seen(seen, cfg)
    key_of = lambda suffix: keys.stage(ver, suffix)  # noqa: E731
    write_seen(r, key_of, plan, lock)
    problems = check_seen(r, key_of, plan, ver)
    if problems:
        raise PublishError(f"{problems[0]}; current unchanged")
    return plan.suffixes(), plan.meta


def seen_keys(keys: Keys, ver: str, meta: dict[str, Any]) -> list[str]:
    """The ``seen:<b>`` keys a version has according to its meta (none for a version without seen
    sets): ``ns:v:<ver>:seen:<b>`` on one server, ``ns:v:<ver>:<gen>:seen:<b>`` on a Redis Cluster
    (``gen`` = the meta's ``generation``; :meth:`dailyrec.publishing.layout.Keys.data`)."""
    s = meta.get("seen")
    if not s:
        return []
    empty = set(s.get("empty_buckets") or [])
    gen = meta.get("generation")
    return [keys.data(ver, gen, f"seen:{b}") for b in range(int(s["buckets"])) if b not in empty]


def read_seen(r: Any, ns: str, meta: dict[str, Any], user_id: str) -> list[str] | None:
    """The items ``user_id`` has seen according to the version of ``meta`` (most recent first; ``[]``
    for a user without clicks), or ``None`` when the version carries no seen sets (published before
    them, or with ``serving.exclude_seen`` off). A delta version's are its base's (a pass ships no
    seen sets: clicks since the base's date are not excluded, a documented staleness).

    Works on one server and on a Redis Cluster (:func:`dailyrec.publishing.connection.keys_for`):
    there the bucket is the generation's key the meta names. If that bucket is gone and the
    version's meta now names another generation (the version was rewritten after the caller read
    its meta), the new generation's seen set is read (up to
    :data:`dailyrec.publishing.reader.READ_ATTEMPTS` times, then ``CurrentKeptChanging``).

    Raises:
        MissingVersionKeys: the user's bucket is gone while the version is still published.
        VersionNotPublished: the version was deleted meanwhile (read ``current`` again).
        CurrentKeptChanging: the version's meta changed during every attempt (transient).
    """
    from dailyrec.publishing.connection import keys_for
    from dailyrec.publishing.integrity import CurrentKeptChanging, VersionNotPublished, missing_keys_error
    from dailyrec.publishing.reader import READ_ATTEMPTS

    if meta.get("kind") == "delta":  # a delta carries no seen sets: its base's are served (clicks up to its date)
        from dailyrec.publishing.reader import read_meta

        meta = read_meta(r, ns, meta["base"])
    keys, ver = keys_for(r, ns), meta["version"]
    for _ in range(READ_ATTEMPTS):
        s = meta.get("seen")
        if not s:
            return None
        b = bucket_of_user(user_id, int(s["buckets"]))
        key = keys.data(ver, meta.get("generation"), f"seen:{b}")
        pipe = r.pipeline(transaction=False)
        pipe.hget(key, user_id)
        pipe.exists(key)
        raw, there = pipe.execute()
        if raw is not None:
            return json.loads(raw)
        if there or b in set(s.get("empty_buckets") or []):
            return []
        now = r.get(keys.v(ver, "meta"))
        if now is not None and keys.cluster and json.loads(now).get("generation") != meta.get("generation"):
            meta = json.loads(now)  # rewritten meanwhile (a cluster's new generation): read that one
            continue
        if r.zscore(keys.versions, ver) is not None:
            raise missing_keys_error(r, keys, ver, [key])
        raise VersionNotPublished(f"version {ver!r} was deleted under {ns!r} while reading it: read current again")
    raise CurrentKeptChanging(f"the meta of {ver!r} under {ns!r} changed during each of {READ_ATTEMPTS} reads of "
                              f"{user_id!r}'s seen set (rewrites in quick succession): retry")
