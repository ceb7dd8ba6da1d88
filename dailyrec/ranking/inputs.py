"""The ranking model's training input: ``ranking_samples/dt=D/train.parquet`` streamed row group by
row group (:class:`dailyrec.stream.ParquetStream`), features turned into integer ids on the Arrow
side, and mapped into the ranking training format of ``models.ranking``::

    (features: {name: int64[B]}   embedding row ids (dailyrec.stream.IdEncoder), one per feature of the spec,
     labels:   {"click": float32[B], "conversion": float32[B]})

Only int64 and float32 tensors reach TensorFlow; the model's ``FeatureEncoder`` takes the ids as
they are (and raw values at serving time). There is no per-row ``tf.data`` shuffle: the samples
step writes the training rows in a seeded random order in row groups of
:data:`dailyrec.stream.ROW_GROUP_ROWS` rows, and the stream permutes the row groups
of each epoch and mixes rows inside a bounded buffer (``training.shuffle_buffer_rows``), both drawn
from ``(ranking.seed, epoch)``. Memory is bounded by that buffer, whatever the day's size.
TensorFlow and pyarrow are imported inside the functions.
"""

from __future__ import annotations

from typing import Any

from dailyrec.config import RANKING_TASKS

LABELS: dict[str, str] = {t: "float32" for t in RANKING_TASKS}
"""The label columns of the ranking samples and the dtype they are fed as."""


def training_stream(paths: list[str] | str, specs: list[Any], vocabularies: dict[str, list[str]], *,
                    batch_size: int, seed: int | None, buffer_rows: int, filesystem: Any = None) -> Any:
    """A :class:`dailyrec.stream.ParquetStream` over the ranking training rows.

    Args:
        paths: ``train.parquet`` file(s) of ``ranking_samples``.
        specs: ``features.spec`` (every side); each feature becomes an ``int64[B]`` id column
            (:func:`dailyrec.stream.id_encoders` with ``vocabularies``, those of the features step).
        batch_size: rows per batch ``B`` (``ranking.batch_size``).
        seed: the shuffle seed (``ranking.seed``); None reads the file order.
        buffer_rows: the shuffle buffer in rows (``training.shuffle_buffer_rows``).
        filesystem: the store's ``pyarrow.fs`` filesystem (``Store.fs``), None for local paths.
    Raises:
        KeyError: a feature or label column is missing from a file (naming the file and the column).
    """
    from dailyrec.stream import ParquetStream, id_encoders

    return ParquetStream(paths, id_encoders(list(specs), vocabularies), extra=LABELS, batch_size=batch_size,
                         seed=seed, buffer_rows=buffer_rows, filesystem=filesystem)


CHUNK_BATCHES = 32
"""Batches handed from Python to ``tf.data`` at once by :func:`stream_dataset` (as one
``[k, B]`` array per column, split back into batches inside ``tf.data``): the per-element cost of
``from_generator`` is paid once per chunk, not per batch."""


def stream_dataset(stream: Any, tasks: tuple[str, ...] = RANKING_TASKS, chunk_batches: int = CHUNK_BATCHES) -> Any:
    """The batches of ``stream`` as a ``tf.data.Dataset`` in the ranking format (the module doc's).

    Exactly the batches of ``stream.batches(epoch)``, in their order: consecutive full batches
    are stacked ``chunk_batches`` at a time into ``[k, B]`` arrays, passed through
    ``tf.data.Dataset.from_generator`` and unbatched back into ``[B]`` batches (a smaller last
    batch passes alone). Its cardinality is ``stream.steps_per_epoch`` batches. Each iteration of
    the dataset (each Keras epoch) reads the next epoch of the stream, 0, 1, ..., counted by this
    dataset: two datasets over streams with the same files and seed give the same batches (the
    MMoE and its baseline see the same rows in the same order).

    Raises:
        ValueError: ``chunk_batches`` < 1.
    """
    import numpy as np
    import tensorflow as tf

    if chunk_batches < 1:
        raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")
    features = list(stream.encoders)
    sig = {k: tf.TensorSpec([None, None], v.dtype, name=k) for k, v in stream.output_signature().items()}
    bsize = stream.batch_size
    epochs = iter(range(1 << 62))

    def chunks() -> Any:
        pending: list[dict[str, np.ndarray]] = []
        for batch in stream.batches(next(epochs)):
            if len(next(iter(batch.values()))) < bsize:  # the epoch's last, smaller batch
                if pending:
                    yield {k: np.stack([b[k] for b in pending]) for k in pending[0]}
                    pending = []
                yield {k: v[None, :] for k, v in batch.items()}
                continue
            pending.append(batch)
            if len(pending) == chunk_batches:
                yield {k: np.stack([b[k] for b in pending]) for k in pending[0]}
                pending = []
        if pending:
            yield {k: np.stack([b[k] for b in pending]) for k in pending[0]}

    def split(batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {f: batch[f] for f in features}, {t: batch[t] for t in tasks}

    ds = tf.data.Dataset.from_generator(chunks, output_signature=sig).unbatch().map(split)
    # the stream knows its batches per epoch: telling tf.data lets Keras size every epoch (no
    # "ran out of data" warning after the first one)
    return ds.apply(tf.data.experimental.assert_cardinality(stream.steps_per_epoch)).prefetch(tf.data.AUTOTUNE)
