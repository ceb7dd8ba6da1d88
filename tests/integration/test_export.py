"""Item embedding export: every catalog item exactly once, equal to the item tower's output."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest


@pytest.mark.slow
def test_export_covers_the_catalog_and_matches_the_tower(tmp_path):
    from dailyrec.config import load_config
    from dailyrec.storage import open_store
    from models.serving import load_tower
    from tasks.retrieval.export_embeddings import step as export_embeddings
    from tasks.retrieval.features import step as build_features
    from dailyrec.demo.generator import generate
    from tasks.retrieval.sample import step as select_samples
    from dailyrec.inputs import feature_arrays
    from tasks.retrieval.train_two_tower import step as train_two_tower
    from tests.helpers import validate_day

    cfg = load_config(environ={}, overrides={
        "storage.data_root": str(tmp_path / "data"), "demo.events_per_day": 20000, "demo.n_users": 500,
        "demo.n_items": 300, "training.epochs": 1, "training.batch_size": 512})
    d = "2026-11-01"
    generate(cfg, d, 1)
    validate_day(open_store(cfg), d)
    build_features(d, cfg)
    select_samples(d, cfg)
    train_two_tower(d, cfg)
    out = export_embeddings(d, cfg, format="text")

    store = open_store(cfg)
    catalog = pq.read_table(f"{store.partition('features', d)}/catalog.parquet")
    items = pq.read_table(f"{store.partition('items', d)}/part-00000.parquet")
    emb = pq.read_table(out["embeddings"])
    ids = emb.column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) == catalog.num_rows == out["items"]
    assert set(ids) == set(items.column("item_id").to_pylist())   # the whole snapshot, seen in logs or not
    vecs = np.asarray(emb.column("vector").combine_chunks().flatten()).reshape(len(ids), -1)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert len(set(emb.column("model_version").to_pylist())) == 1

    tower = load_tower(f"{store.partition('models/two_tower', d)}/item_tower")
    by_id = {i: k for k, i in enumerate(catalog.column("item_id").to_pylist())}
    order = [by_id[i] for i in ids]
    expected = tower(feature_arrays(catalog.take(order), cfg.features.by_side("item")))
    np.testing.assert_allclose(vecs, expected, atol=1e-6)

    tsv = (store.local_path(store.partition("embeddings", d)) / "items.tsv").read_text().splitlines()
    assert len(tsv) == len(ids)
    first_id, first_vec = tsv[0].split("\t")
    assert first_id == ids[0]
    np.testing.assert_allclose(np.array(first_vec.split(","), dtype=np.float32), vecs[0], atol=1e-5)
