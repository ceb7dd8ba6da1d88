"""Bad runtime input gets a named error (issue 15, items 1, 13, 14): an index factory that does
not fit the catalog, scoring values the model cannot take, and what a model version identifies.
Real FAISS, real pyarrow; the CLI is run as the user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from dailyrec.ann import build_index, clustered_vectors, index_dir, make_index
from dailyrec.config import ConfigError, load_config
from dailyrec.embeddings import write_embeddings
from dailyrec.errors import WarmStartError
from dailyrec.scoring import check_table, check_value, read_rows
from dailyrec.training import model_version

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-11-01"


# ---- index factory vs catalog (item 13) ---------------------------------------------------------
@pytest.fixture
def catalog_1625(store):
    """The issue's catalog size: 1,625 items of 16 dims, written as the export would."""
    vectors, _ = clustered_vectors(1625, 16, seed=2)
    write_embeddings(store, DAY, [f"i{k:05d}" for k in range(1625)], vectors, "tt-v1")
    return vectors


def test_ivf_with_more_lists_than_items_is_a_config_error(cfg, store, catalog_1625):
    with pytest.raises(ConfigError) as err:
        build_index(DAY, cfg.with_overrides({"index.factory": "IVF4096,Flat"}))
    msg = str(err.value)
    assert "'IVF4096,Flat'" in msg and "nlist=4,096" in msg and "1,625 items" in msg and "IVF41" in msg
    assert not Path(index_dir(store, DAY)).exists()


@pytest.mark.parametrize("factory, sample_max, words", [
    ("IVF4096,Flat", 200_000, ["nlist=4,096", "1,625 items"]),
    ("IVF1200,Flat", 1000, ["nlist=1,200", "1,000 training vectors", "index.train_sample_max=1,000"]),
    ("NoSuchIndex", 200_000, ["'NoSuchIndex' is not a faiss index for 16-dim vectors"]),
    ("PQ5", 200_000, ["'PQ5' is not a faiss index for 16-dim vectors"]),  # 5 sub-quantizers do not divide 16
])
def test_factories_that_cannot_fit_are_named(catalog_1625, factory, sample_max, words):
    with pytest.raises(ConfigError) as err:
        make_index(catalog_1625, factory, train_sample_max=sample_max)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_factory_whose_training_fails_is_named(catalog_1625):
    """PQ4 needs 256 training points per codebook; 100 items cannot train it."""
    with pytest.raises(ConfigError) as err:
        make_index(catalog_1625[:100], "PQ4")
    assert "'PQ4' cannot be trained on 100 vectors of the catalog's 100 items" in str(err.value)
    assert "256" in str(err.value)


def _build_index_cli(cfg, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "tasks.retrieval.build_index", "--set",
                           f"storage.data_root={cfg.storage.data_root}", *args],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO), env=env)


def test_the_issue_command_exits_2_with_the_config_error(cfg, store, catalog_1625):
    out = _build_index_cli(cfg, "--cur-date", DAY, "--set", "index.factory=IVF4096,Flat")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: index.factory 'IVF4096,Flat' has nlist=4,096" in out.stderr and "1,625 items" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("exc", [ConfigError("index.factory 'IVF4096,Flat' ..."),
                                 WarmStartError("two_tower: cannot warm start from ...")])
def test_the_dags_retry_policy_fails_these_at_once(exc):
    """The DAG tasks' retry policy (a real Airflow ``ExceptionRetryPolicy``) does not retry a bad
    index factory or an unreadable warm-start model (a ``ContractError``): a retry would fail the same way."""
    from airflow.sdk import RetryAction

    from dailyrec.runctx import retry_policy

    assert retry_policy().evaluate(exc, try_number=1, max_tries=3).action == RetryAction.FAIL
    assert retry_policy().evaluate(OSError("disk"), try_number=1, max_tries=3).action != RetryAction.FAIL


# ---- scoring values (item 13) -------------------------------------------------------------------
@pytest.mark.parametrize("value, words", [
    (10 ** 20, ["row 3", "'banner_pos' = 100000000000000000000 does not fit a 64-bit signed integer"]),
    (-(2 ** 63) - 1, ["row 3", "does not fit a 64-bit signed integer"]),
    (1.5, ["row 3", "'banner_pos' must be an integer, got 1.5"]),
    (float("nan"), ["row 3", "'banner_pos' must be an integer, got nan"]),
    ("7", ["row 3", "'banner_pos' must be an integer, got '7'"]),
    (True, ["row 3", "'banner_pos' must be an integer, got True"]),
])
def test_bad_integer_feature_values_name_row_and_feature(value, words):
    with pytest.raises(ValueError) as err:
        check_value("banner_pos", value, True, "rows.jsonl: row 3")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_good_values_pass_and_string_features_refuse_lists_and_nan():
    for v in (None, 0, 2 ** 63 - 1, -(2 ** 63)):
        check_value("banner_pos", v, True, "x")
    for v in (None, "a", 3, 2.5, 10 ** 20):
        check_value("site_id", v, False, "x")
    with pytest.raises(ValueError, match=r"row 0: feature 'site_id' must be a string or a number, got list"):
        check_value("site_id", [1, 2], False, "x: row 0")
    with pytest.raises(ValueError, match=r"row 0: feature 'site_id' is inf"):
        check_value("site_id", float("inf"), False, "x: row 0")


def test_uint64_column_above_int64_names_the_first_row():
    table = pa.table({"banner_pos": pa.array([1, None, 2 ** 64 - 1, 2 ** 63], pa.uint64())})
    with pytest.raises(ValueError) as err:
        check_table(table, {"banner_pos"}, "rows.parquet")
    assert "rows.parquet: row 2: feature 'banner_pos' = 18446744073709551615" in str(err.value)
    assert "(2 such row(s))" in str(err.value)
    check_table(pa.table({"banner_pos": pa.array([1, 2], pa.uint64())}), {"banner_pos"}, "ok")


def test_nan_in_json_lines_is_refused_with_its_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"banner_pos": 1}\n{"banner_pos": NaN}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl, line 2: not valid JSON \(NaN is not a JSON value"):
        read_rows(str(path))


# ---- what a model version identifies (item 1) --------------------------------------------------------
def test_model_version_identifies_config_inputs_and_warm_start():
    cfg = load_config(environ={})
    cold = {"inputs": {"train.parquet": "aa"}, "warm_start": None}
    warm = {"inputs": {"train.parquet": "aa"}, "warm_start": "tt-2026-11-01-1a2b3c4d-5e6f7a8b"}
    v_cold, v_warm = model_version("tt", DAY, cfg, cold), model_version("tt", DAY, cfg, warm)
    assert v_cold != v_warm and v_cold.startswith(f"tt-{DAY}-{cfg.digest()[:8]}-")
    assert model_version("tt", DAY, cfg, json.loads(json.dumps(warm))) == v_warm  # a re-run: same version
    other_inputs = {"inputs": {"train.parquet": "bb"}, "warm_start": warm["warm_start"]}
    assert model_version("tt", DAY, cfg, other_inputs) != v_warm
    assert model_version("tt", DAY, cfg.with_overrides({"training.epochs": 9}), warm) != v_warm
    assert all(c.isalnum() or c in "-" for c in v_warm) and len(v_warm) == len("tt-2026-11-01-") + 17


def test_lineage_does_not_depend_on_where_the_data_root_lives(tmp_path):
    """The same input bytes under two data roots give the same lineage, hence the same version."""
    from dailyrec.storage import open_store
    from dailyrec.training import lineage

    found = []
    for where in ("a", "b/deeper"):
        store = open_store(str(tmp_path / where))
        path = store.path("samples", f"dt={DAY}", "train.parquet")
        store.write_text(path, "same bytes")
        found.append(lineage(store, [path], {"from": None}))
    assert found[0] == found[1] == {"inputs": {f"samples/dt={DAY}/train.parquet": found[0]["inputs"][
        f"samples/dt={DAY}/train.parquet"]}, "warm_start": None}
