"""The streaming training input (dailyrec.stream): ids equal the model's own lookups, the stream
yields exactly the file's rows, deterministically under a seed, in bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.stream import IdEncoder, ParquetStream, id_encoders

SPECS = [
    {"name": "user_id", "side": "user", "kind": "vocab", "buckets": 1000, "embedding_dim": 4, "dtype": "string"},
    {"name": "device", "side": "context", "kind": "hash", "buckets": 64, "embedding_dim": 4, "dtype": "string"},
    {"name": "item_id", "side": "item", "kind": "vocab", "buckets": 97, "embedding_dim": 4, "dtype": "string"},
    {"name": "age", "side": "user", "kind": "int", "buckets": 16, "embedding_dim": 4, "dtype": "int"},
]
VOCAB = {"user_id": ["u1", "u2", "u3"]}  # item_id has no vocabulary: hashed into its buckets


def _raw() -> pa.Table:
    return pa.table({
        "user_id": pa.array(["u2", "u9", None, "u1", "", "u3"]),
        "device": pa.array(["ios", "android", None, "ios", "web", "x" * 40]),
        "item_id": pa.array(["i1", "i2", "i3", None, "i1", "i7"]).dictionary_encode(),
        "age": pa.array([3, -21, None, 40, 0, 15], pa.int64()),
    })


def test_ids_equal_the_feature_encoder_lookups():
    """For every kind (vocab, hash, vocab without vocabulary, int), nulls and unknown values, the
    Arrow-side ids are the rows the model's own lookup (the serving path) picks, and a model fed
    the ids gives the same output as fed the raw values."""
    import tensorflow as tf

    from dailyrec.inputs import feature_arrays
    from models.features import FeatureEncoder
    from models.serving import raw_column

    table = _raw()
    encoder = FeatureEncoder(SPECS, VOCAB)
    raw = {k: tf.constant(raw_column(v)) for k, v in feature_arrays(table, SPECS).items()}
    encs = id_encoders(SPECS, VOCAB)
    ids = {name: enc(table.column(name)) for name, enc in encs.items()}
    for s in SPECS:
        want = encoder.index(s["name"], raw[s["name"]]).numpy()
        np.testing.assert_array_equal(ids[s["name"]], want, err_msg=s["name"])
        assert ids[s["name"]].dtype == np.int32
    np.testing.assert_allclose(encoder({k: tf.constant(v) for k, v in ids.items()}).numpy(),
                               encoder(raw).numpy(), rtol=0, atol=0)
    assert ids["user_id"].tolist() == [2, 0, 0, 1, 0, 3]  # vocab position + 1, OOV (u9, null, "") -> 0


def test_hash_encoder_caches_each_value_once():
    enc = IdEncoder(SPECS[1])
    first = enc(pa.array(["a", "b", "a"]))
    again = enc(pa.chunked_array([pa.array(["b", "c"]), pa.array(["a"])]))
    assert first[0] == first[2] == again[2] and first[1] == again[0]
    assert enc._known.to_pylist() == ["a", "b", "c"]


def test_int_feature_over_a_string_column_is_named():
    with pytest.raises(TypeError, match="feature 'age'"):
        IdEncoder(SPECS[3])(pa.array(["1"]))


def test_numeric_feature_streams_raw_floats_with_nan_for_missing(tmp_path):
    """A ``numeric`` feature is no table lookup: the stream hands the raw value (float32, NaN for a
    null) to the model, which normalises it; an int column is taken as a number, a string refused."""
    spec = {"name": "price", "side": "item", "kind": "numeric", "dtype": "float", "buckets": 2, "embedding_dim": 1}
    enc = IdEncoder(spec)
    got = enc(pa.chunked_array([pa.array([1.5, None]), pa.array([3.0])]))
    assert got.dtype == np.float32 and got[0] == 1.5 and np.isnan(got[1]) and got[2] == 3.0
    np.testing.assert_array_equal(enc(pa.array([2, 7], pa.int32())), np.array([2, 7], np.float32))
    with pytest.raises(TypeError, match="column 'price'"):
        enc(pa.array(["1"]))
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"price": pa.array([1.0, None, 4.0]), "y": pa.array([0, 1, 0], pa.int8())}), path)
    stream = ParquetStream(str(path), {"price": enc}, extra={"y": "float32"}, batch_size=8)
    batch = next(stream.batches())
    assert batch["price"].dtype == np.float32 and np.isnan(batch["price"][1])
    assert stream.output_signature()["price"].dtype.name == "float32"


def _write(path, n: int, row_group: int) -> pa.Table:
    rng = np.random.default_rng(0)
    t = pa.table({"row": np.arange(n, dtype=np.int64),
                  "user_id": pa.array([f"u{i}" for i in rng.integers(0, 5, n)]),
                  "label": rng.random(n).astype(np.float32)})
    pq.write_table(t, path, row_group_size=row_group)
    return t


def _stream(path, **kw) -> ParquetStream:
    spec = [{"name": "row", "kind": "int", "buckets": 2**31 - 1, "embedding_dim": 2, "dtype": "int"}, SPECS[0]]
    return ParquetStream(str(path), id_encoders(spec, VOCAB), extra={"label": "float32"}, **kw)


def _collect(stream: ParquetStream, epoch: int = 0) -> dict[str, np.ndarray]:
    parts = list(stream.batches(epoch))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.parametrize("seed", [None, 5])
def test_stream_yields_exactly_the_files_rows(tmp_path, seed):
    t = _write(tmp_path / "a.parquet", 10_000, 700)
    s = _stream(tmp_path / "a.parquet", batch_size=256, seed=seed, buffer_rows=2000)
    assert s.num_rows == 10_000 and s.steps_per_epoch == 40
    got = _collect(s)
    batches = list(s.batches())
    assert all(len(b["row"]) == 256 for b in batches[:-1]) and len(batches) == 40
    order = np.argsort(got["row"])
    np.testing.assert_array_equal(got["row"][order], np.arange(10_000))
    np.testing.assert_array_equal(got["label"][order], t.column("label").to_numpy())
    want_user = IdEncoder(SPECS[0], VOCAB["user_id"])(t.column("user_id"))
    np.testing.assert_array_equal(got["user_id"][order], want_user)
    if seed is None:
        np.testing.assert_array_equal(got["row"], np.arange(10_000))  # file order
    else:
        assert not np.array_equal(got["row"], np.arange(10_000))


def test_stream_is_deterministic_under_a_seed_and_reshuffles_per_epoch(tmp_path):
    _write(tmp_path / "a.parquet", 5_000, 500)
    a, b = (_stream(tmp_path / "a.parquet", batch_size=100, seed=3, buffer_rows=1500) for _ in range(2))
    np.testing.assert_array_equal(_collect(a, 0)["row"], _collect(b, 0)["row"])
    assert not np.array_equal(_collect(a, 0)["row"], _collect(a, 1)["row"])
    other = _stream(tmp_path / "a.parquet", batch_size=100, seed=4, buffer_rows=1500)
    assert not np.array_equal(_collect(a, 0)["row"], _collect(other, 0)["row"])


def test_drop_remainder_and_several_files(tmp_path):
    _write(tmp_path / "a.parquet", 1_000, 300)
    _write(tmp_path / "b.parquet", 550, 300)
    s = ParquetStream([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")],
                      id_encoders([SPECS[0]], VOCAB), extra={"label": "float32"}, batch_size=100,
                      seed=1, buffer_rows=400, drop_remainder=True)
    assert s.num_rows == 1_550 and s.steps_per_epoch == 15
    assert [len(b["label"]) for b in s.batches()] == [100] * 15


def test_stream_memory_is_bounded_by_the_buffer_not_the_file(tmp_path):
    """A file 20x the buffer: the numpy memory alive while streaming (tracemalloc tracks numpy's
    allocations) stays within a few buffers, far below the decoded file."""
    n, buffer_rows = 400_000, 20_000
    _write(tmp_path / "big.parquet", n, 5_000)
    s = _stream(tmp_path / "big.parquet", batch_size=1_000, seed=9, buffer_rows=buffer_rows)
    full_bytes = n * (8 + 8 + 4)  # row, user_id ids (int64) and label (float32), decoded
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        rows = sum(len(b["row"]) for b in s.batches())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == n
    assert peak < full_bytes / 5, (peak, full_bytes)


def test_missing_column_is_named(tmp_path):
    _write(tmp_path / "a.parquet", 10, 10)
    with pytest.raises(KeyError, match=r"a\.parquet.*'nope'"):
        ParquetStream(str(tmp_path / "a.parquet"), {}, extra={"nope": "float32"})


def test_tf_dataset_walks_epochs(tmp_path):
    _write(tmp_path / "a.parquet", 1_000, 250)
    s = _stream(tmp_path / "a.parquet", batch_size=300, seed=2, buffer_rows=500)
    ds = s.dataset()
    e0 = np.concatenate([b["row"].numpy() for b in ds])
    e1 = np.concatenate([b["row"].numpy() for b in ds])
    np.testing.assert_array_equal(np.sort(e0), np.arange(1_000))
    np.testing.assert_array_equal(e0, _collect(s, 0)["row"])
    np.testing.assert_array_equal(e1, _collect(s, 1)["row"])


def test_history_list_column_streams_as_a_padded_id_matrix(tmp_path):
    """A list<string> history column -> int32[B, N] (vocab position + 1, 0 = padding/OOV), rows kept
    together with their other columns under the shuffle, and through tf.data with shape [None, N]."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dailyrec.history import HISTORY_COLUMN, HistoryEncoder
    from dailyrec.stream import ParquetStream

    n = 50
    lists = [[f"i{(k + j) % 7}" for j in range(k % 5)] + (["zz"] if k % 11 == 0 else []) for k in range(n)]
    path = str(tmp_path / "h.parquet")
    pq.write_table(pa.table({"row": np.arange(n, dtype=np.int64), HISTORY_COLUMN: pa.array(lists, pa.list_(pa.string()))}),
                   path, row_group_size=16)
    vocab = [f"i{k}" for k in range(7)]
    stream = ParquetStream(path, {HISTORY_COLUMN: HistoryEncoder(3, vocab)}, extra={"row": "int64"}, batch_size=8,
                           seed=3, buffer_rows=20)
    seen = 0
    for b in stream.batches(0):
        assert b[HISTORY_COLUMN].shape == (len(b["row"]), 3) and b[HISTORY_COLUMN].dtype == np.int32
        for r, ids in zip(b["row"], b[HISTORY_COLUMN]):
            want = [vocab.index(x) + 1 if x in vocab else 0 for x in lists[r][:3]]
            assert ids.tolist() == want + [0] * (3 - len(want))
            seen += 1
    assert seen == n
    batch = next(iter(stream.dataset()))
    assert batch[HISTORY_COLUMN].shape.as_list()[1] == 3
