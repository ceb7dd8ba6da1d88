"""The publish protocol on a Redis Cluster: generations, their registry, per-node pipes, switch and retention.

:func:`publish_cluster` (stage, verify, switch) and :func:`retention_cluster` are what
:func:`dailyrec.publishing.publish.publish` runs when the client is a ``RedisCluster``.

On a cluster a version's vector hashes, blob chunks and seen-set hashes live under a generation
(``ns:v:<ver>:<gen>:...``, :class:`dailyrec.publishing.layout.ClusterKeys`) and the publisher cannot
``SCAN`` one node for them (a ``SCAN`` sees one node's keys; a cluster-wide one means a cursor per
primary and still races resharding). So every generation is registered in the hash ``{ns}:gens``
(field ``<ver>/<gen>``, value ``{"buckets", "index", "ids"}``, plus ``"seen"`` when the version has
seen sets: the bucket and chunk counts, from which :meth:`ClusterKeys.gen_keys` lists every key it
may have) *before* its first key is written, and
the registry entry is removed only after its keys are. A generation the version's meta does not
name is a leftover (a killed publish, a superseded rewrite) and is deleted by the next publish.

:class:`NodePipes` sends :class:`dailyrec.publishing.packing.VectorPacker` commands to the primary
owning each key's slot, one :class:`dailyrec.publishing.packing.RawPipe` per node (the same bytes
as on one server; a ``MOVED``/``ASK`` reply during a resharding fails the publish with that
``ResponseError``, ``current`` unchanged, and the retry sees the new slot map).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from dailyrec.publishing.layout import ClusterKeys, blob_suffixes, date_score, queue_pointer_switch, text
from dailyrec.publishing.lock import PublishError, PublishLock
from dailyrec.publishing.packing import RawPipe, VectorPacker
from dailyrec.publishing.seen import SeenPlan, check_seen, write_seen
from dailyrec.publishing.verify import check_bucket_counts, check_content

log = logging.getLogger("dailyrec.publish")

DELETE_BATCH = 1000
"""Keys per cluster ``UNLINK`` call (redis-py splits each call into one command per slot)."""


def registry(r: Any, keys: ClusterKeys) -> dict[str, dict[str, dict[str, Any]]]:
    """``{ver: {gen: spec}}`` of every registered generation (``HGETALL {ns}:gens``)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for field, value in r.hgetall(keys.gens).items():
        ver, _, gen = text(field).rpartition("/")
        out.setdefault(ver, {})[gen] = json.loads(value)
    return out


def meta_generation(raw: bytes | None) -> str | None:
    """The ``generation`` a raw meta names (``None`` if there is no meta)."""
    return None if raw is None else json.loads(raw).get("generation")


def unlink_keys(r: Any, names: list[str]) -> int:
    """``UNLINK`` ``names`` on a cluster (per slot, :data:`DELETE_BATCH` keys per call); the number removed."""
    gone = 0
    for i in range(0, len(names), DELETE_BATCH):
        gone += int(r.unlink(*names[i:i + DELETE_BATCH]) or 0)
    return gone


def drop_generation(r: Any, keys: ClusterKeys, ver: str, gen: str, spec: dict[str, Any]) -> int:
    """Delete every key of one generation, then its registry entry; the number of keys removed."""
    gone = unlink_keys(r, keys.gen_keys(ver, gen, spec))
    r.hdel(keys.gens, keys.gen_field(ver, gen))
    return gone


def drop_unreferenced(r: Any, keys: ClusterKeys, skip: set[str] = frozenset()) -> int:
    """Delete every registered generation that its version's meta does not name (a killed publish's
    keys, or the generation a rewrite replaced), except versions in ``skip``; the number of keys removed.
    Call it under the publish lock."""
    gone = 0
    for ver, gens in registry(r, keys).items():
        if ver in skip:
            continue
        named = meta_generation(r.get(keys.v(ver, "meta")))
        for gen, spec in gens.items():
            if gen != named:
                n = drop_generation(r, keys, ver, gen, spec)
                log.info("cluster: deleted generation %s of %s (%d keys), not named by its meta", gen, ver, n)
                gone += n
    return gone


def unreferenced_keys(r: Any, keys: ClusterKeys) -> int:
    """How many keys of unreferenced generations exist (what ``status`` reports as ``staged_keys``)."""
    names = []
    for ver, gens in registry(r, keys).items():
        named = meta_generation(r.get(keys.v(ver, "meta")))
        names += [k for gen, spec in gens.items() if gen != named for k in keys.gen_keys(ver, gen, spec)]
    return sum(int(r.exists(*names[i:i + DELETE_BATCH])) for i in range(0, len(names), DELETE_BATCH))


class NodePipes:
    """Pre-packed commands routed to the primary owning each key's slot (context manager).

    ``send([(key, packed command), ...])`` groups the commands by node and hands each group to that
    node's :class:`RawPipe` (one batch in flight per node); ``flush()`` reads every node's replies.
    """

    def __init__(self, rc: Any) -> None:
        self.rc = rc
        self.pipes: dict[str, RawPipe] = {}

    def __enter__(self) -> "NodePipes":
        return self

    def send(self, commands: list[tuple[bytes, bytes]]) -> None:
        groups: dict[str, tuple[Any, list[bytes]]] = {}
        for key, cmd in commands:
            node = self.rc.get_node_from_key(key)
            groups.setdefault(node.name, (node, []))[1].append(cmd)
        for name, (node, cmds) in groups.items():
            pipe = self.pipes.get(name)
            if pipe is None:
                pipe = self.pipes[name] = RawPipe(self.rc.get_redis_connection(node)).__enter__()
            pipe.send(cmds)

    def flush(self) -> None:
        for pipe in self.pipes.values():
            pipe.flush()

    def __exit__(self, *exc: Any) -> None:
        error: BaseException | None = None
        for pipe in self.pipes.values():
            try:
                pipe.__exit__(*exc)
            except BaseException as e:  # noqa: BLE001 - every node's connection is released first
                error = error or e
        if error is not None and exc[0] is None:
            raise error


def publish_cluster(r: Any, keys: ClusterKeys, ver: str, cur: str | None, cur_date: str, emb: Any,
                    blobs: dict[str, list[memoryview]], meta: dict[str, Any], packer: VectorPacker, rc: Any,
                    lock: PublishLock, timer: Any, seen: SeenPlan | None = None) -> tuple[str | None, set[str], int]:
    """Stage, verify and switch on a Redis Cluster; returns ``(previous, existing keys, keys written)``.

    ``seen`` (:func:`dailyrec.publishing.seen.plan_seen`; its ``meta`` already in ``meta["seen"]``):
    the version's seen sets, written as the generation's ``seen:<b>`` hashes (registered with the
    rest, their ``HLEN`` checked before the switch), so the meta naming the generation makes them
    visible in the same transaction as the vectors.

    The generation is 16 hex of the sha256 of the meta without it, so the same inputs give the same
    keys (a re-run is byte-identical; a re-run of the current version overwrites its keys with equal
    bytes, which also restores keys deleted by something else)."""
    gen = hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    meta["generation"] = gen
    meta_blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    spec = {"buckets": packer.buckets, "index": len(blobs["index"]), "ids": len(blobs["ids"])}
    if seen is not None:
        spec["seen"] = seen.buckets
    r.hset(keys.gens, keys.gen_field(ver, gen), json.dumps(spec, sort_keys=True))  # before any key of it
    key_of = lambda suffix: keys.data(ver, gen, suffix)  # noqa: E731
    with timer.step("stage_vectors"):
        stage_vectors_cluster(r, keys, ver, gen, packer, lock, rc)
    if seen is not None:
        with timer.step("stage_seen"):  # ClusterPipeline: one batch per node; the lock renewed per batch
            write_seen(r, key_of, seen, lock, renew_in_pipe=False)
    with timer.step("stage_blobs"):
        for name, parts in blobs.items():
            for suffix, part in zip(blob_suffixes(name, len(parts)), parts):
                r.set(keys.data(ver, gen, suffix), part)
                lock.check(lock.renew())
    data = [keys.data(ver, gen, f"vec:{b}") for b in range(packer.buckets) if packer.counts[b]]
    data += [keys.data(ver, gen, sfx) for name, parts in blobs.items() for sfx in blob_suffixes(name, len(parts))]
    data += [key_of(sfx) for sfx in (seen.suffixes() if seen is not None else [])]
    with timer.step("verify"):
        problems = check_bucket_counts(r, key_of, packer.counts, lock)
        problems += check_content(r, key_of, ver, emb, packer.buckets, blobs)
        if seen is not None:
            problems += check_seen(r, key_of, seen, ver)
        if problems:
            if meta_generation(r.get(keys.v(ver, "meta"))) != gen:  # never drop keys a published meta names
                drop_generation(r, keys, ver, gen, spec)
            raise PublishError(f"verification of version {ver} failed, current unchanged: " + "; ".join(problems))
    with timer.step("commit"):
        complete = json.dumps({"version": ver, "count": emb.n, "verified": True}, sort_keys=True)
        with r.pipeline(transaction=True) as pipe:  # every key here has the hash tag {ns}: one slot
            pipe.watch(keys.lock, keys.current)
            if pipe.get(keys.lock) != lock.value:
                raise PublishError(f"lost the publish lock {keys.lock} before the switch; current unchanged")
            if text(pipe.get(keys.current)) != cur:
                raise PublishError(f"{keys.current} changed during the publish; current unchanged")
            prev_before = text(pipe.get(keys.previous))
            existing = {keys.v(ver, "meta")} if pipe.get(keys.v(ver, "meta")) is not None else set()
            pipe.multi()
            pipe.set(keys.v(ver, "meta"), meta_blob)
            pipe.set(keys.v(ver, "complete"), complete)
            pipe.zadd(keys.versions, {ver: date_score(cur_date)})
            written = len(data) + 3  # + meta, complete marker, versions
            written += queue_pointer_switch(pipe, keys, ver, cur)
            pipe.execute()
    previous = cur if (cur is not None and cur != ver) else prev_before
    return previous, existing, written


def stage_vectors_cluster(r: Any, keys: ClusterKeys, ver: str, gen: str, packer: VectorPacker, lock: PublishLock,
                           rc: Any) -> None:
    """Hashes ``ns:v:<ver>:<gen>:vec:<b>``, each batch's commands sent to the primaries owning their
    slots (:class:`dailyrec.publishing.cluster.NodePipes`), then the lock renewed."""
    from dailyrec.progress import Progress

    progress = Progress(log, f"publish {ver}: staging on the cluster", total=int(packer.counts.sum()),
                        unit="vectors")
    with NodePipes(r) as pipes:
        for cmds in packer.keyed_batches(lambda b: keys.data(ver, gen, f"vec:{b}").encode(), rc.publish_batch):
            progress.add(min(rc.publish_batch, progress.total - progress.done_units))
            pipes.send(cmds)
            lock.check(lock.renew())
            if rc.publish_batch_delay_s:
                pipes.flush()
                time.sleep(rc.publish_batch_delay_s)
    progress.done()


def retention_cluster(r: Any, keys: ClusterKeys, keep: int, lock: PublishLock) -> list[str]:
    """The retention of :mod:`dailyrec.publishing.publish` on a Redis Cluster: the versions to delete
    come from ``ns:versions`` and the generation registry (no ``SCAN``). Per version: its ``complete`` marker and ``versions`` member
    in one transaction, then the keys of every generation it has (registry and meta), then its meta
    and registry entries in one transaction. Finally the generations no meta names (the one a
    rewrite replaced) are deleted."""
    current, previous = text(r.get(keys.current)), text(r.get(keys.previous))
    members = [(text(m), s) for m, s in r.zrange(keys.versions, 0, -1, withscores=True)]
    ranked = [m for m, _ in sorted(members, key=lambda t: (t[1], t[0]), reverse=True)]
    protected = set(ranked[:keep]) | {v for v in (current, previous) if v}
    reg = registry(r, keys)
    doomed = sorted((set(ranked) | set(reg)) - protected)
    for ver in doomed:
        with r.pipeline(transaction=True) as pipe:  # first make it not-a-version, then drop its keys
            pipe.unlink(keys.v(ver, "complete"))
            pipe.zrem(keys.versions, ver)
            pipe.execute()
        gens = dict(reg.get(ver, {}))
        raw = r.get(keys.v(ver, "meta"))
        if raw is not None:
            meta = json.loads(raw)
            if meta.get("generation") and meta["generation"] not in gens:
                gens[meta["generation"]] = {"buckets": meta["vectors"]["buckets"], "index": meta["index"]["chunks"],
                                            "ids": meta["ids"]["chunks"],
                                            "seen": (meta.get("seen") or {}).get("buckets", 0)}
        n = sum(unlink_keys(r, keys.gen_keys(ver, gen, spec)) for gen, spec in gens.items())
        with r.pipeline(transaction=True) as pipe:
            pipe.unlink(keys.v(ver, "meta"))
            if gens:
                pipe.hdel(keys.gens, *[keys.gen_field(ver, g) for g in gens])
            pipe.execute()
        lock.check(lock.renew())
        log.info("retention: deleted version %s (%d data keys)", ver, n)
    drop_unreferenced(r, keys, skip=set(doomed))
    return doomed
