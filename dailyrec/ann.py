"""The FAISS item index: which index for a catalog, building it, recall@K against exact search,
and the ``index/dt=D/`` partition with its manifest.

The stage is ``tasks.retrieval.build_index`` (``python -m tasks.retrieval.build_index --cur-date D``):
it passes the day's user-tower vectors of the active users as recall queries to :func:`build_index`.

Input: ``embeddings/dt=D/`` (:mod:`dailyrec.embeddings`). Output, written atomically (all three
files or nothing)::

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
``query_vectors`` when given (the stage passes user-tower vectors), otherwise the documented
fallback: sampled item vectors plus Gaussian noise of norm ~``FALLBACK_NOISE``, re-normalised
(an item itself would be its own nearest neighbour and flatter the index). Below
``index.min_recall_at_k`` the build raises :class:`RecallTooLow` and writes nothing.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pyarrow as pa

from dailyrec.config import Config, ConfigError
from dailyrec.embeddings import Embeddings, read_embeddings
from dailyrec.errors import RecallTooLow
from dailyrec.storage import MANIFEST, Store

log = logging.getLogger("dailyrec.build_index")

INDEX_DATASET = "index"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"

# Defaults of make_index() when called without a config (benchmarks); the pipeline passes
# index.hnsw_ef_search, index.hnsw_ef_construction and index.train_sample_max.
FALLBACK_NOISE = 0.3
HNSW_EF_SEARCH = 256
HNSW_EF_CONSTRUCTION = 80
TRAIN_SAMPLE_MAX = 200_000
SEED = 1234

IDS_SCHEMA = pa.schema([pa.field("faiss_id", pa.int64(), nullable=False),
                        pa.field("item_id", pa.string(), nullable=False)])


def index_dir(store: Store, cur_date: str) -> str:
    return store.partition(INDEX_DATASET, cur_date)


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


def new_index(factory: str, n: int, dim: int, train_sample_max: int = TRAIN_SAMPLE_MAX) -> tuple[Any, int]:
    """An empty inner-product index of faiss ``factory`` and how many of the ``n`` vectors train it
    (``min(n, max(64 * nlist, 65536), train_sample_max)``), checked before any training: a factory
    faiss refuses, or an IVF with more lists than training vectors, is a ``ConfigError`` naming the
    factory, nlist and the item count."""
    import faiss

    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"index.factory {factory!r} is not a faiss index for {dim}-dim vectors: "
                          f"{str(exc).strip().rsplit('Error: ', 1)[-1]}") from None
    nlist = int(faiss.extract_index_ivf(index).nlist) if index_kind(index) == "ivf" else 0
    size = min(n, max(64 * (nlist or 256), 65_536), train_sample_max)
    if nlist > size:
        raise ConfigError(f"index.factory {factory!r} has nlist={nlist:,} lists but the catalog has {n:,} items "
                          f"({size:,} training vectors, index.train_sample_max={train_sample_max:,}): k-means needs "
                          f"a vector per list, faiss advises 39; use at most IVF{max(1, n // 39)}, auto or Flat")
    return index, size


def make_index(vectors: np.ndarray, factory: str, nprobe: int = 16, ef_search: int = HNSW_EF_SEARCH,
               ef_construction: int = HNSW_EF_CONSTRUCTION, seed: int = SEED,
               train_sample_max: int = TRAIN_SAMPLE_MAX) -> Any:
    """Build (train + add) an inner-product index from a faiss factory string."""
    import faiss

    n, dim = vectors.shape
    index, size = new_index(factory, n, dim, train_sample_max)
    inner = faiss.downcast_index(index)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efConstruction = int(ef_construction)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors if size >= n else vectors[np.sort(rng.choice(n, size, replace=False))]
        if index_kind(index) == "ivf":
            faiss.extract_index_ivf(index).cp.seed = seed
        try:
            index.train(np.ascontiguousarray(sample))
        except RuntimeError as exc:  # e.g. PQ codebooks needing more vectors than the catalog has
            raise ConfigError(f"index.factory {factory!r} cannot be trained on {size:,} vectors of the catalog's "
                              f"{n:,} items: {str(exc).strip().rsplit('Error: ', 1)[-1]}") from None
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


# ---- synthetic vectors (tests, benches) ----------------------------------------------------------

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


# ---- the index partition -------------------------------------------------------------------------

def _recall_check(index: Any, emb: Embeddings, cfg: Config, query_vectors: np.ndarray | None
                  ) -> tuple[float, int, str, dict[str, Any]]:
    """``(recall@k, k, query source, query timings)`` of ``index`` against exact search."""
    n, dim = emb.n, emb.dim
    k = min(cfg.index.recall_k, n)
    if query_vectors is not None:
        queries, source = sample_queries(query_vectors, dim, cfg.index.recall_queries), "query_vectors"
    else:
        queries, source = fallback_queries(emb.vectors, cfg.index.recall_queries), "perturbed_items"
    labels, ann_s = timed_search(index, queries, k)
    if index_kind(index) == "flat":
        truth, exact_s = labels, ann_s  # the index *is* exact search
    else:
        truth, exact_s = timed_search(exact_index(emb.vectors), queries, k)
    recall = recall_at_k(labels, truth, k)
    latency = single_query_latency(index, queries, k)
    timing = {
        "queries": len(queries), "k": k,
        "index_qps": round(len(queries) / max(ann_s, 1e-9), 1),
        "exact_qps": round(len(queries) / max(exact_s, 1e-9), 1),
        "index_single_query_ms_p50": round(latency * 1e3, 4),
    }
    return recall, k, source, timing


def _write_index(run: Any, index: Any, emb: Embeddings, summary: dict[str, Any], query_timing: dict[str, Any]
                 ) -> str:
    """Write ``index.faiss``, ``ids.parquet`` and the manifest atomically; returns the partition."""
    import faiss
    import pyarrow.parquet as pq

    store, timer = run.store, run.timer
    out = index_dir(store, run.cur_date)
    with timer.step("write"), store.atomic_output(out) as tmp:
        blob = faiss.serialize_index(index)
        with store.fs.open_output_stream(f"{tmp}/{INDEX_FILE}") as f:
            f.write(memoryview(blob))
        ids = pa.table({"faiss_id": pa.array(np.arange(emb.n, dtype=np.int64)),
                        "item_id": pa.array(emb.item_ids, pa.string())}, schema=IDS_SCHEMA)
        with store.fs.open_output_stream(f"{tmp}/{IDS_FILE}") as f:
            pq.write_table(ids, f)
        manifest = run.manifest(
            inputs={"embeddings": emb.path, "embeddings_sha256": emb.sha256,
                    "embeddings_manifest": {k_: emb.manifest.get(k_) for k_ in ("step", "code_version", "config_hash")}},
            rows={"items": emb.n},
            index={**summary, "params": search_params(index), "bytes": int(blob.size),
                   "build_s": timer.timings["build"], "query_timing": query_timing})
        store.write_json(f"{tmp}/{MANIFEST}", manifest)
    return out


MAX_QUERY_USERS = 5000
"""Active users whose vectors are the recall queries (``index.recall_queries`` of them are sampled)."""


def user_query_vectors(run: Any) -> np.ndarray | None:
    """The recall queries serving will search with: the day's user tower
    (``models/two_tower/dt=D/user_tower``) on the latest context of up to :data:`MAX_QUERY_USERS`
    users active in the window (the first by ``user_id``): ``float32[m, dim]``, or ``None`` (with a
    warning) when no user is active or the day has no complete log hour."""
    from dailyrec.embeddings import tower_vectors
    from dailyrec.events import active_user_rows
    from dailyrec.history import rows_with_history
    from dailyrec.registry import model_dir
    try:
        rows = active_user_rows(run.store, run.cfg, run.cur_date)
    except FileNotFoundError as exc:
        log.warning("no active users (%s): recall is measured on perturbed item vectors", exc)
        return None
    if not rows.num_rows:
        log.warning("no active user on %s: recall is measured on perturbed item vectors", run.cur_date)
        return None
    rows = rows_with_history(rows.slice(0, MAX_QUERY_USERS), run.store, run.cfg, run.cur_date)
    return tower_vectors(f"{model_dir(run.store, 'two_tower', run.cur_date)}/user_tower", rows, run.cfg.features.spec)


def build_index(run: Any, cfg: Config | None = None, query_vectors: np.ndarray | None = None) -> dict[str, Any]:
    """Build, check and write the item index of a run; returns a small summary.

    Args:
        run: the step's :class:`dailyrec.step.StepRun`, or a ``cur_date`` (a run begun with ``cfg``).
        query_vectors: ``float[m, dim]`` user vectors; ``None``: :func:`user_query_vectors` (or perturbed items).
    Raises:
        FileNotFoundError, ContractError: the embeddings (:func:`dailyrec.embeddings.read_embeddings`).
        ValueError: ``query_vectors`` of the wrong shape or with non-finite values.
        RecallTooLow: recall@K below ``index.min_recall_at_k`` (nothing is written).
    """
    from dailyrec.popularity_prior import augment_queries, index_embeddings
    from dailyrec.step import begin

    run = begin("build_index", run, cfg) if isinstance(run, str) else run
    cfg, cur_date = run.cfg, run.cur_date
    with run.timer.step("read"):  # with serving.popularity_beta: [v, beta log q] (dailyrec.popularity_prior)
        emb, prior = index_embeddings(run.store, cfg, cur_date, read_embeddings(run.store, cur_date))
    if query_vectors is None:
        with run.timer.step("queries"):
            query_vectors = user_query_vectors(run)
    if prior["beta"] and query_vectors is not None:
        query_vectors = augment_queries(query_vectors, emb.dim)
    kind, factory = choose_factory(emb.n, cfg)
    log.info("dt=%s: %d items x %d dims (model %s) -> %s index %r", cur_date, emb.n, emb.dim, emb.model_version,
             kind, factory)
    with run.timer.step("build"):
        index = make_index(emb.vectors, factory, nprobe=cfg.index.nprobe, ef_search=cfg.index.hnsw_ef_search,
                           ef_construction=cfg.index.hnsw_ef_construction,
                           train_sample_max=cfg.index.train_sample_max)
    kind = index_kind(index)
    with run.timer.step("recall"):
        recall, k, source, query_timing = _recall_check(index, emb, cfg, query_vectors)
    summary = {"type": kind, "factory": factory, "n": emb.n, "dim": emb.dim, "model_version": emb.model_version,
               f"recall_at_{k}": round(recall, 4), "recall_k": k, "recall_queries": source,
               "min_recall_at_k": cfg.index.min_recall_at_k, "popularity_prior": prior}
    if recall < cfg.index.min_recall_at_k:
        raise RecallTooLow(
            f"index for dt={cur_date} ({kind} {factory!r}, {search_params(index)}) has recall@{k} = "
            f"{recall:.4f} on {query_timing['queries']} {source} queries, below index.min_recall_at_k = "
            f"{cfg.index.min_recall_at_k}; nothing was written (raise index.nprobe, pick another "
            f"index.factory, or lower the threshold)")
    summary["recall_at_k"] = round(recall, 4)
    out = _write_index(run, index, emb, summary, query_timing)
    log.info("dt=%s: %s index, recall@%d=%.4f (%s), %.1f index q/s vs %.1f exact q/s -> %s",
             cur_date, kind, k, recall, source, query_timing["index_qps"], query_timing["exact_qps"], out)
    return {"index": out, **summary, "build_s": run.timer.timings["build"], "seconds": run.timer.total()}


def read_index_output(store: Store, cur_date: str) -> tuple[dict[str, Any], str, str]:
    """``(manifest, index.faiss path, ids.parquet path)`` of a built index (FileNotFoundError if absent)."""
    out = index_dir(store, cur_date)
    if not store.exists(f"{out}/{MANIFEST}"):
        raise FileNotFoundError(f"no index for {cur_date}: {out}/{MANIFEST} is missing "
                                f"(run tasks.retrieval.build_index)")
    return store.read_json(f"{out}/{MANIFEST}"), f"{out}/{INDEX_FILE}", f"{out}/{IDS_FILE}"
