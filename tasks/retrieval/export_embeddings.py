"""Export item vectors for the whole catalog of ``cur_date`` from the day's item tower.

    python -m tasks.retrieval.export_embeddings --cur-date 2026-11-02 [--format text]

Every item of ``features/dt=D/catalog.parquet`` (the day's item snapshot, seen in the logs or not)
gets exactly one vector: its columns are encoded to embedding-table ids on the Arrow side with the
model's vocabularies and the item tower SavedModel's ``embed_ids`` endpoint runs on them, pipelined
with the Parquet write (``dailyrec.embeddings.export_items``). Output (atomic), ``embeddings/dt=D/`` (the contract of
:mod:`dailyrec.embeddings`): ``items.parquet`` with ``item_id`` (string), ``model_version``
(string) and ``vector`` (fixed-size list of float32, L2-normalised), plus ``_manifest.json``;
Item freshness features (:mod:`dailyrec.freshness`) are computed as of the end of ``D``.
``--format text`` also writes ``items.tsv`` with the classic ``item_id<TAB>v1,v2,...`` lines.
With ``passes.enabled`` the items evicted by the admission shrink (``admission/dt=D/evicted.parquet``,
written by the features step) are left out, so they leave the full Redis version and the index.
"""

from __future__ import annotations

from typing import Any, Literal

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.registry import model_dir
from dailyrec.step import begin


def step(cur_date: str, cfg: Config, format: Literal["parquet", "text"] = "parquet") -> dict[str, Any]:
    """Run the day's item tower over the catalog; write ``embeddings/dt=D/`` (``format="text"``: also TSV)."""
    from dailyrec.embeddings import ITEMS_FILE, TEXT_FILE, export_items
    from dailyrec.freshness import catalog_freshness, day_start_us, freshness_names, next_day
    from models.two_tower import VOCAB_FILE

    run = begin("export_embeddings", cur_date, cfg)
    store = run.store
    mdir = model_dir(store, "two_tower", run.cur_date)
    catalog_path = run.path("features", "catalog.parquet")
    run.require(f"{mdir}/_manifest.json", hint=f"no trained model: run train_two_tower for {run.cur_date} first")
    run.require(catalog_path, hint=f"run tasks.retrieval.features for {run.cur_date} first")
    version = store.read_json(f"{mdir}/_manifest.json")["model_version"]
    evicted: set[str] | None = None
    if cfg.passes.enabled:  # the consolidation of the hourly passes: evicted items leave the full version
        from dailyrec.eviction import EVICTED_FILE, evicted_ids

        run.require(run.path("admission", EVICTED_FILE),
                    hint=f"passes.enabled: run tasks.retrieval.features for {run.cur_date} (it runs the shrink)")
        evicted = evicted_ids(store, run.cur_date).get("item_id", set())
    catalog = None
    if freshness_names(cfg):  # item freshness features as of the end of D (serving D+1): dailyrec.freshness
        import pyarrow.parquet as pq

        with run.timer.step("freshness"):
            with store.fs.open_input_file(catalog_path) as fh:
                catalog = catalog_freshness(store, cfg, run.cur_date, pq.read_table(fh),
                                            day_start_us(next_day(run.cur_date)))
    out = run.partition("embeddings")
    with store.atomic_output(out) as tmp:
        n, dim = export_items(store, f"{tmp}/{ITEMS_FILE}", f"{mdir}/item_tower", catalog_path,
                              cfg.features.by_side("item"), f"{mdir}/model/{VOCAB_FILE}", version, run.timer,
                              text_path=f"{tmp}/{TEXT_FILE}" if format == "text" else None, exclude_items=evicted,
                              catalog=catalog)
        total = run.timer.total()
        extra = {} if evicted is None else {
            "evicted_items_left_out": _catalog_rows(store, catalog_path) - n, "evicted_items": len(evicted)}
        store.write_json(f"{tmp}/_manifest.json", run.manifest(
            inputs=[mdir, catalog_path], rows={"items": n}, model_version=version, dim=dim, format=format,
            items_per_s=round(n / max(total, 1e-9), 1), **extra))
    run.log.info("exported %d item vectors (dim %d, model %s) to %s", n, dim, version, out)
    return {"embeddings": f"{out}/items.parquet", "items": n, "dim": dim, "model_version": version, **extra}


def _catalog_rows(store: Any, path: str) -> int:
    import pyarrow.parquet as pq

    with store.fs.open_input_file(path) as fh:
        return pq.ParquetFile(fh).metadata.num_rows


if __name__ == "__main__":
    cli.main(step)
