"""Serving check: recommend items for a user from what Redis serves now.

    python -m dailyrec.serving --user-id u00042 --k 50

Reads the ``current`` version from Redis (its meta, the FAISS index and the id map), computes
the user's vector with that version's exported user tower (``models/two_tower/dt=<its date>/
user_tower``), searches the index and prints the top items with scores and the model version.

User features: the user's row in the ``users`` snapshot of the version's date, with the context
of their latest impression in the training window. **Fallback** for a user with no history: a
user in the snapshot without impressions keeps their side features with a default context
(all context features empty/0); a user unknown to the snapshot is embedded with the
out-of-vocabulary id row, empty side features and the default context, which yields the tower's
"average user" and in practice broadly popular items. The output says which path was taken.
"""

from __future__ import annotations

import logging
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.registry import model_dir
from dailyrec.storage import open_store

log = logging.getLogger("dailyrec.recall")


def _user_row(store: Any, cfg: Config, cur_date: str, user_id: str) -> tuple[Any, str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from dailyrec.users import latest_user_rows

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
    import numpy as np

    from tasks.retrieval.evaluate_two_tower import tower_vectors
    from dailyrec.publishing.redis_publish import load_current

    cfg = cfg or load_config()
    store = open_store(cfg)
    meta, index, ids = load_current(cfg)
    cur = meta["cur_date"]
    row, path = _user_row(store, cfg, cur, user_id)
    vec = tower_vectors(f"{model_dir(store, 'two_tower', cur)}/user_tower", row, cfg.features.spec)
    vec = np.ascontiguousarray(vec.astype(np.float32))
    scores, labels = index.search(vec, min(k, index.ntotal))
    items = [{"rank": r + 1, "item_id": str(ids[lab]), "score": round(float(s), 5)}
             for r, (lab, s) in enumerate(zip(labels[0], scores[0])) if lab >= 0]
    return {"user_id": user_id, "path": path, "version": meta.get("version"), "model_version": meta["model_version"],
            "cur_date": cur, "k": k, "items": items}


def format_recs(rec: dict[str, Any], show: int = 10) -> str:
    lines = [f"user {rec['user_id']} ({rec['path']}); Redis version {rec['version']}, model {rec['model_version']}"]
    lines += [f"  {it['rank']:>3}. {it['item_id']:<14} {it['score']:+.4f}" for it in rec["items"][:show]]
    if len(rec["items"]) > show:
        lines.append(f"  ... {len(rec['items']) - show} more")
    return "\n".join(lines)


def serving_check(cur_date: str, cfg: Config | None = None, k: int = 50) -> dict[str, Any]:
    """Recommend for a user active on ``cur_date`` and for a user with no history; both must get
    ``k`` items from the current Redis version."""
    import pyarrow.compute as pc

    from dailyrec.users import latest_user_rows

    cfg = cfg or load_config()
    store = open_store(cfg)
    rows = latest_user_rows(store, cfg, cur_date)
    active = rows.filter(pc.is_valid(rows.column("last_event_time")))
    if not active.num_rows:
        raise ValueError(f"no active user on {cur_date} to check serving with")
    known = str(active.column("user_id")[0])
    out = {}
    for label, uid in (("known", known), ("new", "__serving_check_new_user__")):
        rec = recommend(uid, k, cfg)
        if len(rec["items"]) < min(k, 1):
            raise RuntimeError(f"serving check: no items for {uid} from version {rec['version']}")
        log.info("serving check (%s user):\n%s", label, format_recs(rec))
        out[label] = {"user_id": uid, "items": len(rec["items"]), "top": [i["item_id"] for i in rec["items"][:5]],
                      "version": rec["version"], "path": rec["path"]}
    return out


def main() -> None:
    import argparse

    from dailyrec import cli

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--user-id", required=True)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--show", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--config", action="append", default=[], metavar="FILE")
    args = p.parse_args()
    cfg = cli.config_from_args(args)

    def run() -> Any:
        rec = recommend(args.user_id, args.k, cfg)
        if args.json:
            return rec
        print(format_recs(rec, args.show))
        return None

    cli.run(run)


if __name__ == "__main__":
    main()
