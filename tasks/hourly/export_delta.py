"""The delta of one pass (hourly_training's ``export_delta``): vectors of the items the pass touched.

    python -m tasks.hourly.export_delta --cur-date 2026-11-02 --hour 5

Items touched by the pass (impressed in its hours, newly admitted: ``upsert`` with the pass's item
tower vector; evicted: ``delete``), filtered by ``dailyrec.admission.delta_ids`` when available
(:mod:`dailyrec.deltas`). Inputs: ``pass_samples/dt=D/hour=HH/`` and the pass model
``passes/two_tower/dt=D/hour=HH/``. Output (atomic), ``deltas/two_tower/dt=D/hour=HH/``:
``delta.parquet`` (``item_id``, ``op``, ``vector``) and ``_manifest.json`` (``model_version``,
``pass_dir``, ``user_tower``, ``counts`` {upsert, delete}, ``dim``), which the delta publish
(``hourly.publish_delta``) loads into Redis.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin

NAME = "two_tower"


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Write the delta of the pass holding ``hour``; returns its path and counts."""
    import pyarrow.parquet as pq

    from dailyrec.deltas import DELTA_FILE, delta_rows, delta_table, tower_dim
    from dailyrec.passes import pass_dir, pass_label, pass_start

    run = begin("export_delta", cur_date, cfg)
    store, start = run.store, pass_start(cfg, hour)
    label = pass_label(run.cur_date, start)
    sdir, pdir = run.partition("pass_samples", start), pass_dir(store, NAME, run.cur_date, start)
    run.require(f"{sdir}/_manifest.json",
                hint=f"run tasks.hourly.pass_samples --cur-date {run.cur_date} --hour {start}")
    run.require(f"{pdir}/_manifest.json", hint=f"run tasks.hourly.train_pass --cur-date {run.cur_date} --hour {start}")
    version = store.read_json(f"{pdir}/_manifest.json")["model_version"]
    with run.timer.step("ids"):
        upserts, deletes, counts = delta_rows(store, cfg, run.cur_date, sdir)
        catalog = pq.read_table(f"{sdir}/catalog.parquet", filesystem=store.fs)
        vocabs = store.read_json(f"{pdir}/vocabularies.json")
        dim = tower_dim(pdir, store)
    with run.timer.step("item_tower"):
        table = delta_table(f"{pdir}/item_tower", catalog, cfg.features.spec, vocabs, upserts, deletes, dim)
    n = {"upsert": len(upserts), "delete": len(deletes)}
    out = run.partition(f"deltas/{NAME}", start)
    with run.timer.step("write"), store.atomic_output(out) as tmp:
        pq.write_table(table, f"{tmp}/{DELTA_FILE}", filesystem=store.fs, compression="zstd")
        store.write_json(f"{tmp}/_manifest.json", run.manifest(
            inputs=[sdir, pdir], rows={"delta": table.num_rows, **n}, model_version=version, pass_dir=pdir,
            user_tower=f"{pdir}/user_tower", item_tower=f"{pdir}/item_tower", counts=n, dim=dim, pass_label=label,
            hour=start, touched=counts, catalog_items=catalog.num_rows))
    run.log.info("delta of pass %s (model %s): %d upserts, %d deletes of %d catalog items -> %s", label, version,
                 n["upsert"], n["delete"], catalog.num_rows, out)
    return {"delta": f"{out}/{DELTA_FILE}", "manifest": f"{out}/_manifest.json", "model_version": version,
            "counts": n, "dim": dim, "pass": label}


if __name__ == "__main__":
    cli.main(step)
