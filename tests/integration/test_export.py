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


def _small_item_tower():
    import keras

    from dailyrec.config import FeatureSpec
    from models.two_tower import ItemTower

    specs = [FeatureSpec(name="item_id", side="item", kind="vocab", buckets=1000, embedding_dim=8),
             FeatureSpec(name="item_category", side="item", kind="hash", buckets=64, embedding_dim=4),
             FeatureSpec(name="item_rank", side="item", kind="int", buckets=16, embedding_dim=4, dtype="int")]
    vocab = {"item_id": [f"i{i:04d}" for i in range(3000)]}
    keras.utils.set_random_seed(21)
    tower = ItemTower(specs, vocab, [16], 8, name="item_tower")
    tower.build_dummy()
    return tower, specs, vocab


def _catalog(n: int):
    import pyarrow as pa

    rng = np.random.default_rng(8)
    ids = [f"i{i:04d}" for i in range(n)]  # sorted and unique; the last ones are not in the vocabulary
    cats = pa.array([f"c{c}" for c in rng.integers(0, 30, n)], pa.string())
    return pa.table({"item_id": pa.array(ids, pa.string()), "item_category": cats.to_pylist(),
                     "item_rank": pa.array(rng.integers(0, 40, n), pa.int32()), "extra": np.arange(n)})


def test_id_path_equals_the_serving_signature_and_refuses_foreign_vocabularies(tmp_path):
    """tower_vectors on Arrow-side ids (the export path) = the raw serving signature; a vocabulary
    that is not the tower's is caught by the guard with a named error."""
    from dailyrec.embeddings import tower_vectors
    from dailyrec.errors import ContractError
    from dailyrec.inputs import feature_arrays
    from models.serving import IDS_SIGNATURE, export_tower, load_tower

    tower, specs, vocab = _small_item_tower()
    path = export_tower(tower, tmp_path / "item_tower")
    assert IDS_SIGNATURE in load_tower(path).signatures
    table = _catalog(3100)
    raw = load_tower(path)(feature_arrays(table, specs))
    fast = tower_vectors(path, table, specs, vocab, batch_size=1000)
    assert fast.shape == (3100, 8) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, raw, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tower_vectors(path, table, specs), raw, rtol=0, atol=1e-6)  # no vocabularies: raw

    shifted = {"item_id": vocab["item_id"][1:] + vocab["item_id"][:1]}
    with pytest.raises(ContractError, match="item_tower.*differs from its serving signature.*item_id"):
        tower_vectors(path, table, specs, shifted)


def test_export_items_pipelined_and_fallback_write_the_contract(tmp_path):
    """export_items: row groups written while the tower runs; the same bytes on a second run; a
    tower without the embed_ids endpoint (exported before it existed) takes the raw path."""
    import json

    import pyarrow.parquet as pq

    from dailyrec import embeddings as E
    from dailyrec.inputs import feature_arrays
    from dailyrec.storage import Timer, open_store
    from models.serving import export_model, export_tower, load_tower

    store = open_store(str(tmp_path / "data"))
    tower, specs, vocab = _small_item_tower()
    new_tower = export_tower(tower, tmp_path / "new")
    old_tower = export_model(tower, tmp_path / "old", tower.input_signature(),
                             lambda f: {"embedding": tower(f, training=False)})
    n = 2 * E.ROW_GROUP_ROWS + 5000  # three row groups, the last one partial
    cat_path = str(tmp_path / "catalog.parquet")
    pq.write_table(_catalog(n), cat_path)
    vocab_path = str(tmp_path / "vocabularies.json")
    (tmp_path / "vocabularies.json").write_text(json.dumps(vocab))

    def export(tower_dir: str, name: str, vocab_file: str | None = vocab_path):
        timer = Timer()
        out = str(tmp_path / name)
        assert E.export_items(store, out, tower_dir, cat_path, specs, vocab_file, "tt-x", timer) == (n, 8)
        return out, timer.timings

    first, timings = export(new_tower, "a.parquet")
    assert {"read_catalog", "encode", "load_tower", "item_tower", "check", "write"} <= set(timings)
    second, _ = export(new_tower, "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert pq.ParquetFile(first).metadata.num_row_groups == 3

    table = pq.read_table(first)
    assert table.column_names == ["item_id", "model_version", "vector"]
    assert table.column("item_id").to_pylist() == pq.read_table(cat_path).column("item_id").to_pylist()
    got = E.vectors_from_column(table.column("vector"), first)
    want = load_tower(new_tower)(feature_arrays(pq.read_table(cat_path), specs))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

    for tower_dir, vocab_file, name in ((old_tower, vocab_path, "c.parquet"), (new_tower, None, "d.parquet")):
        out, _ = export(tower_dir, name, vocab_file)
        np.testing.assert_allclose(E.vectors_from_column(pq.read_table(out).column("vector"), out), want,
                                   rtol=0, atol=1e-6)

    dup = pq.read_table(cat_path).slice(0, 10)
    pq.write_table(dup.set_column(0, "item_id", dup.column("item_id").take([0, 1, 2, 3, 4, 5, 6, 7, 8, 0])),
                   cat_path)
    with pytest.raises(ValueError, match="catalog.parquet: column 'item_id' has nulls or duplicates"):
        export(new_tower, "e.parquet")
