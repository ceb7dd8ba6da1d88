"""Tower vectors: an exported tower SavedModel applied to an Arrow table.

* :func:`tower_vectors`: ``float32[N, D]`` of a tower (``models/two_tower/dt=D/{user,item}_tower``)
  on the rows of a table of raw features. Given the model's vocabularies it takes the id path: the
  columns become integer embedding-table row ids on the Arrow side (``dailyrec.stream.id_encoders``)
  and the tower's ``embed_ids`` endpoint runs on them, checked on a sample of rows against the raw
  ``serving_default`` signature; otherwise raw values go through ``serving_default``.
* The id path's pieces (:func:`tower_specs`, :func:`encode_ids`, :func:`id_batches`,
  :func:`check_against_serving`), which :func:`dailyrec.embeddings.export_items` pipelines with
  its Parquet write.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from dailyrec.errors import ContractError
from dailyrec.history import HISTORY_COLUMN, HistoryEncoder, MissingHistoryError, history_matrix

EXPORT_BATCH_ROWS = 16_384
"""Rows per tower call on the id path (measured: 16k rows per call ran the 1M x 64 item tower with
less CPU than 8k, 64k or 256k; the hidden activations of a call stay in cache)."""
CHECK_ROWS = 1_024
"""Rows the id path also runs through the raw serving signature, as a guard."""
CHECK_ATOL = 1e-6


def guard_rows(n: int) -> np.ndarray:
    """``CHECK_ROWS`` row positions spread over ``0..n-1`` (the first and the last included)."""
    return np.unique(np.linspace(0, n - 1, min(n, CHECK_ROWS)).round().astype(np.int64))


def tower_specs(tower: Any, specs: list[Any], table: pa.Table, where: str) -> list[Any]:
    """The specs of the tower's inputs; ``KeyError`` for an input without a spec or a column."""
    wanted = [s for s in specs if s.name in tower.feature_names]
    missing = sorted(set(tower.feature_names) - {s.name for s in wanted} - {HISTORY_COLUMN})
    if HISTORY_COLUMN in tower.feature_names and HISTORY_COLUMN not in table.column_names:
        raise MissingHistoryError(f"{where}: the tower pools the user history ({HISTORY_COLUMN}) but the rows have no "
                                  f"such column (dailyrec.history.attach_history): run with "
                                  f"features.user_history.enabled=true, as the model was trained; columns: "
                                  f"{table.column_names}")
    if missing:
        raise KeyError(f"{where}: no feature spec for tower input(s) {missing}")
    for s in wanted:
        if s.name not in table.column_names:
            raise KeyError(f"{where}: column '{s.name}' (feature spec) is missing; columns: {table.column_names}")
    if table.num_rows == 0:
        raise ValueError(f"{where}: nothing to embed: 0 rows")
    return wanted


def encode_ids(table: pa.Table, specs: list[Any], vocabularies: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """``{feature: int32[N]}`` embedding-table row ids, computed on the Arrow side (``IdEncoder``);
    a ``history_item_ids`` column of ``table`` -> ``int32[N, W]`` (``HistoryEncoder``)."""
    from dailyrec.stream import id_encoders

    out = {name: enc(table.column(name)) for name, enc in id_encoders(specs, vocabularies).items()}
    if HISTORY_COLUMN in table.column_names:
        col = table.column(HISTORY_COLUMN)
        out[HISTORY_COLUMN] = HistoryEncoder(_width(col), vocabularies.get(HISTORY_COLUMN)
                                             or vocabularies.get("item_id"))(col)
    return out


def _width(col: Any) -> int:
    """Matrix width of a history column: its longest list (at least 1)."""
    import pyarrow.compute as pc

    return max(1, int(pc.max(pc.list_value_length(col)).as_py() or 0))


def raw_features(table: pa.Table, specs: list[Any], tower: Any, where: str) -> dict[str, np.ndarray]:
    """:func:`dailyrec.inputs.feature_arrays` plus, for a tower that takes it, the history as an
    ``object[N, W]`` string matrix padded with ``""`` (:func:`dailyrec.history.history_matrix`)."""
    from dailyrec.inputs import feature_arrays

    out = feature_arrays(table, specs, where=where)
    if HISTORY_COLUMN in tower.feature_names:
        col = table.column(HISTORY_COLUMN)
        out[HISTORY_COLUMN] = history_matrix(col, _width(col))
    return out


def id_batches(tower: Any, ids: dict[str, np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """``float32[b, D]`` per slice of ``batch_size`` rows: the tower's ``embed_ids`` endpoint. ``ids``:
    ``{feature: integer[N]}`` (``IdEncoder`` gives int32), cast to the endpoint's input dtype (int64)."""
    import tensorflow as tf

    from models.serving import EMBEDDING, IDS_SIGNATURE

    endpoint = tower.endpoint(IDS_SIGNATURE)
    fn, dtypes = endpoint._fn, endpoint.dtypes
    n = len(next(iter(ids.values())))
    for start in range(0, n, batch_size):
        yield fn(**{k: tf.constant(v[start:start + batch_size], dtype=dtypes[k])
                    for k, v in ids.items()})[EMBEDDING].numpy()


def check_against_serving(tower: Any, table: pa.Table, specs: list[Any], rows: np.ndarray, got: np.ndarray, where: str) -> None:
    """Raise ``ContractError`` unless ``got`` (the id path's vectors of ``rows``) equals the raw
    serving signature's vectors of those rows to :data:`CHECK_ATOL`."""
    sample = table.take(pa.array(rows))
    want = tower(raw_features(sample, specs, tower, where))
    diff = np.abs(got - want).max(axis=1)
    if (diff > CHECK_ATOL).any():
        bad = int(np.argmax(diff > CHECK_ATOL))
        values = {s.name: sample.column(s.name)[bad].as_py() for s in specs}
        raise ContractError(f"{where}: the tower on Arrow-side ids differs from its serving signature by up to "
                            f"{float(diff.max()):.3g} (row {int(rows[bad])}, {values}): the vocabularies given "
                            f"are not the tower's")


def tower_vectors(tower_dir: str, table: pa.Table, specs: list[Any],
                  vocabularies: dict[str, list[str]] | None = None,
                  batch_size: int = EXPORT_BATCH_ROWS) -> np.ndarray:
    """``float32[N, D]``: the tower SavedModel at ``tower_dir`` on the ``N`` rows of ``table``.

    Only the specs the tower takes (its ``feature_names``) are read from ``table``.

    * With ``vocabularies`` (the model's own ``{feature: [id, ...]}``, i.e.
      ``models/two_tower/dt=D/model/vocabularies.json``) and a tower exported with the
      ``embed_ids`` endpoint (``models.serving.IDS_SIGNATURE``): the columns become integer row ids
      on the Arrow side (``dailyrec.stream.id_encoders``, the tower's own lookup rules), so no
      string reaches TensorFlow, and the tower runs in slices of ``batch_size`` rows. As a guard,
      :data:`CHECK_ROWS` rows spread over the table also go through the raw ``serving_default``
      signature and must give the same vectors (to :data:`CHECK_ATOL`).
    * Otherwise: raw values (:func:`dailyrec.inputs.feature_arrays`) through ``serving_default``.

    A history-enabled user tower (``features.user_history``) takes the ``history_item_ids`` column
    of ``table`` (``list<string>``, :func:`dailyrec.history.attach_history`).

    Raises:
        KeyError: a column the tower needs is missing (naming it and ``tower_dir``);
            :class:`dailyrec.history.MissingHistoryError` for the history column.
        ContractError: the id path disagrees with the serving signature (``vocabularies`` are not
            the tower's), naming the tower, the feature values of the first differing row and the
            largest difference.
        ValueError: ``table`` has no rows.
    """
    from dailyrec.inputs import predict_in_batches
    from models.serving import IDS_SIGNATURE, load_tower

    tower = load_tower(tower_dir)
    wanted = tower_specs(tower, specs, table, tower_dir)
    if HISTORY_COLUMN not in tower.feature_names and HISTORY_COLUMN in table.column_names:
        table = table.drop_columns([HISTORY_COLUMN])  # a tower without history ignores the column
    if vocabularies is None or IDS_SIGNATURE not in tower.signatures:
        return predict_in_batches(tower, raw_features(table, wanted, tower, tower_dir))
    out = np.concatenate(list(id_batches(tower, encode_ids(table, wanted, vocabularies), batch_size)))
    rows = guard_rows(len(out))
    check_against_serving(tower, table, wanted, rows, out[rows], tower_dir)
    return out
