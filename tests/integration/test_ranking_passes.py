"""Hourly passes of the MMoE ranking model (issue 10, point 5): after a daily ranking base, two
consecutive passes each warm start from the one before, record the serving model's per-task AUC
before training (prequential), write their model and publish pointer, which the scorer loads; a
missing previous pass (or base) is a named error; a re-run of a pass is byte-identical.

Real DuckDB, TensorFlow and files; no mocks. Data: two generated demo days (``dailyrec.demo.generator``);
day 1 gets the daily ranking chain in this process (features, samples, train, evaluate, publish: the
base); the passes of day 2 (``training.split_per_pass=2``: hours 0-1, then 2-3) run through the
DAG's task call (``dailyrec.stages.call``, pass 0) and through the steps' own CLI in fresh processes
(pass 2, and its re-run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.config import load_config
from dailyrec.storage import open_store
from tests.helpers import REPO, file_digests, validate_day

D1, D2 = "2026-11-01", "2026-11-02"
NEW_ITEM = "i-admitted-in-pass-2"
SMALL = {
    "demo.events_per_day": 12000, "demo.n_users": 400, "demo.n_items": 200,
    "sampling.window_days": 1, "training.holdout_hours": 3, "ranking.negative_downsample_rate": 0.5,
    "ranking.batch_size": 256, "ranking.epochs": 2, "ranking.train_baseline": False,
    "training.checkpoint_every_steps": 50, "training.split_per_pass": 2, "passes.epochs": 2,
}
# keys of a manifest that describe the run, not the output (docs/storage.md, "Re-runs are byte-identical")
VOLATILE = {"timings_s", "peak_rss_mb", "pid", "code_version", "examples_per_s", "fit_seconds", "seconds"}


def _cfg(root: Path):
    return load_config(overrides={"storage.data_root": str(root), **SMALL}, environ={})


def _overrides(root: Path) -> dict:
    return {"storage.data_root": str(root), **SMALL}


def _cli(root: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    return subprocess.run([sys.executable, "-m", module, *args, "--set", f"storage.data_root={root}", *sets],
                          cwd=str(REPO), capture_output=True, text=True, timeout=600)


def _pass(root: Path, cur_date: str, hour: int) -> dict:
    """``hourly.ranking_prequential`` then ``hourly.train_mmoe_pass`` for the pass, each a fresh process."""
    out = {}
    for name, module in (("prequential", "tasks.hourly.ranking_prequential"), ("train", "tasks.hourly.train_mmoe_pass")):
        res = _cli(root, module, "--cur-date", cur_date, "--hour", str(hour))
        assert res.returncode == 0, res.stderr[-5000:]
        out[name] = json.loads(res.stdout)
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Day 1's daily ranking base (published), then the passes (D2, 0) and (D2, 2)."""
    from dailyrec.demo.generator import generate
    from tasks.ranking.evaluate_mmoe import step as evaluate_mmoe
    from tasks.ranking.publish_model import step as publish_model
    from tasks.ranking.ranking_samples import step as ranking_samples
    from tasks.retrieval.features import step as build_features
    from tasks.ranking.train_mmoe import step as train_mmoe

    root = tmp_path_factory.mktemp("ranking_passes") / "data"
    cfg = _cfg(root)
    generate(cfg, D1, 2)
    store = open_store(cfg)
    validate_day(store, D1)
    build_features(D1, cfg)
    ranking_samples(D1, cfg)
    base = train_mmoe(D1, cfg)
    assert evaluate_mmoe(D1, cfg)["passed"], "the first model has nothing to compare with: its gate passes"
    publish_model(D1, cfg)
    # pass (D2, 0) as the DAG's task calls it (dailyrec.stages.call), here in this process
    from dailyrec.stages import call

    run = {"cur_date": D2, "hour": 1, "overrides": _overrides(root)}   # hour 1 ends the pass that starts at 0
    first = {"prequential": call("hourly.ranking_prequential", run), "train": call("hourly.train_mmoe_pass", run)}
    # the admission state after pass (D2, 2) (the admission helper's output, dailyrec.admission) admits
    # a new item id: the pass's item table grows by one row (a known user id admitted again changes nothing)
    from dailyrec.ranking.passes import archive_vocabularies

    known_user = archive_vocabularies(str(root / f"models/mmoe/dt={D1}/model"))["user_id"][0]
    state = pa.table({"feature": ["item_id", "item_id", "user_id"], "id": [NEW_ITEM, "i-never", known_user],
                      "admitted": [True, False, True]})
    (root / f"admission/dt={D2}/hour=02").mkdir(parents=True)
    pq.write_table(state, root / f"admission/dt={D2}/hour=02/state.parquet")
    passes = {0: first, 2: _pass(root, D2, 3)}   # through the CLI; hour 3 ends the pass that starts at 2
    return {"root": root, "cfg": cfg, "store": store, "base": base, "passes": passes}


def _log_rows(root: Path, day: str, hours: list[int]) -> tuple[int, int]:
    rows = clicks = 0
    for h in hours:
        for f in sorted((root / f"logs/dt={day}/hour={h:02d}").glob("*.parquet")):
            t = pq.read_table(f, columns=["click"])
            rows += t.num_rows
            clicks += int(np.asarray(t.column("click")).sum())
    return rows, clicks


def test_two_passes_chain_from_the_daily_base_with_prequential_auc(world):
    root, base = world["root"], world["base"]
    versions = {}
    for start, serving in ((0, D1), (2, f"{D2}T00")):
        hours = [start, start + 1]
        metrics = _json(root / f"prequential/mmoe/dt={D2}/hour={start:02d}/metrics.json")
        rows, clicks = _log_rows(root, D2, hours)
        # the serving model (the warm source) scored every impression of the pass's hours, before training
        assert metrics["hours"] == hours and metrics["impressions"] == rows > 0 and metrics["clicks"] == clicks > 0
        assert metrics["scored_by"]["from"] == serving
        expected_serving = base["model_version"] if start == 0 else versions[0]
        assert metrics["model_version"] == expected_serving
        assert 0.5 < metrics["click_auc"] < 1.0, metrics   # a trained model ranks clicks above chance
        assert metrics["click_logloss"] > 0
        assert "conversion_auc" in metrics and "conversion_logloss" in metrics
        assert world["passes"][start]["prequential"]["click_auc"] == metrics["click_auc"]

        # the pass model: warm started from the serving model, trained on the pass's rows only
        mdir = root / f"passes/mmoe/dt={D2}/hour={start:02d}"
        man = _json(mdir / "_manifest.json")
        samples = _json(root / f"ranking_pass_samples/dt={D2}/hour={start:02d}/_manifest.json")
        assert man["hours"] == hours and man["rows"]["train"] == samples["rows"]["train"] > 0
        assert samples["rows"]["impressions"] == rows
        assert man["warm_start"]["from"] == serving and man["warm_start"]["model_version"] == expected_serving
        enc = man["warm_start"]["stats"]["encoder"]
        assert enc["user_id"]["kept"] > 0 and enc["user_id"]["new"] == 0
        assert enc["item_id"]["new"] == (1 if start == 2 else 0)   # the admitted id got its own row
        assert man["admitted"] == ({"item_id": 1} if start == 2 else {})
        assert man["warm_start"]["stats"]["skipped"] == 0   # every layer of the same config copied
        assert len(man["history"]["loss"]) == world["cfg"].passes.epochs
        assert all(np.isfinite(man["history"]["loss"]))
        assert man["model_version"].startswith(f"mmoe-{D2}T{start:02d}-")
        assert man["lineage"]["warm_start"] == expected_serving
        src = root / (f"models/mmoe/dt={D1}" if start == 0 else f"passes/mmoe/dt={D2}/hour=00")
        assert (mdir / "model/model.keras").read_bytes() != (src / "model/model.keras").read_bytes()
        versions[start] = man["model_version"]

        pointer = _json(root / f"registry/mmoe/dt={D2}/hour={start:02d}/published.json")
        assert pointer["model_version"] == man["model_version"] and pointer["hour"] == start
        assert pointer["saved_model"] == str(mdir / "saved_model")
        assert world["passes"][start]["train"]["published"] == str(
            root / f"registry/mmoe/dt={D2}/hour={start:02d}/published.json")

    from dailyrec.ranking.passes import archive_vocabularies

    vocab0 = archive_vocabularies(str(root / f"passes/mmoe/dt={D2}/hour=00/model"))
    vocab2 = archive_vocabularies(str(root / f"passes/mmoe/dt={D2}/hour=02/model"))
    assert vocab2["item_id"] == vocab0["item_id"] + [NEW_ITEM] and vocab2["user_id"] == vocab0["user_id"]

    # the pass samples have the daily ranking samples' columns
    daily = pq.read_schema(root / f"ranking_samples/dt={D1}/train.parquet")
    for name in ("train.parquet", "impressions.parquet"):
        assert pq.read_schema(root / f"ranking_pass_samples/dt={D2}/hour=02/{name}").names == daily.names


def test_scorer_loads_the_newest_pass_pointer(world):
    from dailyrec.scoring import Scorer

    root, cfg = world["root"], world["cfg"]
    rows = pq.read_table(root / f"ranking_pass_samples/dt={D2}/hour=02/impressions.parquet").slice(0, 6)
    newest = Scorer(cfg)
    p2 = _json(root / f"passes/mmoe/dt={D2}/hour=02/_manifest.json")
    assert newest.info["model_version"] == p2["model_version"] and newest.info["hour"] == 2
    scored = newest.score(rows)
    assert [s["request_id"] for s in scored] == rows.column("request_id").to_pylist()
    assert all(0 < s["click"] < 1 and 0 < s["conversion"] < 1 for s in scored)
    # a named pass, and the daily model of D1, stay loadable; they score the rows differently
    first = Scorer(cfg, D2, 0)
    assert first.info["model_version"] == _json(root / f"passes/mmoe/dt={D2}/hour=00/_manifest.json")["model_version"]
    daily = Scorer(cfg, D1)
    assert daily.info["model_version"] == world["base"]["model_version"]
    assert [s["click"] for s in daily.score(rows)] != [s["click"] for s in scored]
    with pytest.raises(FileNotFoundError, match=f"no ranking model is published for the pass {D2}T04"):
        Scorer(cfg, D2, 4)

    # the score CLI (the user's command) takes the newest pointer too
    pq.write_table(rows, root.parent / "rows.parquet")
    res = subprocess.run([sys.executable, "-m", "dailyrec.scoring", "--input", str(root.parent / "rows.parquet"),
                          "--set", f"storage.data_root={root}"], cwd=str(REPO), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"published for {D2} hour 02" in res.stderr and p2["model_version"] in res.stderr
    cli_scores = [json.loads(line)["click"] for line in res.stdout.splitlines()]
    assert cli_scores == pytest.approx([s["click"] for s in scored], abs=2e-6)


def test_pointer_order_and_the_daily_publish_keeps_pass_pointers(tmp_path):
    """A pass (D, HH) is newer than D-1's daily model and D's earlier passes, older than D's daily model
    (the consolidation); rewriting a daily entry keeps the date's pass entries."""
    from dailyrec.registry import (mark_online, mark_pass_published, mark_published, pass_published_path,
                                   published_entries)
    from dailyrec.scoring import published_model

    store = open_store(str(tmp_path / "data"))
    mark_published(store, "mmoe", D1, {"model_version": "daily-1"})
    mark_pass_published(store, "mmoe", D2, 2, {"model_dir": "p2", "model_version": "pass-2"})
    mark_pass_published(store, "mmoe", D2, 0, {"model_dir": "p0", "model_version": "pass-0"})
    assert published_entries(store, "mmoe") == [(D1, None), (D2, 0), (D2, 2)]
    assert published_model(store)["model_version"] == "pass-2"
    mark_published(store, "mmoe", D2, {"model_version": "daily-2"})
    assert published_entries(store, "mmoe") == [(D1, None), (D2, 0), (D2, 2), (D2, None)]
    assert published_model(store)["model_version"] == "daily-2"
    assert published_model(store, D2)["model_version"] == "daily-2"
    assert published_model(store, D2, 0)["model_version"] == "pass-0"
    assert store.read_json(pass_published_path(store, "mmoe", D2, 2))["model_version"] == "pass-2"
    mark_published(store, "mmoe", D2, {"model_version": "daily-2b"})   # a re-publish keeps them too
    assert published_entries(store, "mmoe")[-3:] == [(D2, 0), (D2, 2), (D2, None)]
    mark_online(store, "mmoe", D1, {"model_version": "daily-1"})   # a rollback marks D2 withdrawn, keeps them
    assert store.read_json(f"{store.partition('registry/mmoe', D2)}/published.json")["withdrawn"]["online"] == D1
    assert published_entries(store, "mmoe")[-3:] == [(D2, 0), (D2, 2), (D2, None)]


def test_a_missing_previous_pass_or_base_is_a_named_error(world):
    from dailyrec.ranking.passes import MissingPassError
    from dailyrec.step import begin
    from tasks.hourly.ranking_prequential import step as prequential
    from tasks.hourly.train_mmoe_pass import step as train_pass

    from dailyrec.stages import poke

    root, cfg = world["root"], world["cfg"]
    assert poke("hourly.ranking_prequential", {"cur_date": D2, "hour": 3, "overrides": _overrides(root)})[0]
    ok, why = poke("hourly.ranking_prequential", {"cur_date": D2, "hour": 6, "overrides": _overrides(root)})
    assert not ok and f"previous pass {D2}T04" in why
    # pass (D2, 6) needs (D2, 4), which never ran: the chain stops, naming it (the step and its CLI)
    for fn in (prequential, train_pass):
        with pytest.raises(MissingPassError, match=f"previous pass {D2}T04"):
            fn(D2, cfg, 6)
    assert issubclass(MissingPassError, FileNotFoundError)
    res = _cli(root, "tasks.hourly.train_mmoe_pass", "--cur-date", D2, "--hour", "7")
    assert res.returncode == 2 and f"previous pass {D2}T04" in res.stderr, res.stderr[-2000:]
    assert not (root / f"passes/mmoe/dt={D2}/hour=06").exists()
    assert not (root / f"prequential/mmoe/dt={D2}/hour=06").exists()
    # the day's first pass starts from the daily base of the day before: D1's needs 2026-10-31's
    with pytest.raises(MissingPassError, match="daily base of 2026-10-31"):
        train_pass(D1, cfg, 0)
    # an hour of the pass without _SUCCESS stops it too, naming the partition
    from dailyrec.passes import MissingHourError
    from dailyrec.ranking.passes import pass_log_files

    marker = root / f"logs/dt={D2}/hour=05/_SUCCESS"
    marker.rename(marker.with_name("_SUCCESS.away"))
    try:
        with pytest.raises(MissingHourError, match=f"logs/dt={D2}/hour=05 is missing or incomplete"):
            pass_log_files(begin("t", D2, cfg).store, cfg, D2, 4)
    finally:
        marker.with_name("_SUCCESS.away").rename(marker)


def _outputs(root: Path, start: int) -> dict[str, str]:
    """``{path: sha256}`` of every file the pass wrote (JSON without its volatile keys)."""
    datasets = ("ranking_pass_samples", "prequential/mmoe", "passes/mmoe", "registry/mmoe")
    return file_digests([f for ds in datasets for f in (root / ds / f"dt={D2}" / f"hour={start:02d}").rglob("*")],
                        root, VOLATILE)


def test_rerun_of_a_pass_is_byte_identical(world):
    root = world["root"]
    first = _outputs(root, 2)
    assert any(k.endswith("model.keras") for k in first) and any("saved_model" in k for k in first)
    again = _pass(root, D2, 2)
    assert again["train"]["model_version"] == world["passes"][2]["train"]["model_version"]
    assert _outputs(root, 2) == first

