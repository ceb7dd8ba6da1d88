"""The popularity baseline of the prequential step (dailyrec.prequential.recent_clicks): per catalog
item, its clicks in the 24 log hours before the pass, counted exactly over hand-made logs of two days."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dailyrec.storage import open_store
from tests.helpers import config, make_events, write_logs

pytestmark = pytest.mark.unit

D0, D1 = "2026-11-01", "2026-11-02"


def _day(day, n, seed):
    rng = np.random.default_rng(seed)
    return make_events(day, rng.integers(0, 30, n), [f"i{int(x)}" for x in rng.integers(0, 12, n)],
                       (rng.random(n) < 0.4).astype(int), hours=rng.integers(0, 24, n), seed=seed)


def _expected(events: dict, catalog: list[str], window: list[tuple[str, int]]) -> np.ndarray:
    counts = dict.fromkeys(catalog, 0)
    for day, t in events.items():
        df = t.to_pandas()
        df["hour"] = df["event_time"].dt.hour
        for _, r in df.iterrows():
            if (day, int(r["hour"])) in window and r["item_id"] in counts:
                counts[r["item_id"]] += int(r["click"])
    return np.array([counts[i] for i in catalog])


@pytest.mark.parametrize("first_hour", [0, 5, 23])
def test_recent_clicks_counts_exactly_the_24_hours_before_the_pass(tmp_path, first_hour):
    from dailyrec.prequential import recent_clicks

    store = open_store(config(tmp_path))
    events = {D0: _day(D0, 600, 1), D1: _day(D1, 600, 2)}
    for day, t in events.items():
        write_logs(store, day, t)
    catalog = [f"i{k}" for k in range(10)]  # i10, i11 are outside the catalog: their clicks are dropped
    counts, hours = recent_clicks(store, D1, first_hour, pa.array(catalog))
    window = [(D0, h) for h in range(first_hour, 24)] + [(D1, h) for h in range(first_hour)]
    assert hours == 24
    np.testing.assert_array_equal(counts, _expected(events, catalog, window))
    assert counts.sum() > 0


def test_recent_clicks_skips_incomplete_hours_and_a_missing_day(tmp_path):
    from dailyrec.prequential import recent_clicks
    from dailyrec.storage import SUCCESS_MARKER

    store = open_store(config(tmp_path))
    events = {D1: _day(D1, 400, 3)}
    write_logs(store, D1, events[D1])  # no logs of D0 at all
    store.fs.delete_file(f"{store.partition('logs', D1, 2)}/{SUCCESS_MARKER}")  # hour 2 not complete
    catalog = [f"i{k}" for k in range(12)]
    counts, hours = recent_clicks(store, D1, 6, pa.array(catalog))
    assert hours == 5  # hours 0, 1, 3, 4, 5 of D1
    np.testing.assert_array_equal(counts, _expected(events, catalog, [(D1, h) for h in (0, 1, 3, 4, 5)]))
