"""The user's recent clicks, leak-free: the ``history_item_ids`` user-tower input (issue 13).

For a query ``(user u, time t)`` the history is the item ids of ``u``'s last ``N`` clicks with
``event_time`` **strictly before** ``t`` (a click at exactly ``t`` is out, so a positive's own
click and any click sharing its timestamp never enter it) and at or after ``t - lookback``, most
recent first; clicks with the same timestamp are ordered by their row in the click log (later row
= more recent). Repeated clicks on one item are kept (each is an event). The two-tower design's
"user history features"; the model side is :class:`models.two_tower.UserTower` (``history=``).

Where each caller takes its history from (``features.user_history``, docs/features-and-sampling.md):

* the sample step (:func:`ClickLog.for_rows`): every training row, as of its positive's click,
  from the window's clicks it reads (``DayInputs.clicks``); written as the ``list<string>``
  column :data:`HISTORY_COLUMN` of ``samples/dt=D/train.parquet``. It also writes, per user of the
  window, the history as of the end of ``cur_date`` (``user_history.parquet``: serving, the ANN
  recall queries, model hard negatives) and as of the holdout start (``user_history_train.parquet``:
  the evaluation gate, so no held-out click enters it);
* every user-vector computation goes through :func:`attach_history` (left join on ``user_id``, an
  unknown user gets an empty history) and :func:`dailyrec.towers.tower_vectors`, which raises
  :class:`MissingHistoryError` when a history-enabled tower gets rows without the column.

Everything is numpy/pyarrow (sorts and binary searches, no per-row Python loop).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HISTORY_COLUMN = "history_item_ids"
"""Column name (``list<string>``) in ``train.parquet`` and the user-history files; also the user
tower's input name (``[B, N]`` strings, ``""`` = padding; or int32 row ids, 0 = padding/OOV)."""
AS_OF_END_FILE = "user_history.parquet"
"""``samples/dt=D/``: per user, the history as of the end of ``cur_date`` (all the window's clicks)."""
AS_OF_HOLDOUT_FILE = "user_history_train.parquet"
"""``samples/dt=D/``: per user, the history as of the holdout start (training-window clicks only)."""
LIST_TYPE = pa.list_(pa.string())
US_PER_DAY = 86_400 * 1_000_000


class MissingHistoryError(KeyError):
    """A history-enabled user tower was given rows without the :data:`HISTORY_COLUMN` column (the
    caller must :func:`attach_history` first). The message names the tower and the columns."""


def _times_us(col: Any) -> np.ndarray:
    """``int64[n]`` microseconds since the epoch of a timestamp column (``ValueError`` on nulls)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError("event_time: null values in the click log")
    return np.asarray(arr.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(), np.int64)


class ClickLog:
    """A click log prepared for history queries.

    Args:
        user_ids: ``string[C]``; item_ids: ``string[C]``; event_time: ``timestamp[C]`` (any unit,
            converted to microseconds). Row order breaks timestamp ties (later row = more recent).
    """

    def __init__(self, user_ids: Any, item_ids: Any, event_time: Any):
        users = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
        enc = pc.dictionary_encode(users)
        if enc.null_count:
            raise ValueError("user_id: null values in the click log")
        self.users = enc.dictionary  # distinct user ids, in first-seen order
        code = np.asarray(enc.indices.to_numpy(), np.int64)
        t = _times_us(event_time)
        self.order = np.lexsort((np.arange(len(t)), t, code))  # by user, time, row
        self.code, self.t = code[self.order], t[self.order]
        items = item_ids.combine_chunks() if isinstance(item_ids, pa.ChunkedArray) else item_ids
        self.items = items.cast(pa.string()).take(pa.array(self.order))

    def __len__(self) -> int:
        return len(self.t)

    def _keys(self, users: np.ndarray, *times: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Sortable int64 keys of ``(user, time)`` for the log (sorted, as the log is) and for each
        query time array: ``user * span + (time - t0)`` with query times clipped to the log's range
        (which keeps every ``<`` comparison with the log's times), or, when that could overflow
        int64, the time's rank among all the times involved."""
        t_lo = int(self.t.min()) if len(self.t) else 0
        t_hi = int(self.t.max()) + 1 if len(self.t) else 1
        span = t_hi - t_lo + 1
        if span * max(len(self.users), 1) < 2 ** 62:
            return (self.code * span + (self.t - t_lo),
                    [users * span + (np.clip(t, t_lo, t_hi) - t_lo) for t in times])
        ranks = np.sort(np.concatenate([self.t, *times]))
        ranks = ranks[np.r_[True, ranks[1:] != ranks[:-1]]]
        r = np.int64(len(ranks) + 1)
        return self.code * r + np.searchsorted(ranks, self.t), [users * r + np.searchsorted(ranks, t) for t in times]

    def before(self, users: np.ndarray, times: np.ndarray, n: int, lookback_days: int | None = None) -> pa.ListArray:
        """``list<string>[Q]``: for query ``q`` (``users[q]``: code in :attr:`users`, ``-1`` = not in
        the log; ``times[q]``: int64 microseconds) the last ``n`` item ids of that user with
        ``time < times[q]`` (and ``>= times[q] - lookback_days``), most recent first."""
        users = np.asarray(users, np.int64)
        times = np.asarray(times, np.int64)
        known = users >= 0
        u = np.where(known, users, 0)
        first = int(self.t.min()) if len(self.t) else 0  # no lookback: from the user's first click
        lo_t = times - lookback_days * US_PER_DAY if lookback_days else np.full(len(times), first, np.int64)
        click_key, (end_key, start_key) = self._keys(u, times, lo_t)
        end = np.searchsorted(click_key, end_key, side="left")
        start = np.searchsorted(click_key, start_key, side="left")
        count = np.where(known, np.minimum(np.maximum(end - start, 0), n), 0)
        offsets = np.zeros(len(users) + 1, np.int64)
        np.cumsum(count, out=offsets[1:])
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], count)
        flat = np.repeat(end - 1, count) - within
        values = self.items.take(pa.array(flat)) if len(flat) else pa.array([], pa.string())
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)

    def codes_of(self, user_ids: Any) -> np.ndarray:
        """``int64[n]``: each user id's code in :attr:`users` (-1 when the user has no click)."""
        idx = pc.index_in(user_ids, value_set=self.users)
        return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)

    def for_rows(self, rows: np.ndarray, n: int, lookback_days: int | None = None) -> pa.ListArray:
        """``list<string>[len(rows)]``: the history of the log's own rows ``rows`` (original row
        numbers), each as of its own ``event_time`` (strictly before it)."""
        inv = np.empty(len(self.order), np.int64)
        inv[self.order] = np.arange(len(self.order))
        at = inv[np.asarray(rows, np.int64)]
        return self.before(self.code[at], self.t[at], n, lookback_days)

    def as_of(self, t_end_us: int, n: int, lookback_days: int | None = None) -> pa.Table:
        """``{user_id: string, history_item_ids: list<string>}``, one row per user of the log with at
        least one click strictly before ``t_end_us`` (microseconds), sorted by ``user_id``."""
        order = np.asarray(pc.array_sort_indices(self.users).to_numpy(), np.int64)
        hist = self.before(order, np.full(len(order), t_end_us, np.int64), n, lookback_days)
        keep = np.asarray(pc.list_value_length(hist).to_numpy(zero_copy_only=False)) > 0
        table = pa.table({"user_id": self.users.take(pa.array(order)).cast(pa.string()), HISTORY_COLUMN: hist})
        return table.filter(pa.array(keep))


def attach_history(rows: pa.Table, history: pa.Table | None, replace: bool = False) -> pa.Table:
    """``rows`` with the :data:`HISTORY_COLUMN` column from ``history`` (``user_id`` ->
    ``list<string>``, e.g. :func:`read_history`), joined on ``user_id``; users absent from it get
    ``[]`` (a new user: the tower's learned empty-history vector). ``history=None`` gives every row
    ``[]``. The one helper every user-vector caller uses. ``KeyError`` without a ``user_id`` column;
    ``ValueError`` when ``rows`` already has the column (unless ``replace``)."""
    if "user_id" not in rows.column_names:
        raise KeyError(f"attach_history: rows have no 'user_id' column; columns: {rows.column_names}")
    if HISTORY_COLUMN in rows.column_names:
        if not replace:
            raise ValueError(f"attach_history: rows already have a {HISTORY_COLUMN!r} column")
        rows = rows.drop_columns([HISTORY_COLUMN])
    if history is None or history.num_rows == 0:
        lists = pa.array([[]] * rows.num_rows, LIST_TYPE)
    else:
        table = pa.concat_arrays([history.column(HISTORY_COLUMN).combine_chunks().cast(LIST_TYPE),
                                  pa.array([[]], LIST_TYPE)])
        idx = pc.index_in(rows.column("user_id").cast(pa.string()),
                          value_set=history.column("user_id").combine_chunks().cast(pa.string()))
        lists = table.take(idx.fill_null(history.num_rows))
    return rows.append_column(pa.field(HISTORY_COLUMN, LIST_TYPE), lists)


def read_history(store: Any, cur_date: str, as_of: str = "end") -> pa.Table:
    """The user-history file the sample step wrote for ``cur_date``: ``as_of="end"`` (the end of
    ``cur_date``: serving, ANN queries, model negatives) or ``"holdout"`` (the holdout start: the
    evaluation gate). ``FileNotFoundError`` names the file and the step to run."""
    import pyarrow.parquet as pq

    name = AS_OF_END_FILE if as_of == "end" else AS_OF_HOLDOUT_FILE
    path = f"{store.partition('samples', cur_date)}/{name}"
    if not store.exists(path):
        raise FileNotFoundError(f"{path} is missing: run tasks.retrieval.sample for {cur_date} with "
                                "features.user_history.enabled")
    with store.fs.open_input_file(path) as fh:
        return pq.read_table(fh)


def history_matrix(lists: Any, n: int) -> np.ndarray:
    """``object[R, n]`` strings of a ``list<string>[R]`` column, truncated to ``n``, padded with ``""``
    (the raw input of a history-enabled user tower's ``serving_default``)."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    rows, cols, values = _positions(arr, n)
    out = np.full((len(arr), n), "", dtype=object)
    out[rows, cols] = values.to_numpy(zero_copy_only=False)
    return out


def _positions(arr: pa.ListArray, n: int) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(row, position, value) of every list element at a position ``< n`` (nulls: empty lists)."""
    arr = arr.fill_null(pa.scalar([], arr.type)) if arr.null_count else arr
    lengths = np.asarray(pc.list_value_length(arr).to_numpy(zero_copy_only=False), np.int64)
    offsets = np.zeros(len(arr) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = np.repeat(np.arange(len(arr), dtype=np.int64), lengths)
    cols = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    keep = np.flatnonzero(cols < n)
    return rows[keep], cols[keep], pc.list_flatten(arr).take(pa.array(keep))


class HistoryEncoder:
    """A ``list<string>[R]`` column -> ``int32[R, length]`` row ids of the history's embedding table,
    exactly as the user tower looks raw ids up (``StringLookup(num_oov_indices=1)`` over the
    ``item_id`` vocabulary: position + 1; 0 = out-of-vocabulary **and** padding, both masked out of
    the pooling). The streaming reader's encoder of :data:`HISTORY_COLUMN`
    (:func:`dailyrec.stream.id_encoders`); ``mode == "history"``, ``shape == (length,)``."""

    mode = "history"
    dtype = np.dtype(np.int32)

    def __init__(self, length: int, vocabulary: list[str]):
        if not vocabulary:
            raise ValueError(f"{HISTORY_COLUMN}: the history needs the item_id vocabulary (features step)")
        self.name = HISTORY_COLUMN
        self.length = int(length)
        self.shape = (self.length,)
        self.vocabulary = pa.array([str(v) for v in vocabulary], pa.string())

    def __call__(self, column: Any) -> np.ndarray:
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
            raise TypeError(f"{HISTORY_COLUMN}: column type {arr.type}, expected list<string>")
        rows, cols, values = _positions(arr, self.length)
        ids = pc.fill_null(pc.add(pc.index_in(values.cast(pa.string()), value_set=self.vocabulary), 1), 0)
        out = np.zeros((len(arr), self.length), np.int32)
        out[rows, cols] = np.asarray(ids.to_numpy(zero_copy_only=False), np.int32)
        return out


def day_histories(clicks: pa.Table, positive_rows: np.ndarray, cur_date: str, holdout_start: str,
                  n: int, lookback_days: int | None) -> dict[str, Any]:
    """The sample step's three histories from the window's clicks (``DayInputs.clicks``: user_id,
    item_id, event_time; holdout hours included):

    * ``"positives"``: ``list<string>[P]``, each positive (its row of ``clicks`` in
      ``positive_rows``) as of its own ``event_time``;
    * ``"end"``: :meth:`ClickLog.as_of` the end of ``cur_date`` (:data:`AS_OF_END_FILE`);
    * ``"holdout"``: as of ``holdout_start`` (ISO UTC; :data:`AS_OF_HOLDOUT_FILE`), so no
      held-out click is in the evaluation's user vectors.
    """
    import datetime as dt

    log = ClickLog(clicks["user_id"], clicks["item_id"], clicks["event_time"])
    end = dt.datetime.fromisoformat(cur_date).replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    start = dt.datetime.fromisoformat(holdout_start.replace("Z", "+00:00"))
    start = start if start.tzinfo else start.replace(tzinfo=dt.timezone.utc)

    def us(t: dt.datetime) -> int:
        return int(t.timestamp()) * 1_000_000

    return {"positives": log.for_rows(positive_rows, n, lookback_days),
            "end": log.as_of(us(end), n, lookback_days), "holdout": log.as_of(us(start), n, lookback_days)}


def history_encoders(features_cfg: Any, vocabularies: dict[str, list[str]]) -> dict[str, HistoryEncoder]:
    """``{HISTORY_COLUMN: HistoryEncoder}`` when ``features_cfg.user_history.enabled`` (else ``{}``),
    to add to :func:`dailyrec.stream.id_encoders` for a :class:`dailyrec.stream.ParquetStream`."""
    h = features_cfg.user_history
    if not h.enabled:
        return {}
    return {HISTORY_COLUMN: HistoryEncoder(h.length, vocabularies.get(HISTORY_COLUMN) or vocabularies.get("item_id"))}


def rows_with_history(rows: pa.Table, store: Any, cfg: Any, cur_date: str, as_of: str = "end") -> pa.Table:
    """``rows`` (user rows with ``user_id``) with the history the sample step wrote for ``cur_date``
    (:func:`read_history` ``as_of``, then :func:`attach_history`) when ``features.user_history.enabled``;
    unchanged otherwise. What the evaluation (``as_of="holdout"``), serving, the ANN recall queries
    and the model hard negatives call before :func:`dailyrec.towers.tower_vectors`."""
    if not cfg.features.user_history.enabled:
        return rows
    return attach_history(rows, read_history(store, cur_date, as_of), replace=True)
