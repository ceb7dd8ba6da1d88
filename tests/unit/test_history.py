"""The leak-free user history (dailyrec/history.py): exact lists on a hand-built log, the property
that no history item is at or after the row's time, the stream encoding, attach_history, config refusals."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from dailyrec.history import (HISTORY_COLUMN, ClickLog, HistoryEncoder, MissingHistoryError, attach_history,
                              history_matrix)

T0 = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.timezone.utc)


def _log(rows):
    """rows: (user, item, minutes after T0)."""
    return pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                     "event_time": pa.array([T0 + dt.timedelta(minutes=r[2]) for r in rows],
                                            pa.timestamp("us", tz="UTC"))})


def _click_log(t):
    return ClickLog(t["user_id"], t["item_id"], t["event_time"])


def test_hand_built_log_gives_the_exact_lists():
    t = _log([("u1", "a", 0), ("u1", "b", 5), ("u2", "x", 5), ("u1", "c", 10), ("u1", "d", 10),  # c, d tie at 10
              ("u1", "e", 20), ("u1", "f", 30), ("u2", "y", 1)])
    log = _click_log(t)
    got = log.for_rows(np.arange(t.num_rows), n=3).to_pylist()
    assert got == [
        [],                # u1 a@0: nothing before
        ["a"],             # u1 b@5
        ["y"],             # u2 x@5: y@1 only
        ["b", "a"],        # u1 c@10: d shares the timestamp -> excluded (strictly before)
        ["b", "a"],        # u1 d@10: c at exactly t -> excluded
        ["d", "c", "b"],   # u1 e@20: last 3, most recent first (tie: later row more recent)
        ["e", "d", "c"],   # u1 f@30: later click f itself and after excluded
        [],                # u2 y@1
    ]
    # without a lookback: the whole log before t
    assert log.for_rows(np.array([6]), n=5, lookback_days=None).to_pylist() == [["e", "d", "c", "b", "a"]]
    end = int((T0 + dt.timedelta(minutes=10)).timestamp() * 1_000_000)
    as_of = log.as_of(end, n=5)
    assert as_of.to_pylist() == [{"user_id": "u1", HISTORY_COLUMN: ["b", "a"]},
                                 {"user_id": "u2", HISTORY_COLUMN: ["x", "y"]}]
    # a user without a click, queried directly
    assert log.before(np.array([-1]), np.array([end]), 5).to_pylist() == [[]]


def test_lookback_days_cuts_old_clicks():
    t = _log([("u", "old", 0), ("u", "mid", 60 * 24), ("u", "new", 60 * 24 * 2)])
    got = _click_log(t).for_rows(np.array([2]), n=5, lookback_days=1).to_pylist()
    assert got == [["mid"]]  # exactly 1 day before is inside the lookback, 2 days is not


def test_property_no_history_item_at_or_after_the_row_time():
    rng = np.random.default_rng(3)
    n = 4000
    users = rng.integers(0, 50, n)
    minutes = rng.integers(0, 300, n)  # many equal timestamps
    items = [f"i{k}" for k in range(n)]  # unique ids: each history item maps back to its click
    t = _log([(f"u{u}", items[k], int(m)) for k, (u, m) in enumerate(zip(users, minutes))])
    log = _click_log(t)
    hist = log.for_rows(np.arange(n), n=7).to_pylist()
    time_of = dict(zip(items, minutes))
    user_of = dict(zip(items, users))
    checked = 0
    for k, h in enumerate(hist):
        assert len(h) <= 7
        for item in h:
            assert time_of[item] < minutes[k] and user_of[item] == users[k]
            checked += 1
        times = [time_of[i] for i in h]
        assert times == sorted(times, reverse=True)
        # complete: exactly min(7, clicks strictly before) entries
        assert len(h) == min(7, int(np.sum((users == users[k]) & (minutes < minutes[k]))))
    assert checked > 1000


def test_encoder_and_matrix_pad_and_truncate():
    lists = pa.array([["a", "zz", "b"], [], None, ["b", "a", "c", "a"]], pa.list_(pa.string()))
    ids = HistoryEncoder(3, ["a", "b", "c"])(lists)
    assert ids.dtype == np.int32 and ids.shape == (4, 3)
    assert ids.tolist() == [[1, 0, 2], [0, 0, 0], [0, 0, 0], [2, 1, 3]]  # zz: OOV = 0 (masked like padding)
    m = history_matrix(lists, 3)
    assert m.tolist() == [["a", "zz", "b"], ["", "", ""], ["", "", ""], ["b", "a", "c"]]
    with pytest.raises(TypeError, match=HISTORY_COLUMN):
        HistoryEncoder(3, ["a"])(pa.array(["a"]))


def test_attach_history_left_joins_and_refuses_a_second_column():
    rows = pa.table({"user_id": ["u2", "new", "u1"], "age": ["1", "2", "3"]})
    hist = pa.table({"user_id": ["u1", "u2"], HISTORY_COLUMN: pa.array([["a"], ["b", "c"]], pa.list_(pa.string()))})
    out = attach_history(rows, hist)
    assert out.column(HISTORY_COLUMN).to_pylist() == [["b", "c"], [], ["a"]]
    assert attach_history(rows, None).column(HISTORY_COLUMN).to_pylist() == [[], [], []]
    with pytest.raises(ValueError, match="already"):
        attach_history(out, hist)
    with pytest.raises(KeyError, match="user_id"):
        attach_history(rows.drop_columns(["user_id"]), hist)
    assert issubclass(MissingHistoryError, KeyError)


@pytest.mark.parametrize("overrides, match", [
    ({"passes.enabled": True}, "passes.enabled"),
    ({"training.distribute": "mirrored"}, "training.distribute"),
    ({"features.user_history.pooling": "max"}, "pooling"),
    ({"features.user_history.bogus": 1}, "unknown key"),
    ({"features.user_history.length": 0}, "length"),
])
def test_config_refuses_unsupported_combinations(overrides, match):
    from dailyrec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=match):
        load_config(overrides={"features.user_history.enabled": True, **overrides}, environ={})
    cfg = load_config(overrides={"features.user_history.enabled": True}, environ={})
    assert cfg.features.user_history.length == 20 and cfg.features.user_history.lookback_days is None
    assert load_config(environ={}).features.user_history.enabled is False


def test_wide_time_range_takes_the_rank_keys_and_gives_the_same_lists():
    """A log whose (user, time) keys would overflow int64 (years apart, many users) uses time ranks."""
    far = [(f"u{k}", f"x{k}", 0) for k in range(2000)]  # 2,000 users at T0
    t = _log(far + [("u1", "late", 60 * 24 * 365 * 150), ("u1", "later", 60 * 24 * 365 * 150 + 1)])
    log = _click_log(t)
    span = int(log.t.max() - log.t.min()) + 2
    assert span * len(log.users) >= 2 ** 62  # the rank path
    got = log.for_rows(np.array([1, 2000, 2001]), n=5).to_pylist()
    assert got == [[], ["x1"], ["late", "x1"]]
