"""Tower vectors and the item-embeddings partition ``embeddings/dt=D/``.

* :func:`tower_vectors`: an exported tower SavedModel (``models/two_tower/dt=D/{user,item}_tower``)
  applied to an Arrow table of raw features -> ``float32[N, D]`` (L2-normalised by the tower).
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

EMBEDDINGS_DATASET = "embeddings"
ITEMS_FILE = "items.parquet"
TEXT_FILE = "items.tsv"
NORM_TOLERANCE = 1e-3
"""Largest accepted ``| ||v|| - 1 |`` of an exported vector."""


def tower_vectors(tower_dir: str, table: pa.Table, specs: list[Any]) -> np.ndarray:
    """``float32[N, D]``: the tower SavedModel at ``tower_dir`` on the ``N`` rows of ``table``.

    Only the specs the tower takes (its ``feature_names``) are read from ``table``, cast by
    :func:`dailyrec.inputs.feature_arrays` (a missing column raises ``KeyError``).
    """
    from dailyrec.inputs import feature_arrays, predict_in_batches
    from models.serving import load_tower

    tower = load_tower(tower_dir)
    wanted = [s for s in specs if s.name in tower.feature_names]
    return predict_in_batches(tower, feature_arrays(table, wanted, where=tower_dir))


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


def write_embeddings(store: Store, cur_date: str, item_ids: list[str], vectors: np.ndarray,
                     model_version: str, **manifest_extra: Any) -> str:
    """Write an ``embeddings/dt=D`` partition in the contract (atomic; items.parquet + a minimal
    manifest); returns the partition path. For tests, benches and demos: the pipeline's export
    step writes the same table with its full manifest."""
    import pyarrow.parquet as pq

    table = embeddings_table(item_ids, vectors, model_version)
    n, dim = table.num_rows, table.schema.field("vector").type.list_size
    out = embeddings_dir(store, cur_date)
    with store.atomic_output(out) as tmp:
        with store.fs.open_output_stream(f"{tmp}/{ITEMS_FILE}") as f:
            pq.write_table(table, f)
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
