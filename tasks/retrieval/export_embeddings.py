"""Export item vectors for the whole catalog of ``cur_date`` from the day's item tower.

    python -m tasks.retrieval.export_embeddings --cur-date 2026-11-02 [--format text]

Every item of ``features/dt=D/catalog.parquet`` (the day's item snapshot, seen in the logs or not)
gets exactly one vector. Output (atomic), ``embeddings/dt=D/``: ``items.parquet`` with
``item_id`` (string), ``model_version`` (string) and ``vector`` (fixed-size list of float32,
L2-normalised), plus ``_manifest.json``; ``--format text`` also writes ``items.tsv`` with the
classic ``item_id<TAB>v1,v2,...`` lines.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.registry import model_dir
from dailyrec.storage import Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.export_embeddings")


def export_embeddings(cur_date: str, cfg: Config | None = None,
                      fmt: Literal["parquet", "text"] = "parquet") -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.retrieval.evaluate_two_tower import tower_vectors

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    mdir = model_dir(store, "two_tower", cur_date)
    catalog_path = f"{store.partition('features', cur_date)}/catalog.parquet"
    if not store.exists(f"{mdir}/_manifest.json"):
        raise FileNotFoundError(f"no trained model at {mdir}: run train_two_tower for {cur_date} first")
    version = store.read_json(f"{mdir}/_manifest.json")["model_version"]
    with timer.step("read_catalog"):
        catalog = pq.read_table(catalog_path, filesystem=store.fs)
    ids = catalog.column("item_id")
    if ids.null_count or len(set(ids.to_pylist())) != catalog.num_rows:
        raise ValueError(f"{catalog_path}: column 'item_id' has nulls or duplicates")
    with timer.step("item_tower"):
        vecs = tower_vectors(f"{mdir}/item_tower", catalog, cfg.features.spec).astype(np.float32)
    n, dim = vecs.shape
    flat = pa.array(vecs.reshape(-1), pa.float32())
    table = pa.table({"item_id": ids.cast(pa.string()),
                      "model_version": pa.array([version] * n, pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
    out = store.partition("embeddings", cur_date)
    with store.atomic_output(out) as tmp:
        with timer.step("write"):
            pq.write_table(table, f"{tmp}/items.parquet", filesystem=store.fs)
            if fmt == "text":
                with store.fs.open_output_stream(f"{tmp}/items.tsv") as f:
                    for start in range(0, n, 50_000):
                        chunk = vecs[start:start + 50_000]
                        lines = [f"{i}\t" + ",".join(f"{x:.6g}" for x in row)
                                 for i, row in zip(table.column("item_id")[start:start + 50_000].to_pylist(), chunk)]
                        f.write(("\n".join(lines) + "\n").encode())
        total = timer.total()
        store.write_json(f"{tmp}/_manifest.json", make_manifest(
            "export_embeddings", cfg, cur_date, inputs=[mdir, catalog_path], rows={"items": n},
            timings=timer.timings, model_version=version, dim=dim, format=fmt,
            items_per_s=round(n / max(total, 1e-9), 1)))
    log.info("exported %d item vectors (dim %d, model %s) to %s", n, dim, version, out)
    return {"embeddings": f"{out}/items.parquet", "items": n, "dim": dim, "model_version": version}


def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--format", choices=["parquet", "text"], default="parquet")
    args = p.parse_args()
    cli.run(lambda: export_embeddings(args.cur_date, cli.config_from_args(args), args.format))


if __name__ == "__main__":
    main()
