"""Hourly incremental training of the two-tower model (issue 10, "Passes"), step by step.

A tiny generated world (tests/helpers.py's TINY_ENV, two days). Day 1 runs the daily retrieval
chain (its gate-passed model is the base). Then three consecutive passes of day 2 (hours 0, 1, 2)
run every hourly stage in order, as the ``hourly_training`` DAG calls them (pass samples ->
prequential -> train_pass -> export_delta -> report), in a fresh process like an Airflow task:
real DuckDB, real TensorFlow training, real files. The checks: each pass warm starts from the one
before (the first from the base) and known ids keep their embedding rows, newly admitted item ids
get rows, the prequential metrics are recorded by the warm-source model, the delta holds exactly
the items the pass touched, a re-run of a pass writes the same bytes, and a pass whose previous pass
is missing stops with ``MissingPassError`` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import file_digests, run_stages, run_tiny

DAYS = ["2026-11-01", "2026-11-02"]
DAILY = ["ingest.validate_day", "retrieval.features", "retrieval.sample", "retrieval.train_two_tower",
         "retrieval.evaluate_two_tower"]
HOURLY = ["hourly.pass_samples", "hourly.prequential", "hourly.train_pass", "hourly.export_delta", "hourly.report"]
K = 10
# hard negatives of every source, the model one from the warm-source towers; K of the prequential recall
EXTRA = [f"passes.prequential_k={K}", "sampling.hard_negative_sources=[exposed,same_category,model]"]
VOLATILE = {"timings_s", "peak_rss_mb", "pid", "code_version", "examples_per_s", "events_per_s"}
_PASSES = """
import sys
from dailyrec import stages
from dailyrec.config import parse_set_args
day, hours, names = sys.argv[1], [int(h) for h in sys.argv[2].split(",")], sys.argv[3].split(",")
overrides = parse_set_args(sys.argv[4:])
for h in hours:
    for s in names:
        stages.call(s, {"cur_date": day, "hour": h, "overrides": overrides})
"""


def _passes(root: Path, hours: list[int], stages: list[str] = HOURLY) -> None:
    """Each pass in its own fresh process, as the DAG's tasks run (TensorFlow's graph-function names,
    hence a SavedModel's bytes, depend on what ran before in the process)."""
    for h in hours:
        run_tiny(root, "-c", _PASSES, DAYS[1], str(h), ",".join(stages), *EXTRA, check=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("passes") / "data"
    run_tiny(root, "-m", "dailyrec.demo.generator", "--start-date", DAYS[0], "--days", "2", check=True)
    run_stages(root, DAYS[0], *DAILY)
    _passes(root, [0, 1, 2])
    return root


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _part(root: Path, dataset: str, hour: int) -> Path:
    return root / dataset / f"dt={DAYS[1]}" / f"hour={hour:02d}"


def _item_rows(model_dir: Path) -> tuple[list[str], np.ndarray]:
    from models.two_tower import load_model

    model = load_model(model_dir / "model", compile=False)
    vocab = model.item_tower.vocabularies["item_id"]
    return vocab, np.asarray(model.item_tower.encoder.embeddings["item_id"].embeddings.numpy())


@pytest.mark.slow
def test_three_passes_chain_from_the_base(world):
    root = world
    base = _json(root / f"models/two_tower/dt={DAYS[0]}/_manifest.json")
    m = [_json(_part(root, "passes/two_tower", h) / "_manifest.json") for h in range(3)]
    assert [x["warm_start"]["from"] for x in m] == [DAYS[0], f"{DAYS[1]}T00", f"{DAYS[1]}T01"]
    assert [x["lineage"]["warm_start"] for x in m] == [base["model_version"]] + [x["model_version"] for x in m[:2]]
    assert len({x["model_version"] for x in m}) == 3 and all(x["model_version"].startswith(f"tt-{DAYS[1]}T0")
                                                              for x in m)
    assert all(x["trained"] and x["rows"]["positives"] > 0 and x["hours"] == [h] for h, x in enumerate(m))
    daily = pq.read_schema(root / f"samples/dt={DAYS[0]}/train.parquet")
    for h in range(3):  # the pass samples have the daily samples' columns (one reader, one loss)
        sch = pq.read_schema(_part(root, "pass_samples", h) / "train.parquet")
        assert sch.names == daily.names and sch.equals(daily, check_metadata=False)

    # prequential: the serving (warm-source) model scored each pass before training, in sane ranges
    for h in range(3):
        pre = _json(_part(root, "prequential/two_tower", h) / "metrics.json")
        assert pre["model_version"] == (base if h == 0 else m[h - 1])["model_version"]
        assert pre["users"] > 0 and pre["impressions"] >= pre["clicks"] > 0
        assert 0.0 <= pre[f"recall_at_{K}"] <= 1.0 and 0.0 <= pre["auc"] <= 1.0
        assert pre[f"new_item_recall_at_{K}"] is None or 0.0 <= pre[f"new_item_recall_at_{K}"] <= 1.0
        # the popularity baseline: the 24 complete hours before the pass (the base day's, then this day's)
        assert pre["popularity_hours"] == 24 and 0.0 < pre[f"popularity_recall_at_{K}"] <= 1.0
        rep = _json(root / f"reports/hourly_training/dt={DAYS[1]}/hour={h:02d}/report.json")
        assert rep["verdict"] == "complete" and rep["prequential"][f"recall_at_{K}"] == pre[f"recall_at_{K}"]

    # warm start: the remap keeps every known id's row; a row the pass's samples never touch is unchanged
    # (lazy Adam updates only the rows a batch holds); newly admitted item ids got rows of their own
    v_base, e_base = _item_rows(root / f"models/two_tower/dt={DAYS[0]}")
    rows = [_item_rows(_part(root, "passes/two_tower", h)) for h in range(3)]
    assert all(e.shape[0] == len(v) + 1 for v, e in rows)
    adm0 = _json(_part(root, "pass_samples", 0) / "admission.json")
    new_items = adm0["newly_admitted"]["item_id"]
    assert new_items and not set(new_items) & set(v_base) and set(new_items) <= set(rows[0][0])
    for h in (0, 1, 2):
        (v_prev, e_prev), (v_new, e_new) = ([(v_base, e_base)] + rows)[h], rows[h]
        assert v_new[:len(v_prev)] == v_prev  # existing ids keep their position, admitted ids come after
        touched = set(pq.read_table(_part(root, "pass_samples", h) / "train.parquet",
                                    columns=["item_id"]).column("item_id").to_pylist())
        untouched = [i for i, item in enumerate(v_prev) if item not in touched]
        assert len(untouched) > 10
        idx = np.array(untouched) + 1
        np.testing.assert_array_equal(e_new[idx], e_prev[idx])
        moved = [i + 1 for i, item in enumerate(v_prev) if item in touched]
        assert np.abs(e_new[moved] - e_prev[moved]).max() > 0  # and the pass did train the rows it saw


@pytest.mark.slow
def test_the_delta_holds_the_items_the_pass_touched(world):
    root = world
    items = set(pq.read_table(root / f"items/dt={DAYS[1]}").column("item_id").to_pylist())
    for h in range(3):
        logs = pq.read_table(root / f"logs/dt={DAYS[1]}/hour={h:02d}")
        impressed = set(logs.column("item_id").to_pylist())
        adm = _json(_part(root, "pass_samples", h) / "admission.json")
        expected = (impressed | set(adm["newly_admitted"]["item_id"])) & items
        delta = pq.read_table(_part(root, "deltas/two_tower", h) / "delta.parquet")
        man = _json(_part(root, "deltas/two_tower", h) / "_manifest.json")
        ids = delta.column("item_id").to_pylist()
        assert set(ids) == expected and len(ids) == len(expected) and ids == sorted(ids)
        assert set(delta.column("op").to_pylist()) == {"upsert"}
        vecs = np.stack(delta.column("vector").to_numpy(zero_copy_only=False))
        assert vecs.shape == (len(ids), man["dim"]) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
        assert man["counts"] == {"upsert": len(ids), "delete": 0}
        assert man["model_version"] == _json(_part(root, "passes/two_tower", h) / "_manifest.json")["model_version"]
        assert man["user_tower"].endswith(f"passes/two_tower/dt={DAYS[1]}/hour={h:02d}/user_tower")
        assert len(items) > len(ids)  # only the touched items: untouched ones keep their published vectors

    # admission.delta_threshold: a touched item goes in only with a score at least that (admission state)
    state = pq.read_table(_part(root, "admission", 1) / "state.parquet").to_pandas()
    before = pq.read_table(_part(root, "deltas/two_tower", 1) / "delta.parquet").column("item_id").to_pylist()
    scores = state[(state["feature"] == "item_id") & state["id"].isin(before)].set_index("id")["score"]
    threshold = float(scores.median())
    run_tiny(root, "-m", "tasks.hourly.export_delta", "--cur-date", DAYS[1], "--hour", "1",
             "--set", f"admission.delta_threshold={threshold!r}", check=True)
    after = pq.read_table(_part(root, "deltas/two_tower", 1) / "delta.parquet").column("item_id").to_pylist()
    assert after == sorted(scores[scores >= threshold].index) and 0 < len(after) < len(before)


def _outputs(root: Path, hour: int) -> dict[str, str]:
    """``{path: sha256}`` of every file the pass of ``hour`` wrote (JSON without its volatile keys)."""
    datasets = ("pass_samples", "prequential/two_tower", "passes/two_tower", "deltas/two_tower", "admission")
    return file_digests([f for ds in datasets for f in _part(root, ds, hour).rglob("*")], root, VOLATILE)


@pytest.mark.slow
def test_a_rerun_of_a_pass_is_byte_identical(world):
    root = world
    first = _outputs(root, 2)
    assert any(p.endswith("model.keras") for p in first) and any(p.endswith("delta.parquet") for p in first)
    _passes(root, [2], HOURLY[:4])
    second = _outputs(root, 2)
    assert sorted(first) == sorted(second)
    assert not [p for p in first if first[p] != second[p]], "a re-run of pass 2 wrote different bytes"


@pytest.mark.slow
def test_a_missing_previous_pass_stops_the_chain(world):
    from dailyrec.config import load_config
    from dailyrec.errors import MissingPassError
    from tasks.hourly.pass_samples import step

    root = world
    cfg = load_config(overrides={"storage.data_root": str(root)}, environ={})
    # hour 3 never ran: the pass of hour 4 refuses to start (before admission writes anything)
    with pytest.raises(MissingPassError, match=rf"previous pass {DAYS[1]}T03"):
        step(DAYS[1], cfg, 4)
    assert not _part(root, "admission", 4).exists() and not _part(root, "pass_samples", 4).exists()


@pytest.mark.slow
def test_the_daily_report_shows_the_passes_curve(world):
    """The per-date report of D (report.md, .json, .html) carries the prequential metrics of D's passes
    per hour, as recorded by the passes, and a plot of them over the hours."""
    root = world
    run_stages(root, DAYS[1], "retrieval.report")
    out = root / "reports/daily_retrieval" / f"dt={DAYS[1]}"
    doc = _json(out / "report.json")
    assert [r["hour"] for r in doc["passes"]] == [0, 1, 2]
    for r in doc["passes"]:
        m = _json(_part(root, "prequential/two_tower", r["hour"]) / "metrics.json")
        assert r["k"] == K and r["recall_at_k"] == m[f"recall_at_{K}"] and r["auc"] == m["auc"]
        assert r["new_item_recall_at_k"] == m[f"new_item_recall_at_{K}"]
    md = (out / "report.md").read_text()
    assert "## Hourly passes" in md and f"| 02 | {doc['passes'][2]['recall_at_k']:.4f} |" in md
    page = (out / "report.html").read_text()
    section = page[page.index("<h2>Hourly passes</h2>"):]
    assert '<img class="plot"' in section.split("<h2>")[1]
    # a date without passes keeps its report as before: no section, no key
    run_stages(root, DAYS[0], "retrieval.report")
    before = root / "reports/daily_retrieval" / f"dt={DAYS[0]}"
    assert "passes" not in _json(before / "report.json") and "Hourly passes" not in (before / "report.md").read_text()


@pytest.mark.slow
def test_the_hourly_dag_needs_both_chains(world):
    """The DAG's wait_for_previous_pass checks every model it trains: here only the two-tower passes
    ran (no MMoE pass nor MMoE base), so the next pass is refused before any work, naming the MMoE chain."""
    from dailyrec.config import load_config
    from dailyrec.errors import MissingPassError
    from dailyrec.passchain import pass_sources
    from dailyrec.storage import open_store

    cfg = load_config(overrides={"storage.data_root": str(world)}, environ={})
    with pytest.raises(MissingPassError, match=rf"mmoe pass {DAYS[1]}T03 needs the previous pass {DAYS[1]}T02"):
        pass_sources(open_store(cfg), cfg, DAYS[1], 3)
