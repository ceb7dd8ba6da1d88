"""Serving check (daily_retrieval's ``serving_check``): read Redis back, recommend for two users.

    python -m tasks.serving.serving_check --cur-date 2026-11-02

A user active on ``cur_date`` and a user with no history must each get items from the current
Redis version (:func:`dailyrec.serving.recommend`); the top items go to the log, the result and
``serving_checks/dt=D/_manifest.json`` (the run report's "serving check" section). With
``serving.exclude_seen`` the known user's items must not include an item they clicked in the
training window of the served version (``samples/dt=<its date>/seen.parquet``): a ``RuntimeError``
names them otherwise.
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
        clicked = _clicked_in_training(run, rec, uid) if cfg.serving.exclude_seen else set()
        again = sorted(clicked & {i["item_id"] for i in rec["items"]})
        if again:
            raise RuntimeError(f"serving check: version {rec['version']} recommends {uid} {len(again)} item(s) they "
                               f"clicked in the training window ({again[:5]}) although serving.exclude_seen is on")
        out[label] = {"user_id": uid, "items": len(rec["items"]), "top": [i["item_id"] for i in rec["items"][:5]],
                      "version": rec["version"], "path": rec["path"], "seen": rec.get("seen"),
                      "excluded_seen": rec.get("excluded_seen"), "clicked_in_training_window": len(clicked)}
    out_dir = run.partition("serving_checks")
    with run.store.atomic_output(out_dir) as tmp:
        run.store.write_json(f"{tmp}/_manifest.json", run.manifest(
            inputs={"redis_version": out["known"]["version"]}, rows={"users": len(out)}, checks=out))
    return out


def _clicked_in_training(run: Any, rec: dict[str, Any], user_id: str) -> set[str]:
    """The items ``user_id`` clicked in the training window of the served version's date (its
    ``seen.parquet``; empty when that file is gone)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = run.path("samples", "seen.parquet", cur_date=rec["cur_date"])
    if not run.store.exists(path):
        return set()
    seen = pq.read_table(path, filesystem=run.store.fs, filters=[("user_id", "=", user_id)])
    return set(pc.unique(seen.column("item_id")).to_pylist())


if __name__ == "__main__":
    cli.main(step)
