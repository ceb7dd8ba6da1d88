"""``redis.url`` naming a Redis Cluster (``redis+cluster://``) and the cluster key layout: checked in
the config before any work, and the key names that decide where keys land (docs/redis-layout.md,
"Redis Cluster"). No server needed: tests/integration/test_redis_cluster.py runs a real cluster."""

from __future__ import annotations

import pytest

from dailyrec.config import ConfigError, cluster_nodes, load_config
from dailyrec.publishing.layout import ClusterKeys, Keys


def test_cluster_url_parsed_and_validated():
    assert cluster_nodes("redis://127.0.0.1:6379/0") is None and cluster_nodes(None) is None
    assert cluster_nodes("redis+cluster://127.0.0.1:7000,10.0.0.2:7001") == [("127.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert cluster_nodes("rediss+cluster://u:p%40ss@h1:7000/0") == [("h1", 7000)]
    assert cluster_nodes("redis+cluster://[::1]:7000") == [("::1", 7000)]
    cfg = load_config(environ={"REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    assert cfg.redis.url == "redis+cluster://127.0.0.1:7000"
    for bad, why in [("redis+cluster://127.0.0.1", "is not host:port"),
                     ("redis+cluster://127.0.0.1:7000,:7001", "is not host:port"),
                     ("redis+cluster://127.0.0.1:70000", "is not host:port"),
                     ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
                     ("redis+cluster://127.0.0.1:7000?timeout=1", "query parameters")]:
        with pytest.raises(ConfigError, match=why):
            load_config(overrides={"redis.url": bad}, environ={})


def test_namespace_with_braces_refused_on_a_cluster_only():
    with pytest.raises(ConfigError, match=r"must not contain '\{' or '\}' on a Redis Cluster"):
        load_config(overrides={"redis.url": "redis+cluster://h:7000", "redis.namespace": "a{b}"}, environ={})
    assert load_config(overrides={"redis.namespace": "a{b}"}, environ={}).redis.namespace == "a{b}"


def test_cluster_keys_one_control_slot_spread_data():
    from redis.crc import key_slot

    single, ck = Keys("rec"), ClusterKeys("rec")
    assert (single.current, single.v("D_m", "vec:3"), single.data("D_m", None, "vec:3")) == (
        "rec:current", "rec:v:D_m:vec:3", "rec:v:D_m:vec:3")  # one server: unchanged names
    control = [ck.current, ck.previous, ck.versions, ck.lock, ck.gens, ck.v("D_m", "meta"), ck.v("D_m", "complete")]
    assert all(k.startswith("{rec}:") for k in control) and len({key_slot(k.encode()) for k in control}) == 1
    data = [ck.data("D_m", "0123abcd0123abcd", f"vec:{b}") for b in range(200)]
    assert data[3] == "rec:v:D_m:0123abcd0123abcd:vec:3" and "{" not in "".join(data)
    assert len({key_slot(k.encode()) for k in data}) > 190  # spread, not one slot per version
    assert ck.gen_keys("D_m", "g", {"buckets": 2, "index": 2, "ids": 1}) == [
        "rec:v:D_m:g:vec:0", "rec:v:D_m:g:vec:1", "rec:v:D_m:g:index", "rec:v:D_m:g:index:1", "rec:v:D_m:g:ids"]
    assert ck.gen_keys("D_m", "g", {"buckets": 1, "index": 1, "ids": 1, "seen": 2})[-2:] == [
        "rec:v:D_m:g:seen:0", "rec:v:D_m:g:seen:1"]  # a version with seen sets: its buckets are data keys too
    with pytest.raises(ValueError, match="use data"):
        ck.v("D_m", "vec:0")
    with pytest.raises(ValueError, match="braces"):
        ClusterKeys("a{b")
