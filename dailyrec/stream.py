"""Bounded-memory training input: Parquet row groups -> integer ids on the Arrow side -> ``tf.data``.

The training steps used to read a whole training window into Python object arrays and TensorFlow
string constants (about 1.3 KB per row). This module streams instead:

* :class:`IdEncoder` turns one raw Arrow column into the row ids of the feature's embedding table,
  **exactly** as :class:`models.features.FeatureEncoder` looks raw values up (``vocab``: position in
  the vocabulary + 1, 0 for out-of-vocabulary, like ``keras.layers.StringLookup(num_oov_indices=1)``;
  ``hash``, or ``vocab`` without a vocabulary: FarmHash Fingerprint64 modulo ``buckets``, like
  ``keras.layers.Hashing``; ``int``: ``|value| mod buckets``; ``numeric``: the raw value as float32,
  NaN for null, normalised inside the model). Only int32 and float32 arrays reach
  TensorFlow; the models accept those ids in place of raw values, and their serving signatures
  still take raw values.
* :class:`ParquetStream` reads Parquet files **one row group at a time** (only the columns it
  needs), encodes them and yields batches ``{column: np.ndarray[B]}``.

Shuffling (a documented quality trade-off): with a ``seed`` each epoch visits the row groups in an
order drawn from ``(seed, epoch)``, and rows are mixed inside a bounded buffer of about
``buffer_rows`` rows (whole row groups are added until the buffer holds that many; the buffer is
permuted and emitted). A row therefore only meets rows of the row groups that share its buffer, not
the whole file; the sample steps write their rows in a random (seeded) order and small row groups
(:data:`ROW_GROUP_ROWS`), so that the buffer holds an unbiased mix. Memory is bounded by the buffer
plus one row group, whatever the file size. Without a seed the rows come in file order.

Deterministic: the same files, encoders, seed and epoch give the same batches.

Sharding (data-parallel training over ``W`` workers, ``dailyrec.distributed``): ``shard=(w, W)``
gives worker ``w`` its part of every step's global batch of ``batch_size`` rows, so the ``W``
workers together train on ``batch_size`` rows a step:

* ``shard_by="batch"``: every worker reads and encodes the whole stream (the same files, seed and
  epoch give the same global batches) and keeps the ``w``-th of ``W`` contiguous slices of each
  batch (sizes differ by at most one row; a last partial batch is split the same way). The
  workers' slices, concatenated in worker order, are exactly the one-worker batch: the same model
  up to floating-point summation order. The reading is repeated on every worker.
* ``shard_by="row_group"``: worker ``w`` reads only the row groups ``w, w + W, w + 2W, ...`` (file
  order), shuffles them as above with its own buffer and emits batches of ``batch_size // W`` rows;
  every worker stops after the same number of steps (the shortest shard's full batches), so the
  rows past it are dropped (logged). No row is read twice, but the batches are not one worker's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("dailyrec.stream")

ROW_GROUP_ROWS = 131_072
"""Row-group size the sample steps write with (the unit of the streaming reader's shuffle)."""

BUFFER_ROWS = 262_144
"""Default shuffle buffer of :class:`ParquetStream`, in rows."""

NULL_STRING = ""

ID_DTYPE = np.int32
"""dtype of the row ids the encoders produce (Keras ``Embedding`` takes int32 as it is)."""


def _spec(s: Any) -> dict[str, Any]:
    return s.model_dump() if hasattr(s, "model_dump") else dict(s)


class IdEncoder:
    """Raw values of one feature -> ``int64`` row ids of its embedding table.

    Args:
        spec: a feature spec (``dailyrec.config.FeatureSpec`` or its dict: ``name``, ``kind``,
            ``buckets``).
        vocabulary: the ``vocab`` feature's ids (from the features step); ignored for other kinds.
    Call:
        ``(column: pa.Array | pa.ChunkedArray[n])`` (plain or dictionary-encoded) -> ``np.ndarray[n] int32``
        (``float32`` raw values for a ``numeric`` feature: ``dtype``). Nulls count as ``""`` (string
        features), ``0`` (int features) or NaN (numeric), as in :func:`dailyrec.inputs.feature_arrays`.
    Raises:
        TypeError: an ``int`` feature over a non-integer column, a ``numeric`` one over a
            non-numeric column (naming the feature).

    ``hash`` ids are FarmHash Fingerprint64 ``mod buckets`` (``tf.strings.to_hash_bucket_fast``,
    the function behind ``keras.layers.Hashing``), computed once per distinct value and cached, so
    TensorFlow sees each distinct string once, never the rows.
    """

    def __init__(self, spec: Any, vocabulary: list[str] | None = None):
        s = _spec(spec)
        self.name: str = s["name"]
        self.kind: str = s["kind"]
        self.buckets = int(s["buckets"])
        self.vocabulary = pa.array([str(v) for v in vocabulary], pa.string()) if (
            self.kind == "vocab" and vocabulary) else None
        self.mode = self.kind if self.kind in ("int", "numeric") else (
            "vocab" if self.vocabulary is not None else "hash")
        self.dtype = np.dtype(np.float32) if self.mode == "numeric" else np.dtype(ID_DTYPE)
        self._known = pa.array([], pa.string())  # hash mode: distinct values seen so far ...
        self._known_ids = np.zeros(0, ID_DTYPE)  # ... and their bucket
        if self.buckets > np.iinfo(ID_DTYPE).max:
            raise ValueError(f"feature '{self.name}': buckets {self.buckets} do not fit int32 row ids")

    def __call__(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if self.mode == "numeric":
            from dailyrec.inputs import float_column

            return float_column(column, self.name, "feature")
        if self.mode == "int":
            if not pa.types.is_integer(column.type):
                raise TypeError(f"feature '{self.name}': column type {column.type}, the feature spec says int")
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            return (np.abs(values) % self.buckets).astype(ID_DTYPE)
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        # each distinct value is looked up once, then the rows take their value's id
        values = column.dictionary
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = pc.cast(values, pa.string())
        per_value = self._lookup(values)
        codes = column.indices
        if codes.null_count:
            per_value = np.append(per_value, self._lookup(pa.array([NULL_STRING]))).astype(ID_DTYPE, copy=False)
            codes = pc.fill_null(codes, len(values))
        return per_value[codes.to_numpy(zero_copy_only=False)]

    def _lookup(self, values: pa.Array) -> np.ndarray:
        """Distinct string values -> their ids (``int32[len(values)]``); nulls count as ``""``."""
        values = pc.fill_null(values, NULL_STRING)
        if self.mode == "vocab":
            pos = pc.index_in(values, value_set=self.vocabulary)
            return pc.fill_null(pc.add(pos, 1), 0).to_numpy(zero_copy_only=False).astype(ID_DTYPE)
        where = pc.index_in(values, value_set=self._known)
        missing = pc.is_null(where)
        if pc.any(missing).as_py():
            import tensorflow as tf

            new = pc.unique(pc.filter(values, missing))
            ids = tf.strings.to_hash_bucket_fast(new.to_numpy(zero_copy_only=False).astype(object),
                                                 self.buckets).numpy().astype(ID_DTYPE)
            self._known = pa.concat_arrays([self._known, new.cast(pa.string())])
            self._known_ids = np.concatenate([self._known_ids, ids])
            where = pc.index_in(values, value_set=self._known)
        return self._known_ids[where.to_numpy(zero_copy_only=False).astype(np.int64)]


def id_encoders(specs: list[Any], vocabularies: Mapping[str, list[str]] | None = None) -> dict[str, IdEncoder]:
    """``{feature name: IdEncoder}`` for every spec (vocabularies as written by the features step)."""
    vocabularies = vocabularies or {}
    return {_spec(s)["name"]: IdEncoder(s, vocabularies.get(_spec(s)["name"])) for s in specs}


class ParquetStream:
    """Batches of encoded feature ids (and extra columns) read row group by row group.

    Args:
        paths: Parquet files (one or more; e.g. a day's ``train.parquet``), read in this order.
        encoders: ``{column: IdEncoder}`` (:func:`id_encoders`); each becomes an ``int32[B]`` array
            (``dailyrec.history.HistoryEncoder``: a ``list<string>`` column -> ``int32[B, N]``).
            String columns are read dictionary-encoded (Parquet dictionary pages are not expanded
            into strings), so each distinct value of a row group is looked up once.
        extra: ``{column: numpy dtype}`` passed through (e.g. ``{"label": "float32"}``); nulls -> 0.
        batch_size: rows per batch ``B``; the last batch of an epoch may be smaller unless
            ``drop_remainder``.
        seed: shuffle seed (row-group order and buffer permutation drawn from ``(seed, epoch)``);
            ``None`` reads in file order.
        buffer_rows: shuffle buffer size in rows (memory bound: about this many rows plus one row
            group, times ``8`` bytes per column).
        filesystem: a ``pyarrow.fs`` filesystem for ``paths`` (``Store.fs``), or None for local paths.
        shard: ``(index w, count W)``: this worker's share of every global batch (module doc,
            "Sharding"); None reads everything.
        shard_by: ``"batch"`` or ``"row_group"`` (module doc).
    Raises:
        KeyError: a column of ``encoders``/``extra`` is missing from a file (naming file and column).
        ValueError: no paths, ``batch_size`` / ``buffer_rows`` < 1, a bad ``shard``, or with
            ``shard_by="row_group"``: ``batch_size`` not divisible by ``W``, or fewer row groups than
            workers (naming the files).
    """

    def __init__(self, paths: list[str] | str, encoders: Mapping[str, IdEncoder], extra: Mapping[str, str] | None = None,
                 batch_size: int = 4096, *, seed: int | None = None, buffer_rows: int = BUFFER_ROWS,
                 filesystem: Any = None, drop_remainder: bool = False, shard: tuple[int, int] | None = None,
                 shard_by: str = "batch"):
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        if not self.paths:
            raise ValueError("ParquetStream: no input files")
        if batch_size < 1 or buffer_rows < 1:
            raise ValueError(f"ParquetStream: batch_size ({batch_size}) and buffer_rows ({buffer_rows}) must be >= 1")
        self.shard = (int(shard[0]), int(shard[1])) if shard is not None else None
        self.shard_by = shard_by
        if shard_by not in ("batch", "row_group"):
            raise ValueError(f"ParquetStream: shard_by must be 'batch' or 'row_group', got {shard_by!r}")
        if self.shard is not None and not (self.shard[1] >= 1 and 0 <= self.shard[0] < self.shard[1]):
            raise ValueError(f"ParquetStream: shard {shard} is not (index, count) with 0 <= index < count")
        self.encoders = dict(encoders)
        self.extra = {k: np.dtype(v) for k, v in (extra or {}).items()}
        self.batch_size, self.seed, self.buffer_rows = int(batch_size), seed, int(buffer_rows)
        self.filesystem, self.drop_remainder = filesystem, drop_remainder
        self.columns = list(self.encoders) + [c for c in self.extra if c not in self.encoders]
        self.units: list[tuple[int, int, int]] = []  # (file index, row group, rows)
        for fi, path in enumerate(self.paths):
            meta = self._file(path).metadata
            names = set(meta.schema.to_arrow_schema().names)  # top-level columns (a list column is one)
            missing = [c for c in self.columns if c not in names]
            if missing:
                raise KeyError(f"{path}: column(s) {missing} missing; columns: {sorted(names)}")
            self.units += [(fi, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        self.num_rows = int(sum(u[2] for u in self.units))
        """Rows of the whole input (every shard)."""
        self._epoch = 0
        self._local_steps: int | None = None
        if self.shard is not None and self.shard_by == "row_group":
            self._shard_row_groups()

    def _shard_row_groups(self) -> None:
        """Keep this worker's row groups (``w::W`` in file order) and fix the steps every worker takes."""
        w, n = self.shard  # type: ignore[misc]
        if self.batch_size % n:
            raise ValueError(f"ParquetStream: shard_by='row_group' needs batch_size ({self.batch_size}) divisible by "
                             f"the {n} workers")
        if len(self.units) < n:
            raise ValueError(f"ParquetStream: {self.paths}: {len(self.units)} row group(s) for {n} workers; "
                             "shard_by='row_group' needs at least one per worker (use shard_by='batch')")
        local_batch = self.batch_size // n
        per_worker = [sum(u[2] for u in self.units[i::n]) for i in range(n)]
        self._local_steps = min(rows // local_batch for rows in per_worker)
        dropped = sum(per_worker) - self._local_steps * local_batch * n
        log.info("row-group shard %d/%d: %d row groups, %d rows, %d steps of %d rows; %d rows past the shortest "
                 "shard's last full batch dropped (all workers)", w, n, len(self.units[w::n]), per_worker[w],
                 self._local_steps, local_batch, dropped)
        self.units = self.units[w::n]
        self.batch_size = local_batch

    def _file(self, path: str) -> pq.ParquetFile:
        strings = [n for n, e in self.encoders.items() if e.mode not in ("int", "numeric", "history")]
        source = path if self.filesystem is None else self.filesystem.open_input_file(path)
        return pq.ParquetFile(source, read_dictionary=strings)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (with a shard: the global steps, the same on every worker)."""
        if self._local_steps is not None:
            return self._local_steps
        full, rest = divmod(self.num_rows, self.batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def encode(self, table: pa.Table) -> dict[str, np.ndarray]:
        """One Arrow table (a row group) -> ``{column: np.ndarray[n]}`` (ids int32, extras as typed)."""
        out = {name: enc(table.column(name)) for name, enc in self.encoders.items()}
        for name, dtype in self.extra.items():
            if name not in out:
                col = pc.fill_null(table.column(name), 0)
                out[name] = col.to_numpy().astype(dtype, copy=False)
        return out

    def _groups(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        order = range(len(self.units))
        if self.seed is not None:
            order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.units))
        files: dict[int, pq.ParquetFile] = {}
        for u in order:
            fi, g, _ = self.units[int(u)]
            if fi not in files:
                files = {fi: self._file(self.paths[fi])}  # one open file at a time
            yield self.encode(files[fi].read_row_group(g, columns=self.columns))

    def batches(self, epoch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of one epoch (see the module doc for the order); with a ``shard``, this
        worker's part of each of the :attr:`steps_per_epoch` global batches."""
        if self.shard is None:
            yield from self._batches(epoch)
        elif self.shard_by == "row_group":
            for _, batch in zip(range(self.steps_per_epoch), self._batches(epoch)):
                yield batch
        else:
            w, n = self.shard
            for batch in self._batches(epoch):
                rows = len(next(iter(batch.values())))
                lo, hi = w * rows // n, (w + 1) * rows // n
                yield {k: v[lo:hi] for k, v in batch.items()}

    def _batches(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch, 2]) if self.seed is not None else None
        pending: list[dict[str, np.ndarray]] = []
        held = 0
        for part in self._groups(epoch):
            pending.append(part)
            held += len(next(iter(part.values())))
            if held >= self.buffer_rows:
                rest = yield from self._emit(pending, rng, final=False)
                pending, held = ([rest], len(next(iter(rest.values())))) if rest else ([], 0)
        if pending:
            yield from self._emit(pending, rng, final=True)

    def _emit(self, parts: list[dict[str, np.ndarray]], rng: np.random.Generator | None,
              final: bool) -> Iterator[dict[str, np.ndarray]]:
        """Permute the buffer, yield whole batches; return the remainder (< B rows) unless ``final``."""
        buf = {k: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]}
        n = len(next(iter(buf.values())))
        if rng is not None:
            perm = rng.permutation(n)
            buf = {k: v[perm] for k, v in buf.items()}
        full = (n // self.batch_size) * self.batch_size
        for i in range(0, full, self.batch_size):
            yield {k: v[i:i + self.batch_size] for k, v in buf.items()}
        rest = {k: v[full:] for k, v in buf.items()} if full < n else None
        if final:
            if rest is not None and not self.drop_remainder:
                yield rest
            return None
        return rest

    def output_signature(self) -> dict[str, Any]:
        """``{column: tf.TensorSpec([None], int32 | float32 (numeric) | extra dtype)}`` of :meth:`dataset`
        (an encoder with a ``shape``, ``dailyrec.history.HistoryEncoder``: ``[None, N]``)."""
        import tensorflow as tf

        sig = {name: tf.TensorSpec([None, *getattr(enc, "shape", ())], tf.as_dtype(enc.dtype), name=name)
               for name, enc in self.encoders.items()}
        for name, dtype in self.extra.items():
            sig.setdefault(name, tf.TensorSpec([None], tf.as_dtype(dtype), name=name))
        return sig

    def dataset(self) -> Any:
        """A ``tf.data.Dataset`` of the batches, ``steps_per_epoch`` long (Keras knows each epoch's
        steps), prefetched. Each iteration (each Keras epoch) reads the next epoch: 0, 1, 2, ... of
        this stream object.

        Built as ``Dataset.range(steps).map(numpy_function(next batch))``, a sequential map: on a
        2-core machine ``Dataset.from_generator`` fed the same batches to the two-tower at half the
        examples per CPU-second (measured; see docs/benchmarks.md, "scale").
        """
        import tensorflow as tf

        sig = self.output_signature()
        names, dtypes = list(sig), [spec.dtype for spec in sig.values()]
        state: dict[str, Any] = {"batches": None}

        def next_batch(i: np.int64) -> tuple[np.ndarray, ...]:
            if i == 0 or state["batches"] is None:
                epoch, self._epoch = self._epoch, self._epoch + 1
                log.debug("stream epoch %d over %d rows", epoch, self.num_rows)
                state["batches"] = self.batches(epoch)
            batch = next(state["batches"])
            return tuple(batch[k] for k in names)

        def as_dict(*columns: Any) -> dict[str, Any]:
            return {k: tf.ensure_shape(c, sig[k].shape) for k, c in zip(names, columns)}

        ds = tf.data.Dataset.range(self.steps_per_epoch).map(
            lambda i: tf.numpy_function(next_batch, [i], dtypes, stateful=True))
        return ds.map(as_dict).prefetch(2)
