"""Checks of a staged version against its inputs, before the switch (one server and a Redis Cluster).

Each check names a key through ``key_of(suffix)`` (``suffix`` = ``vec:<b>``, ``index[:i]``,
``ids[:i]``), so the same code checks ``ns:stage:<ver>:...`` keys on one server and
``ns:v:<ver>:<gen>:...`` keys on a cluster. Each returns a list of problems (empty: equal).
Protocol: docs/redis-layout.md ("Publish protocol", step 6).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from dailyrec.publishing.layout import blob_suffixes, bucket_of

SPOT_CHECKS = 256
"""Seeded random vectors compared byte for byte with the Parquet before the switch."""

KeyOf = Callable[[str], str]


def check_content(r: Any, key_of: KeyOf, ver: str, emb: Any, buckets_n: int, blobs: dict[str, list[memoryview]],
                   meta_key: str | None = None, meta_blob: bytes | None = None) -> list[str]:
    """Spot-checked vectors byte-equal to the Parquet, blob chunks of the right length and first/last
    4 KiB, and (``meta_key``) the written meta; ``key_of(suffix)`` names a key being checked."""
    problems = []
    n = emb.n
    rng = np.random.default_rng(zlib.crc32(ver.encode()))
    sample = rng.choice(n, size=min(n, SPOT_CHECKS), replace=False)
    pipe = r.pipeline(transaction=False)
    for i in sample:
        item = emb.item_ids[i]
        pipe.hget(key_of(f"vec:{bucket_of(item, buckets_n)}"), item)
    for i, got in zip(sample, pipe.execute()):
        want = np.ascontiguousarray(emb.vectors[i], dtype="<f4").tobytes()
        if got != want:
            problems.append(f"vector of item {emb.item_ids[i]!r} differs from the Parquet")
            break
    pipe = r.pipeline(transaction=False)
    checks = []
    for name, parts in blobs.items():
        for suffix, part in zip(blob_suffixes(name, len(parts)), parts):
            key = key_of(suffix)
            pipe.exists(key)
            pipe.strlen(key)
            pipe.getrange(key, 0, 4095)
            pipe.getrange(key, max(0, len(part) - 4096), len(part) - 1)
            checks.append((key, part))
    if meta_key is not None:
        pipe.get(meta_key)
    res = pipe.execute()
    for idx, (key, part) in enumerate(checks):
        there, size, head, tail = res[4 * idx:4 * idx + 4]
        if not there:
            problems.append(f"{key} is missing")
        elif size != len(part) or head != bytes(part[:4096]) or tail != bytes(part[-4096:]):
            problems.append(f"{key}: {size} bytes, expected {len(part)} (or content differs)")
    if meta_key is not None and res[-1] != meta_blob:
        problems.append(f"{meta_key} differs from the written meta")
    return problems


def check_bucket_counts(r: Any, key_of: KeyOf, expected_counts: np.ndarray, lock: PublishLock) -> list[str]:
    """``HLEN`` of every staged bucket against the expected counts (1000 buckets per round trip)."""
    buckets = len(expected_counts)
    for s in range(0, buckets, 1000):
        pipe = r.pipeline(transaction=False)
        for b in range(s, min(buckets, s + 1000)):
            pipe.hlen(key_of(f"vec:{b}"))
        res = pipe.execute()
        lock.check(lock.renew())
        got = np.asarray(res, dtype=np.int64)
        bad = np.nonzero(got != expected_counts[s:s + len(got)])[0]
        if len(bad):
            b = s + int(bad[0])
            return [f"bucket {b}: {got[bad[0]]} vectors, expected {expected_counts[b]} "
                    f"({len(bad)} bucket(s) differ)"]
    return []
