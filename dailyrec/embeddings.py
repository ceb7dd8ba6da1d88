"""Tower vectors and the item-embeddings partition ``embeddings/dt=D/``.

* :func:`tower_vectors` (defined in :mod:`dailyrec.towers`, importable from here): an exported tower
  SavedModel applied to an Arrow table of raw features -> ``float32[N, D]`` (L2-normalised).
* :func:`export_items`: the export step's pipeline, catalog -> Arrow-side ids -> the item tower's
  ``embed_ids`` endpoint -> ``items.parquet`` row groups written while the tower runs.
* The partition contract (written by the export step, read by the FAISS index and the Redis
  publish)::

    <root>/embeddings/dt=D/items.parquet    item_id: string, model_version: string,
                                            vector: fixed_size_list<float32>[dim] (L2-normalised)
    <root>/embeddings/dt=D/items.tsv        (optional) item_id<TAB>v1,v2,... lines
    <root>/embeddings/dt=D/_manifest.json   (the partition is complete only with it)

  :func:`embeddings_table` builds the table, :func:`write_embeddings` writes a partition (tests,
  benches), :func:`read_embeddings` reads and checks one (``ContractError`` names file and column).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dailyrec.errors import ContractError
from dailyrec.storage import MANIFEST, Store
from dailyrec.towers import (EXPORT_BATCH_ROWS, check_against_serving, encode_ids, guard_rows, id_batches,
                             tower_specs, tower_vectors)  # tower_vectors: callers import it from here too

EMBEDDINGS_DATASET = "embeddings"
ITEMS_FILE = "items.parquet"
TEXT_FILE = "items.tsv"
NORM_TOLERANCE = 1e-3
"""Largest accepted ``| ||v|| - 1 |`` of an exported vector."""


ROW_GROUP_ROWS = 131_072
"""Rows per row group of an exported ``items.parquet`` (a multiple of :data:`EXPORT_BATCH_ROWS`)."""


def export_items(store: Store, path: str, tower_dir: str, catalog_path: str, specs: list[Any],
                 vocabularies_path: str | None, model_version: str, timer: Any,
                 text_path: str | None = None, exclude_items: set[str] | None = None,
                 catalog: pa.Table | None = None) -> tuple[int, int]:
    """Embed every item of the catalog at ``catalog_path`` (``features/dt=D/catalog.parquet``) with
    the item tower SavedModel at ``tower_dir`` and write ``items.parquet`` at ``path`` (the
    partition contract; ``text_path``: also the ``items.tsv`` lines). Returns ``(n, dim)``.

    ``specs``: the item tower's feature specs; only those columns and ``item_id`` are read.
    ``vocabularies_path``: the model's ``vocabularies.json`` (``models/two_tower/dt=D/model/``).
    ``exclude_items``: item ids left out (items evicted by the admission shrink, ``passes.enabled``).
    ``catalog``: the catalog table itself, when the caller added columns (the item freshness
    features of :func:`dailyrec.freshness.catalog_freshness`); ``catalog_path`` then only names it.

    The export step's path, pipelined on two cores: the SavedModel loads in a background thread
    while the catalog is read and its columns are encoded to integer ids on the Arrow side
    (:func:`tower_vectors`'s id path, with its guard against the serving signature); then the tower
    runs in slices of :data:`EXPORT_BATCH_ROWS` rows while a writer thread writes each finished
    :data:`ROW_GROUP_ROWS`-row group (:data:`PARQUET_OPTIONS`). Without the vocabularies file or the
    ``embed_ids`` endpoint (a tower exported before it existed) the raw serving signature runs and
    the table is written at the end. ``timer``: a ``dailyrec.storage.Timer`` (phases
    ``read_catalog``, ``read_vocabularies``, ``encode``, ``load_tower``, ``item_tower``, ``check``,
    ``write``). The same inputs give the same bytes.

    Raises:
        ValueError: ``item_id`` is missing, null or duplicated (naming the file), or no rows.
        KeyError, ContractError: as :func:`tower_vectors`.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    from dailyrec.inputs import feature_arrays, predict_in_batches
    from models.serving import IDS_SIGNATURE, load_tower

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export") as pool:
        loading = pool.submit(load_tower, tower_dir)
        with timer.step("read_catalog"):
            names = list(dict.fromkeys(["item_id", *(s.name for s in specs)]))
            schema = catalog.schema if catalog is not None else pq.read_schema(catalog_path, filesystem=store.fs)
            catalog = catalog.select([c for c in names if c in schema.names]) if catalog is not None else \
                pq.read_table(catalog_path, columns=[c for c in names if c in schema.names], filesystem=store.fs)
            if "item_id" not in catalog.column_names:
                raise ValueError(f"{catalog_path}: column 'item_id' is missing (columns: {schema.names})")
            item_ids = catalog.column("item_id").combine_chunks()
            if item_ids.null_count or not _unique(item_ids):
                raise ValueError(f"{catalog_path}: column 'item_id' has nulls or duplicates")
            if exclude_items:
                import pyarrow.compute as pc

                catalog = catalog.filter(pc.invert(pc.is_in(item_ids, pa.array(sorted(exclude_items), pa.string()))))
                item_ids = catalog.column("item_id").combine_chunks()
        with timer.step("read_vocabularies"):
            vocabularies = store.read_json(vocabularies_path) if (
                vocabularies_path is not None and store.exists(vocabularies_path)) else None
        with timer.step("encode"):
            present = [s for s in specs if s.name in catalog.column_names]  # a missing one: tower_specs
            ids = encode_ids(catalog, present, vocabularies) if vocabularies is not None else None
        with timer.step("load_tower"):
            tower = loading.result()
            wanted = tower_specs(tower, specs, catalog, tower_dir)
        if ids is None or IDS_SIGNATURE not in tower.signatures:
            with timer.step("item_tower"):
                vecs = predict_in_batches(tower, feature_arrays(catalog, wanted, where=tower_dir))
            with timer.step("write"):
                table = embeddings_table(item_ids, vecs, model_version)
                write_items(store, path, table)
                if text_path is not None:
                    _write_text(store, text_path, item_ids, vecs)
            return vecs.shape

        ids = {s.name: ids[s.name] for s in wanted}
        n = catalog.num_rows
        parts: list[np.ndarray] = []  # every slice's vectors, kept for the guard (and the text file)
        pending: list[pa.Table] = []  # slices not yet handed to the writer
        writes = []
        writer: pq.ParquetWriter | None = None
        done = 0  # rows handed to the writer
        try:
            with timer.step("item_tower"):
                for part in id_batches(tower, ids, EXPORT_BATCH_ROWS):
                    start = done + sum(t.num_rows for t in pending)
                    parts.append(part)
                    pending.append(embeddings_table(item_ids.slice(start, len(part)), part, model_version))
                    ready = start + len(part) - done
                    if ready >= ROW_GROUP_ROWS or done + ready == n:
                        group = pa.concat_tables(pending)  # zero-copy: one row group of several chunks
                        if writer is None:
                            writer = pq.ParquetWriter(path, group.schema, filesystem=store.fs, **PARQUET_OPTIONS)
                        writes.append(pool.submit(writer.write_table, group, row_group_size=ready))
                        pending, done = [], done + ready
            with timer.step("check"):
                rows = guard_rows(n)
                got = np.stack([parts[r // EXPORT_BATCH_ROWS][r % EXPORT_BATCH_ROWS] for r in rows])
                check_against_serving(tower, catalog, wanted, rows, got, tower_dir)
            with timer.step("write"):
                for w in writes:
                    w.result()
                if text_path is not None:
                    _write_text(store, text_path, item_ids, np.concatenate(parts))
        finally:
            for w in writes:
                w.cancel()
            if writer is not None:
                pool.submit(writer.close).result()
        return n, int(parts[0].shape[1])


def _unique(values: pa.Array) -> bool:
    """Whether a string array has no duplicates: strictly increasing (the catalog is written sorted
    by ``item_id``: one vectorised comparison) or else one hash pass (``count_distinct``)."""
    import pyarrow.compute as pc

    if len(values) < 2:
        return True
    if pc.all(pc.less(values.slice(0, len(values) - 1), values.slice(1))).as_py():
        return True
    return pc.count_distinct(values).as_py() == len(values)


def _write_text(store: Store, path: str, item_ids: pa.Array, vectors: np.ndarray) -> None:
    with store.fs.open_output_stream(path) as f:
        for chunk in text_lines(item_ids.to_pylist(), vectors):
            f.write(chunk)


@dataclass
class Embeddings:
    """A read ``embeddings/dt=D`` partition: ``vectors`` is ``float32[n, dim]``, C-contiguous."""

    item_ids: list[str]
    model_version: str
    vectors: np.ndarray
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


def vectors_from_column(col: pa.ChunkedArray | pa.Array, where: str) -> np.ndarray:
    """A ``fixed_size_list<float32>[dim]`` column as a ``float32[n, dim]`` array (no copy if possible).

    Raises:
        ContractError: another type, or a null vector (names ``where``).
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pa.types.is_fixed_size_list(col.type) or col.type.value_type != pa.float32():
        raise ContractError(f"{where}: column 'vector' must be fixed_size_list<float32>[dim], found {col.type}")
    if col.null_count:
        raise ContractError(f"{where}: column 'vector' has {col.null_count} null vector(s)")
    dim = col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(col), dim), dtype=np.float32)


def embeddings_table(item_ids: pa.Array | list[str], vectors: np.ndarray, model_version: str) -> pa.Table:
    """The ``items.parquet`` table: ``item_id`` (string), ``model_version``, ``vector`` (``float32[n, dim]``)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    ids = item_ids.cast(pa.string()) if isinstance(item_ids, (pa.Array, pa.ChunkedArray)) else pa.array(item_ids, pa.string())
    return pa.table({"item_id": ids,
                     "model_version": pa.array([model_version] * n, pa.string()),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)})


def text_lines(item_ids: list[str], vectors: np.ndarray, chunk: int = 50_000) -> Iterator[bytes]:
    """The ``items.tsv`` content (``item_id<TAB>v1,v2,...`` per item, ``%.6g``) in chunks of lines."""
    for start in range(0, len(item_ids), chunk):
        lines = [f"{i}\t" + ",".join(f"{x:.6g}" for x in row)
                 for i, row in zip(item_ids[start:start + chunk], vectors[start:start + chunk])]
        yield ("\n".join(lines) + "\n").encode()


PARQUET_OPTIONS: dict[str, Any] = {
    # unit-norm float32 vectors do not compress (snappy saved 4%, for 40% of the write time), nor
    # do their min/max statistics or a dictionary help a reader; the ids and the version keep them
    "compression": {"item_id": "snappy", "model_version": "snappy", "vector.list.element": "none"},
    "use_dictionary": ["model_version"],
    "write_statistics": ["item_id", "model_version"],
}
"""How ``items.parquet`` is written (:func:`write_items`)."""


def write_items(store: Store, path: str, table: pa.Table) -> None:
    """Write an :func:`embeddings_table` to ``path`` (``items.parquet``) with :data:`PARQUET_OPTIONS`
    (the same table gives the same bytes)."""
    import pyarrow.parquet as pq

    pq.write_table(table, path, filesystem=store.fs, **PARQUET_OPTIONS)


def write_embeddings(store: Store, cur_date: str, item_ids: list[str], vectors: np.ndarray,
                     model_version: str, **manifest_extra: Any) -> str:
    """Write an ``embeddings/dt=D`` partition in the contract (atomic; items.parquet + a minimal
    manifest); returns the partition path. For tests, benches and demos: the pipeline's export
    step writes the same table with its full manifest."""
    table = embeddings_table(item_ids, vectors, model_version)
    n, dim = table.num_rows, table.schema.field("vector").type.list_size
    out = embeddings_dir(store, cur_date)
    with store.atomic_output(out) as tmp:
        write_items(store, f"{tmp}/{ITEMS_FILE}", table)
        store.write_json(f"{tmp}/{MANIFEST}", {"step": "export_embeddings", "cur_date": cur_date,
                                               "rows": {"items": n}, "dim": dim,
                                               "model_version": model_version, **manifest_extra})
    return out


def _check_columns(table: pa.Table, path: str) -> None:
    for col in ("item_id", "model_version"):
        if col not in table.column_names:
            raise ContractError(f"{path}: missing column '{col}' (found {table.column_names})")
        t = table.schema.field(col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise ContractError(f"{path}: column '{col}' must be string, found {t}")
        if table.column(col).null_count:
            raise ContractError(f"{path}: column '{col}' has {table.column(col).null_count} null(s)")
    if "vector" not in table.column_names:
        raise ContractError(f"{path}: missing column 'vector' (found {table.column_names})")
    if table.num_rows == 0:
        raise ContractError(f"{path}: no items")


def _check_rows(table: pa.Table, vectors: np.ndarray, item_ids: list[str], path: str) -> None:
    import pyarrow.compute as pc

    if pc.count_distinct(table.column("item_id")).as_py() != table.num_rows:
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


def read_embeddings(store: Store, cur_date: str, with_sha: bool = True) -> Embeddings:
    """Read and check the exported item embeddings of ``cur_date``.

    Raises:
        FileNotFoundError: no ``items.parquet`` or no ``_manifest.json`` (an incomplete export).
        ContractError: a missing/mistyped/null column, no rows, several model versions, duplicated
            ids, non-finite or non-normalised vectors; the message names file, column and item.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    part = embeddings_dir(store, cur_date)
    path = f"{part}/{ITEMS_FILE}"
    if not store.exists(path):
        raise FileNotFoundError(f"no item embeddings for {cur_date}: {path} is missing (run the export step)")
    if not store.exists(f"{part}/{MANIFEST}"):
        raise FileNotFoundError(f"{part} has no {MANIFEST}: the embedding export of {cur_date} is incomplete")
    with store.fs.open_input_file(path) as f:
        table = pq.read_table(f, columns=None)
    _check_columns(table, path)
    vectors = vectors_from_column(table.column("vector"), path)
    versions = pc.unique(table.column("model_version")).to_pylist()
    if len(versions) != 1:
        raise ContractError(f"{path}: column 'model_version' must hold one value, found {sorted(versions)[:5]}")
    item_ids = table.column("item_id").to_pylist()
    _check_rows(table, vectors, item_ids, path)
    return Embeddings(item_ids=item_ids, model_version=str(versions[0]), vectors=vectors, path=path,
                      sha256=store.sha256(path) if with_sha else "",
                      manifest=store.read_json(f"{part}/{MANIFEST}"),
                      item_ids_arrow=table.column("item_id").combine_chunks())
