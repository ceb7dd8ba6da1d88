"""Serving check (daily_retrieval's ``serving_check``): read Redis back, recommend for two users.

    python -m tasks.serving.serving_check --cur-date 2026-11-02

A user active on ``cur_date`` and a user with no history must each get items from the current
Redis version (:func:`dailyrec.serving.recommend`); the top items go to the log, the result and
``serving_checks/dt=D/_manifest.json`` (the run report's "serving check" section).
"""

from __future__ import annotations

from typing import Any

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.step import begin

K = 50
"""Items asked for each checked user."""
NEW_USER = "__serving_check_new_user__"


def step(cur_date: str, cfg: Config) -> dict[str, Any]:
    """Recommend for a known and a new user from the current Redis version; ``RuntimeError`` if empty."""
    from dailyrec.events import active_user_rows
    from dailyrec.serving import format_recs, recommend

    run = begin("serving_check", cur_date, cfg)
    active = active_user_rows(run.store, cfg, run.cur_date)
    if not active.num_rows:
        raise ValueError(f"no active user on {run.cur_date} to check serving with")
    out = {}
    for label, uid in (("known", str(active.column("user_id")[0])), ("new", NEW_USER)):
        rec = recommend(uid, K, cfg)
        if len(rec["items"]) < min(K, 1):
            raise RuntimeError(f"serving check: no items for {uid} from version {rec['version']}")
        run.log.info("serving check (%s user):\n%s", label, format_recs(rec))
        out[label] = {"user_id": uid, "items": len(rec["items"]), "top": [i["item_id"] for i in rec["items"][:5]],
                      "version": rec["version"], "path": rec["path"]}
    out_dir = run.partition("serving_checks")
    with run.store.atomic_output(out_dir) as tmp:
        run.store.write_json(f"{tmp}/_manifest.json", run.manifest(
            inputs={"redis_version": out["known"]["version"]}, rows={"users": len(out)}, checks=out))
    return out


if __name__ == "__main__":
    cli.main(step)
