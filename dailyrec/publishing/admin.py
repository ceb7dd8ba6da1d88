"""Operator actions on a Redis namespace: :func:`status` and :func:`rollback`.

    python -m dailyrec.publishing status
    python -m dailyrec.publishing rollback [--to-version VERSION]

Rollback works across delta versions (an hourly pass's ``<D>T<HH>_...``): the target may be the
previous delta, the base, or any complete version whose delta chain is complete.
A rollback moves ``current`` *and* the registry together (``registry/two_tower/dt=D/published.json``
of the target's date is written, later entries are marked withdrawn), so the next day's gate
compares with the model actually online (:func:`dailyrec.registry.published_before`).
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config
from dailyrec.publishing.connection import describe, get_redis, keys_for
from dailyrec.publishing.integrity import check_version, no_current_error, repair_hint
from dailyrec.publishing.layout import Keys, scan_keys, text
from dailyrec.publishing.lock import PublishError, PublishLock
from dailyrec.publishing.policy import eviction_policy, policy_message
from dailyrec.publishing.publish import MODEL, record_online
from dailyrec.publishing.reader import read_meta
from dailyrec.registry import read_published
from dailyrec.storage import open_store

log = logging.getLogger("dailyrec.publish")


def rollback(cfg: Config, to_version: str | None = None) -> dict[str, Any]:
    """Point ``current`` at ``to_version`` (default: ``previous``); the old current becomes ``previous``.

    One ``WATCH``ed transaction under the publish lock (on a Redis Cluster too: ``current``,
    ``previous`` and the lock share the slot of the tag ``{ns}``), then the registry entry of the target's
    date is (re)written and later entries withdrawn. Returns ``{changed, current, previous}``.

    Raises:
        ValueError: nothing to roll back to, or ``to_version`` is not a complete published version (its
            marker, its ``ns:versions`` member and every key its meta implies).
        PublishError: ``current`` or the lock changed meanwhile (nothing changed).
    """
    r = get_redis(cfg)
    keys = keys_for(r, cfg.redis.namespace)
    with PublishLock(r, keys) as lock:
        cur, prev = text(r.get(keys.current)), text(r.get(keys.previous))
        target = to_version or prev
        if not target:
            raise ValueError(f"nothing to roll back to: {keys.previous} is not set")
        if target == cur:
            return {"changed": False, "current": cur, "previous": prev}
        chk = check_version(r, keys, target)  # every key of the target, not just its marker
        if not chk["complete"]:
            known = [text(m) for m in r.zrange(keys.versions, 0, -1)]
            raise ValueError(f"version {target!r} is not a complete published version under {keys.ns!r}: "
                             f"missing {chk['missing_keys']}; {'; '.join(chk['problems'])} (known: {known})")
        with r.pipeline(transaction=True) as pipe:
            pipe.watch(keys.lock, keys.current)
            if pipe.get(keys.lock) != lock.value or text(pipe.get(keys.current)) != cur:
                raise PublishError("current or the lock changed during the rollback; nothing changed")
            pipe.multi()
            if cur is not None:
                pipe.set(keys.previous, cur)
            pipe.set(keys.current, target)
            pipe.execute()
        _record_rollback(cfg, r, keys, target, cur)
    log.info("rolled back %s: current %s -> %s", keys.ns, cur, target)
    return {"changed": True, "current": target, "previous": cur}


def _record_rollback(cfg: Config, r: Any, keys: Keys, target: str, cur: str | None) -> None:
    """The registry side of a rollback: the target's date is online again (its entry kept, un-withdrawn).
    A delta target: its base's date is the daily model online (later daily entries withdrawn), and the
    pass's entry ``dt=D/hour=HH`` is rewritten with ``rolled_back_from``."""
    meta = read_meta(r, keys.ns, target)
    store = open_store(cfg)
    if meta.get("kind") == "delta":
        from dailyrec.registry import mark_pass_published

        hour_entry = read_published(store, MODEL, meta["cur_date"], meta["hour"]) or {}
        mark_pass_published(store, MODEL, meta["cur_date"], meta["hour"],
                            {k: v for k, v in hour_entry.items() if k not in ("name", "cur_date", "hour")}
                            | {"version": target, "rolled_back_from": cur})
        target = meta["base"]
    day = read_meta(r, keys.ns, target)["cur_date"]
    old = {k: v for k, v in (read_published(store, MODEL, day) or {}).items()
           if k not in ("withdrawn", "name", "cur_date", "model_dir")}
    record_online(cfg, store, day, old | {"version": target, "previous": cur, "previous_version": cur,
                                          "rolled_back_from": cur})


def status(cfg: Config) -> dict[str, Any]:
    """What is in the namespace, and is it whole: current, previous, every version, the server's eviction
    policy, the lock holder, staged keys.

    Each version (the ``ns:versions`` members plus ``current`` and ``previous``): version, cur_date,
    score, count, dim, index (type), recall_at_k, and the key check of
    :func:`dailyrec.publishing.integrity.check_version`: ``complete`` (every key the meta implies exists,
    vector and byte counts match), ``missing_keys`` (the first 20), ``missing_count``, ``vectors_found``,
    ``problems``. ``healthy`` is false and ``problems`` says why when a version is not complete,
    ``current`` is missing while versions exist, or the server's ``maxmemory-policy`` may evict keys
    (warned whatever ``redis.allow_evicting_policy`` says; each problem is also logged).
    """
    r = get_redis(cfg)
    keys = keys_for(r, cfg.redis.namespace)
    cur, prev = text(r.get(keys.current)), text(r.get(keys.previous))
    members = {text(m): int(s) for m, s in r.zrange(keys.versions, 0, -1, withscores=True)}
    names = list(members) + [v for v in (cur, prev) if v and v not in members]
    versions = [_version_status(r, keys, ver, members.get(ver)) for ver in names]
    policy = eviction_policy(r)
    problems = [f"version {v['version']}{_role(v['version'], cur, prev)}: missing {v['missing_count']} key(s) "
                f"{v['missing_keys']}; {'; '.join(v['problems'])}. {repair_hint(v['version'])}"
                for v in versions if not v["complete"]]
    if cur is None and names:
        problems.append(str(no_current_error(r, keys, describe(cfg))))
    if policy["evicting"]:
        problems.append(policy_message(describe(cfg), policy))
    for p in problems:
        log.error("status of %s: %s", keys.ns, p)
    return {"redis": describe(cfg), "namespace": keys.ns, "current": cur, "previous": prev, "versions": versions,
            "healthy": not problems, "problems": problems, "redis_policy": policy,
            "lock": text(r.get(keys.lock)), "staged_keys": _staged_keys(r, keys)}


def _staged_keys(r: Any, keys: Keys) -> int:
    """Keys of interrupted publishes: ``ns:stage:*`` on one server, unreferenced generations on a cluster."""
    if keys.cluster:
        from dailyrec.publishing.cluster import unreferenced_keys

        return unreferenced_keys(r, keys)
    return sum(1 for _ in scan_keys(r, keys.stage_pattern()))


def _role(ver: str, cur: str | None, prev: str | None) -> str:
    return " (current)" if ver == cur else " (previous)" if ver == prev else ""


def _version_status(r: Any, keys: Keys, ver: str, score: int | None) -> dict[str, Any]:
    chk = check_version(r, keys, ver)
    meta = chk.pop("meta")
    ix = meta.get("index") or {}
    return {"version": ver, "kind": meta.get("kind", "full") if meta else None, "parent": meta.get("parent"),
            "cur_date": meta.get("cur_date"), "score": score, "count": meta.get("count"),
            "dim": meta.get("dim"), "index": ix.get("type"), "recall_at_k": ix.get("recall_at_k")} | chk
