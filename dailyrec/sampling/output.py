"""The output of the retrieval sample step: the row layout of ``train.parquet`` and its streamed,
row-group-at-a-time write, and the ``seen`` pairs (see :mod:`dailyrec.sampling.select`).

:func:`train_rows` lays out the output rows as numpy index arrays (each positive, then its
negatives by source; no sort); :func:`write_train` builds and writes ``train.parquet`` one row
group at a time: the calling thread gathers a group's Arrow columns while a writer thread encodes
the previous one, so no Arrow table of the whole sample is held.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec.history import HISTORY_COLUMN
from dailyrec.sampling.negatives import Negatives
from dailyrec.sampling.positives import Positives

if TYPE_CHECKING:
    from dailyrec.sampling.select import DayInputs

SOURCES = ("positive", "random", "exposed", "same_category", "model")
"""Values of the ``source`` column; rows of one positive follow it in this order."""


TRAIN_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd", "compression_level": 1, "store_schema": False, "write_statistics": False,
    "use_dictionary": [],  # filled per table: the dictionary columns and label (see write_train)
}
"""How ``train.parquet`` is encoded: zstd level 1; Parquet dictionary encoding only for the
low-cardinality string columns (given as Arrow dictionary arrays, so the writer does not hash the
strings) and ``label``; plain (then zstd) for ``user_id`` / ``item_id`` (hundreds of thousands of
distinct values: a dictionary per row group would cost more than it saves), the numbers and
``event_time`` (hashing every value costs more than zstd on the plain values); no column
statistics (nothing filters on them; they cost about a third of the encoding time). Without the
stored Arrow schema a reader gets plain strings back for every string column."""


@dataclass
class TrainRows:
    """The rows of ``train.parquet`` in output order, as index arrays of length ``N``:
    ``owner`` (positive slot, int64), ``click`` (row of ``DayInputs.clicks``, int64), ``user`` (user
    code, int64), ``item`` (catalog code, int64), ``log_q`` (float32), ``src`` (index in
    :data:`SOURCES`, int8)."""

    owner: np.ndarray
    click: np.ndarray
    user: np.ndarray
    item: np.ndarray
    log_q: np.ndarray
    src: np.ndarray
    history: pa.Array | None = None
    """``list<string>[P]`` per positive slot (``features.user_history``, :mod:`dailyrec.history`):
    every row of a positive gets its list (``history_item_ids``); None: no such column."""

    @property
    def n(self) -> int:
        return len(self.owner)


def train_rows(d: "DayInputs", pos: Positives, negs: Negatives) -> TrainRows:
    """Phase 4: each positive followed by its negatives by source (random, exposed, same_category,
    model), positives in slot order. Each source's rows are laid out with counting (no sort):
    a row's position is its owner's start + the owner's rows of the earlier sources + its rank
    among the owner's rows of its source (the sources give their rows in owner order; a source that
    does not is stably sorted first)."""
    parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = [
        (0, np.arange(pos.n, dtype=np.int64), pos.item, pos.log_q)]
    for k, s in enumerate(SOURCES[1:], start=1):
        if s in negs.parts:
            o, it, lq = negs.parts[s]
            if len(o) > 1 and np.any(o[1:] < o[:-1]):
                order = np.argsort(o, kind="stable")
                o, it, lq = o[order], it[order], lq[order]
            parts.append((k, o, it, lq))
    counts = [np.bincount(o, minlength=pos.n) for _, o, _, _ in parts]
    per_owner = np.sum(counts, axis=0) if parts else np.zeros(pos.n, np.int64)
    start = np.zeros(pos.n + 1, np.int64)
    np.cumsum(per_owner, out=start[1:])
    n = int(start[-1])
    owner = np.empty(n, np.int64)
    item = np.empty(n, np.int64)
    log_q = np.empty(n, np.float32)
    src = np.empty(n, np.int8)
    before = start[:-1].copy()  # per owner: where this source's rows begin
    for (k, o, it, lq), cnt in zip(parts, counts):
        first = np.zeros(pos.n + 1, np.int64)
        np.cumsum(cnt, out=first[1:])
        at = before[o] + (np.arange(len(o), dtype=np.int64) - first[o])
        owner[at], item[at], log_q[at], src[at] = o, it, lq, k
        before += cnt
    click = pos.click[owner]
    return TrainRows(owner=owner, click=d.click_rows[click], user=d.cu[click], item=item, log_q=log_q, src=src)


class _Gather:
    """One source column of ``train.parquet`` prepared for fast row gathers with numpy: string
    columns as dictionary indices (int32) + dictionary, numbers as their values, timestamps as
    int64; the null mask kept apart. ``plain=True`` (the ids) gives plain strings instead."""

    def __init__(self, col: pa.ChunkedArray | pa.Array, plain: bool = False) -> None:
        arr = _plain(col)
        self.type = arr.type
        self.plain = arr if plain else None
        self.dictionary = None
        self.valid = None if arr.null_count == 0 else np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))
        if plain:
            return
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            enc = arr.dictionary_encode()
            self.dictionary = enc.dictionary
            self.values = np.asarray(enc.indices.fill_null(0).to_numpy(), np.int32)
        elif pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            self.values = np.asarray(arr.fill_null(0).cast(pa.int64() if pa.types.is_timestamp(arr.type)
                                                           or arr.type == pa.date64() else pa.int32()).to_numpy())
        else:
            self.values = np.asarray(arr.fill_null(0).to_numpy(zero_copy_only=False))

    def take(self, idx: np.ndarray) -> pa.Array:
        if self.plain is not None:
            return self.plain.take(pa.array(idx))
        mask = None if self.valid is None else ~self.valid[idx]
        vals = self.values[idx]
        if self.dictionary is not None:
            return pa.DictionaryArray.from_arrays(pa.array(vals, mask=mask), self.dictionary)
        if pa.types.is_timestamp(self.type) or pa.types.is_date(self.type):
            return pa.array(vals, mask=mask).view(self.type) if mask is None else \
                pa.array(vals, mask=mask).cast(self.type)
        return pa.array(vals, type=self.type, mask=mask)


class _TrainColumns:
    """The source columns of ``train.parquet``, prepared once (:class:`_Gather`): a row group's
    column is then a numpy gather of int32 dictionary indices (string features) or values, the
    ids a take of plain strings."""

    def __init__(self, d: "DayInputs") -> None:
        user_feats, context, item_feats = d.features
        self.cols: list[tuple[str, str, _Gather]] = [("user_id", "user", _Gather(d.users["user_id"], plain=True))]
        self.cols += [(n, "user", _Gather(d.users[n])) for n in user_feats]
        self.cols += [(n, "click", _Gather(d.clicks[n])) for n in context]
        self.cols += [("event_time", "click", _Gather(d.clicks["event_time"])),
                      ("item_id", "item", _Gather(d.catalog["item_id"], plain=True))]
        fresh = d.freshness  # item freshness features: per row, as of the positive's event_time (dailyrec.freshness)
        self.cols += [(n, "item", _Gather(d.catalog[n])) for n in item_feats if fresh is None or n not in fresh.names]
        self.fresh, self.click_time = fresh, None
        if fresh is not None:
            self.click_time = _Gather(d.clicks["event_time"]).values
        self.source = pa.array(SOURCES)

    def table(self, rows: TrainRows, lo: int, hi: int) -> pa.Table:
        """The Arrow table of rows ``lo:hi``."""
        idx = {"user": rows.user[lo:hi], "click": rows.click[lo:hi], "item": rows.item[lo:hi]}
        out = {name: g.take(idx[kind]) for name, kind, g in self.cols}
        if self.fresh is not None:
            out |= self.fresh.columns(idx["item"], self.click_time[idx["click"]])
        src = rows.src[lo:hi]
        out["label"] = pa.array((src == 0).astype(np.float32))
        out["log_q"] = pa.array(rows.log_q[lo:hi])
        out["source"] = pa.DictionaryArray.from_arrays(pa.array(src), self.source)
        if rows.history is not None:  # features.user_history: the positive's leak-free history
            out[HISTORY_COLUMN] = rows.history.take(pa.array(rows.owner[lo:hi]))
        return pa.table(out)


def _plain(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def assemble(d: "DayInputs", pos: Positives, negs: Negatives) -> pa.Table:
    """The whole of ``train.parquet`` as one Arrow table (:func:`train_rows` +
    the row-group builder of :func:`write_samples`); the step itself streams it instead."""
    rows = train_rows(d, pos, negs)
    return _TrainColumns(d).table(rows, 0, rows.n)


def seen_pairs(d: "DayInputs", pos: Positives) -> pa.Table:
    """Every distinct ``(user_id, item_id)`` clicked in the training window on a catalog item,
    before any down-sampling, sorted by ``user_id`` then ``item_id`` (the items the evaluation
    must not count as new recommendations, tasks.retrieval.evaluate_two_tower): decoded from
    ``pos.clicked_keys`` (user codes are in ``user_id`` order; the catalog's item order is sorted
    by ``item_id`` when it is not already)."""
    keys = pos.clicked_keys
    n_items = d.n_items
    users, items = keys // n_items, keys % n_items
    item_ids = _plain(d.catalog["item_id"])
    by_id = np.asarray(pc.array_sort_indices(item_ids).to_numpy(), np.int64)
    if np.any(by_id != np.arange(n_items)):
        rank = np.empty(n_items, np.int64)
        rank[by_id] = np.arange(n_items)
        order = np.lexsort((rank[items], users))
        users, items = users[order], items[order]
    return pa.table({"user_id": d.user_ids.take(pa.array(users)), "item_id": item_ids.take(pa.array(items))})


def write_train(path: str, fs: Any, d: "DayInputs", rows: TrainRows, row_group_rows: int) -> int:
    """Write ``train.parquet`` (columns: docs/features-and-sampling.md) one row group of
    ``row_group_rows`` rows at a time, in row order: the calling thread builds group ``k + 1``
    while a writer thread encodes group ``k`` (at most two groups in memory). Returns the number
    of row groups. Encoding: :data:`TRAIN_PARQUET_OPTIONS`."""
    cols = _TrainColumns(d)
    first = cols.table(rows, 0, min(row_group_rows, rows.n))
    opts = {**TRAIN_PARQUET_OPTIONS,
            "use_dictionary": [f.name for f in first.schema if pa.types.is_dictionary(f.type) or f.name == "label"]}
    groups = 0
    with pq.ParquetWriter(path, first.schema, filesystem=fs, **opts) as writer, \
            ThreadPoolExecutor(1, thread_name_prefix="train-writer") as pool:
        pending: Future[None] | None = pool.submit(writer.write_table, first, row_group_size=row_group_rows)
        groups = 1
        for lo in range(row_group_rows, rows.n, row_group_rows):
            table = cols.table(rows, lo, min(lo + row_group_rows, rows.n))
            pending.result()
            pending = pool.submit(writer.write_table, table, row_group_size=row_group_rows)
            groups += 1
        pending.result()
    return groups
