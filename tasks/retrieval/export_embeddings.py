"""Export item vectors for the whole catalog of ``cur_date`` from the day's item tower.

    python -m tasks.retrieval.export_embeddings --cur-date 2026-11-02 [--format text]

Every item of ``features/dt=D/catalog.parquet`` (the day's item snapshot, seen in the logs or not)
gets exactly one vector. Output (atomic), ``embeddings/dt=D/`` (the contract of
:mod:`dailyrec.embeddings`): ``items.parquet`` with ``item_id`` (string), ``model_version``
(string) and ``vector`` (fixed-size list of float32, L2-normalised), plus ``_manifest.json``;
``--format text`` also writes ``items.tsv`` with the classic ``item_id<TAB>v1,v2,...`` lines.
"""

from __future__ import annotations

from typing import Any, Literal

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.registry import model_dir
from dailyrec.step import begin


def step(cur_date: str, cfg: Config, format: Literal["parquet", "text"] = "parquet") -> dict[str, Any]:
    """Run the day's item tower over the catalog; write ``embeddings/dt=D/`` (``format="text"``: also TSV)."""
    import numpy as np
    import pyarrow.parquet as pq

    from dailyrec.embeddings import ITEMS_FILE, TEXT_FILE, embeddings_table, text_lines, tower_vectors

    run = begin("export_embeddings", cur_date, cfg)
    store = run.store
    mdir = model_dir(store, "two_tower", run.cur_date)
    catalog_path = run.path("features", "catalog.parquet")
    run.require(f"{mdir}/_manifest.json", hint=f"no trained model: run train_two_tower for {run.cur_date} first")
    run.require(catalog_path, hint=f"run tasks.retrieval.features for {run.cur_date} first")
    version = store.read_json(f"{mdir}/_manifest.json")["model_version"]
    with run.timer.step("read_catalog"):
        catalog = pq.read_table(catalog_path, filesystem=store.fs)
    ids = catalog.column("item_id")
    if ids.null_count or len(set(ids.to_pylist())) != catalog.num_rows:
        raise ValueError(f"{catalog_path}: column 'item_id' has nulls or duplicates")
    with run.timer.step("item_tower"):
        vecs = tower_vectors(f"{mdir}/item_tower", catalog, cfg.features.spec).astype(np.float32)
    n, dim = vecs.shape
    table = embeddings_table(ids, vecs, version)
    out = run.partition("embeddings")
    with store.atomic_output(out) as tmp:
        with run.timer.step("write"):
            pq.write_table(table, f"{tmp}/{ITEMS_FILE}", filesystem=store.fs)
            if format == "text":
                with store.fs.open_output_stream(f"{tmp}/{TEXT_FILE}") as f:
                    for chunk in text_lines(table.column("item_id").to_pylist(), vecs):
                        f.write(chunk)
        total = run.timer.total()
        store.write_json(f"{tmp}/_manifest.json", run.manifest(
            inputs=[mdir, catalog_path], rows={"items": n}, model_version=version, dim=dim, format=format,
            items_per_s=round(n / max(total, 1e-9), 1)))
    run.log.info("exported %d item vectors (dim %d, model %s) to %s", n, dim, version, out)
    return {"embeddings": f"{out}/items.parquet", "items": n, "dim": dim, "model_version": version}


if __name__ == "__main__":
    cli.main(step)
