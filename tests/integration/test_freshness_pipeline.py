"""Item freshness features through the daily retrieval steps: features (statistics), sample
(per-row columns), two-tower training (statistics stored with the towers), evaluation gate and the
export (vectors of serving day D+1 = the item tower on the catalog's features as of the end of D)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

NAMES = ["item_age_days", "item_clicks_3h", "item_clicks_24h"]


@pytest.mark.slow
def test_freshness_features_train_evaluate_and_export(tmp_path):
    from dailyrec.config import load_config
    from dailyrec.demo.generator import generate
    from dailyrec.freshness import catalog_freshness, day_start_us
    from dailyrec.inputs import feature_arrays
    from dailyrec.storage import open_store
    from models.serving import load_tower
    from tasks.retrieval.evaluate_two_tower import step as evaluate
    from tasks.retrieval.export_embeddings import step as export_embeddings
    from tasks.retrieval.features import step as build_features
    from tasks.retrieval.sample import step as select_samples
    from tasks.retrieval.train_two_tower import step as train_two_tower
    from tests.helpers import validate_day

    base = load_config(environ={}, overrides={
        "storage.data_root": str(tmp_path / "data"), "demo.events_per_day": 20000, "demo.n_users": 500,
        "demo.n_items": 300, "training.epochs": 1, "training.batch_size": 512,
        "evaluation.require_beat_popularity": False, "evaluation.max_drop_vs_previous": 1.0})
    spec = [f.model_dump() for f in base.features.spec] + [
        {"name": n, "side": "item", "kind": "numeric", "dtype": "float", "transform": "log1p",
         "missing_indicator": True} for n in NAMES]
    cfg = base.with_overrides({"features.spec": spec, "sampling.hard_negative_sources": ["model"]}, source="test")
    store = open_store(cfg)
    days = ["2026-11-01", "2026-11-02"]
    generate(cfg, days[0], 2)
    for d in days:
        validate_day(store, d)
        build_features(d, cfg)
        select_samples(d, cfg)  # day 2: model hard negatives from day 1's towers on its freshness
        train_two_tower(d, cfg)
        gate = evaluate(d, cfg)
        assert gate["passed"], gate
    d = days[1]
    train = pq.read_table(f"{store.partition('samples', d)}/train.parquet", columns=NAMES + ["source"])
    assert "model" in train.column("source").to_pylist()
    for n in NAMES:
        assert train.column(n).null_count < train.num_rows
    stats = store.read_json(f"{store.partition('features', d)}/numeric_stats.json")
    tower_cfg = store.read_json(f"{store.partition('models/two_tower', d)}/model/two_tower.json")
    stored = {s["name"]: s for s in tower_cfg["item_specs"]}  # the statistics are stored with the towers
    for n in NAMES:
        assert (stored[n]["mean"], stored[n]["std"]) == (stats[n]["mean"], stats[n]["std"])

    out = export_embeddings(d, cfg)
    emb = pq.read_table(out["embeddings"])
    catalog = pq.read_table(f"{store.partition('features', d)}/catalog.parquet")
    ids = emb.column("item_id").to_pylist()
    assert ids == catalog.column("item_id").to_pylist()
    vecs = np.asarray(emb.column("vector").combine_chunks().flatten()).reshape(len(ids), -1)
    tower = load_tower(f"{store.partition('models/two_tower', d)}/item_tower")
    items = cfg.features.by_side("item")
    end_of_d = catalog_freshness(store, cfg, d, catalog, day_start_us("2026-11-03"))
    np.testing.assert_allclose(vecs, np.asarray(tower(feature_arrays(end_of_d, items))), atol=1e-5)
    start_of_d = catalog_freshness(store, cfg, d, catalog, day_start_us(d))
    assert not np.allclose(vecs, np.asarray(tower(feature_arrays(start_of_d, items))), atol=1e-4), \
        "the exported vectors must depend on the freshness features"
