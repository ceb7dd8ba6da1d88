"""The delta of a pass: the item vectors a pass changed, for an incremental publish (docs/hourly.md).

After pass ``(D, HH)`` the delta holds, for the items the pass **touched**:

* ``upsert`` rows: the items impressed in the pass's hours (``pass_samples/.../touched_items.parquet``)
  and the item ids newly admitted by it (``admission.json``'s ``newly_admitted``), each with its vector from the pass's
  item tower (:func:`dailyrec.embeddings.tower_vectors` on the item's row of the pass catalog:
  L2-normalised ``float32[dim]``); items outside the catalog have no row to embed and are left out
  (counted);
* ``delete`` rows: the item ids the admission summary lists as evicted (a zero vector).

When ``dailyrec.admission.delta_ids`` is available the upserts are filtered by it
(``admission.delta_threshold`` / ``delta_keep_days`` on the pass's admission state). Untouched items
keep their published vectors (the streaming design's documented staleness: only changed rows ship).

Contract of ``deltas/two_tower/dt=D/hour=HH/``::

    delta.parquet     item_id: string, op: string (upsert | delete),
                      vector: fixed_size_list<float32>[dim]; upserts sorted by item_id, then deletes
    _manifest.json    model_version, pass_dir, user_tower (path), counts {upsert, delete}, dim, ...
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec.embeddings import embeddings_table, tower_vectors
from dailyrec.storage import Store

log = logging.getLogger("dailyrec.deltas")

DELTA_FILE = "delta.parquet"
OPS = ("upsert", "delete")
DELTA_SCHEMA_FIELDS = ("item_id", "op", "vector")


def _admission_filter(store: Store, cfg: Any, cur_date: str, state_path: str | None) -> set[str] | None:
    """Item ids allowed in a delta (``dailyrec.admission.delta_ids``), or None when admission or its
    state is not available (no filter)."""
    try:
        from dailyrec import admission
    except ImportError:
        return None
    if not hasattr(admission, "delta_ids") or not state_path or not store.exists(state_path):
        return None
    with store.fs.open_input_file(state_path) as fh:
        state = pq.read_table(fh)
    return set(admission.delta_ids(state, cfg, cur_date).get("item_id", set()))


def delta_rows(store: Store, cfg: Any, cur_date: str, samples_dir: str) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(upsert ids, delete ids, counts)`` of the pass whose samples are in ``samples_dir``: touched =
    impressed ∪ admitted (catalog items only), minus evicted, filtered by ``delta_ids``; both sorted."""
    touched = pq.read_table(f"{samples_dir}/touched_items.parquet", filesystem=store.fs)
    catalog_ids = pq.read_table(f"{samples_dir}/catalog.parquet", columns=["item_id"], filesystem=store.fs)
    summary = store.read_json(f"{samples_dir}/admission.json")
    in_cat = set(catalog_ids.column("item_id").to_pylist())
    impressed = set(touched.column("item_id").to_pylist())
    newly = summary.get("newly_admitted", summary.get("admitted")) or {}  # admitted by this pass
    admitted = set(newly.get("item_id", []))
    evicted = set((summary.get("evicted") or {}).get("item_id", []))
    wanted = (impressed | admitted) - evicted
    upserts = wanted & in_cat
    allowed = _admission_filter(store, cfg, cur_date, summary.get("state"))
    filtered = 0
    if allowed is not None:
        filtered = len(upserts - allowed)
        upserts &= allowed
    counts = {"impressed": len(impressed), "admitted": len(admitted), "evicted": len(evicted),
              "outside_catalog": len(wanted - in_cat), "filtered_by_delta_ids": filtered,
              "delta_ids_filter": allowed is not None}
    return sorted(upserts), sorted(evicted), counts


def delta_table(item_tower: str, catalog: pa.Table, specs: list[Any], vocabularies: dict[str, list[str]] | None,
                upserts: list[str], deletes: list[str], dim: int) -> pa.Table:
    """The delta rows: each upsert's vector from ``item_tower`` on its catalog row, then the deletes
    (zero vectors). ``float32[dim]`` vectors, L2-normalised for upserts."""
    if upserts:
        rows = catalog.filter(pc.is_in(catalog.column("item_id"), value_set=pa.array(upserts, pa.string())))
        rows = rows.take(pc.sort_indices(rows, [("item_id", "ascending")]))
        vecs = tower_vectors(item_tower, rows, specs, vocabularies)
        ids = rows.column("item_id").to_pylist()
    else:
        vecs, ids = np.zeros((0, dim), np.float32), []
    vecs = np.concatenate([vecs.astype(np.float32), np.zeros((len(deletes), dim), np.float32)])
    vector = embeddings_table(ids + list(deletes), vecs, "").column("vector")
    return pa.table({"item_id": pa.array(ids + list(deletes), pa.string()),
                     "op": pa.array(["upsert"] * len(ids) + ["delete"] * len(deletes), pa.string()),
                     "vector": vector})


def tower_dim(pass_dir: str, store: Store) -> int:
    """The output dimension of a pass model: its manifest's ``output_dim`` (or ``model/two_tower.json``)."""
    manifest = store.read_json(f"{pass_dir}/_manifest.json")
    if "output_dim" in manifest:
        return int(manifest["output_dim"])
    return int(store.read_json(f"{pass_dir}/model/two_tower.json")["output_dim"])
