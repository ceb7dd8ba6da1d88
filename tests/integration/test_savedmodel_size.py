"""SavedModel export stores each variable once (keras-team/keras#23553), keeps its signature, and
writes the same checkpoint bytes twice.

Real Keras models with a big embedding table (a 50k-id vocabulary x 64 dims, 12.8 MB), exported
with ``models.serving``; the size is compared with the sum of the model's variable bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

import keras
from dailyrec.config import FeatureSpec, FeaturesConfig, RankingConfig
from models import serving
from models.ranking import build_ranking_model
from models.two_tower import ItemTower

N_IDS = 50_000
BIG_DIM = 64
MAX_RATIO = 1.2  # SavedModel bytes / variable bytes (the rest: graph, vocabulary constants, index)

ITEM_SPECS = [
    FeatureSpec(name="item_id", side="item", kind="vocab", buckets=1000, embedding_dim=BIG_DIM),
    FeatureSpec(name="item_category", side="item", kind="hash", buckets=256, embedding_dim=8),
    FeatureSpec(name="item_rank", side="item", kind="int", buckets=16, embedding_dim=4, dtype="int"),
]
ITEM_VOCAB = {"item_id": [f"i{i:05d}" for i in range(N_IDS)]}


def _saved_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _variable_bytes(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.variables)


def _checkpoint_values(path: str | Path) -> dict[str, list[int]]:
    """``{checkpoint key: shape}`` of the SavedModel's variables (the object graph entry left out)."""
    return {k: s for k, s in tf.train.list_variables(str(Path(path) / "variables" / "variables"))
            if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _files(path: str | Path) -> dict[str, bytes]:
    root = Path(path)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _item_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{i:05d}" for i in rng.integers(0, N_IDS + 50, n)], dtype=object)  # some unknown ids
    return {"item_id": ids,
            "item_category": np.array([f"c{c}" for c in rng.integers(0, 40, n)], dtype=object),
            "item_rank": rng.integers(0, 30, n).astype(np.int64)}


def _assert_each_variable_once(model: keras.Model, path: str | Path) -> None:
    stored = _checkpoint_values(path)
    assert len(stored) == len(model.variables), sorted(stored)
    assert sum(int(np.prod(s)) for s in stored.values()) == sum(int(np.prod(v.shape)) for v in model.variables)
    size, var_bytes = _saved_bytes(path), _variable_bytes(model)
    assert var_bytes > 12_000_000
    assert size <= MAX_RATIO * var_bytes, (size, var_bytes)


def test_tower_savedmodel_stores_each_variable_once(tmp_path):
    keras.utils.set_random_seed(11)
    tower = ItemTower(ITEM_SPECS, ITEM_VOCAB, [32], 16, name="item_tower")
    tower.build_dummy()

    path = serving.export_tower(tower, tmp_path / "a")
    _assert_each_variable_once(tower, path)

    # the serving signature is unchanged: one [None] raw input per feature, {"embedding": [B, D]} out
    sig = tf.saved_model.load(path).signatures[serving.SIGNATURE]
    _, inputs = sig.structured_input_signature
    assert {k: (v.shape.as_list(), v.dtype) for k, v in inputs.items()} == {
        "item_id": ([None], tf.string), "item_category": ([None], tf.string), "item_rank": ([None], tf.int64)}
    assert {k: v.shape.as_list() for k, v in sig.structured_outputs.items()} == {"embedding": [None, 16]}

    rows = _item_rows(3000, seed=4)
    got = serving.load_tower(path)(rows, batch_size=1000)
    want = tower(serving.to_tensors(rows, tower.input_signature())).numpy()
    assert got.shape == (3000, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

    # the same weights give the same checkpoint bytes (the graph's function names carry a
    # per-process counter: whole directories are compared across processes in test_rerun_identical)
    again = serving.export_tower(tower, tmp_path / "b")
    variables = {k: v for k, v in _files(path).items() if k.startswith("variables")}
    assert len(variables) == 2 and variables == {k: v for k, v in _files(again).items() if k.startswith("variables")}


def test_ranking_savedmodel_stores_each_variable_once(tmp_path):
    seed = 5
    specs = [FeatureSpec(name="user_id", side="user", kind="vocab", buckets=1000, embedding_dim=8),
             FeatureSpec(name="hour_of_day", side="context", kind="int", buckets=24, embedding_dim=4, dtype="int"),
             *ITEM_SPECS]
    vocab = {"user_id": [f"u{i}" for i in range(200)], **ITEM_VOCAB}
    rcfg = RankingConfig(num_experts=2, expert_units=[16], tower_units=[8])
    model = build_ranking_model(rcfg, FeaturesConfig(spec=specs), vocab, seed=seed)

    path = serving.export_ranking_model(model, tmp_path / "ranker")
    _assert_each_variable_once(model, path)

    rng = np.random.default_rng(seed)
    rows = {**_item_rows(2000, seed=seed),
            "user_id": np.array([f"u{u}" for u in rng.integers(0, 250, 2000)], dtype=object),
            "hour_of_day": rng.integers(0, 24, 2000).astype(np.int64)}
    ranker = serving.load_ranking_model(path)
    assert ranker.tasks == sorted(model.tasks)
    got = ranker(rows, batch_size=512)
    want = model(serving.to_tensors(rows, model.input_signature()), training=False)
    for task in model.tasks:
        assert got[task].shape == (2000,)
        np.testing.assert_allclose(got[task], want[task].numpy().reshape(-1), rtol=0, atol=1e-6)
