"""dailyrec.ann with real FAISS on clustered synthetic embeddings under a temp data root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from dailyrec.errors import ContractError
from dailyrec.ann import RecallTooLow, build_index, clustered_vectors, fallback_queries, index_dir
from dailyrec.embeddings import write_embeddings

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-11-01"
N, DIM = 6000, 32


@pytest.fixture
def items(store):
    """Clustered, normalised item vectors with non-sequential string ids, written as the export would."""
    vectors, _ = clustered_vectors(N, DIM, clusters=60, spread=0.7, seed=3)
    rng = np.random.default_rng(5)
    ids = [f"item-{x:07d}" for x in rng.choice(10_000_000, N, replace=False)]
    write_embeddings(store, DAY, ids, vectors, "tt-v1")
    return ids, vectors


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k by inner product in numpy (independent of FAISS)."""
    scores = queries @ vectors.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(labels: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k]) & set(t)) / k for a, t in zip(labels, truth)]))


def load_output(store, day=DAY):
    out = index_dir(store, day)
    index = faiss.read_index(f"{out}/index.faiss")
    ids = pq.read_table(f"{out}/ids.parquet")
    manifest = json.loads(Path(f"{out}/_manifest.json").read_text())
    return index, ids, manifest


def test_flat_below_exact_threshold_is_exact(cfg, store, items):
    ids, vectors = items
    res = build_index(DAY, cfg)  # N < index.exact_below (50k default)
    assert res["type"] == "flat" and res["factory"] == "Flat" and res["recall_at_k"] == 1.0
    index, ids_t, manifest = load_output(store)
    assert manifest["index"]["type"] == "flat" and manifest["index"]["n"] == N and manifest["index"]["dim"] == DIM
    assert manifest["index"]["recall_at_100"] == 1.0 and manifest["index"]["build_s"] >= 0
    assert manifest["index"]["query_timing"]["queries"] > 0
    queries = fallback_queries(vectors, 200, seed=99)
    _, labels = index.search(queries, 100)
    assert recall(labels, exact_topk(vectors, queries, 100)) >= 0.999  # float ties aside: exact


@pytest.mark.parametrize("factory,kind", [("auto", "ivf"), ("hnsw", "hnsw"), ("IVF64,Flat", "ivf")])
def test_ann_recall_against_exact(cfg, store, items, factory, kind):
    ids, vectors = items
    cfg = cfg.with_overrides({"index.factory": factory, "index.exact_below": 1000, "index.nprobe": 16,
                              "index.min_recall_at_k": 0.9})
    res = build_index(DAY, cfg)
    assert res["type"] == kind and res["recall_at_k"] >= 0.9
    index, _, manifest = load_output(store)
    ix = manifest["index"]
    assert ix["type"] == kind and ix["n"] == N and ix["recall_queries"] == "perturbed_items"
    if factory == "auto":
        # 4 * sqrt(6000) = 310, capped at 6000 // 39 = 153 lists
        assert ix["factory"] == "IVF153,Flat" and ix["params"] == {"nlist": 153, "nprobe": 16}
    if factory == "IVF64,Flat":
        assert ix["factory"] == "IVF64,Flat" and ix["params"]["nprobe"] == 16
    if kind == "hnsw":
        assert ix["factory"] == "HNSW32,Flat" and ix["params"]["ef_search"] >= 100
    # independent check: the written index on fresh queries against numpy brute force
    queries = fallback_queries(vectors, 300, seed=77)
    _, labels = index.search(queries, 100)
    assert recall(labels, exact_topk(vectors, queries, 100)) >= 0.9


def test_user_query_vectors_are_used(cfg, store, items):
    _, vectors = items
    rng = np.random.default_rng(1)
    users = vectors[rng.choice(N, 500)] + rng.standard_normal((500, DIM)).astype(np.float32) * 0.05
    cfg = cfg.with_overrides({"index.factory": "ivf", "index.nprobe": 32})
    res = build_index(DAY, cfg, query_vectors=users * 3.0)  # unnormalised user vectors are fine
    assert res["recall_queries"] == "query_vectors" and res["recall_at_k"] >= 0.9
    with pytest.raises(ValueError, match=r"query_vectors must be a non-empty \(m, 32\)"):
        build_index(DAY, cfg, query_vectors=np.ones((10, DIM + 1), np.float32))


def test_recall_below_threshold_writes_nothing(cfg, store, items):
    bad = cfg.with_overrides({"index.factory": "ivf", "index.nprobe": 1, "index.min_recall_at_k": 0.99})
    with pytest.raises(RecallTooLow, match=r"recall@100 = 0\.\d+ .* below index.min_recall_at_k = 0.99"):
        build_index(DAY, bad)
    parent = Path(index_dir(store, DAY)).parent
    assert not Path(index_dir(store, DAY)).exists()
    assert not parent.exists() or list(parent.iterdir()) == []  # no temp leftovers either

    # a failing rebuild leaves an existing good index untouched
    build_index(DAY, cfg)
    before = {p.name: p.read_bytes() for p in Path(index_dir(store, DAY)).iterdir()}
    with pytest.raises(RecallTooLow):
        build_index(DAY, bad)
    assert {p.name: p.read_bytes() for p in Path(index_dir(store, DAY)).iterdir()} == before
    assert sorted(p.name for p in parent.iterdir()) == [f"dt={DAY}"]


@pytest.mark.parametrize("factory", ["flat", "ivf", "hnsw"])
def test_ids_map_back_to_items(cfg, store, items, factory):
    ids, vectors = items
    build_index(DAY, cfg.with_overrides({"index.factory": factory, "index.nprobe": 8}))
    index, ids_t, _ = load_output(store)
    assert ids_t.column("faiss_id").to_pylist() == list(range(N))
    id_of = ids_t.column("item_id").to_pylist()
    assert sorted(id_of) == sorted(ids)
    pick = np.random.default_rng(2).choice(N, 200, replace=False)
    _, labels = index.search(vectors[pick], 1)
    found = [id_of[label] for label in labels[:, 0]]
    hit = np.mean([f == ids[i] for f, i in zip(found, pick)])
    assert hit >= (1.0 if factory == "flat" else 0.97)  # an item is its own nearest neighbour


def test_bad_inputs_are_named(cfg, store):
    v, _ = clustered_vectors(100, 8, seed=1)
    write_embeddings(store, DAY, [f"i{i}" for i in range(100)], v * 2.0, "m")
    with pytest.raises(ContractError, match=r"items.parquet: column 'vector' must be L2-normalised"):
        build_index(DAY, cfg)
    write_embeddings(store, DAY, ["dup"] * 2 + [f"i{i}" for i in range(98)], v, "m")
    with pytest.raises(ContractError, match=r"column 'item_id' has 1 duplicated id\(s\), e.g. \['dup'\]"):
        build_index(DAY, cfg)
    with pytest.raises(FileNotFoundError, match=r"no item embeddings for 2026-11-02"):
        build_index("2026-11-02", cfg)
    os.remove(f"{store.partition('embeddings', DAY)}/_manifest.json")
    with pytest.raises(FileNotFoundError, match=r"has no _manifest.json"):
        build_index(DAY, cfg)
    assert not Path(index_dir(store, DAY)).exists()


def _cli(cfg, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "tasks.retrieval.build_index", "--set",
                           f"storage.data_root={cfg.storage.data_root}", *args],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO), env=env)


def test_cli(cfg, store, items):
    out = _cli(cfg, "--cur-date", DAY, "--set", "index.factory=hnsw", "--set", "index.hnsw_m=16")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["type"] == "hnsw" and res["factory"] == "HNSW16,Flat" and res["n"] == N
    out = _cli(cfg, "--cur-date", DAY, "--set", "index.factory=ivf", "--set", "index.nprobe=1",
               "--set", "index.min_recall_at_k=0.999")
    assert out.returncode == 2 and "error: index for dt=2026-11-01" in out.stderr
    assert load_output(store)[2]["index"]["type"] == "hnsw"  # the failed run left the previous output
