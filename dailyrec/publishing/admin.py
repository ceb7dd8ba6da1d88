"""Operator actions on a Redis namespace: :func:`status` and :func:`rollback`.

    python -m dailyrec.publishing status
    python -m dailyrec.publishing rollback [--to-version VERSION]

A rollback moves ``current`` *and* the registry together (``registry/two_tower/dt=D/published.json``
of the target's date is written, later entries are marked withdrawn), so the next day's gate
compares with the model actually online (:func:`dailyrec.registry.published_before`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dailyrec.config import Config
from dailyrec.publishing.connection import describe, get_redis
from dailyrec.publishing.layout import Keys, scan_keys, text
from dailyrec.publishing.lock import PublishError, PublishLock
from dailyrec.publishing.publish import MODEL, record_online
from dailyrec.publishing.reader import read_meta
from dailyrec.registry import read_published
from dailyrec.storage import open_store

log = logging.getLogger("dailyrec.publish")


def _is_complete(r: Any, keys: Keys, ver: str) -> bool:
    return bool(r.exists(keys.v(ver, "complete"))) and r.zscore(keys.versions, ver) is not None


def rollback(cfg: Config, to_version: str | None = None) -> dict[str, Any]:
    """Point ``current`` at ``to_version`` (default: ``previous``); the old current becomes ``previous``.

    One ``WATCH``ed transaction under the publish lock, then the registry entry of the target's
    date is (re)written and later entries withdrawn. Returns ``{changed, current, previous}``.

    Raises:
        ValueError: nothing to roll back to, or ``to_version`` is not a complete published version.
        PublishError: ``current`` or the lock changed meanwhile (nothing changed).
    """
    keys = Keys(cfg.redis.namespace)
    r = get_redis(cfg)
    with PublishLock(r, keys) as lock:
        cur, prev = text(r.get(keys.current)), text(r.get(keys.previous))
        target = to_version or prev
        if not target:
            raise ValueError(f"nothing to roll back to: {keys.previous} is not set")
        if target == cur:
            return {"changed": False, "current": cur, "previous": prev}
        if not _is_complete(r, keys, target):
            known = [text(m) for m in r.zrange(keys.versions, 0, -1)]
            raise ValueError(f"version {target!r} is not a complete published version under "
                             f"{keys.ns!r} (known: {known})")
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
    """The registry side of a rollback: the target's date is online again (its entry kept, un-withdrawn)."""
    day = read_meta(r, keys.ns, target)["cur_date"]
    store = open_store(cfg)
    old = {k: v for k, v in (read_published(store, MODEL, day) or {}).items()
           if k not in ("withdrawn", "name", "cur_date", "model_dir")}
    record_online(cfg, store, day, old | {"version": target, "previous": cur, "previous_version": cur,
                                          "rolled_back_from": cur})


def status(cfg: Config) -> dict[str, Any]:
    """What is in the namespace: current, previous, every version, the lock holder, staged keys.

    Each version: version, cur_date, score, complete, count, dim, index (type), recall_at_k.
    """
    keys = Keys(cfg.redis.namespace)
    r = get_redis(cfg)
    versions = []
    for m, score in r.zrange(keys.versions, 0, -1, withscores=True):
        ver = text(m)
        meta = json.loads(r.get(keys.v(ver, "meta")) or "{}")
        versions.append({"version": ver, "cur_date": meta.get("cur_date"), "score": int(score),
                         "complete": bool(r.exists(keys.v(ver, "complete"))), "count": meta.get("count"),
                         "dim": meta.get("dim"), "index": (meta.get("index") or {}).get("type"),
                         "recall_at_k": (meta.get("index") or {}).get("recall_at_k")})
    return {"redis": describe(cfg), "namespace": keys.ns, "current": text(r.get(keys.current)),
            "previous": text(r.get(keys.previous)), "versions": versions,
            "lock": text(r.get(keys.lock)), "staged_keys": sum(1 for _ in scan_keys(r, keys.stage_pattern()))}
