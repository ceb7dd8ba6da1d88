"""Fast loading of vectors into Redis: commands packed to the Redis protocol with numpy.

* :func:`crc32_rows`: ``zlib.crc32`` of many byte strings at once (the bucket of every item);
* :func:`id_groups`: item ids as ``(m, L)`` uint8 matrices, grouped by UTF-8 byte length;
* :class:`VectorPacker`: ``HSET`` commands of every vector, bucket by bucket, as bytes;
* :class:`RawPipe`: sends pre-packed commands on one pooled connection, one batch in flight;
* :func:`pack_command`, :func:`chunks`: one RESP2 command; a blob cut into chunks.

Protocol: RESP2, https://redis.io/docs/latest/develop/reference/protocol-spec/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa


def pack_command(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP2): ``*<n>\\r\\n`` then ``$<len>\\r\\n<arg>\\r\\n`` per arg."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def chunks(blob: bytes, size: int) -> list[memoryview]:
    """``blob`` cut into views of at most ``size`` bytes (one empty view for an empty blob)."""
    mv = memoryview(blob)
    return [mv[i:i + size] for i in range(0, len(blob), size)] or [mv[:0]]


def _crc_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0xEDB88320), t >> 1).astype(np.uint32)
    return t


_CRC_TABLE = _crc_table()


def crc32_rows(mat: np.ndarray) -> np.ndarray:
    """``zlib.crc32`` (IEEE 802.3, reflected, table-driven) of every row of an ``(m, L)`` uint8
    matrix, vectorised over the rows: ``(m,)`` uint32."""
    crc = np.full(len(mat), 0xFFFFFFFF, dtype=np.uint32)
    for c in range(mat.shape[1]):
        crc = _CRC_TABLE[(crc ^ mat[:, c]) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def id_groups(ids: Any) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``[(byte length L, row numbers (int64), (m, L) uint8 UTF-8 bytes)]``: the ids grouped by length.

    ``ids``: a list of str, or a pyarrow string array (chunked or not).
    """
    arr = (ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, pa.string()))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_binary())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    groups = []
    for length in np.unique(lengths).tolist():
        rows = np.nonzero(lengths == length)[0]
        mat = np.empty((len(rows), length), dtype=np.uint8)
        for s in range(0, len(rows), 1 << 18):  # bounded temporaries
            part = rows[s:s + (1 << 18)]
            mat[s:s + len(part)] = data[offsets[part][:, None] + np.arange(length)]
        groups.append((length, rows, mat))
    return groups


class VectorPacker:
    """HSET commands for all vectors, built with numpy instead of per-item Python.

    ``emb``: an object with ``vectors`` (``(n, dim)`` float32), ``item_ids`` (n str) and optionally
    ``item_ids_arrow`` (the same ids as a pyarrow array), e.g. :class:`dailyrec.ann.Embeddings`.
    Ids are grouped by UTF-8 length; in a group every field/value pair is a fixed-size record
    ``$L\\r\\n<id>\\r\\n$<dim*4>\\r\\n<float32 LE>\\r\\n``, so a run of items of one bucket is one
    ``ndarray.tobytes()``. Buckets come from a vectorised CRC-32 (equal to ``zlib.crc32``; the
    verification step re-derives spot-checked buckets with ``zlib``). ``counts[b]`` is the number
    of vectors of bucket ``b``.
    """

    def __init__(self, emb: Any, buckets: int) -> None:
        n, dim = emb.vectors.shape
        self.width = dim * 4
        self.buckets = buckets
        self.vec = np.ascontiguousarray(emb.vectors, dtype="<f4").view(np.uint8).reshape(n, self.width)
        ids = emb.item_ids_arrow if getattr(emb, "item_ids_arrow", None) is not None else emb.item_ids
        self.groups = []
        self.counts = np.zeros(buckets, dtype=np.int64)
        for length, rows, mat in id_groups(ids):
            bucket = (crc32_rows(mat) % np.uint32(buckets)).astype(np.int64)
            order = np.argsort(bucket, kind="stable")
            run = np.searchsorted(bucket[order], np.arange(buckets + 1), side="left")
            self.counts += np.diff(run)
            self.groups.append((length, rows[order], mat[order], run.tolist()))

    def _records(self, length: int, rows: np.ndarray, mat: np.ndarray) -> bytes:
        pre, mid = b"$%d\r\n" % length, b"\r\n$%d\r\n" % self.width
        a, b = len(pre), len(pre) + length
        c = b + len(mid)
        rec = np.empty((len(rows), c + self.width + 2), dtype=np.uint8)
        rec[:, :a] = np.frombuffer(pre, np.uint8)
        rec[:, a:b] = mat
        rec[:, b:c] = np.frombuffer(mid, np.uint8)
        rec[:, c:c + self.width] = self.vec[rows]
        rec[:, c + self.width:] = np.frombuffer(b"\r\n", np.uint8)
        return rec.tobytes()

    def batches(self, key_of: Callable[[int], bytes], batch: int) -> Iterator[list[bytes]]:
        """Lists of packed HSETs holding ``batch`` vectors each (the last may hold fewer);
        ``key_of(bucket)`` is the hash key of a bucket."""
        for keyed in self.keyed_batches(key_of, batch):
            yield [cmd for _, cmd in keyed]

    def keyed_batches(self, key_of: Callable[[int], bytes], batch: int) -> Iterator[list[tuple[bytes, bytes]]]:
        """:meth:`batches` with each command's key: lists of ``(key, packed HSET)`` (a cluster routes by key)."""
        cmds: list[tuple[bytes, bytes]] = []
        filled = 0
        for bucket in range(self.buckets):
            key = None
            for length, rows, mat, run in self.groups:
                j, k = run[bucket], run[bucket + 1]
                while j < k:
                    m = min(k - j, batch - filled)
                    key = key or key_of(bucket)
                    cmds.append((key, b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n" % (2 + 2 * m, len(key), key)
                                 + self._records(length, rows[j:j + m], mat[j:j + m])))
                    j += m
                    filled += m
                    if filled >= batch:
                        yield cmds
                        cmds, filled = [], 0
        if cmds:
            yield cmds


class RawPipe:
    """Pre-packed commands over one pooled connection, one batch in flight while the next is packed.

    ``send(commands, check)`` writes a batch, then reads the *previous* batch's replies and calls
    its ``check(replies)``; a ``ResponseError`` reply is raised after all replies are read (the
    connection stays in sync). On an exception the connection is dropped, not reused.
    """

    def __init__(self, r: Any) -> None:
        self.pool = r.connection_pool
        self.conn: Any = None
        self._pending: tuple[int, Any] | None = None

    def __enter__(self) -> "RawPipe":
        self.conn = self.pool.get_connection()
        return self

    def send(self, commands: list[bytes], check: Any = None) -> None:
        self.conn.send_packed_command([b"".join(commands)], check_health=False)
        self.flush()
        self._pending = (len(commands), check)

    def flush(self) -> None:
        """Read the replies of the batch in flight (if any) and check them."""
        if self._pending is None:
            return
        count, check = self._pending
        self._pending = None
        replies, error = [], None
        import redis

        for _ in range(count):
            try:
                replies.append(self.conn.read_response())
            except redis.exceptions.ResponseError as exc:  # keep reading: the connection stays in sync
                error = error or exc
                replies.append(exc)
        if error is not None:
            raise error
        if check is not None:
            check(replies)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None:
                self.flush()
        except BaseException:
            self.conn.disconnect()
            raise
        finally:
            if exc_type is not None:
                self.conn.disconnect()
            self.pool.release(self.conn)
