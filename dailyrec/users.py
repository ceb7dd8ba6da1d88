"""User rows and user-tower vectors outside training: each user's latest context of a day.

Used by the ``model`` hard-negative source (yesterday's towers on today's users), by the FAISS
recall check (real user vectors as queries) and by the serving check.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from dailyrec.config import Config
from dailyrec.dates import window
from dailyrec.storage import Store

log = logging.getLogger("dailyrec.user_vectors")


def latest_user_rows(store: Store, cfg: Config, cur_date: str) -> pa.Table:
    """Every user of the ``users`` snapshot of ``cur_date`` with the context of their latest
    impression in the training window (``last_event_time`` NULL for users without one)."""
    from dailyrec import sql as _duck
    from tasks.retrieval.features import log_inputs, open_events, read_snapshot

    files, _ = log_inputs(store, window(cur_date, cfg.sampling.window_days), cur_date)
    users = read_snapshot(store, "users", cur_date)
    items = read_snapshot(store, "items", cur_date)
    con = open_events(store, files, users, items)
    return _duck.query_arrow(con, "user_latest_context", {}, {})


def previous_model_vectors(store: Store, cfg: Config, cur_date: str) -> Any:
    """``tasks.retrieval.sample.ModelVectors`` of the newest gate-passed model before ``cur_date`` for this
    day's active users and catalog, or ``None`` when there is no such model."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dailyrec.registry import warm_start_source
    from tasks.retrieval.evaluate_two_tower import tower_vectors
    from tasks.retrieval.sample import ModelVectors

    src = warm_start_source(store, "two_tower", cur_date)
    if src is None:
        return None
    rows = latest_user_rows(store, cfg, cur_date)
    rows = rows.filter(pc.is_valid(rows.column("last_event_time")))
    catalog = pq.read_table(f"{store.partition('features', cur_date)}/catalog.parquet", filesystem=store.fs)
    u = tower_vectors(f"{src[1]}/user_tower", rows, cfg.features.spec)
    v = tower_vectors(f"{src[1]}/item_tower", catalog, cfg.features.spec)
    log.info("model hard negatives from the model of %s: %d users x %d items", src[0], len(u), len(v))
    return ModelVectors(user_ids=rows.column("user_id").to_numpy(zero_copy_only=False), user_vectors=u,
                        item_ids=catalog.column("item_id").to_numpy(zero_copy_only=False), item_vectors=v,
                        version=src[0])


def select_samples_with_model(cur_date: str, cfg: Config) -> dict[str, Any]:
    """The DAG's sample step: passes yesterday's model vectors when the ``model`` source is on."""
    from dailyrec.storage import open_store
    from tasks.retrieval.sample import select_samples

    mv = None
    if "model" in cfg.sampling.hard_negative_sources:
        mv = previous_model_vectors(open_store(cfg), cfg, cur_date)
    return select_samples(cur_date, cfg, model_vectors=mv)
