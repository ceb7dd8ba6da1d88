"""The daily consolidation side of admission (``passes.enabled``): the real features step
(tasks/retrieval/features.py) runs the shrink and leaves evicted ids out of the vocabularies; with
passes off (the default) it writes exactly what it wrote before and no admission state."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq

from dailyrec.storage import open_store
from tests.helpers import config, make_events, make_items, make_users, validate_day, write_day
from tests.unit.test_admission import ADMISSION, D1, DAY1

FILES = ("vocabularies.json", "vocab_state.parquet", "catalog.parquet", "item_counters.parquet")


def _day(tmp_path, name: str, **overrides):
    cfg = config(tmp_path / name, **{**ADMISSION, **overrides})
    store = open_store(cfg)
    users, items, clicks, hours = zip(*DAY1)
    write_day(store, D1, make_events(D1, users, items, clicks, hours=hours),
              make_users(sorted(set(users))), make_items(sorted(set(items))), validate=False)
    validate_day(store, D1)
    return cfg, store


def _digests(store) -> dict[str, str]:
    out = store.partition("features", D1)
    return {f: hashlib.sha256(open(f"{out}/{f}", "rb").read()).hexdigest() for f in FILES}


def test_features_step_shrinks_and_leaves_evicted_ids_out(tmp_path):
    from tasks.retrieval.features import step as build_features

    cfg_off, store_off = _day(tmp_path, "off")
    off = build_features(D1, cfg_off)
    assert not store_off.exists(store_off.path("admission"))  # passes off: no admission state
    assert "admission" not in store_off.read_json(f"{off['path']}/_manifest.json")
    assert json.loads(open(off["vocabularies"]).read()) == {
        "item_id": ["a", "b", "c"], "user_id": ["u1", "u2", "u3", "u4"]}

    # passes on: the shrink (hand computation in test_admission.py) evicts item b and user u2
    cfg_on, store_on = _day(tmp_path, "on", **{"passes.enabled": True})
    on = build_features(D1, cfg_on)
    vocabs = json.loads(open(on["vocabularies"]).read())
    assert vocabs == {"item_id": ["a", "c"], "user_id": ["u1", "u3", "u4"]}
    state = pq.read_table(f"{on['path']}/vocab_state.parquet")
    assert sorted(zip(state["feature"].to_pylist(), state["id"].to_pylist())) == sorted(
        (f, i) for f, ids in vocabs.items() for i in ids)
    man = store_on.read_json(f"{on['path']}/_manifest.json")["admission"]
    assert man["evicted"] == {"item_id": 1, "user_id": 1} and man["left_out"] == {"item_id": 1, "user_id": 1}
    assert man["kept"] == {"item_id": 1, "user_id": 1} and man["dropped"] == {"item_id": 1, "user_id": 2}
    assert man["state"] == f"{store_on.partition('admission', D1)}/state.parquet"
    assert on["vocab_sizes"] == {"item_id": 2, "user_id": 3}

    # the other outputs are those of the passes-off run; a re-run writes the same bytes
    first = _digests(store_on)
    assert {k: v for k, v in first.items() if k not in ("vocabularies.json", "vocab_state.parquet")} == {
        k: v for k, v in _digests(store_off).items() if k not in ("vocabularies.json", "vocab_state.parquet")}
    state_sha = hashlib.sha256(open(man["state"], "rb").read()).hexdigest()
    build_features(D1, cfg_on)
    assert _digests(store_on) == first
    assert hashlib.sha256(open(man["state"], "rb").read()).hexdigest() == state_sha
