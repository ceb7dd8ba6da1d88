"""What only a Redis Cluster needs: the generation registry and pre-packed commands routed per node.

On a cluster a version's vector hashes and blob chunks live under a generation (``ns:v:<ver>:<gen>:...``,
:class:`dailyrec.publishing.layout.ClusterKeys`) and the publisher cannot ``SCAN`` one node for
them (a ``SCAN`` sees one node's keys; a cluster-wide one means a cursor per primary and still
races resharding). So every generation is registered in the hash ``{ns}:gens`` (field
``<ver>/<gen>``, value ``{"buckets", "index", "ids"}``: the bucket and chunk counts, from which
:meth:`ClusterKeys.gen_keys` lists every key it may have) *before* its first key is written, and
the registry entry is removed only after its keys are. A generation the version's meta does not
name is a leftover (a killed publish, a superseded rewrite) and is deleted by the next publish.

:class:`NodePipes` sends :class:`dailyrec.publishing.packing.VectorPacker` commands to the primary
owning each key's slot, one :class:`dailyrec.publishing.packing.RawPipe` per node (the same bytes
as on one server; a ``MOVED``/``ASK`` reply during a resharding fails the publish with that
``ResponseError``, ``current`` unchanged, and the retry sees the new slot map).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dailyrec.publishing.layout import ClusterKeys, text
from dailyrec.publishing.packing import RawPipe

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
