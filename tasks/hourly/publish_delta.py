"""Hourly pass step: the pass's delta goes online in Redis as a new version on top of ``current``.

    python -m tasks.hourly.publish_delta --cur-date 2026-11-02 --hour 5

``--hour`` may be any hour of the pass (the DAG run's hour: the pass's last); ``HH`` is the pass's
first hour (its identity). Reads ``deltas/two_tower/dt=D/hour=HH/`` (``hourly.export_delta``) and publishes version
``<D>T<HH>_<model_version>`` (``dailyrec.publishing.delta.publish_delta``: only the pass's items are
written, one atomic switch, retention keeps every chain a kept version needs), then records it in
``registry/two_tower/dt=D/hour=HH/published.json`` with the switch time and the freshness (seconds
from the ``_SUCCESS`` marker of the pass's last hour to the switch). With ``passes.delta_publish``
off it publishes nothing. Rollback: ``python -m dailyrec.publishing rollback`` (works across deltas).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin

SUMMARY_KEYS = ("version", "current", "previous", "parent", "base", "depth", "squashed", "upserts", "deletes",
                "keys_written", "bytes_written", "vectors", "recall_at_k", "recall_k", "switched_at", "freshness_s",
                "deleted_versions", "registry", "seconds", "skipped", "reason")


def ready(cur_date: str, cfg: Config, hour: int) -> tuple[bool, str]:
    """The pass's delta is exported (``deltas/two_tower/dt=D/hour=HH/_manifest.json`` exists; ``HH``:
    the pass's first hour, ``hour`` may be any hour of the pass)."""
    from dailyrec.publishing.delta import DELTA_DATASET
    from dailyrec.storage import MANIFEST, open_store

    store = open_store(cfg)
    path = f"{store.partition(DELTA_DATASET, cur_date, _pass_start(cfg, hour))}/{MANIFEST}"
    return (True, f"{path} is there") if store.exists(path) else (False, f"{path} is missing (hourly.export_delta)")


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Publish pass ``(cur_date, hour)``'s delta to Redis and record it (with its freshness) in the registry."""
    from dailyrec.publishing.delta import publish_delta

    run = begin("publish_delta", cur_date, cfg)
    hour = _pass_start(run.cfg, hour)
    if not run.cfg.passes.delta_publish:
        run.log.info("passes.delta_publish is off: dt=%s hour=%02d not published", run.cur_date, hour)
        return {"skipped": True, "reason": "passes.delta_publish is off", "hour": hour}
    res = publish_delta(run.cfg, run.cur_date, hour, store=run.store)
    return {k: res[k] for k in SUMMARY_KEYS if k in res} | {"hour": hour}


def _pass_start(cfg: Config, hour: int) -> int:
    """The pass's identity hour (its first) for any hour of it (docs/hourly-design "Pass identity")."""
    from dailyrec.passes import pass_start

    return pass_start(cfg, hour)


if __name__ == "__main__":
    cli.main(step)
