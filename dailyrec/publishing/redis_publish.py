"""Stage 8 of the daily retrieval DAG: atomic, versioned publish of item vectors + index to Redis.

    python -m dailyrec.publishing.redis_publish --cur-date 2026-11-01 [--allow-backwards]
    python -m dailyrec.publishing.redis_publish rollback [--to VERSION]
    python -m dailyrec.publishing.redis_publish status

Key layout (all under ``cfg.redis.namespace`` = ``ns``; the full description, with the reasons,
is docs/redis-layout.md)::

    ns:current                      string  version id serving reads (only ever a complete, verified version)
    ns:previous                     string  the version ``current`` pointed at before (rollback target)
    ns:versions                     zset    published versions, score = cur_date as YYYYMMDD
    ns:lock                         string  publisher lock (JSON host/pid/token, PX TTL, renewed per batch)
    ns:v:<ver>:meta                 string  JSON: cur_date, created, model_version, count, dim, buckets, index ...
    ns:v:<ver>:vec:<b>              hash    item_id -> dim float32 little-endian; b = crc32(utf8(item_id)) % buckets
    ns:v:<ver>:ids                  string  JSON array of item ids, faiss label i = element i (chunks: :ids:1 ...)
    ns:v:<ver>:index                string  faiss.serialize_index bytes (chunks of redis.blob_chunk_mb: :index:1 ...)
    ns:v:<ver>:complete             string  marker, set in the same transaction that makes the version visible
    ns:stage:<ver>:...              the same keys while a publish is loading (never read by readers)

``<ver>`` = ``<cur_date>_<model_version>`` (model_version made key-safe), so a re-run of a date
rewrites the same version. A publish loads everything under ``ns:stage:<ver>:``, verifies it
(per-bucket counts, spot-checked vectors byte-equal to the Parquet, blob sizes/bytes, meta), and
then one MULTI/EXEC (WATCHing ``ns:current`` and ``ns:lock``) renames the staged keys onto
``ns:v:<ver>:``, sets ``complete``, records the version and switches ``current``/``previous``.
A crash before EXEC leaves only ``ns:stage:*`` keys, which the next publish deletes first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.errors import ContractError
from dailyrec.publishing.connection import describe, get_redis
from dailyrec.storage import Store, Timer, open_store
from dailyrec.ann import read_embeddings, read_index_output

log = logging.getLogger("dailyrec.publish")

# redis.publish_batch, redis.vectors_per_bucket and redis.blob_chunk_mb are config keys; the
# environment variables below override them in tests and benchmarks (tiny batches and chunks).
SPOT_CHECKS = 256
LOCK_TTL_MS = 120_000
LOCK_WAIT_S = 300.0
SCAN_COUNT = 1000
DELETE_BATCH = 1000


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


def _env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v else default


def publish_batch(cfg: Config) -> int:
    return max(1, _env_int("DAILYREC_PUBLISH_BATCH", cfg.redis.publish_batch))


def blob_chunk_bytes(cfg: Config) -> int:
    return max(1, _env_int("DAILYREC_PUBLISH_CHUNK_BYTES", cfg.redis.blob_chunk_mb << 20))


def batch_delay_s() -> float:
    """Sleep after each vector batch (test knob to make a publish slow enough to kill mid-load)."""
    return _env_float("DAILYREC_PUBLISH_BATCH_DELAY_S", 0.0)


class PublishError(RuntimeError):
    """The staged version failed verification, or the publish lost its lock; ``current`` is unchanged."""


# ---- names -----------------------------------------------------------------------------------------

def version_id(cur_date: str, model_version: str) -> str:
    """``<cur_date>_<model_version>``; a model_version with characters outside ``[A-Za-z0-9._-]``
    (or longer than 64) is sanitised and suffixed with 8 hex of its sha1, so the id stays unique."""

    cur_date = parse_date(cur_date).isoformat()
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", model_version)[:64]
    if safe != model_version or not safe:
        safe = f"{safe}-{hashlib.sha1(model_version.encode()).hexdigest()[:8]}"
    return f"{cur_date}_{safe}"


def date_score(cur_date: str) -> int:
    return int(parse_date(cur_date).strftime("%Y%m%d"))


def bucket_of(item_id: str, buckets: int) -> int:
    return zlib.crc32(item_id.encode()) % buckets


def n_buckets(count: int, per_bucket: int) -> int:
    return max(1, math.ceil(count / per_bucket))


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


class Keys:
    """Key names of one namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.current = f"{ns}:current"
        self.previous = f"{ns}:previous"
        self.versions = f"{ns}:versions"
        self.lock = f"{ns}:lock"

    def v(self, ver: str, suffix: str) -> str:
        return f"{self.ns}:v:{ver}:{suffix}"

    def stage(self, ver: str, suffix: str) -> str:
        return f"{self.ns}:stage:{ver}:{suffix}"

    def version_pattern(self, ver: str | None = None) -> str:
        return f"{_glob_escape(self.ns)}:v:{_glob_escape(ver) + ':' if ver else ''}*"

    def stage_pattern(self) -> str:
        return f"{_glob_escape(self.ns)}:stage:*"

    def version_of(self, key: str) -> str:
        return key[len(self.ns) + 3:].split(":", 1)[0]


def _s(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def _scan(r: Any, pattern: str) -> Iterator[str]:
    for key in r.scan_iter(match=pattern, count=SCAN_COUNT):
        yield _s(key)


def _unlink_all(r: Any, keys: list[str]) -> int:
    for i in range(0, len(keys), DELETE_BATCH):
        r.unlink(*keys[i:i + DELETE_BATCH])
    return len(keys)


def _chunks(blob: bytes, size: int) -> list[memoryview]:
    mv = memoryview(blob)
    return [mv[i:i + size] for i in range(0, len(blob), size)] or [mv[:0]]


def _blob_suffixes(name: str, chunks: int) -> list[str]:
    return [name] + [f"{name}:{i}" for i in range(1, chunks)]


def _pack(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP2)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _crc_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0xEDB88320), t >> 1).astype(np.uint32)
    return t


_CRC_TABLE = _crc_table()


def crc32_rows(mat: np.ndarray) -> np.ndarray:
    """``zlib.crc32`` of every row of an ``(m, L)`` uint8 matrix, vectorised over the rows."""
    crc = np.full(len(mat), 0xFFFFFFFF, dtype=np.uint32)
    for c in range(mat.shape[1]):
        crc = _CRC_TABLE[(crc ^ mat[:, c]) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def _id_groups(ids: Any) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``[(byte length L, row numbers, (m, L) uint8 UTF-8 bytes)]``: the ids grouped by length."""
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


class _VectorPacker:
    """HSET commands for all vectors, built with numpy instead of per-item Python.

    Ids are grouped by UTF-8 length; in a group every field/value pair is a fixed-size record
    ``$L\\r\\n<id>\\r\\n$<dim*4>\\r\\n<float32 LE>\\r\\n``, so a run of items of one bucket is one
    ``ndarray.tobytes()``. Buckets come from a vectorised CRC-32 (equal to ``zlib.crc32``; the
    verification step re-derives spot-checked buckets with ``zlib``).
    """

    def __init__(self, emb: Any, buckets: int) -> None:
        n, dim = emb.vectors.shape
        self.width = dim * 4
        self.buckets = buckets
        self.vec = np.ascontiguousarray(emb.vectors, dtype="<f4").view(np.uint8).reshape(n, self.width)
        ids = emb.item_ids_arrow if getattr(emb, "item_ids_arrow", None) is not None else emb.item_ids
        self.groups = []
        self.counts = np.zeros(buckets, dtype=np.int64)
        for length, rows, mat in _id_groups(ids):
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

    def batches(self, key_of: Any, batch: int) -> Iterator[list[bytes]]:
        """Lists of packed HSETs holding ``batch`` vectors each (the last may hold fewer)."""
        cmds: list[bytes] = []
        filled = 0
        for bucket in range(self.buckets):
            key = None
            for length, rows, mat, run in self.groups:
                j, k = run[bucket], run[bucket + 1]
                while j < k:
                    m = min(k - j, batch - filled)
                    key = key or key_of(bucket)
                    cmds.append(b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n" % (2 + 2 * m, len(key), key)
                                + self._records(length, rows[j:j + m], mat[j:j + m]))
                    j += m
                    filled += m
                    if filled >= batch:
                        yield cmds
                        cmds, filled = [], 0
        if cmds:
            yield cmds


class _RawPipe:
    """Pre-packed commands over one pooled connection, one batch in flight while the next is packed."""

    def __init__(self, r: Any) -> None:
        self.pool = r.connection_pool
        self.conn: Any = None
        self._pending: tuple[int, Any] | None = None

    def __enter__(self) -> "_RawPipe":
        self.conn = self.pool.get_connection()
        return self

    def send(self, commands: list[bytes], check: Any = None) -> None:
        self.conn.send_packed_command([b"".join(commands)], check_health=False)
        self.flush()
        self._pending = (len(commands), check)

    def flush(self) -> None:
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


# ---- lock ------------------------------------------------------------------------------------------

_CAS_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0"""
_CAS_DEL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return True


class PublishLock:
    """One publisher/rollback per namespace at a time.

    ``SET ns:lock <json> NX PX LOCK_TTL_MS``, renewed with every batch. A lock left by a killed
    process on this host (its pid is gone) is taken over at once; otherwise it expires after the TTL.
    """

    def __init__(self, r: Any, keys: Keys) -> None:
        self.r, self.key = r, keys.lock
        self.value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "token": uuid.uuid4().hex}, sort_keys=True).encode()
        self._cas_set = r.register_script(_CAS_SET)
        self._cas_del = r.register_script(_CAS_DEL)
        self.renew_script = r.register_script(_RENEW)

    def __enter__(self) -> "PublishLock":
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            if self.r.set(self.key, self.value, nx=True, px=LOCK_TTL_MS):
                return self
            held = self.r.get(self.key)
            if held is not None:
                try:
                    info = json.loads(held)
                except ValueError:
                    info = {}
                if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
                        and not _pid_alive(info["pid"]):
                    if self._cas_set(keys=[self.key], args=[held, self.value, LOCK_TTL_MS]):
                        log.warning("took over the publish lock of dead process %s", info)
                        return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"publish lock {self.key} is held by {_s(held)} for more than {LOCK_WAIT_S}s")
            time.sleep(0.2)

    def renew_command(self) -> list[bytes]:
        """The renewal as a packed EVAL (appended to raw batches)."""
        return [_pack(b"EVAL", _RENEW.encode(), b"1", self.key.encode(), self.value, str(LOCK_TTL_MS).encode())]

    def renew(self, pipe: Any | None = None) -> Any:
        return self.renew_script(keys=[self.key], args=[self.value, LOCK_TTL_MS], client=pipe or self.r)

    def check(self, ok: Any) -> None:
        if not ok:
            raise PublishError(f"lost the publish lock {self.key} (expired and taken by another process?)")

    def __exit__(self, *exc: Any) -> None:
        try:
            self._cas_del(keys=[self.key], args=[self.value])
        except Exception:  # the TTL will free it
            log.warning("could not release %s", self.key, exc_info=True)


# ---- inputs ----------------------------------------------------------------------------------------

class _Inputs:
    def __init__(self, store: Store, cur_date: str) -> None:
        self.emb = read_embeddings(store, cur_date)
        self.index_manifest, index_path, ids_path = read_index_output(store, cur_date)
        inputs = self.index_manifest.get("inputs") or {}
        if inputs.get("embeddings_sha256") != self.emb.sha256:
            raise ContractError(f"the index of {cur_date} was built from other embeddings than "
                                f"{self.emb.path} (sha256 differs): re-run dailyrec.ann first")
        with store.fs.open_input_file(ids_path) as f:
            ids = pq.read_table(f)
        faiss_ids = ids.column("faiss_id").to_numpy()
        id_col = ids.column("item_id").combine_chunks()
        self.ids: list[str] = id_col.to_pylist()
        n = self.emb.n
        same_order = (self.emb.item_ids_arrow is not None and len(id_col) == n and
                      id_col.cast(pa.large_string()).equals(self.emb.item_ids_arrow.cast(pa.large_string())))
        if len(self.ids) != n or not np.array_equal(faiss_ids, np.arange(n)) or not (
                same_order or set(self.ids) == set(self.emb.item_ids)):
            raise ContractError(f"{ids_path} does not map faiss ids 0..{n - 1} onto the {n} items of {self.emb.path}")
        with store.fs.open_input_stream(index_path) as f:
            self.index_bytes = f.read()
        self.index_dir = index_path.rsplit("/", 1)[0]


def _index_meta(manifest: dict[str, Any]) -> dict[str, Any]:
    ix = manifest.get("index") or {}
    return {k: ix.get(k) for k in ("type", "factory", "params", "recall_at_k", "recall_k", "recall_queries")}


# ---- publish ---------------------------------------------------------------------------------------

def publish(cur_date: str, cfg: Config | None = None, allow_backwards: bool = False) -> dict[str, Any]:
    """Load the vectors and index of ``cur_date`` as a new version and switch ``current`` to it.

    A ``cur_date`` older than the current version's is a backfill: without ``allow_backwards``
    nothing is written and the result says ``skipped`` (see docs/redis-layout.md).
    """
    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    timer = Timer()
    with timer.step("read_inputs"):
        inp = _Inputs(store, cur_date)
    emb = inp.emb
    n, dim = emb.n, emb.dim
    ver = version_id(cur_date, emb.model_version)
    keys = Keys(cfg.redis.namespace)
    r = get_redis(cfg)

    with PublishLock(r, keys) as lock:
        cur = _s(r.get(keys.current))
        if cur is not None and cur != ver:
            cur_score = r.zscore(keys.versions, cur)
            if cur_score is not None and cur_score > date_score(cur_date) and not allow_backwards:
                log.warning("dt=%s is older than the current version %s: backfill not published "
                            "(pass allow_backwards to move current back)", cur_date, cur)
                return {"skipped": True, "reason": "older than current (backfill)", "version": ver,
                        "current": cur, "previous": _s(r.get(keys.previous)), "keys_written": 0,
                        "vectors": 0, "seconds": timer.total()}
        with timer.step("clean_stage"):
            stale = _unlink_all(r, list(_scan(r, keys.stage_pattern())))
            if stale:
                log.warning("deleted %d staged key(s) left by an interrupted publish", stale)

        # -- stage vectors: hashes ns:stage:<ver>:vec:<b>; see _VectorPacker
        with timer.step("prepare"):
            buckets = n_buckets(n, cfg.redis.vectors_per_bucket)
            packer = _VectorPacker(emb, buckets)
        batch, delay = publish_batch(cfg), batch_delay_s()
        with timer.step("stage_vectors"), _RawPipe(r) as raw_pipe:
            for cmds in packer.batches(lambda b: keys.stage(ver, f"vec:{b}").encode(), batch):
                cmds.extend(lock.renew_command())
                # send this batch, then read the previous batch's replies: packing overlaps Redis's work
                raw_pipe.send(cmds, check=lambda replies: lock.check(replies[-1]))
                if delay:
                    raw_pipe.flush()
                    time.sleep(delay)

        # -- stage blobs and meta
        ids_blob = json.dumps(inp.ids, separators=(",", ":"), ensure_ascii=False).encode()
        chunk = blob_chunk_bytes(cfg)
        blobs = {"index": _chunks(inp.index_bytes, chunk), "ids": _chunks(ids_blob, chunk)}

        meta = {
            "version": ver, "cur_date": cur_date, "created": cur_date, "model_version": emb.model_version,
            "count": n, "dim": dim, "dtype": "float32-le",
            "vectors": {"key": "vec:<bucket>", "buckets": buckets, "bucket_of": "crc32(utf8(item_id)) % buckets"},
            "index": {**_index_meta(inp.index_manifest), "bytes": len(inp.index_bytes),
                      "chunks": len(blobs["index"]), "sha256": hashlib.sha256(inp.index_bytes).hexdigest()},
            "ids": {"format": "json-array", "bytes": len(ids_blob), "chunks": len(blobs["ids"]),
                    "sha256": hashlib.sha256(ids_blob).hexdigest()},
            "source": {"embeddings": emb.path, "embeddings_sha256": emb.sha256, "index": inp.index_dir},
        }
        meta_blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        with timer.step("stage_blobs"):
            for name, parts in blobs.items():
                for suffix, part in zip(_blob_suffixes(name, len(parts)), parts):
                    pipe = r.pipeline(transaction=False)
                    pipe.set(keys.stage(ver, suffix), part)
                    lock.renew(pipe)
                    lock.check(pipe.execute()[-1])
            r.set(keys.stage(ver, "meta"), meta_blob)
        staged = [f"vec:{b}" for b in range(buckets)]
        staged += [sfx for name, parts in blobs.items() for sfx in _blob_suffixes(name, len(parts))]
        staged.append("meta")
        # a catalog can leave buckets empty; they have no key
        expected_counts = packer.counts
        staged = [s for s in staged if not (s.startswith("vec:") and expected_counts[int(s[4:])] == 0)]

        with timer.step("verify"):
            _verify(r, keys, ver, emb, expected_counts, blobs, meta_blob, staged, lock)

        with timer.step("commit"):
            existing = set(_scan(r, keys.version_pattern(ver)))
            complete = json.dumps({"version": ver, "count": n, "verified": True}, sort_keys=True)
            with r.pipeline(transaction=True) as pipe:
                pipe.watch(keys.lock, keys.current)
                if pipe.get(keys.lock) != lock.value:
                    raise PublishError(f"lost the publish lock {keys.lock} before the switch; current unchanged")
                if _s(pipe.get(keys.current)) != cur:
                    raise PublishError(f"{keys.current} changed during the publish; current unchanged")
                prev_before = _s(pipe.get(keys.previous))
                pipe.multi()
                final = {keys.v(ver, s) for s in staged} | {keys.v(ver, "complete")}
                gone = sorted(existing - final)
                if gone:
                    pipe.unlink(*gone)
                for s in staged:
                    pipe.rename(keys.stage(ver, s), keys.v(ver, s))
                pipe.set(keys.v(ver, "complete"), complete)
                pipe.zadd(keys.versions, {ver: date_score(cur_date)})
                written = len(staged) + 2  # + complete marker, ns:versions
                if cur != ver:
                    if cur is not None:
                        pipe.set(keys.previous, cur)
                        written += 1
                    pipe.set(keys.current, ver)
                    written += 1
                pipe.execute()
        previous = cur if (cur is not None and cur != ver) else prev_before

        with timer.step("retention"):
            deleted = _retention(r, keys, cfg.redis.keep_versions, lock)

    result = {"skipped": False, "version": ver, "current": ver, "previous": previous,
              "replaced": cur if cur != ver else None, "rewritten": cur == ver or bool(existing),
              "keys_written": written,
              "vectors": n, "dim": dim, "buckets": buckets, "index_bytes": len(inp.index_bytes),
              "deleted_versions": deleted, "timings_s": timer.timings, "seconds": timer.total(),
              # vector load rate: bucketing/packing + pipelined HSETs (not the Parquet read, not the blobs)
              "vectors_per_s": round(n / max(timer.timings["prepare"] + timer.timings["stage_vectors"], 1e-9), 1),
              "redis": describe(cfg), "namespace": keys.ns}
    log.info("published %s (%d vectors x %d, %d keys, %.1f MB index) in %.1fs; current=%s previous=%s%s",
             ver, n, dim, result["keys_written"], len(inp.index_bytes) / 1e6, result["seconds"], ver, previous,
             f"; deleted {deleted}" if deleted else "")
    return result


def _verify(r: Any, keys: Keys, ver: str, emb: Any, expected_counts: np.ndarray, blobs: dict[str, list[memoryview]],
            meta_blob: bytes, staged: list[str], lock: PublishLock) -> None:
    """Check the staged version against the inputs; raise PublishError (and drop the stage) if not equal."""
    problems: list[str] = []
    buckets = len(expected_counts)
    for s in range(0, buckets, 1000):
        pipe = r.pipeline(transaction=False)
        for b in range(s, min(buckets, s + 1000)):
            pipe.hlen(keys.stage(ver, f"vec:{b}"))
        lock.renew(pipe)
        res = pipe.execute()
        lock.check(res[-1])
        got = np.asarray(res[:-1], dtype=np.int64)
        bad = np.nonzero(got != expected_counts[s:s + len(got)])[0]
        if len(bad):
            b = s + int(bad[0])
            problems.append(f"bucket {b}: {got[bad[0]]} vectors, expected {expected_counts[b]} "
                            f"({len(bad)} bucket(s) differ)")
            break
    n = emb.n
    rng = np.random.default_rng(zlib.crc32(ver.encode()))
    sample = rng.choice(n, size=min(n, SPOT_CHECKS), replace=False)
    buckets_n = len(expected_counts)
    pipe = r.pipeline(transaction=False)
    for i in sample:
        item = emb.item_ids[i]
        pipe.hget(keys.stage(ver, f"vec:{bucket_of(item, buckets_n)}"), item)
    for i, got in zip(sample, pipe.execute()):
        want = np.ascontiguousarray(emb.vectors[i], dtype="<f4").tobytes()
        if got != want:
            problems.append(f"vector of item {emb.item_ids[i]!r} differs from the Parquet")
            break
    pipe = r.pipeline(transaction=False)
    checks = []
    for name, parts in blobs.items():
        for suffix, part in zip(_blob_suffixes(name, len(parts)), parts):
            key = keys.stage(ver, suffix)
            pipe.strlen(key)
            pipe.getrange(key, 0, 4095)
            pipe.getrange(key, max(0, len(part) - 4096), len(part) - 1)
            checks.append((key, part))
    pipe.get(keys.stage(ver, "meta"))
    res = pipe.execute()
    for idx, (key, part) in enumerate(checks):
        size, head, tail = res[3 * idx:3 * idx + 3]
        if size != len(part) or head != bytes(part[:4096]) or tail != bytes(part[-4096:]):
            problems.append(f"{key}: {size} bytes, expected {len(part)} (or content differs)")
    if res[-1] != meta_blob:
        problems.append(f"{keys.stage(ver, 'meta')} differs from the written meta")
    present = set(_scan(r, f"{_glob_escape(keys.ns)}:stage:{_glob_escape(ver)}:*"))
    want_keys = {keys.stage(ver, s) for s in staged}
    if present != want_keys:
        problems.append(f"staged keys differ: missing {sorted(want_keys - present)[:3]}, "
                        f"unexpected {sorted(present - want_keys)[:3]}")
    if problems:
        _unlink_all(r, list(present))
        raise PublishError(f"verification of version {ver} failed, current unchanged: " + "; ".join(problems))


def _retention(r: Any, keys: Keys, keep: int, lock: PublishLock) -> list[str]:
    """Delete versions beyond the ``keep`` newest (by cur_date), never ``current``/``previous``.

    Only keys under ``ns:v:<ver>:`` are deleted (plus the version's ``ns:versions`` member);
    versions with keys but no ``ns:versions`` entry (left by an interrupted deletion) go too.
    """
    current, previous = _s(r.get(keys.current)), _s(r.get(keys.previous))
    members = [(_s(m), s) for m, s in r.zrange(keys.versions, 0, -1, withscores=True)]
    ranked = [m for m, _ in sorted(members, key=lambda t: (t[1], t[0]), reverse=True)]
    protected = set(ranked[:keep]) | {v for v in (current, previous) if v}
    groups: dict[str, list[str]] = {}
    for key in _scan(r, keys.version_pattern()):
        groups.setdefault(keys.version_of(key), []).append(key)
    doomed = sorted((set(ranked) | set(groups)) - protected)
    for ver in doomed:
        with r.pipeline(transaction=True) as pipe:  # first make it not-a-version, then drop its keys
            pipe.unlink(keys.v(ver, "complete"))
            pipe.zrem(keys.versions, ver)
            pipe.execute()
        _unlink_all(r, [k for k in groups.get(ver, []) if k != keys.v(ver, "complete")])
        lock.check(lock.renew())
        log.info("retention: deleted version %s (%d keys)", ver, len(groups.get(ver, [])))
    return doomed


# ---- rollback / status -----------------------------------------------------------------------------

def _is_complete(r: Any, keys: Keys, ver: str) -> bool:
    return bool(r.exists(keys.v(ver, "complete"))) and r.zscore(keys.versions, ver) is not None


def rollback(cfg: Config | None = None, to_version: str | None = None) -> dict[str, Any]:
    """Point ``current`` at ``to_version`` (default: ``previous``); the old current becomes ``previous``."""
    cfg = cfg or load_config()
    keys = Keys(cfg.redis.namespace)
    r = get_redis(cfg)
    with PublishLock(r, keys) as lock:
        cur, prev = _s(r.get(keys.current)), _s(r.get(keys.previous))
        target = to_version or prev
        if not target:
            raise ValueError(f"nothing to roll back to: {keys.previous} is not set")
        if target == cur:
            return {"changed": False, "current": cur, "previous": prev}
        if not _is_complete(r, keys, target):
            known = [_s(m) for m in r.zrange(keys.versions, 0, -1)]
            raise ValueError(f"version {target!r} is not a complete published version under "
                             f"{keys.ns!r} (known: {known})")
        with r.pipeline(transaction=True) as pipe:
            pipe.watch(keys.lock, keys.current)
            if pipe.get(keys.lock) != lock.value or _s(pipe.get(keys.current)) != cur:
                raise PublishError("current or the lock changed during the rollback; nothing changed")
            pipe.multi()
            if cur is not None:
                pipe.set(keys.previous, cur)
            pipe.set(keys.current, target)
            pipe.execute()
    log.info("rolled back %s: current %s -> %s", keys.ns, cur, target)
    return {"changed": True, "current": target, "previous": cur}


def status(cfg: Config | None = None) -> dict[str, Any]:
    cfg = cfg or load_config()
    keys = Keys(cfg.redis.namespace)
    r = get_redis(cfg)
    versions = []
    for m, score in r.zrange(keys.versions, 0, -1, withscores=True):
        ver = _s(m)
        meta = json.loads(r.get(keys.v(ver, "meta")) or "{}")
        versions.append({"version": ver, "cur_date": meta.get("cur_date"), "score": int(score),
                         "complete": bool(r.exists(keys.v(ver, "complete"))), "count": meta.get("count"),
                         "dim": meta.get("dim"), "index": (meta.get("index") or {}).get("type"),
                         "recall_at_k": (meta.get("index") or {}).get("recall_at_k")})
    return {"redis": describe(cfg), "namespace": keys.ns, "current": _s(r.get(keys.current)),
            "previous": _s(r.get(keys.previous)), "versions": versions,
            "lock": _s(r.get(keys.lock)), "staged_keys": sum(1 for _ in _scan(r, keys.stage_pattern()))}


# ---- readers ---------------------------------------------------------------------------------------

def current_version(cfg: Config) -> str | None:
    """The version id ``ns:current`` points at (``None`` before the first publish)."""
    return _s(get_redis(cfg).get(Keys(cfg.redis.namespace).current))


def read_meta(r: Any, ns: str, version: str) -> dict[str, Any]:
    raw = r.get(Keys(ns).v(version, "meta"))
    if raw is None:
        raise LookupError(f"version {version!r} is not published under {ns!r}")
    return json.loads(raw)


def read_vectors(r: Any, ns: str, version: str, item_ids: list[str]) -> dict[str, np.ndarray]:
    """``{item_id: float32 vector}`` of one version (ids the version does not have are absent).

    Reads only ``ns:v:<version>:*`` keys: read ``current`` once, then pass that version here.
    """
    meta = read_meta(r, ns, version)
    buckets, dim = int(meta["vectors"]["buckets"]), int(meta["dim"])
    keys = Keys(ns)
    groups: dict[int, list[str]] = {}
    for item in item_ids:
        groups.setdefault(bucket_of(item, buckets), []).append(item)
    pipe = r.pipeline(transaction=False)
    for b, items in groups.items():
        pipe.hmget(keys.v(version, f"vec:{b}"), items)
    out: dict[str, np.ndarray] = {}
    for items, values in zip(groups.values(), pipe.execute()):
        for item, raw in zip(items, values):
            if raw is None:
                continue
            if len(raw) != dim * 4:
                raise ValueError(f"vector of {item!r} in {version} has {len(raw)} bytes, expected {dim * 4}")
            out[item] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return out


def _read_blob(r: Any, keys: Keys, ver: str, name: str, info: dict[str, Any]) -> bytes | None:
    pipe = r.pipeline(transaction=False)
    for suffix in _blob_suffixes(name, int(info["chunks"])):
        pipe.get(keys.v(ver, suffix))
    parts = pipe.execute()
    if any(p is None for p in parts):
        return None
    blob = b"".join(parts)
    return blob if hashlib.sha256(blob).hexdigest() == info["sha256"] else None


def load_current(cfg: Config) -> tuple[dict[str, Any], Any, np.ndarray]:
    """``(meta, faiss index, ids)`` of the current version, for serving: ``ids[label]`` is the item id
    of faiss label ``label``. Retries if the version changes while it is being read."""
    import faiss

    r = get_redis(cfg)
    keys = Keys(cfg.redis.namespace)
    for _ in range(5):
        ver = _s(r.get(keys.current))
        if ver is None:
            raise LookupError(f"nothing is published under {keys.ns!r} ({describe(cfg)})")
        try:
            meta = read_meta(r, keys.ns, ver)
        except LookupError:
            continue
        index_bytes = _read_blob(r, keys, ver, "index", meta["index"])
        ids_bytes = _read_blob(r, keys, ver, "ids", meta["ids"])
        if index_bytes is None or ids_bytes is None:
            continue  # deleted or rewritten meanwhile: read current again
        index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
        ids = np.array(json.loads(ids_bytes), dtype=object)
        if index.ntotal != len(ids) or len(ids) != meta["count"]:
            raise ValueError(f"version {ver}: index has {index.ntotal} vectors, ids {len(ids)}, meta {meta['count']}")
        return meta, index, ids
    raise LookupError(f"{keys.current} kept changing while reading it")


# ---- CLI -------------------------------------------------------------------------------------------

def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0], cur_date=False)
    p.add_argument("action", nargs="?", choices=["publish", "rollback", "status"], default="publish")
    p.add_argument("--cur-date", help="the day to publish, YYYY-MM-DD (publish)")
    p.add_argument("--allow-backwards", action="store_true",
                   help="publish even if cur_date is older than the current version's, moving current back")
    p.add_argument("--to", dest="to_version", metavar="VERSION", help="rollback target (default: previous)")
    args = p.parse_args()

    def run() -> dict[str, Any]:
        cfg = cli.config_from_args(args)
        if args.action == "rollback":
            return rollback(cfg, to_version=args.to_version)
        if args.action == "status":
            return status(cfg)
        if not args.cur_date:
            raise ValueError("--cur-date is required to publish")
        return publish(args.cur_date, cfg, allow_backwards=args.allow_backwards)

    cli.run(run)


if __name__ == "__main__":
    main()
