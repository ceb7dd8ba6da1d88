"""bench/RESULTS.md is generated from bench/results/*.json and nothing else (no benchmark runs here)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULT_FILES = sorted((REPO / "bench" / "results").glob("*.json"))


def _load_common():
    spec = importlib.util.spec_from_file_location("bench_common_under_test", REPO / "bench" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


common = _load_common()


def test_results_md_regenerates_byte_identical():
    """A hand edit of RESULTS.md, or a JSON committed without regenerating it, fails here."""
    assert RESULT_FILES, "no bench/results/*.json"
    assert common.render_results_md() == common.RESULTS_MD.read_text(), (
        "bench/RESULTS.md is stale or hand-edited: run ./dev python bench/_common.py")


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.stem)
def test_result_json_has_command_date_machine_metrics(path):
    doc = json.loads(path.read_text())
    for key in ("command", "date", "machine", "metrics"):
        assert key in doc, f"{path.name} has no {key!r}"
    assert doc["command"].startswith("./dev bench "), doc["command"]
    assert dt.datetime.fromisoformat(doc["date"]).tzinfo is not None, doc["date"]
    assert isinstance(doc["machine"], dict) and doc["machine"].get("cores"), doc["machine"]
    assert isinstance(doc["metrics"], dict) and doc["metrics"]


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.stem)
def test_headline_rows_are_declared_and_resolve(path):
    """Every result has 3-8 declared headline rows whose keys (and label placeholders) exist."""
    name = path.stem
    assert name in common.HEADLINES, f"declare the headline rows of {name} in HEADLINES (bench/_common.py)"
    summary = common.HEADLINES[name]
    assert 3 <= len(summary.rows) <= 8, f"{name}: {len(summary.rows)} rows"
    metrics = json.loads(path.read_text())["metrics"]
    paths = [p for h in summary.rows for p in (h.key, h.baseline_key, h.spread, h.baseline_spread) if p]
    paths += [p for h in summary.rows for p in re.findall(r"\{([^{}]+)\}", h.label + h.baseline)]
    paths += [e[1] if isinstance(e, tuple) else e for e in summary.load] + [p for _, p in summary.scale]
    assert summary.load, f"{name}: no load average declared"
    for p in paths:
        assert common.lookup(metrics, p) is not common._MISSING, f"{name}: no metric {p!r}"
    for h in summary.rows:
        for p in (h.key, h.baseline_key):
            if p:
                value = common.lookup(metrics, p)
                assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name}.{p} = {value!r}"


def test_every_declared_benchmark_is_a_script():
    for name in common.HEADLINES:
        assert (REPO / "bench" / f"{name}.py").exists(), name


def test_lookup_paths():
    m = {"a": {"b": [{"c": 1}, {"c": 2}]}, "x+y": 3}
    assert common.lookup(m, "a.b[1].c") == 2
    assert common.lookup(m, "x+y") == 3
    assert common.lookup(m, "a.b[5].c") is common._MISSING
    assert common.lookup(m, "a.z") is common._MISSING
