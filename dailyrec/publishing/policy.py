"""May this Redis server keep published versions? Its ``maxmemory-policy``, checked at publish and in ``status``.

A published version is only whole while every one of its keys exists. A server whose policy evicts
keys *without* a TTL (``allkeys-lru``, ``allkeys-lfu``, ``allkeys-random``) may drop any of them once
it reaches ``maxmemory`` — a vector bucket, an index chunk, or ``ns:current`` itself — and readers
then find a version with holes. So :func:`publish` refuses such a server (:class:`EvictingPolicyError`)
unless ``redis.allow_evicting_policy`` is true, and ``status`` warns about it whatever that key says.

``noeviction`` (Redis's default) is safe: a full server refuses writes (the publish fails, ``current``
stays). The ``volatile-*`` policies evict only keys that have a TTL; no published key has one (only
``ns:lock`` does, and a publisher that loses its lock stops with ``PublishError``), so they are safe
for this layout. The policy is read from ``INFO memory`` (works where ``CONFIG`` is disabled, as on
managed services), falling back to ``CONFIG GET maxmemory-policy``; on a Redis Cluster from every
primary (any evicting primary counts). Rule and reasons:
docs/redis-layout.md ("Eviction policy").
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config, ConfigError

log = logging.getLogger("dailyrec.publish")

EVICTING_POLICIES = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})
"""Policies that may evict keys without a TTL, i.e. any key of a published version."""
SAFE_POLICIES = frozenset({"noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"})


class EvictingPolicyError(ConfigError):
    """The Redis server's ``maxmemory-policy`` may evict published keys (deterministic: not retried)."""


def eviction_policy(r: Any) -> dict[str, Any]:
    """``{"maxmemory_policy", "maxmemory", "evicting"}`` of the server ``r`` talks to.

    ``evicting`` is true for the ``allkeys-*`` policies and for a policy this module does not know
    (a future Redis may add one; unknown is treated as unsafe). ``maxmemory`` 0 means no limit (yet):
    the policy still counts, as a limit can be set at any time with ``CONFIG SET``.
    """
    from redis.cluster import RedisCluster

    if isinstance(r, RedisCluster):
        return _cluster_policy(r)
    info = r.info("memory")
    policy = info.get("maxmemory_policy")
    maxmemory = info.get("maxmemory")
    if policy is None:  # very old servers: INFO lacks the field
        policy = _config_get(r, "maxmemory-policy")
        maxmemory = _config_get(r, "maxmemory")
    policy = policy.decode() if isinstance(policy, bytes) else str(policy)
    return {"maxmemory_policy": policy, "maxmemory": int(maxmemory or 0),
            "evicting": policy not in SAFE_POLICIES}


def _cluster_policy(r: Any) -> dict[str, Any]:
    """:func:`eviction_policy` of a Redis Cluster: every primary's ``INFO memory`` (each holds part of
    every version). ``evicting`` if any primary evicts; ``maxmemory_policy`` is the policy they share,
    else the evicting one (or the first), and ``nodes`` gives each primary's policy."""
    infos = r.info("memory", target_nodes=r.PRIMARIES)
    if "maxmemory_policy" in infos:  # one primary: redis-py returns its reply, not a dict by node
        infos = {"primary": infos}
    nodes = {name: str(info.get("maxmemory_policy")) for name, info in sorted(infos.items())}
    bad = [p for p in nodes.values() if p not in SAFE_POLICIES]
    policies = sorted(set(nodes.values()))
    policy = policies[0] if len(policies) == 1 else (bad[0] if bad else policies[0])
    return {"maxmemory_policy": policy, "maxmemory": max(int(i.get("maxmemory") or 0) for i in infos.values()),
            "evicting": bool(bad), "nodes": nodes}


def _config_get(r: Any, name: str) -> Any:
    got = r.config_get(name)
    return next(iter(got.values()), None) if got else None


def policy_message(where: str, pol: dict[str, Any]) -> str:
    """One sentence on an evicting policy and what to do about it."""
    limit = f"maxmemory={pol['maxmemory']}" if pol["maxmemory"] else "maxmemory=0 (no limit yet)"
    return (f"Redis {where} has maxmemory-policy={pol['maxmemory_policy']} ({limit}): it may evict keys of "
            "published versions, including ns:current, and readers would then find a version with missing "
            "keys. Set `CONFIG SET maxmemory-policy noeviction` (and in redis.conf), or a volatile-* policy; "
            "set redis.allow_evicting_policy=true only for a cache you can re-publish at any time")


def check_policy(r: Any, cfg: Config, where: str) -> dict[str, Any]:
    """The policy of ``r`` (see :func:`eviction_policy`); raise :class:`EvictingPolicyError` if it evicts
    and ``redis.allow_evicting_policy`` is false, log a warning if it evicts and that key is true."""
    pol = eviction_policy(r)
    if pol["evicting"]:
        msg = policy_message(where, pol)
        if not cfg.redis.allow_evicting_policy:
            raise EvictingPolicyError(f"refusing to publish: {msg}")
        log.warning("publishing although %s (redis.allow_evicting_policy=true)", msg)
    return pol
