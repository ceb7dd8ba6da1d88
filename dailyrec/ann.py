"""Stage 7 of the daily retrieval DAG: build the FAISS index of the item embeddings.

    python -m dailyrec.ann --cur-date 2026-11-01 [--set index.factory=hnsw] [--query-vectors users.npy]

Input (written by the embedding export step)::

    <root>/embeddings/dt=D/items.parquet    item_id: string, model_version: string,
                                            vector: fixed_size_list<float32>[dim] (L2-normalised)
    <root>/embeddings/dt=D/_manifest.json   (the partition is complete only with it)

Output, written atomically (all three files or nothing)::

    <root>/index/dt=D/index.faiss           faiss.write_index bytes (inner-product metric)
    <root>/index/dt=D/ids.parquet           faiss_id: int64 (0..n-1), item_id: string
    <root>/index/dt=D/_manifest.json        type, factory, n, dim, recall, timings ...

**Index type rule** (docs/redis-layout.md, "Index"):

* ``index.factory`` unset or ``auto``: ``Flat`` (exact ``IndexFlatIP``) when the catalog has fewer
  than ``index.exact_below`` items, otherwise ``IVF{nlist},Flat`` with
  ``nlist = index.nlist or round(4 * sqrt(n))`` (capped at ``n // 39`` so k-means has >= 39 points
  per list), trained on a seeded sample of ``min(n, max(64 * nlist, 65536), index.train_sample_max)``
  vectors, searched with ``nprobe = index.nprobe``. IVF rather than HNSW by default: it
  builds in a fraction of HNSW's time, takes ~no memory beyond the vectors, and ``nprobe`` trades
  recall for speed at query time without a rebuild.
* ``index.factory`` = ``flat`` / ``ivf`` / ``hnsw``: that kind with the config's parameters
  (``hnsw`` = ``HNSW{index.hnsw_m},Flat``, efConstruction ``index.hnsw_ef_construction``, efSearch
  ``index.hnsw_ef_search``).
* any other value is a faiss ``index_factory`` string used verbatim (metric inner product), e.g.
  ``IVF1024,PQ16`` or ``HNSW48,Flat``; IVF ones get ``nprobe = index.nprobe``, HNSW ones efSearch.

faiss labels are row numbers: label ``i`` is ``ids.parquet`` row ``i`` (an id array rather than an
``IndexIDMap2``: the mapping is dense, so the wrapper would only add 8 bytes per item and a hash map).

**Recall check**: recall@K (``K = min(index.recall_k, n)``) of the index against exact
(``IndexFlatIP``) search, averaged over up to ``index.recall_queries`` query vectors: a seeded sample of
``query_vectors`` when given (the pipeline passes user-tower vectors), otherwise the documented
fallback: sampled item vectors plus Gaussian noise of norm ~``FALLBACK_NOISE``, re-normalised
(an item itself would be its own nearest neighbour and flatter the index). Below
``index.min_recall_at_k`` the build raises :class:`RecallTooLow` and writes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.errors import ContractError, RecallTooLow
from dailyrec.storage import MANIFEST, Store, Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.build_index")

EMBEDDINGS_DATASET = "embeddings"
INDEX_DATASET = "index"
ITEMS_FILE = "items.parquet"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"

# Defaults of make_index() when called without a config (benchmarks); the pipeline passes
# index.hnsw_ef_search, index.hnsw_ef_construction and index.train_sample_max.
FALLBACK_NOISE = 0.3
HNSW_EF_SEARCH = 256
HNSW_EF_CONSTRUCTION = 80
TRAIN_SAMPLE_MAX = 200_000
NORM_TOLERANCE = 1e-3
SEED = 1234

IDS_SCHEMA = pa.schema([pa.field("faiss_id", pa.int64(), nullable=False),
                        pa.field("item_id", pa.string(), nullable=False)])




# ---- input -----------------------------------------------------------------------------------------

@dataclass
class Embeddings:
    item_ids: list[str]
    model_version: str
    vectors: np.ndarray  # (n, dim) float32, C-contiguous
    path: str
    sha256: str
    manifest: dict[str, Any]
    item_ids_arrow: pa.Array | None = None  # the same ids as an Arrow string array (vectorised consumers)

    @property
    def n(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def embeddings_dir(store: Store, cur_date: str) -> str:
    return store.partition(EMBEDDINGS_DATASET, cur_date)


def index_dir(store: Store, cur_date: str) -> str:
    return store.partition(INDEX_DATASET, cur_date)


def file_sha256(store: Store, path: str) -> str:
    h = hashlib.sha256()
    with store.fs.open_input_stream(path) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def vectors_from_column(col: pa.ChunkedArray | pa.Array, where: str) -> np.ndarray:
    """A ``fixed_size_list<float32>[dim]`` column as an ``(n, dim)`` float32 array (no copy if possible)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pa.types.is_fixed_size_list(col.type) or col.type.value_type != pa.float32():
        raise ContractError(f"{where}: column 'vector' must be fixed_size_list<float32>[dim], found {col.type}")
    if col.null_count:
        raise ContractError(f"{where}: column 'vector' has {col.null_count} null vector(s)")
    dim = col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(col), dim), dtype=np.float32)


def read_embeddings(store: Store, cur_date: str, with_sha: bool = True) -> Embeddings:
    """Read and check the exported item embeddings of ``cur_date`` (ContractError names file and column)."""
    part = embeddings_dir(store, cur_date)
    path = f"{part}/{ITEMS_FILE}"
    if not store.exists(path):
        raise FileNotFoundError(f"no item embeddings for {cur_date}: {path} is missing (run the export step)")
    if not store.exists(f"{part}/{MANIFEST}"):
        raise FileNotFoundError(f"{part} has no {MANIFEST}: the embedding export of {cur_date} is incomplete")
    with store.fs.open_input_file(path) as f:
        table = pq.read_table(f, columns=None)
    for col, check in (("item_id", pa.types.is_string), ("model_version", pa.types.is_string)):
        if col not in table.column_names:
            raise ContractError(f"{path}: missing column '{col}' (found {table.column_names})")
        t = table.schema.field(col).type
        if not (check(t) or pa.types.is_large_string(t)):
            raise ContractError(f"{path}: column '{col}' must be string, found {t}")
        if table.column(col).null_count:
            raise ContractError(f"{path}: column '{col}' has {table.column(col).null_count} null(s)")
    if "vector" not in table.column_names:
        raise ContractError(f"{path}: missing column 'vector' (found {table.column_names})")
    if table.num_rows == 0:
        raise ContractError(f"{path}: no items")
    vectors = vectors_from_column(table.column("vector"), path)
    versions = pc.unique(table.column("model_version")).to_pylist()
    if len(versions) != 1:
        raise ContractError(f"{path}: column 'model_version' must hold one value, found {sorted(versions)[:5]}")
    item_ids = table.column("item_id").to_pylist()
    if pc.count_distinct(table.column("item_id")).as_py() != len(item_ids):
        counts = pc.value_counts(table.column("item_id"))
        dup = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        raise ContractError(f"{path}: column 'item_id' has {len(dup)} duplicated id(s), e.g. {dup.to_pylist()[:3]}")
    if not np.isfinite(vectors).all():
        bad = int(np.argwhere(~np.isfinite(vectors).all(axis=1))[0, 0])
        raise ContractError(f"{path}: column 'vector' has non-finite values (item {item_ids[bad]!r})")
    norms = np.linalg.norm(vectors, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        bad = int(np.argmax(off))
        raise ContractError(f"{path}: column 'vector' must be L2-normalised; item {item_ids[bad]!r} has "
                            f"norm {norms[bad]:.4f} ({int(off.sum())} such rows)")
    return Embeddings(item_ids=item_ids, model_version=str(versions[0]), vectors=vectors, path=path,
                      sha256=file_sha256(store, path) if with_sha else "",
                      manifest=store.read_json(f"{part}/{MANIFEST}"),
                      item_ids_arrow=table.column("item_id").combine_chunks())


# ---- index construction --------------------------------------------------------------------------

def choose_factory(n: int, cfg: Config) -> tuple[str, str]:
    """``(kind, faiss factory string)`` for a catalog of ``n`` items (see the module docstring)."""
    ic = cfg.index
    spec = (ic.factory or "auto").strip()
    kind = spec.lower()
    if kind == "auto":
        kind = "flat" if n < ic.exact_below else "ivf"
    if kind == "flat":
        return "flat", "Flat"
    if kind == "ivf":
        nlist = ic.nlist or int(round(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
        return "ivf", f"IVF{nlist},Flat"
    if kind == "hnsw":
        return "hnsw", f"HNSW{ic.hnsw_m},Flat"
    return "factory", spec


def index_kind(index: Any) -> str:
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return "ivf"
    except Exception:
        pass
    idx = faiss.downcast_index(index)
    if hasattr(idx, "hnsw"):
        return "hnsw"
    if isinstance(idx, faiss.IndexFlat):
        return "flat"
    return type(idx).__name__


def search_params(index: Any) -> dict[str, int]:
    import faiss

    out: dict[str, int] = {}
    try:
        ivf = faiss.extract_index_ivf(index)
        out.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
    except Exception:
        pass
    idx = faiss.downcast_index(index)
    if hasattr(idx, "hnsw"):
        out.update(hnsw_m=int((idx.hnsw.nb_neighbors(1))), ef_search=int(idx.hnsw.efSearch),
                   ef_construction=int(idx.hnsw.efConstruction))
    return out


def set_search_params(index: Any, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Set IVF ``nprobe`` / HNSW ``efSearch`` where the index has them (no-op otherwise)."""
    import faiss

    ps = faiss.ParameterSpace()
    kind = index_kind(index)
    if nprobe is not None and kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ps.set_index_parameter(index, "nprobe", int(min(nprobe, ivf.nlist)))
    if ef_search is not None and kind == "hnsw":
        ps.set_index_parameter(index, "efSearch", int(ef_search))


def make_index(vectors: np.ndarray, factory: str, nprobe: int = 16, ef_search: int = HNSW_EF_SEARCH,
               ef_construction: int = HNSW_EF_CONSTRUCTION, seed: int = SEED,
               train_sample_max: int = TRAIN_SAMPLE_MAX) -> Any:
    """Build (train + add) an inner-product index from a faiss factory string."""
    import faiss

    n, dim = vectors.shape
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    inner = faiss.downcast_index(index)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efConstruction = int(ef_construction)
    if not index.is_trained:
        try:
            nlist = faiss.extract_index_ivf(index).nlist
        except Exception:
            nlist = 256
        size = min(n, max(64 * nlist, 65_536), train_sample_max)
        rng = np.random.default_rng(seed)
        sample = vectors if size >= n else vectors[np.sort(rng.choice(n, size, replace=False))]
        try:
            faiss.extract_index_ivf(index).cp.seed = seed
        except Exception:
            pass
        index.train(np.ascontiguousarray(sample))
    index.add(vectors)
    set_search_params(index, nprobe=nprobe, ef_search=ef_search)
    return index


def fallback_queries(vectors: np.ndarray, count: int, seed: int = SEED, noise: float = FALLBACK_NOISE) -> np.ndarray:
    """Sampled item vectors + Gaussian noise of norm ~``noise``, re-normalised (recall query fallback)."""
    rng = np.random.default_rng(seed)
    n, dim = vectors.shape
    pick = rng.choice(n, size=min(count, n), replace=False)
    q = vectors[pick] + rng.standard_normal((len(pick), dim), dtype=np.float32) * (noise / math.sqrt(dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(q, dtype=np.float32)


def sample_queries(query_vectors: np.ndarray, dim: int, count: int, seed: int = SEED) -> np.ndarray:
    q = np.asarray(query_vectors, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim or len(q) == 0:
        raise ValueError(f"query_vectors must be a non-empty (m, {dim}) array, got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("query_vectors has non-finite values")
    if len(q) > count:
        q = q[np.sort(np.random.default_rng(seed).choice(len(q), count, replace=False))]
    return np.ascontiguousarray(q)


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (labels; -1 = no result)."""
    hits = 0
    for a, e in zip(approx[:, :k], exact[:, :k]):
        hits += len(np.intersect1d(a[a >= 0], e[e >= 0], assume_unique=True))
    return hits / (k * len(exact)) if len(exact) else 1.0


def timed_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Labels of a batched search and its wall seconds."""
    t = time.perf_counter()
    _, labels = index.search(queries, k)
    return labels, time.perf_counter() - t


def single_query_latency(index: Any, queries: np.ndarray, k: int, count: int = 100) -> float:
    """Median seconds of one-query-at-a-time searches (the serving pattern)."""
    times = []
    for q in queries[:count]:
        t = time.perf_counter()
        index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) if times else 0.0


def exact_index(vectors: np.ndarray) -> Any:
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat


# ---- contract helpers (the export step, tests, benches, demos) -----------------------------------

def write_embeddings(store: Store, cur_date: str, item_ids: list[str], vectors: np.ndarray,
                     model_version: str, **manifest_extra: Any) -> str:
    """Write an ``embeddings/dt=D`` partition in the input contract (atomic; items.parquet + manifest)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    col = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    table = pa.table({"item_id": pa.array(item_ids, pa.string()),
                      "model_version": pa.array([model_version] * n, pa.string()),
                      "vector": col})
    out = embeddings_dir(store, cur_date)
    with store.atomic_output(out) as tmp:
        with store.fs.open_output_stream(f"{tmp}/{ITEMS_FILE}") as f:
            pq.write_table(table, f)
        store.write_json(f"{tmp}/{MANIFEST}", {"step": "export_embeddings", "cur_date": cur_date,
                                               "rows": {"items": n}, "dim": dim,
                                               "model_version": model_version, **manifest_extra})
    return out


def clustered_vectors(n: int, dim: int, clusters: int | None = None, spread: float = 0.7,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, centers)``: ``n`` L2-normalised vectors around ``clusters`` random unit centers.

    Each vector is its center plus Gaussian noise of norm ~``spread``, re-normalised, so nearest
    neighbours are mostly (not only) in the same cluster and ANN recall is meaningful.
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(1, int(round(math.sqrt(n))))
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 1 << 18
    for s in range(0, n, step):
        m = min(step, n - s)
        x = centers[rng.integers(0, clusters, m)]
        x += rng.standard_normal((m, dim), dtype=np.float32) * (spread / math.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + m] = x
    return out, centers


# ---- the step ------------------------------------------------------------------------------------

def build_index(cur_date: str, cfg: Config | None = None, query_vectors: np.ndarray | None = None) -> dict[str, Any]:
    """Build, check and write the item index of ``cur_date``; returns a small summary."""
    import faiss

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    with timer.step("read"):
        emb = read_embeddings(store, cur_date)
    n, dim = emb.n, emb.dim
    kind, factory = choose_factory(n, cfg)
    log.info("dt=%s: %d items x %d dims (model %s) -> %s index %r", cur_date, n, dim, emb.model_version,
             kind, factory)
    with timer.step("build"):
        index = make_index(emb.vectors, factory, nprobe=cfg.index.nprobe, ef_search=cfg.index.hnsw_ef_search,
                           ef_construction=cfg.index.hnsw_ef_construction,
                           train_sample_max=cfg.index.train_sample_max)
    kind = index_kind(index)

    k = min(cfg.index.recall_k, n)
    if query_vectors is not None:
        queries, source = sample_queries(query_vectors, dim, cfg.index.recall_queries), "query_vectors"
    else:
        queries, source = fallback_queries(emb.vectors, cfg.index.recall_queries), "perturbed_items"
    with timer.step("recall"):
        labels, ann_s = timed_search(index, queries, k)
        if kind == "flat":
            truth, exact_s = labels, ann_s  # the index *is* exact search
        else:
            truth, exact_s = timed_search(exact_index(emb.vectors), queries, k)
        recall = recall_at_k(labels, truth, k)
        latency = single_query_latency(index, queries, k)
    query_timing = {
        "queries": len(queries), "k": k,
        "index_qps": round(len(queries) / max(ann_s, 1e-9), 1),
        "exact_qps": round(len(queries) / max(exact_s, 1e-9), 1),
        "index_single_query_ms_p50": round(latency * 1e3, 4),
    }
    summary = {"type": kind, "factory": factory, "n": n, "dim": dim, "model_version": emb.model_version,
               f"recall_at_{k}": round(recall, 4), "recall_k": k, "recall_queries": source,
               "min_recall_at_k": cfg.index.min_recall_at_k}
    if recall < cfg.index.min_recall_at_k:
        raise RecallTooLow(
            f"index for dt={cur_date} ({kind} {factory!r}, {search_params(index)}) has recall@{k} = "
            f"{recall:.4f} on {len(queries)} {source} queries, below index.min_recall_at_k = "
            f"{cfg.index.min_recall_at_k}; nothing was written (raise index.nprobe, pick another "
            f"index.factory, or lower the threshold)")

    out = index_dir(store, cur_date)
    with timer.step("write"), store.atomic_output(out) as tmp:
        blob = faiss.serialize_index(index)
        with store.fs.open_output_stream(f"{tmp}/{INDEX_FILE}") as f:
            f.write(memoryview(blob))
        ids = pa.table({"faiss_id": pa.array(np.arange(n, dtype=np.int64)),
                        "item_id": pa.array(emb.item_ids, pa.string())}, schema=IDS_SCHEMA)
        with store.fs.open_output_stream(f"{tmp}/{IDS_FILE}") as f:
            pq.write_table(ids, f)
        manifest = make_manifest(
            "build_index", cfg, cur_date,
            inputs={"embeddings": emb.path, "embeddings_sha256": emb.sha256,
                    "embeddings_manifest": {k_: emb.manifest.get(k_) for k_ in ("step", "code_version", "config_hash")}},
            rows={"items": n}, timings=timer.timings,
            index={**summary, "recall_at_k": round(recall, 4), "params": search_params(index),
                   "bytes": int(blob.size), "build_s": timer.timings["build"],
                   "query_timing": query_timing})
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    log.info("dt=%s: %s index, recall@%d=%.4f (%s), %.1f index q/s vs %.1f exact q/s -> %s",
             cur_date, kind, k, recall, source, query_timing["index_qps"], query_timing["exact_qps"], out)
    return {"index": out, **summary, "recall_at_k": round(recall, 4), "build_s": timer.timings["build"],
            "seconds": timer.total()}


def read_index_output(store: Store, cur_date: str) -> tuple[dict[str, Any], str, str]:
    """``(manifest, index.faiss path, ids.parquet path)`` of a built index (FileNotFoundError if absent)."""
    out = index_dir(store, cur_date)
    if not store.exists(f"{out}/{MANIFEST}"):
        raise FileNotFoundError(f"no index for {cur_date}: {out}/{MANIFEST} is missing (run dailyrec.ann)")
    return store.read_json(f"{out}/{MANIFEST}"), f"{out}/{INDEX_FILE}", f"{out}/{IDS_FILE}"


def load_query_vectors(path: str) -> np.ndarray:
    """``.npy`` array, or a Parquet file with a ``vector`` fixed_size_list column."""
    if path.endswith(".npy"):
        return np.load(path)
    return vectors_from_column(pq.read_table(path, columns=["vector"]).column("vector"), path)


def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--query-vectors", metavar="FILE",
                   help="query vectors for the recall check (.npy, or Parquet with a 'vector' column); "
                        "default: perturbed item vectors")
    args = p.parse_args()
    q = load_query_vectors(args.query_vectors) if args.query_vectors else None
    cli.run(lambda: build_index(args.cur_date, cli.config_from_args(args), query_vectors=q))


if __name__ == "__main__":
    main()
