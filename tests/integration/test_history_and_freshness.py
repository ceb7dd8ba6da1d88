"""The user history and the item freshness features together, switched on for day 2 of a model
trained without them on day 1: warm start keeps the embedding rows and re-initialises what the new
inputs widen, the model hard negatives score with day 1's towers (which take neither input), the
gate passes, and the export and the FAISS index are built from the new towers."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

FRESHNESS = ["item_age_days", "item_clicks_24h"]


@pytest.mark.slow
def test_history_and_freshness_switched_on_after_a_plain_day(tmp_path):
    from dailyrec.config import load_config
    from dailyrec.demo.generator import generate
    from dailyrec.history import HISTORY_COLUMN
    from dailyrec.storage import open_store
    from tasks.retrieval.build_index import step as build_index
    from tasks.retrieval.evaluate_two_tower import step as evaluate
    from tasks.retrieval.export_embeddings import step as export_embeddings
    from tasks.retrieval.features import step as build_features
    from tasks.retrieval.sample import step as select_samples
    from tasks.retrieval.train_two_tower import step as train_two_tower
    from tests.helpers import validate_day

    plain = load_config(environ={}, overrides={
        "storage.data_root": str(tmp_path / "data"), "demo.events_per_day": 20000, "demo.n_users": 500,
        "demo.n_items": 300, "training.epochs": 1, "training.batch_size": 512,
        "sampling.hard_negative_sources": ["model"],
        "evaluation.require_beat_popularity": False, "evaluation.max_drop_vs_previous": 1.0})
    spec = [f.model_dump() for f in plain.features.spec] + [
        {"name": n, "side": "item", "kind": "numeric", "dtype": "float", "transform": "log1p",
         "missing_indicator": True} for n in FRESHNESS]
    both = plain.with_overrides({"features.spec": spec, "features.user_history.enabled": True}, source="test")
    store = open_store(plain)
    days = ["2026-11-01", "2026-11-02"]
    generate(plain, days[0], 2)
    for d, cfg in zip(days, (plain, both)):
        validate_day(store, d)
        build_features(d, cfg)
        select_samples(d, cfg)
        train_two_tower(d, cfg)
        gate = evaluate(d, cfg)
        assert gate["passed"], gate

    d = days[1]
    train = pq.read_table(f"{store.partition('samples', d)}/train.parquet")
    assert {HISTORY_COLUMN, *FRESHNESS} <= set(train.column_names)
    assert "model" in train.column("source").to_pylist()  # day 1's towers scored the users without a history
    assert any(len(h) for h in train.column(HISTORY_COLUMN).to_pylist())
    manifest = json.loads((tmp_path / f"data/models/two_tower/dt={d}/_manifest.json").read_text())
    warm = manifest["warm_start"]
    assert warm["from"] == days[0] and warm["stats"]["kept_ids"] > 0, warm
    dense = warm["stats"]["dense"]  # the first hidden layers are wider now: fresh; the rest copied
    assert dense["user_tower"]["skipped"] == ["hidden_0"] and dense["item_tower"]["skipped"] == ["hidden_0"]
    assert "projection" in dense["user_tower"]["copied"] and "projection" in dense["item_tower"]["copied"]
    meta = json.loads((tmp_path / f"data/models/two_tower/dt={d}/model/two_tower.json").read_text())
    assert {s["name"] for s in meta["item_specs"]} >= set(FRESHNESS)
    assert meta["user_history"]["length"] == both.features.user_history.length, meta["user_history"]

    export_embeddings(d, both)
    index = build_index(d, both)
    assert index["recall_at_k"] >= both.index.min_recall_at_k, index
