"""Feature admission and eviction (dailyrec.admission, dailyrec.eviction) on small hand-made streams.

Real hourly Parquet partitions (``dailyrec.contract.write_partition``) read by DuckDB through
``sql/pass_id_counts.sql``; every expected number below is computed by hand from the rows written.
Scores use ``click_coeff = 1``, ``nonclk_coeff = 0.5``: ``score = clicks + 0.5 * (shows - clicks)``.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec import admission as A
from dailyrec import eviction as E
from dailyrec.storage import open_store
from tests.helpers import config, make_events, make_items, make_users, write_day

D1, D2 = "2026-11-01", "2026-11-02"
ADMISSION = {"admission.show_click_decay_rate": 0.5, "admission.click_coeff": 1.0, "admission.nonclk_coeff": 0.5,
             "admission.admit_threshold": 1.5, "admission.delete_threshold": 1.0,
             "admission.delete_after_unseen_days": 2, "training.split_per_pass": 2}

# day 1: (user, item, click, hour); passes of 2 hours: (D1, 0) = hours 0-1, (D1, 2) = hours 2-3;
# hour 5 is counted by no pass (the daily shrink adds it)
DAY1 = [("u1", "a", 1, 0), ("u1", "b", 0, 0), ("u2", "a", 0, 0),
        ("u2", "a", 1, 1), ("u3", "c", 0, 1),
        ("u1", "b", 0, 2), ("u3", "b", 0, 2),
        ("u1", "a", 0, 3),
        ("u4", "c", 0, 5)]


def _world(tmp_path, name: str = "w", rows=DAY1, day: str = D1, **overrides):
    cfg = config(tmp_path / name, **{**ADMISSION, **overrides})
    store = open_store(cfg)
    _write(store, day, rows)
    return cfg, store


def _write(store, day, rows):
    users, items, clicks, hours = zip(*rows)
    events = make_events(day, users, items, clicks, hours=hours)
    write_day(store, day, events, make_users(sorted(set(users))), make_items(sorted(set(items))), validate=False)


def _rows(table: pa.Table, feature: str) -> dict[str, tuple]:
    t = table.filter(pa.compute.equal(table["feature"], feature)).to_pylist()
    return {r["id"]: tuple(r[c] for c in ("shows", "clicks", "score", "admitted") if c in r) for r in t}


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_pass_admission_and_daily_eviction_counts(tmp_path):
    cfg, store = _world(tmp_path)
    counts = A.pass_counts(store, cfg, D1, [0, 1])
    assert _rows(counts, "item_id") == {"a": (3.0, 2.0), "b": (1.0, 0.0), "c": (1.0, 0.0)}
    assert _rows(counts, "user_id") == {"u1": (2.0, 1.0), "u2": (2.0, 1.0), "u3": (1.0, 0.0)}
    assert counts.filter(pa.compute.equal(counts["id"], "a"))["last_hour"].to_pylist() == [1]

    # pass (D1, 0): a 2+0.5 = 2.5, u1 = u2 = 1+0.5 = 1.5 reach admit_threshold 1.5; b, c, u3 0.5 do not
    vocab0, s0 = A.pass_vocabularies(store, cfg, D1, 1, {"item_id": ["z"], "user_id": []})  # hour 1 -> pass 0
    assert vocab0 == {"item_id": ["z", "a"], "user_id": ["u1", "u2"]}
    assert s0["admitted"] == {"item_id": ["a"], "user_id": ["u1", "u2"]} == s0["newly_admitted"]
    assert s0["hours"] == [0, 1] and s0["day_hours"] == [0, 1] and s0["chained_from"] is None
    assert s0["state"].endswith("admission/dt=2026-11-01/hour=00/state.parquet")
    assert s0["seen"] == {"item_id": 3, "user_id": 3}

    # pass (D1, 2): b 3 shows -> 1.5 (admitted); a 4/2 -> 3; u1 4/1 -> 2.5; u3 2/0 -> 1.0 (not)
    vocab2, s2 = A.pass_vocabularies(store, cfg, D1, 2, vocab0)
    assert vocab2 == {"item_id": ["z", "a", "b"], "user_id": ["u1", "u2"]}
    assert s2["admitted"] == {"item_id": ["b"], "user_id": []} == s2["newly_admitted"]
    assert s2["day_hours"] == [0, 1, 2, 3] and s2["chained_from"] == s0["state"]
    st2 = A.read_state(store, s2["state"])
    assert _rows(st2, "item_id") == {"a": (4.0, 2.0, 3.0, True), "b": (3.0, 0.0, 1.5, True),
                                     "c": (1.0, 0.0, 0.5, False)}
    assert _rows(st2, "user_id") == {"u1": (4.0, 1.0, 2.5, True), "u2": (2.0, 1.0, 1.5, True),
                                     "u3": (2.0, 0.0, 1.0, False)}

    # shrink: + hour 5 (c, u4), then x0.5; a 2/1 -> 1.5 kept; b 1.5/0 -> 0.75 evicted; c 1/0 -> 0.5 dropped;
    # u1 2/0.5 -> 1.25 kept; u2 1/0.5 -> 0.75 evicted; u3 1/0 -> 0.5 and u4 0.5/0 -> 0.25 dropped
    res = A.shrink(store, cfg, D1)
    assert res["evicted"] == {"item_id": ["b"], "user_id": ["u2"]}
    assert res["kept"] == {"item_id": 1, "user_id": 1}
    assert res["dropped"] == {"item_id": 1, "user_id": 2}
    assert res["hours_added"] == list(range(4, 24)) and res["chained_from"] == s2["state"]
    state = A.read_state(store, res["state"])
    assert _rows(state, "item_id") == {"a": (2.0, 1.0, 1.5, True)}
    assert _rows(state, "user_id") == {"u1": (2.0, 0.5, 1.25, True)}
    assert state.to_pylist()[0]["last_seen_hour"] == 3  # a: last seen in hour 3
    assert E.evicted_ids(store, D1) == {"item_id": {"b"}, "user_id": {"u2"}}
    man = store.read_json(f"{store.partition('admission', D1)}/_manifest.json")
    assert man["evicted"] == {"item_id": 1, "user_id": 1} and man["rows"]["tombstones"] == 2

    assert A.base_ids(state, cfg) == {"item_id": {"a"}, "user_id": {"u1"}}
    assert A.base_ids(state, config(tmp_path / "b", **{**ADMISSION, "admission.base_threshold": 1.3})) == {
        "item_id": {"a"}, "user_id": set()}
    assert A.delta_ids(st2, cfg, D1) == {"item_id": {"a", "b"}, "user_id": {"u1", "u2"}}
    tight = config(tmp_path / "d", **{**ADMISSION, "admission.delta_threshold": 2.0, "admission.delta_keep_days": 1})
    assert A.delta_ids(st2, tight, D1) == {"item_id": {"a"}, "user_id": {"u1"}}
    assert A.delta_ids(st2, tight, "2026-11-03") == {"item_id": set(), "user_id": set()}  # unseen 2 days > 1


def test_no_double_counting_between_passes_and_the_shrink(tmp_path):
    """The shrink adds only the hours no pass counted: after all passes, after one pass or with no
    pass at all, the day's state is the same bytes."""
    states = []
    for name, pass_hours in (("all", [0, 2]), ("one", [0]), ("none", [])):
        cfg, store = _world(tmp_path, name)
        vocab: dict[str, list[str]] = {}
        for h in pass_hours:
            vocab, _ = A.pass_vocabularies(store, cfg, D1, h, vocab)
        res = E.shrink(store, cfg, D1)
        assert res["hours_added"] == [h for h in range(24) if h >= 2 * len(pass_hours)]
        states.append(_sha(res["state"]))
        assert res["evicted"] == {"item_id": ["b"], "user_id": ["u2"]}
    assert len(set(states)) == 1


def test_decay_over_days_unseen_eviction_and_tombstones(tmp_path):
    """'hot' is clicked 4 times on day 1 and never again: score 4 x 0.5 per day; kept while unseen
    for at most delete_after_unseen_days = 2 days, evicted on day 4 (unseen 3 days) although its
    score 0.25 is above delete_threshold 0.2; it stays out (tombstone) until seen again on day 6."""
    cfg, store = _world(tmp_path, rows=[("u1", "hot", 1, h) for h in range(4)] + [("u1", "f", 1, 9)],
                        **{"admission.delete_threshold": 0.2})
    days = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]
    for d in days[1:5]:
        _write(store, d, [("u1", "f", 1, 9)])
    _write(store, days[5], [("u1", "hot", 0, 9), ("u1", "f", 1, 9)])
    scores = []
    for d in days:
        res = E.shrink(store, cfg, d)
        hot = _rows(A.read_state(store, res["state"]), "item_id").get("hot")
        scores.append(hot[2] if hot else None)
        if d == days[3]:
            assert res["evicted"]["item_id"] == ["hot"]
        else:
            assert res["evicted"]["item_id"] == []
        assert ("hot" in E.evicted_ids(store, d).get("item_id", set())) == (d in days[3:5])
        # 'f': clicked once a day: (prev + 1) x 0.5 -> 0.5, 0.75, 0.875, ...
    assert scores == [2.0, 1.0, 0.5, None, None, 0.25]  # day 6: seen again, 1 show x 0.5 x nonclk 0.5
    f = _rows(A.read_state(store, E.shrink(store, cfg, days[2])["state"]), "item_id")["f"]
    assert f == (0.875, 0.875, 0.875, True)
    # the first pass of a day chains from the day before's shrink, without decaying again
    _, s = A.pass_vocabularies(store, cfg, days[5], 0, {})  # hours 0-1: no event
    assert s["chained_from"].endswith("admission/dt=2026-11-05/state.parquet")
    assert _rows(A.read_state(store, s["state"]), "item_id")["f"][:2] == (0.96875, 0.96875)


def test_first_pass_chains_from_the_daily_vocabularies(tmp_path):
    """Without an admission state for D-1 the first pass of D starts from the daily vocab state of
    D-1 (every id admitted, shows = total_count), else from its vocabularies.json."""
    cfg, store = _world(tmp_path, day=D2, rows=[("u9", "new", 0, 0)])
    feat = store.partition("features", D1)
    store.fs.create_dir(feat, recursive=True)
    store.write_json(f"{feat}/vocabularies.json", {"item_id": ["old"], "user_id": ["u1"]})
    vocab, s = A.pass_vocabularies(store, cfg, D2, 0, {"item_id": ["old"], "user_id": ["u1"]})
    assert s["chained_from"] == f"{feat}/vocabularies.json"
    assert vocab == {"item_id": ["old"], "user_id": ["u1"]}  # 'new', 'u9' score 0.5 < 1.5
    vs = pa.table({"feature": ["item_id", "user_id"], "id": ["old", "u1"], "last_seen_dt": pa.array(
        [dt.date(2026, 11, 1)] * 2, pa.date32()), "total_count": [6, 2]})
    pq.write_table(vs, f"{feat}/vocab_state.parquet")
    _, s = A.pass_vocabularies(store, cfg, D2, 0, {})
    assert s["chained_from"] == f"{feat}/vocab_state.parquet"
    st = A.read_state(store, s["state"])
    assert _rows(st, "item_id") == {"new": (1.0, 0.0, 0.5, False), "old": (6.0, 0.0, 3.0, True)}
    assert _rows(st, "user_id") == {"u1": (2.0, 0.0, 1.0, True), "u9": (1.0, 0.0, 0.5, False)}


def test_rerun_is_byte_identical(tmp_path):
    cfg, store = _world(tmp_path)
    volatile = {"pid", "timings_s", "code_version"}
    first = []
    for _ in range(2):
        _, s0 = A.pass_vocabularies(store, cfg, D1, 0, {})
        _, s2 = A.pass_vocabularies(store, cfg, D1, 2, {})
        res = E.shrink(store, cfg, D1)
        got = [_sha(p) for p in (s0["state"], s2["state"], res["state"], res["evicted_path"])]
        mans = [{k: v for k, v in store.read_json(f"{p.rsplit('/', 1)[0]}/_manifest.json").items() if k not in volatile}
                for p in (s0["state"], res["state"])]
        first.append((got, mans))
    assert first[0] == first[1]


def test_bad_partition_and_broken_chain_are_named(tmp_path):
    from dailyrec.contract import write_partition
    from dailyrec.errors import ContractError

    cfg, store = _world(tmp_path)
    with pytest.raises(A.AdmissionChainError, match=r"admission/dt=2026-11-01/hour=00/state.parquet.*previous pass"):
        A.pass_vocabularies(store, cfg, D1, 2, {})  # pass (D1, 0) never ran: the chain stops
    bad = make_events(D1, ["u1"], ["a"], [2], hours=[6])  # click must be 0/1
    write_partition(store, "logs", bad, D1, 6)
    with pytest.raises(ContractError, match=r"logs/dt=2026-11-01/hour=06.*part-00000.parquet.*click"):
        A.pass_counts(store, cfg, D1, [6, 7])
    with pytest.raises(ContractError, match=r"hour=06.*click"):
        E.shrink(store, cfg, D1)
    store.fs.delete_file(f"{store.partition('logs', D1, 7)}/_SUCCESS")
    with pytest.raises(FileNotFoundError, match=r"logs/dt=2026-11-01/hour=07 has no _SUCCESS"):
        A.pass_counts(store, cfg, D1, [7])
