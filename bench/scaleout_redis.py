"""Scale-out part ``redis``: the publish on one Redis server vs a 3-master Redis Cluster, same machine.

    ./dev bench scaleout --only redis [--redis-items 200000] [--redis-repeats 2]

Both servers are started here on free loopback ports (``redis-server``, ``--save ""``; the cluster
with ``--cluster-enabled yes`` and ``redis-cli --cluster create ... --cluster-replicas 0``) and
stopped at the end. ``--redis-items`` synthetic L2-normalised vectors x 64 and an exact (``flat``)
index are written as the export and index stages would, then :func:`dailyrec.publishing.publish.publish`
loads them into the single server (the baseline) and into the cluster, alternated ``--redis-repeats``
times, best of each: ``redis_publish_vectors_per_s_single`` / ``_cluster`` (the publish result's
``vectors_per_s``: bucketing/packing + pipelined ``HSET``s), the end-to-end publish seconds, and the
ratio cluster / single measured in this run. Spread: the namespace's keys and ``used_memory`` of
each primary after the last publish (``redis_cluster_keys_max_over_min``). On this 2-core machine the
three primaries share the cores with the publisher, so no speed-up is expected: the point is that a
version spreads over the nodes. Read check: ``load_current`` on the cluster returns every vector.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 64


def _server(d: Path, port: int, cluster: bool) -> subprocess.Popen:
    d.mkdir()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
            "--appendonly", "no", "--logfile", str(d / "redis.log")]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf")]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(cond: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.1)


def _cli_ok(port: int, *args: str, want: str) -> bool:
    return want in subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout


def measure(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="scaleout --only redis")
    ap.add_argument("--redis-items", type=int, default=200_000)
    ap.add_argument("--redis-repeats", type=int, default=2)
    args, _ = ap.parse_known_args(argv)
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        return {"redis_skipped": "redis-server / redis-cli not installed"}

    import redis

    from dailyrec.ann import build_index
    from dailyrec.config import load_config
    from dailyrec.embeddings import write_embeddings
    from dailyrec.loopback import free_port_pair
    from dailyrec.publishing.publish import publish
    from dailyrec.publishing.reader import load_current
    from dailyrec.storage import open_store

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="scaleout-redis-") as tmp:
        base = Path(tmp)
        try:
            port = free_port_pair(21000)
            procs.append(_server(base / "single", port, cluster=False))
            single_port, masters = port, []
            for i in range(3):
                port = free_port_pair(port + 1)
                procs.append(_server(base / f"m{i}", port, cluster=True))
                masters.append(port)
            for p in [single_port, *masters]:
                _wait(lambda: _cli_ok(p, "ping", want="PONG"), f"redis-server on {p}")
            out = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in masters],
                                  "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                                 timeout=60)
            if out.returncode != 0:
                raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
            for p in masters:
                _wait(lambda: _cli_ok(p, "cluster", "info", want="cluster_state:ok"), f"cluster on {p}")

            n = args.redis_items
            rng = np.random.default_rng(0)
            vectors = rng.standard_normal((n, DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = [f"item{i:08d}" for i in range(n)]
            base_cfg = load_config(overrides={"storage.data_root": str(base / "data"), "index.factory": "flat"},
                                   environ={})
            day = "2026-11-01"
            write_embeddings(open_store(base_cfg), day, ids, vectors, "bench")
            build_index(day, base_cfg)
            cfgs = {"single": base_cfg.with_overrides({"redis.url": f"redis://127.0.0.1:{single_port}/0"}),
                    "cluster": base_cfg.with_overrides(
                        {"redis.url": "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in masters)})}
            best: dict[str, dict[str, Any]] = {}
            for _ in range(args.redis_repeats):
                for name, cfg in cfgs.items():  # alternated: both see the same machine load
                    res = publish(day, cfg)
                    got = {"vectors_per_s": res["vectors_per_s"], "seconds": res["seconds"],
                           "keys_written": res["keys_written"], "buckets": res["buckets"]}
                    if name not in best or got["vectors_per_s"] > best[name]["vectors_per_s"]:
                        best[name] = got
            meta, index, id_of = load_current(cfgs["cluster"])
            assert index.ntotal == n and len(id_of) == n and meta["count"] == n
            spread = {}
            for p in masters:
                r = redis.Redis(host="127.0.0.1", port=p)
                keys = sum(1 for pat in ("dailyrec:*", "{dailyrec}:*") for _ in r.scan_iter(match=pat, count=1000))
                spread[str(p)] = {"keys": keys, "used_memory_mb": round(r.info("memory")["used_memory"] / 2**20, 1)}
                r.close()
            counts = [v["keys"] for v in spread.values()]
            return {
                "redis_items": n, "redis_dim": DIM, "redis_repeats": args.redis_repeats,
                "redis_publish_vectors_per_s_single": best["single"]["vectors_per_s"],
                "redis_publish_vectors_per_s_cluster": best["cluster"]["vectors_per_s"],
                "redis_publish_s_single": round(best["single"]["seconds"], 2),
                "redis_publish_s_cluster": round(best["cluster"]["seconds"], 2),
                "redis_cluster_vs_single_vectors_per_s": round(best["cluster"]["vectors_per_s"]
                                                               / best["single"]["vectors_per_s"], 3),
                "redis_cluster_masters": len(masters),
                "redis_cluster_keys_max_over_min": round(max(counts) / max(min(counts), 1), 3),
                "redis_cluster_spread": spread,
                "redis_buckets": best["cluster"]["buckets"],
            }
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
