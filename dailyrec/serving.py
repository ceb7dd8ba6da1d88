"""Serving reads: recommend items for a user from what Redis serves now.

    python -m dailyrec.serving --user-id u00042 --k 50 [--json]

:func:`recommend` reads the ``current`` version from Redis (its meta, the FAISS index and the id
map: :func:`dailyrec.publishing.reader.load_current`; one Redis server or a Redis Cluster, whichever
``redis.url`` names: docs/redis-layout.md), computes the user's vector with that
version's exported user tower (``models/two_tower/dt=<its date>/user_tower``), searches the index
and returns the top items with scores and the model version. A delta version (an hourly pass:
docs/redis-layout.md, "Delta versions") is served the same way: the base's index with the chain
applied, the pass's user tower (``meta.user_tower``) and the user features of the base's date. The daily check of the retrieval DAG
is the ``tasks.serving.serving_check`` stage.

User features (:func:`user_row`): the user's row in the ``users`` snapshot of the version's date,
with the context of their latest impression in the training window. **Fallback** for a user with
no history: a user in the snapshot without impressions keeps their side features with a default
context (all context features empty/0); a user unknown to the snapshot is embedded with the
out-of-vocabulary id row, empty side features and the default context, which yields the tower's
"average user" and in practice broadly popular items. The output says which path was taken.

**Seen items** (``serving.exclude_seen``, on by default): the version's seen set of the user (the
items they clicked in the ``serving.seen_lookback_days`` days up to the version's date, at most
``serving.max_seen_per_user``, published with the version: :mod:`dailyrec.publishing.seen`) is
read from Redis, the index is searched for ``k + |seen|`` neighbours and the seen items are
dropped, so the user still gets ``k`` items (fewer only when the catalog runs out). A user without
clicks (or unknown) has an empty seen set. A version published without seen sets is served
unfiltered (``seen: null`` in the output).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from dailyrec import cli
from dailyrec.config import Config, load_config
from dailyrec.storage import Store, open_store

SHOW = 20
"""Items printed by the CLI (``--json`` prints them all)."""


def user_row(store: Store, cfg: Config, cur_date: str, user_id: str) -> tuple[pa.Table, str]:
    """``(one-row table of the user's features and context, which path was taken)`` (see the module doc)."""
    import pyarrow.compute as pc

    from dailyrec.events import latest_user_rows

    rows = latest_user_rows(store, cfg, cur_date)
    row = rows.filter(pc.equal(rows.column("user_id"), user_id))
    if row.num_rows and row.column("last_event_time")[0].is_valid:
        return row, "known user (latest context of their last impression)"
    specs = cfg.features.by_side("user") + cfg.features.by_side("context")
    cols = {}
    for s in specs:
        if s.name == "user_id":
            cols[s.name] = pa.array([user_id])
        elif row.num_rows and s.name in row.column_names and s.side == "user":
            cols[s.name] = row.column(s.name)
        else:
            cols[s.name] = pa.array([0] if s.dtype == "int" else [""],
                                    pa.int64() if s.dtype == "int" else pa.string())
    path = ("no history: snapshot side features, default context" if row.num_rows
            else "unknown user: out-of-vocabulary id, default features")
    return pa.table(cols), path


def recommend(user_id: str, k: int = 50, cfg: Config | None = None) -> dict[str, Any]:
    """The top ``k`` items Redis's current version gives ``user_id``.

    Returns:
        ``{"user_id", "path", "version", "model_version", "cur_date", "k", "seen", "excluded_seen",
        "items": [{"rank", "item_id", "score"}]}``, items best first (inner product of the
        L2-normalised vectors); ``seen``: the size of the user's seen set (``None``: not filtered),
        ``excluded_seen``: how many seen items the search returned and were dropped. With
        ``serving.popularity_beta`` the score is ``u . v + beta * log q`` (:mod:`dailyrec.popularity_prior`).
    Raises:
        dailyrec.publishing.reader.NothingPublished: nothing is published (a ``KeyError``, like all below).
        dailyrec.publishing.reader.MissingVersionKeys: ``current`` or a key of the current version is
            missing: names the keys, the version and the repair (re-publish its date, or roll back).
        dailyrec.publishing.reader.CurrentKeptChanging: ``current`` moved during every read (transient).
        FileNotFoundError / KeyError: the version's model or logs are missing.
    """
    from dailyrec.embeddings import tower_vectors
    from dailyrec.history import rows_with_history
    from dailyrec.popularity_prior import augment_queries
    from dailyrec.publishing.reader import load_current
    from dailyrec.registry import model_dir

    cfg = cfg or load_config()
    store = open_store(cfg)
    meta, index, ids = load_current(cfg)
    cur = meta["cur_date"]
    if meta.get("kind") == "delta":  # a pass's delta: its own user tower, the features of its base's date
        row, path = user_row(store, cfg, meta["base_cur_date"], user_id)
        tower = meta["user_tower"]
    else:
        row, path = user_row(store, cfg, cur, user_id)
        tower = f"{model_dir(store, 'two_tower', cur)}/user_tower"
    row = rows_with_history(row, store, cfg, cur)  # features.user_history: clicks up to the end of cur_date
    vec = tower_vectors(tower, row, cfg.features.spec)
    vec = augment_queries(vec, getattr(index, "d", vec.shape[1]))  # [u, 1] against an index with the prior
    return {"user_id": user_id, "path": path, "version": meta.get("version"), "model_version": meta["model_version"],
            "cur_date": cur, "k": k, **top_unseen(cfg, meta, index, ids, vec, user_id, k)}


def top_unseen(cfg: Config, meta: dict[str, Any], index: Any, ids: Any, vec: Any, user_id: str,
               k: int) -> dict[str, Any]:
    """The ``k`` best items of ``index`` for the query ``vec`` (``(1, dim)`` float32) that ``user_id``
    has not seen in the version of ``meta`` (:func:`dailyrec.publishing.seen.read_seen`, one server
    or a Redis Cluster): searches ``k + |seen|`` neighbours and drops the seen ones.

    Returns ``{"seen", "excluded_seen", "items": [{"rank", "item_id", "score"}]}`` as in
    :func:`recommend` (``seen`` is ``None`` when not filtering). Raises what ``read_seen`` raises.
    """
    seen = _seen_of(cfg, meta, user_id)
    skip = set(seen or ())
    scores, labels = index.search(vec, min(k + len(skip), index.ntotal))  # over-fetch: the seen ones are dropped
    found = [(str(ids[lab]), float(s)) for lab, s in zip(labels[0], scores[0]) if lab >= 0]
    kept = [(it, s) for it, s in found if it not in skip][:k]
    items = [{"rank": r + 1, "item_id": it, "score": round(s, 5)} for r, (it, s) in enumerate(kept)]
    return {"seen": None if seen is None else len(seen),
            "excluded_seen": len(found) - sum(1 for it, _ in found if it not in skip), "items": items}


def _seen_of(cfg: Config, meta: dict[str, Any], user_id: str) -> list[str] | None:
    """The user's seen set in the version of ``meta``, or None when not filtering."""
    from dailyrec.publishing.connection import get_redis
    from dailyrec.publishing.seen import read_seen

    if not cfg.serving.exclude_seen:
        return None
    return read_seen(get_redis(cfg), cfg.redis.namespace, meta, user_id)


def format_recs(rec: dict[str, Any], show: int = 10) -> str:
    """A few lines: the user, the path, the version, then the first ``show`` items."""
    seen = ("" if rec.get("seen") is None
            else f"; seen set of {rec['seen']} item(s) excluded ({rec.get('excluded_seen', 0)} dropped from the search)")
    lines = [f"user {rec['user_id']} ({rec['path']}); Redis version {rec['version']}, model {rec['model_version']}"
             + seen]
    lines += [f"  {it['rank']:>3}. {it['item_id']:<14} {it['score']:+.4f}" for it in rec["items"][:show]]
    if len(rec["items"]) > show:
        lines.append(f"  ... {len(rec['items']) - show} more")
    return "\n".join(lines)


def print_recs(rec: dict[str, Any]) -> None:
    print(format_recs(rec, SHOW))


if __name__ == "__main__":
    cli.main(recommend, render=print_recs)
