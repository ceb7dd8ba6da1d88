"""The retrieval DAG's index and publish steps, wired to the rest of the pipeline.

* :func:`build_index_with_user_queries`: the FAISS build (``dailyrec.ann``) with its recall
  measured on real user vectors: the day's user tower on each active user's latest context.
* :func:`publish_two_tower`: the Redis publish (``dailyrec.publishing.redis_publish``) and, once ``current`` points
  at the new version, the registry entry that makes it "yesterday's published model" for the
  next day's gate.

    python -m tasks.retrieval.publish_redis index --cur-date D
    python -m tasks.retrieval.publish_redis publish --cur-date D [--allow-backwards]
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.registry import mark_published, model_dir
from dailyrec.storage import open_store

log = logging.getLogger("dailyrec.publish_retrieval")


def build_index_with_user_queries(cur_date: str, cfg: Config | None = None, max_users: int = 5000) -> dict[str, Any]:
    import pyarrow.compute as pc

    from dailyrec.ann import build_index
    from tasks.retrieval.evaluate_two_tower import tower_vectors
    from dailyrec.users import latest_user_rows

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    store = open_store(cfg)
    rows = latest_user_rows(store, cfg, cur_date)
    rows = rows.filter(pc.is_valid(rows.column("last_event_time")))
    queries = None
    if rows.num_rows:
        rows = rows.slice(0, max_users)
        queries = tower_vectors(f"{model_dir(store, 'two_tower', cur_date)}/user_tower", rows, cfg.features.spec)
    return build_index(cur_date, cfg, query_vectors=queries)


def publish_two_tower(cur_date: str, cfg: Config | None = None, allow_backwards: bool = False) -> dict[str, Any]:
    from dailyrec.publishing.redis_publish import publish

    cfg = cfg or load_config()
    cur_date = parse_date(cur_date).isoformat()
    res = publish(cur_date, cfg, allow_backwards=allow_backwards)
    if not res.get("skipped") and res.get("current") == res.get("version"):
        path = mark_published(open_store(cfg), "two_tower", cur_date,
                              {k: res.get(k) for k in ("version", "previous", "keys_written", "vectors",
                                                       "seconds", "redis", "namespace")}
                              | {"previous_version": res.get("previous")})
        log.info("registry: %s is the published two-tower model (%s)", cur_date, path)
    elif res.get("skipped"):
        log.warning("%s is older than the current version's date: nothing was loaded and 'current' stays "
                    "(pass allow_backwards to publish it and move 'current' back)", cur_date)
    return {k: res.get(k) for k in ("version", "current", "previous", "keys_written", "vectors", "seconds",
                                    "skipped", "deleted_versions")}


def main() -> None:
    from dailyrec import cli

    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("what", choices=["index", "publish"])
    p.add_argument("--allow-backwards", action="store_true")
    args = p.parse_args()
    cfg = cli.config_from_args(args)
    if args.what == "index":
        cli.run(lambda: build_index_with_user_queries(args.cur_date, cfg))
    else:
        cli.run(lambda: publish_two_tower(args.cur_date, cfg, args.allow_backwards))


if __name__ == "__main__":
    main()
