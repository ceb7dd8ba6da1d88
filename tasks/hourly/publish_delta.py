"""Hourly pass step: the pass's delta goes online in Redis as a new version on top of ``current``.

    python -m tasks.hourly.publish_delta --cur-date 2026-11-02 --hour 5

Reads ``deltas/two_tower/dt=D/hour=HH/`` (``hourly.export_delta``) and publishes version
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


def step(cur_date: str, cfg: Config, hour: int) -> dict[str, Any]:
    """Publish pass ``(cur_date, hour)``'s delta to Redis and record it (with its freshness) in the registry."""
    from dailyrec.publishing.delta import publish_delta

    run = begin("publish_delta", cur_date, cfg)
    if not run.cfg.passes.delta_publish:
        run.log.info("passes.delta_publish is off: dt=%s hour=%02d not published", run.cur_date, hour)
        return {"skipped": True, "reason": "passes.delta_publish is off", "hour": hour}
    res = publish_delta(run.cfg, run.cur_date, hour, store=run.store)
    return {k: res[k] for k in SUMMARY_KEYS if k in res} | {"hour": hour}


if __name__ == "__main__":
    cli.main(step)
