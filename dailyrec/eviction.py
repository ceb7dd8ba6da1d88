"""Eviction (the daily shrink) of the admission state (issue 10, docs/hourly.md; PaddleRec's
``shrink``, Monolith's expirable embeddings). The state, its counting and admission are in
:mod:`dailyrec.admission`.

At the daily consolidation of D the state chains from D's last pass (else the daily state of D-1),
gets the counts of D's complete hours that no pass counted (no double counting), is decayed once
by ``admission.show_click_decay_rate`` and loses every id whose score is below
``delete_threshold`` or that was unseen for more than ``delete_after_unseen_days`` days. An
admitted id removed so is *evicted*: it stays in ``admission/dt=D/evicted.parquet`` (a tombstone)
until it is seen again, so the daily vocabularies and the item export leave it out
(``passes.enabled``).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dailyrec.admission import (COUNTS_SCHEMA, DATASET, STATE_FILE, _by_feature, _keys, _only_features,
                                _pass_state_path, _sorted, _write_parquet, daily_state, pass_counts, read_state,
                                update_state, vocab_features)
from dailyrec.config import Config
from dailyrec.dates import parse_date, previous
from dailyrec.storage import MANIFEST, SUCCESS_MARKER, Store, make_manifest

log = logging.getLogger("dailyrec.eviction")

EVICTED_SCHEMA = pa.schema([
    pa.field("feature", pa.string(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("evicted_dt", pa.date32(), nullable=False),
])
"""Evicted ids not seen since (``admission/dt=D/evicted.parquet``), sorted by feature then id."""
EVICTED_FILE = "evicted.parquet"


def last_pass_state(store: Store, cur_date: str) -> tuple[str | None, list[int]]:
    """``(path, day_hours)`` of the latest pass state of ``cur_date`` (``(None, [])`` without one)."""
    for h in range(23, -1, -1):
        path = _pass_state_path(store, cur_date, h)
        if store.exists(path):
            man = store.read_json(f"{store.partition(DATASET, cur_date, h)}/{MANIFEST}")
            return path, list(man["day_hours"])
    return None, []


def complete_hours(store: Store, cur_date: str) -> list[int]:
    """Hours of ``cur_date`` whose log partition has its ``_SUCCESS`` marker (what the daily steps read)."""
    return [h for h in range(24) if store.exists(f"{store.partition('logs', cur_date, h)}/{SUCCESS_MARKER}")]


def read_evicted(store: Store, day: str) -> pa.Table:
    """``admission/dt=day/evicted.parquet`` (:data:`EVICTED_SCHEMA`; empty when absent)."""
    path = f"{store.partition(DATASET, day)}/{EVICTED_FILE}"
    if not store.exists(path):
        return EVICTED_SCHEMA.empty_table()
    with store.fs.open_input_file(path) as fh:
        return pq.read_table(fh).select(EVICTED_SCHEMA.names).cast(EVICTED_SCHEMA)


def shrink(store: Store, cfg: Config, cur_date: str) -> dict[str, Any]:
    """The daily shrink of ``cur_date`` (the consolidation; PaddleRec's ``shrink``).

    Chains from D's last pass state (else :func:`daily_state` of D-1), adds the counts of D's
    complete hours no pass counted (no double counting), decays once (``show_click_decay_rate``),
    then removes ids with ``score < delete_threshold`` or unseen for more than
    ``delete_after_unseen_days`` days. Writes ``admission/dt=D/evicted.parquet`` (evicted ids not
    seen since, carried over from D-1), ``_manifest.json`` and, last, ``state.parquet``.

    Returns ``{"evicted": {feature: [admitted ids removed today]}, "kept": {feature: admitted ids
    kept (count)}, "dropped": {feature: not-admitted ids removed (count)}, "tombstones": {feature:
    count}, "state", "evicted_path", "chained_from", "hours_added"}``. Raises ``ContractError`` /
    ``FileNotFoundError`` for a bad hour (:func:`pass_counts`).
    """
    a = cfg.admission
    d = parse_date(cur_date).isoformat()
    features = vocab_features(cfg)
    prev_path, day_hours = last_pass_state(store, d)
    if prev_path is not None:
        prev = _only_features(read_state(store, prev_path), features)
    else:
        prev, prev_path = daily_state(store, cfg, previous(d))
    hours = [h for h in complete_hours(store, d) if h not in set(day_hours)]
    counts = pass_counts(store, cfg, d, hours)
    state = update_state(prev, counts, cfg, days_elapsed=0, cur_date=d, hour=None)
    state = update_state(state, COUNTS_SCHEMA.empty_table(), cfg, days_elapsed=1, cur_date=d, hour=None)
    day = parse_date(d)
    unseen = pc.fill_null(pc.days_between(state["last_seen_dt"], pa.scalar(day, pa.date32())), 0).to_numpy()
    drop = (state["score"].to_numpy() < a.delete_threshold) | (unseen > a.delete_after_unseen_days)
    adm = state["admitted"].to_numpy(zero_copy_only=False)
    evicted_t = state.filter(pa.array(drop & adm))
    dropped_t = state.filter(pa.array(drop & ~adm))
    kept_t = state.filter(pa.array(~drop))
    evicted = _by_feature(evicted_t, features)
    old = read_evicted(store, previous(d))
    old = old.filter(pc.is_in(old["feature"], pa.array(features, pa.string())))
    old = old.filter(pc.invert(pc.is_in(_keys(old), _keys(state))))  # seen again: no longer a tombstone
    today = pa.table([evicted_t["feature"], evicted_t["id"],
                      pa.array([day] * evicted_t.num_rows, pa.date32())], schema=EVICTED_SCHEMA)
    tombs = _sorted(pa.concat_tables([old, today]))
    out = store.partition(DATASET, d)
    count = lambda t: {f: len(v) for f, v in _by_feature(t, features).items()}  # noqa: E731
    kept = count(kept_t.filter(kept_t["admitted"]))
    result = {"evicted": evicted, "kept": kept, "dropped": count(dropped_t), "tombstones": count(tombs),
              "state": f"{out}/{STATE_FILE}", "evicted_path": f"{out}/{EVICTED_FILE}",
              "chained_from": prev_path, "hours_added": hours}
    _write_parquet(store, tombs, f"{out}/{EVICTED_FILE}")
    store.write_json(f"{out}/{MANIFEST}", make_manifest(
        "admission.shrink", cfg, d, inputs={"chained_from": prev_path, "pass_hours": day_hours,
                                            "logs": [store.partition("logs", d, h) for h in hours]},
        rows={"state": kept_t.num_rows, "evicted": evicted_t.num_rows, "dropped": dropped_t.num_rows,
              "tombstones": tombs.num_rows},
        evicted={f: len(v) for f, v in evicted.items()}, kept=kept, dropped=result["dropped"],
        tombstones=result["tombstones"], hours_added=hours, admission=a.model_dump()))
    _write_parquet(store, kept_t, f"{out}/{STATE_FILE}")
    log.info("admission shrink %s: +%d hour(s) %s, evicted %s, kept %s, dropped %s", d, len(hours), hours,
             {f: len(v) for f, v in evicted.items()}, kept, result["dropped"])
    return result


def evicted_ids(store: Store, cur_date: str) -> dict[str, set[str]]:
    """``{feature: ids}`` evicted by a shrink up to ``cur_date`` and not seen since (the tombstones of
    ``admission/dt=D/evicted.parquet``; empty when the shrink of D did not run)."""
    t = read_evicted(store, parse_date(cur_date).isoformat())
    out: dict[str, set[str]] = {}
    for f, i in zip(t["feature"].to_pylist(), t["id"].to_pylist()):
        out.setdefault(f, set()).add(i)
    return out
