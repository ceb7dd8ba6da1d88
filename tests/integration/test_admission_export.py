"""The daily consolidation with ``passes.enabled``: the items evicted by the admission shrink leave
the day's model vocabulary and the exported item embeddings (the input of the full Redis version
and of the index). Real generator, DuckDB, TF training and export."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest


@pytest.mark.slow
def test_evicted_items_leave_the_model_and_the_export(tmp_path):
    from dailyrec.config import load_config
    from dailyrec.demo.generator import generate
    from dailyrec.eviction import evicted_ids
    from dailyrec.storage import open_store
    from tasks.retrieval.export_embeddings import step as export_embeddings
    from tasks.retrieval.features import step as build_features
    from tasks.retrieval.sample import step as select_samples
    from tasks.retrieval.train_two_tower import step as train_two_tower
    from tests.helpers import validate_day

    # a long tail of items shown a few times without a click scores below delete_threshold 0.5
    # (nonclk_coeff 0.1: fewer than ~5 unclicked shows) and is evicted by the day's shrink
    cfg = load_config(environ={}, overrides={
        "storage.data_root": str(tmp_path / "data"), "demo.events_per_day": 12000, "demo.n_users": 400,
        "demo.n_items": 300, "training.epochs": 1, "training.batch_size": 512, "passes.enabled": True,
        "admission.delete_threshold": 0.5})
    d = "2026-11-01"
    generate(cfg, d, 1)
    store = open_store(cfg)
    validate_day(store, d)
    feats = build_features(d, cfg)
    gone = evicted_ids(store, d)["item_id"]
    catalog = set(pq.read_table(feats["catalog"], columns=["item_id"]).column(0).to_pylist())
    assert gone and gone <= catalog
    assert store.read_json(f"{feats['path']}/_manifest.json")["admission"]["evicted"]["item_id"] == len(gone)

    select_samples(d, cfg)
    model = train_two_tower(d, cfg)
    vocab = store.read_json(f"{store.partition('models/two_tower', d)}/model/vocabularies.json")
    assert vocab["item_id"] and not gone & set(vocab["item_id"]), model
    out = export_embeddings(d, cfg)
    exported = set(pq.read_table(out["embeddings"], columns=["item_id"]).column(0).to_pylist())
    assert exported == catalog - gone
    man = store.read_json(f"{store.partition('embeddings', d)}/_manifest.json")
    assert man["evicted_items_left_out"] == len(gone) == man["evicted_items"] == out["evicted_items_left_out"]
    assert man["rows"]["items"] == len(catalog) - len(gone)
