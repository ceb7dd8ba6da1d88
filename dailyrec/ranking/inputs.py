"""The ranking model's training input: ``ranking_samples/dt=D/train.parquet`` streamed row group by
row group (:class:`dailyrec.stream.ParquetStream`), features turned into integer ids on the Arrow
side, and mapped into the ranking training format of ``models.ranking``::

    (features: {name: int32[B]}   embedding row ids (dailyrec.stream.IdEncoder), one per feature of the spec
                                  (float32 raw values for a numeric feature),
     labels:   {task: float32[B]}) one per task of ``ranking.tasks``, read from the task's label column

Only int32 and float32 tensors reach TensorFlow; the model's ``FeatureEncoder`` takes the ids as
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
"""The default tasks' label columns of the ranking samples and the dtype they are fed as."""


def label_columns(tasks: list[Any] | None = None) -> dict[str, str]:
    """``{task name: label column}`` of ``tasks`` (``RankingTaskConfig`` objects, task spec dicts
    or names; default :data:`dailyrec.config.RANKING_TASKS`)."""
    out: dict[str, str] = {}
    for t in tasks if tasks is not None else RANKING_TASKS:
        if isinstance(t, str):
            out[t] = t
        elif hasattr(t, "label_column"):
            out[t.name] = t.label_column
        else:
            out[t["name"]] = t.get("label") or t["name"]
    return out


def training_stream(paths: list[str] | str, specs: list[Any], vocabularies: dict[str, list[str]], *,
                    batch_size: int, seed: int | None, buffer_rows: int, filesystem: Any = None,
                    tasks: list[Any] | None = None) -> Any:
    """A :class:`dailyrec.stream.ParquetStream` over the ranking training rows.

    Args:
        paths: ``train.parquet`` file(s) of ``ranking_samples``.
        specs: ``features.spec`` (every side); each feature becomes an ``int32[B]`` id column (``dailyrec.stream.ID_DTYPE``)
            (:func:`dailyrec.stream.id_encoders` with ``vocabularies``, those of the features step).
        batch_size: rows per batch ``B`` (``ranking.batch_size``).
        seed: the shuffle seed (``ranking.seed``); None reads the file order.
        buffer_rows: the shuffle buffer in rows (``training.shuffle_buffer_rows``).
        filesystem: the store's ``pyarrow.fs`` filesystem (``Store.fs``), None for local paths.
        tasks: the tasks (``ranking.resolved_tasks()``; default click, conversion): their label
            columns are read as float32.
    Raises:
        KeyError: a feature or label column is missing from a file (naming the file and the column).
    """
    from dailyrec.stream import ParquetStream, id_encoders

    extra = {col: "float32" for col in label_columns(tasks).values()}
    return ParquetStream(paths, id_encoders(list(specs), vocabularies), extra=extra, batch_size=batch_size,
                         seed=seed, buffer_rows=buffer_rows, filesystem=filesystem)


def stream_dataset(stream: Any, tasks: list[Any] | tuple[str, ...] = RANKING_TASKS) -> Any:
    """``stream.dataset()`` mapped into ``(features, labels)`` (the module doc's format).

    Exactly the batches of ``stream.batches(epoch)``, in their order; ``stream.steps_per_epoch``
    batches long. Each iteration of the dataset (each Keras epoch) reads the stream's next epoch
    (0, 1, ...), so one stream per model: two models fed from fresh streams over the same files
    with the same seed see the same batches (the MMoE and its baseline).
    """
    import tensorflow as tf

    features = list(stream.encoders)
    labels = label_columns(list(tasks))

    def split(batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {f: batch[f] for f in features}, {t: batch[col] for t, col in labels.items()}

    return stream.dataset().map(split).prefetch(tf.data.AUTOTUNE)
