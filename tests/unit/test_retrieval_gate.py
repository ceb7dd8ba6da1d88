"""The retrieval gate's noise-aware verdict and its deterministic popularity baseline
(dailyrec.metrics: paired_bootstrap, gate_decision, popularity_scores; dailyrec.holdout.decide)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from dailyrec.config import load_config
from dailyrec.holdout import decide
from dailyrec.metrics import constant_scorer, gate_decision, paired_bootstrap, popularity_scores, top_k

pytestmark = pytest.mark.unit
EV = load_config(environ={}).evaluation


def _table(new, prev, pop):
    return {"new": {"recall_at_50": new}, "previous": {"recall_at_50": prev}, "popularity": {"recall_at_50": pop}}


def _users(rng, n, p):
    """Per-user recall@50 values: 0/1 draws with mean p (a hit-or-miss user)."""
    return (rng.random(n) < p).astype(float)


def test_bootstrap_is_deterministic_and_covers_the_mean():
    rng = np.random.default_rng(0)
    a, b = _users(rng, 800, 0.40), _users(rng, 800, 0.30)
    one = paired_bootstrap(a, b, 2000, 0.95, [11, 20261102, 2])
    assert one == paired_bootstrap(a, b, 2000, 0.95, [11, 20261102, 2])
    assert one["ci"][0] < one["mean_diff"] < one["ci"][1] and one["users"] == 800
    other = paired_bootstrap(a, b, 2000, 0.95, [11, 20261102, 3])
    assert other["ci"] != one["ci"]  # another seed, another resampling
    # a wider confidence gives a wider interval
    wide = paired_bootstrap(a, b, 2000, 0.99, [11, 20261102, 2])
    assert wide["ci"][0] < one["ci"][0] and wide["ci"][1] > one["ci"][1]
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10], 100, 0.95, 0)


def test_clearly_worse_blocks_noise_passes_with_a_note():
    rng = np.random.default_rng(1)
    base = _users(rng, 1000, 0.40)
    worse = np.where(rng.random(1000) < 0.5, 0.0, base)  # loses half of its hits: clearly worse
    holdout = {"users": 1000, "clicks": 3000, "min_users": 300, "min_clicks": 600, "enough": True, "reason": "ok"}
    pop = _users(rng, 1000, 0.2)
    paired = {"previous": paired_bootstrap(worse, base, 2000, 0.95, 1),
              "popularity": paired_bootstrap(worse, pop, 2000, 0.95, 2)}
    g = gate_decision(_table(worse.mean(), base.mean(), pop.mean()), EV, "2026-11-01", paired=paired, holdout=holdout)
    assert not g["passed"] and g["verdict"] == "block"
    assert "worse than the previous model (2026-11-01) by more than the margin with 95% confidence" in g["reasons"][0]
    assert g["comparisons"]["previous"]["verdict"] == "worse" and g["comparisons"]["previous"]["blocks"]

    # 60 users, a point estimate 0.05 below (more than the 0.02 margin), but noise-sized
    small = {"users": 60, "clicks": 700, "min_users": 50, "min_clicks": 600, "enough": True, "reason": "ok"}
    a = np.zeros(60)
    a[30:54] = 1.0  # recall 0.4
    b = a.copy()
    b[:3] = 1.0  # the previous model hit three more users: -0.05 on average, 3 users of 60
    paired = {"previous": paired_bootstrap(a, b, 2000, 0.95, 1), "popularity": paired_bootstrap(a, a * 0, 2000, 0.95, 2)}
    assert paired["previous"]["mean_diff"] < -EV.max_drop_vs_previous
    g = gate_decision(_table(a.mean(), b.mean(), 0.0), EV, "2026-11-01", paired=paired, holdout=small)
    assert paired["previous"]["ci"][1] >= -EV.max_drop_vs_previous  # the interval reaches the margin: noise
    assert g["passed"] and g["verdict"] == "pass: not distinguishable"
    assert any(n.startswith("not distinguishable from noise") for n in g["notes"])
    # the old point rule would have blocked the same numbers
    assert not gate_decision(_table(a.mean(), b.mean(), 0.0), EV, "2026-11-01")["passed"]


def test_a_holdout_too_small_is_undecided_and_passes_with_a_note_unless_configured():
    rng = np.random.default_rng(2)
    a, b = _users(rng, 40, 0.1), _users(rng, 40, 0.9)  # even "clearly worse" on 40 users does not decide
    paired = {"previous": paired_bootstrap(a, b, 500, 0.95, 1), "popularity": paired_bootstrap(a, b, 500, 0.95, 2)}
    small = {"users": 40, "clicks": 90, "min_users": 300, "min_clicks": 600, "enough": False,
             "reason": "extended to 24 hours, the most allowed, still too small"}
    g = gate_decision(_table(a.mean(), b.mean(), b.mean()), EV, None, paired=paired, holdout=small)
    assert g["passed"] and g["verdict"] == "undecided: holdout too small" and not g["reasons"]
    assert g["notes"][0].startswith("holdout too small: 40 users < 300") and "would have blocked" in g["notes"][0]
    block = EV.model_copy(update={"when_undecided": "block"})
    g = gate_decision(_table(a.mean(), b.mean(), b.mean()), block, None, paired=paired, holdout=small)
    assert not g["passed"] and g["reasons"][0].startswith("holdout too small: 40 users < 300")


def test_popularity_ties_broken_by_recent_clicks_then_item_id_and_holdout_subtracted():
    ids = ["i5", "i1", "i3", "i2", "i4", "i0"]
    catalog = pa.table({"item_id": ids, "clicks_1d": [0, 1, 2, 0, 0, 5], "clicks_7d": [3, 3, 3, 0, 0, 9]})
    end = dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc)
    # i0: its 9 clicks include 6 held-out ones (inside both windows): leak-free it has 3 over 7 days, 0 today
    holdout = pa.table({"item_id": ["i0"] * 6, "event_time": pa.array([end - dt.timedelta(hours=1)] * 6,
                                                                      pa.timestamp("us", tz="UTC"))})
    scores, info = popularity_scores(catalog, holdout, "2026-11-02")
    assert info["column"] == "clicks_7d" and info["held_out_clicks_subtracted"] == {"clicks_7d": 6, "clicks_1d": 6}
    assert len(set(scores.tolist())) == len(ids)  # a strict order: no tie left to argpartition
    order = [ids[i] for i in np.argsort(-scores)]
    # 7d clicks 3,3,3,3 (i5,i1,i3,i0) -> by 1d clicks 2 (i3), 1 (i1), 0 (i0, i5 -> by id), then the 0-click i2, i4
    assert order == ["i3", "i1", "i0", "i5", "i2", "i4"]
    # every call, and every K boundary, gives the same list
    tk = top_k(constant_scorer(scores), 3, 4)
    assert (tk == tk[0]).all() and [ids[i] for i in tk[0]] == order[:4]
    again, _ = popularity_scores(catalog, holdout, "2026-11-02")
    assert np.array_equal(scores, again)


def test_holdout_decision_takes_the_fewest_hours_reaching_the_minimums():
    cfg = load_config(overrides={"evaluation.min_holdout_users": 30, "evaluation.min_holdout_clicks": 50,
                                 "sampling.window_days": 3, "evaluation.max_holdout_days": 2}, environ={})
    # (hour index, clicks, users whose latest click is in that hour): 10 users per hour of cur_date
    per_hour = [(h, 20, 10) for h in range(23, -1, -1)] + [(h, 20, 10) for h in range(-1, -25, -1)]
    d = decide(per_hour, cfg, "2026-11-02", days_with_logs=3)
    assert d["hours"] == 3 and not d["extended"] and d["enough"]  # 30 users, 60 clicks in the last 3 hours
    cfg2 = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"min_holdout_users": 250})})
    d = decide(per_hour, cfg2, "2026-11-02", days_with_logs=3)
    assert d["hours"] == 25 and d["extended"] and d["enough"] and d["start"] == "2026-11-01T23:00:00+00:00"
    d = decide(per_hour, cfg2, "2026-11-02", days_with_logs=1)  # the log's first day: never extended
    assert d["hours"] == 3 and not d["enough"] and "no more hours may be taken" in d["reason"]
