"""Stage 8 of the daily retrieval DAG: the day's item vectors and index go online in Redis.

    python -m tasks.retrieval.publish_redis --cur-date 2026-11-01 [--set run.allow_backwards=true]

A versioned, verified load and an atomic switch of ``current`` (``dailyrec.publishing.publish``),
then retention; once ``current`` points at the new version the registry entry
``registry/two_tower/dt=D/published.json`` says so (the next day's gate compares with it). A date
older than the current version's is a backfill and is skipped unless ``run.allow_backwards``.
Status and rollback: ``python -m dailyrec.publishing``.
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin

SUMMARY_KEYS = ("version", "current", "previous", "keys_written", "vectors", "seconds", "skipped",
                "deleted_versions")


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Publish the day's item vectors and FAISS index to Redis and record it in the registry."""
    from dailyrec.publishing.publish import publish

    run = begin("publish_redis", cur_date, cfg)
    res = publish(run.cur_date, run.cfg, allow_backwards=run.cfg.run.allow_backwards)
    return {k: res.get(k) for k in SUMMARY_KEYS}


if __name__ == "__main__":
    cli.main(step)
