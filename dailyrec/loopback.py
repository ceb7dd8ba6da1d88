"""Throw-away local services on 127.0.0.1 for the local stacks, the integration tests and the
benchmarks: a fresh PostgreSQL database, a port pair free for a Redis Cluster node."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def fresh_pg_database(prefix: str, server: str = "postgresql+psycopg2://postgres@127.0.0.1:5432") -> Iterator[str]:
    """A new, uniquely named database ``<prefix>_<8 hex>`` on the PostgreSQL ``server`` (a user
    allowed to create databases, e.g. ``postgres`` with trust on loopback), dropped with its
    connections afterwards; yields its SQLAlchemy URL (the metadata DB / Celery result backend of a
    local stack).

    Raises:
        psycopg2.OperationalError: no server answers (within 3 s).
    """
    import urllib.parse

    import psycopg2

    u = urllib.parse.urlsplit(server)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                            password=u.password, dbname="postgres", connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{server.rstrip('/')}/{name}"
        finally:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()


def free_port_pair(start: int, offset: int = 10000) -> int:
    """The first port ``P >= start`` with ``P`` and ``P + offset`` both free on 127.0.0.1 (a Redis
    Cluster node needs its bus port at ``P + 10000``).

    Raises:
        RuntimeError: no such pair below 40000.
    """
    for port in range(start, 40000):
        ok = True
        for p in (port, port + offset):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free loopback port pair")
