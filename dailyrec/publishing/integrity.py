"""Is a published version whole? The readers' named errors and the key check ``status`` runs.

A version's key set follows from its meta (:func:`expected_keys`): ``meta``, ``complete``, one
``vec:<b>`` hash per non-empty bucket (``meta.vectors.empty_buckets`` lists the empty ones), the
``index``/``ids`` chunks and, when the meta has ``seen``, one ``seen:<b>`` hash per non-empty
seen bucket (:mod:`dailyrec.publishing.seen`). The publisher creates them all in one transaction and deletes them only
after the version left ``ns:versions`` (retention), so a key missing while the version is still
published was deleted or evicted by something else: readers raise :class:`MissingVersionKeys`
naming the keys, the version and the two repairs (re-publish the date, or roll back), which is a
different error from :class:`CurrentKeptChanging` (``current`` moved on every attempt: transient).

All errors are ``KeyError`` subclasses (so ``LookupError`` too), which the CLIs report as
``error: <message>`` with exit code 2; ``str()`` is the plain message.
"""

from __future__ import annotations

import json
from typing import Any

from dailyrec.publishing.layout import Keys, blob_suffixes, text
from dailyrec.publishing.policy import eviction_policy

SHOW_KEYS = 20
"""Missing keys named in an error message or listed per version by ``status``."""


class RedisReadError(KeyError):
    """Base of the readers' errors; ``str()`` is the message (not ``KeyError``'s quoted repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NothingPublished(RedisReadError):
    """The namespace has no ``current`` and no published version."""


class VersionNotPublished(RedisReadError):
    """A reader asked for a version that is not (or no longer: retention) published."""


class CurrentKeptChanging(RedisReadError):
    """``current`` moved during every read attempt (publishes in quick succession: transient)."""


class MissingVersionKeys(RedisReadError):
    """Keys of a published version (or ``ns:current`` itself) are missing or differ from the meta."""

    def __init__(self, message: str, namespace: str, version: str | None, missing: list[str]) -> None:
        super().__init__(message)
        self.namespace, self.version, self.missing = namespace, version, missing


def expected_keys(keys: Keys, ver: str, meta: dict[str, Any]) -> dict[str, list[str]]:
    """``{"strings": [...], "vectors": [...]}``: every key version ``ver`` has according to its meta."""
    buckets = int(meta["vectors"]["buckets"])
    empty = set(meta["vectors"].get("empty_buckets") or [])
    gen = meta.get("generation")  # only on a Redis Cluster (ClusterKeys)
    strings = [keys.v(ver, "meta"), keys.v(ver, "complete")]
    for name in () if meta.get("kind") == "delta" else ("index", "ids"):  # a delta has no blobs (its base has)
        strings += [keys.data(ver, gen, s) for s in blob_suffixes(name, int(meta[name]["chunks"]))]
    from dailyrec.publishing.seen import seen_keys

    return {"strings": strings,
            "vectors": [keys.data(ver, gen, f"vec:{b}") for b in range(buckets) if b not in empty],
            "seen": seen_keys(keys, ver, meta)}


def _keys_left(r: Any, keys: Keys, ver: str) -> int:
    """How many keys of ``ver`` exist besides its meta (``SCAN`` on one server, the registry on a cluster)."""
    if keys.cluster:
        from dailyrec.publishing.cluster import registry

        names = [k for gen, spec in registry(r, keys).get(ver, {}).items() for k in keys.gen_keys(ver, gen, spec)]
        names.append(keys.v(ver, "complete"))
        return sum(int(r.exists(*names[i:i + 1000])) for i in range(0, len(names), 1000))
    return sum(1 for _ in r.scan_iter(match=keys.version_pattern(ver), count=1000))


def _cause(r: Any) -> str:
    try:
        pol = eviction_policy(r)
    except Exception as exc:  # noqa: BLE001 - the error being built matters more than this detail
        return f"(the server's maxmemory-policy could not be read: {exc})"
    if pol["evicting"]:
        return f"Redis maxmemory-policy is {pol['maxmemory_policy']}: they were probably evicted"
    return (f"Redis maxmemory-policy is {pol['maxmemory_policy']}, so they were deleted by something other "
            "than the publisher (a manual DEL/FLUSHDB, another program, a restore)")


def repair_hint(ver: str | None) -> str:
    """What an operator does about a damaged version."""
    republish = (f"re-publish its date (`python -m tasks.retrieval.publish_redis --cur-date {ver[:10]}` "
                 "rewrites the version whole)" if ver else "re-publish the newest date")
    return (f"To repair: {republish}, or roll back to another version (`python -m dailyrec.publishing rollback "
            "[--to-version VERSION]`); `python -m dailyrec.publishing status` checks every version's keys.")


def missing_keys_error(r: Any, keys: Keys, ver: str, missing: list[str], role: str = "") -> MissingVersionKeys:
    """The named error for keys of published version ``ver`` that are missing (or differ from the meta)."""
    shown = ", ".join(missing[:SHOW_KEYS]) + (f", ... ({len(missing)} in all)" if len(missing) > SHOW_KEYS else "")
    role = f" ({role} of {keys.ns!r})" if role else f" (published under {keys.ns!r})"
    msg = (f"version {ver}{role} is missing {len(missing)} key(s) or has them damaged: {shown}. "
           f"{_cause(r)}. {repair_hint(ver)}")
    return MissingVersionKeys(msg, keys.ns, ver, missing)


def no_current_error(r: Any, keys: Keys, where: str) -> RedisReadError:
    """``current`` is unset: nothing was ever published, or the pointer itself was lost."""
    newest = [text(m) for m in r.zrevrange(keys.versions, 0, 0)]
    prev = text(r.get(keys.previous))
    if not newest and prev is None:
        return NothingPublished(f"nothing is published under {keys.ns!r} ({where}): run the publish stage "
                                "(`python -m tasks.retrieval.publish_redis --cur-date D`)")
    target = newest[0] if newest else prev
    msg = (f"{keys.current} is missing although {keys.ns!r} still has published versions (newest {target}, "
           f"previous {prev}) ({where}). {_cause(r)}. To repair: point current back with `python -m "
           f"dailyrec.publishing rollback --to-version {target}`, or re-publish the newest date.")
    return MissingVersionKeys(msg, keys.ns, None, [keys.current])


def check_version(r: Any, keys: Keys, ver: str) -> dict[str, Any]:
    """Every key of ``ver`` against its meta: ``{"complete", "missing_keys", "missing_count", "vectors_found",
    "problems", "meta"}``. ``complete`` needs the ``complete`` marker, the ``ns:versions`` member, every
    expected key, the vector count and the blob byte counts of the meta."""
    raw = r.get(keys.v(ver, "meta"))
    if raw is None:
        present = _keys_left(r, keys, ver)
        return {"complete": False, "missing_keys": [keys.v(ver, "meta")], "missing_count": 1, "vectors_found": None,
                "problems": [f"meta missing ({present} other key(s) of the version left)"], "meta": {}}
    meta = json.loads(raw)
    exp = expected_keys(keys, ver, meta)
    pipe = r.pipeline(transaction=False)
    for k in exp["strings"]:
        pipe.strlen(k)
    for k in exp["vectors"] + exp["seen"]:
        pipe.hlen(k)
    pipe.get(keys.v(ver, "complete"))
    pipe.zscore(keys.versions, ver)
    *sizes, marker, score = pipe.execute()
    everything = exp["strings"] + exp["vectors"] + exp["seen"]
    missing = [k for k, n in zip(everything, sizes) if not n]
    size_of = dict(zip(everything, sizes))
    problems = []
    found = sum(sizes[len(exp["strings"]):len(exp["strings"]) + len(exp["vectors"])])
    seen_users = sum(sizes[len(exp["strings"]) + len(exp["vectors"]):])
    if meta.get("seen") and seen_users != meta["seen"]["users"]:
        problems.append(f"{seen_users} users in the seen sets, the meta says {meta['seen']['users']}")
    delta = meta.get("kind") == "delta"
    fields = meta["delta"]["fields"] if delta else meta["count"]  # a delta's buckets: upserts + tombstones
    if found != fields:
        problems.append(f"{found} vectors in the buckets, the meta says {fields}")
    for name in () if delta else ("index", "ids"):
        got = sum(size_of[keys.data(ver, meta.get("generation"), s)]
                  for s in blob_suffixes(name, int(meta[name]["chunks"])))
        if got != meta[name]["bytes"]:
            problems.append(f"{name}: {got} bytes in Redis, the meta says {meta[name]['bytes']}")
    if marker is not None and json.loads(marker).get("count") != meta["count"]:
        problems.append(f"the complete marker's count differs from the meta's {meta['count']}")
    if score is None:
        problems.append(f"not a member of {keys.versions}")
    if delta:  # a delta serves only with its whole chain (parents and base)
        pipe = r.pipeline(transaction=False)
        for v in meta.get("chain") or []:
            pipe.get(keys.v(v, "complete"))
        gone = [v for v, m in zip(meta.get("chain") or [], pipe.execute()) if m is None]
        if gone:
            problems.append(f"its delta chain is broken: {gone} not complete")
    return {"complete": not missing and not problems, "missing_keys": missing[:SHOW_KEYS],
            "missing_count": len(missing), "vectors_found": found, "problems": problems, "meta": meta}
