"""Named errors at run time, through the commands a user runs (issue 15, items 13 and 14).

A tiny generated world: day 1 trained, evaluated (both models) and its ranking model published,
day 2's samples ready. Then: a truncated warm-start model (the previous day's ``model.keras``)
either fails the training step naming the file and the cause or, with
``training.warm_start_on_error=cold_start``, trains cold with a warning recorded in the manifest,
for both models; and ``python -m dailyrec.scoring --input rows.jsonl`` with an out-of-range
integer names the row and the feature.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import run_stages, run_tiny

DAYS = ["2026-11-01", "2026-11-02"]
DAY1 = ["ingest.validate_day", "retrieval.features", "retrieval.sample", "retrieval.train_two_tower", "retrieval.evaluate_two_tower",
        "ranking.ranking_samples", "ranking.train_mmoe", "ranking.evaluate_mmoe", "ranking.publish_model"]
DAY2 = ["ingest.validate_day", "retrieval.features", "retrieval.sample", "ranking.ranking_samples"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime_errors") / "data"
    run_tiny(root, "-m", "dailyrec.demo.generator", "--start-date", DAYS[0], "--days", "2", check=True)
    run_stages(root, DAYS[0], *DAY1)
    run_stages(root, DAYS[1], *DAY2)
    return root


@pytest.fixture
def truncated(world):
    """Day 1's two ``model.keras`` files cut to their first 5000 bytes (restored afterwards)."""
    files = [world / f"models/two_tower/dt={DAYS[0]}/model/model.keras",
             world / f"models/mmoe/dt={DAYS[0]}/model/model.keras"]
    kept = {f: f.read_bytes() for f in files}
    for f in files:
        f.write_bytes(kept[f][:5000])
    yield files
    for f, data in kept.items():
        f.write_bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("stage, label, index", [("tasks.retrieval.train_two_tower", "two_tower", 0),
                                                  ("tasks.ranking.train_mmoe", "mmoe", 1)])
def test_a_truncated_warm_start_model_is_named(world, truncated, stage, label, index):
    keras_file = truncated[index]
    res = run_tiny(world, "-m", stage, "--cur-date", DAYS[1])
    assert res.returncode == 2, res.stderr[-3000:]
    assert f"warm start from the {DAYS[0]} model, loading {keras_file}" in res.stderr  # the attempt is logged
    assert (f"error: {label}: cannot warm start from the {DAYS[0]} model {keras_file}: not a valid Keras (zip) "
            "archive: truncated or corrupt (5000 bytes)") in res.stderr
    assert "File not found" not in res.stderr and "Traceback" not in res.stderr
    assert not (world / f"models/{'two_tower' if index == 0 else 'mmoe'}/dt={DAYS[1]}").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage, name, index", [("tasks.retrieval.train_two_tower", "two_tower", 0),
                                                 ("tasks.ranking.train_mmoe", "mmoe", 1)])
def test_cold_start_on_error_trains_cold_and_says_so(world, truncated, stage, name, index):
    res = run_tiny(world, "-m", stage, "--cur-date", DAYS[1], "--set", "training.warm_start_on_error=cold_start")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "WARNING" in res.stderr and "(training.warm_start_on_error=cold_start)" in res.stderr
    man = json.loads((world / f"models/{name}/dt={DAYS[1]}/_manifest.json").read_text())
    assert man["warm_start"]["from"] is None and man["lineage"]["warm_start"] is None
    assert man["warm_start"]["failed"] == {"from": DAYS[0], "file": str(truncated[index]),
                                           "error": "not a valid Keras (zip) archive: truncated or corrupt (5000 bytes)"}


@pytest.mark.slow
def test_scoring_an_out_of_range_integer_names_row_and_feature(world, tmp_path):
    rows = pq.read_table(world / f"ranking_samples/dt={DAYS[0]}/holdout.parquet").slice(0, 3).to_pylist()
    rows = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_tiny(world, "-m", "dailyrec.scoring", "--input", str(path))
    assert res.returncode == 0, res.stderr[-3000:]  # the rows as they are score fine
    rows[1]["banner_pos"] = 100000000000000000000
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_tiny(world, "-m", "dailyrec.scoring", "--input", str(path))
    assert res.returncode == 2
    assert (f"error: {path}: row 1: feature 'banner_pos' = 100000000000000000000 does not fit a 64-bit signed "
            "integer") in res.stderr and "Traceback" not in res.stderr
    table = pa.Table.from_pylist(rows[:1] * 2)
    table = table.set_column(table.column_names.index("banner_pos"), "banner_pos",
                             pa.array([0, 2 ** 63], pa.uint64()))
    pq.write_table(table, tmp_path / "rows.parquet")
    res = run_tiny(world, "-m", "dailyrec.scoring", "--input", str(tmp_path / "rows.parquet"))
    assert res.returncode == 2 and "row 1: feature 'banner_pos' = 9223372036854775808" in res.stderr, res.stderr[-2000:]
