"""The log contract check and atomic outputs, on real Parquet files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dailyrec.errors import ContractError
from dailyrec.contract import LOG_SCHEMA, read_partition, validate_partition, write_partition
from dailyrec.storage import SUCCESS_MARKER
from tests.helpers import tiny_logs


def test_valid_partition_round_trip(store):
    write_partition(store, "logs", tiny_logs(), "2026-11-01", 3)
    rep = validate_partition(store, "logs", "2026-11-01", 3)
    assert rep.rows == 20 and rep.stats["clicks"] == 10 and rep.stats["conversions"] == 5
    assert store.exists(store.partition("logs", "2026-11-01", 3) + "/" + SUCCESS_MARKER)
    back = read_partition(store, "logs", "2026-11-01", 3)
    assert back.schema.equals(LOG_SCHEMA) and back.num_rows == 20


def _write_raw(store, table, cur_date="2026-11-01", hour=3, name="part-0.parquet", success=True):
    part = store.partition("logs", cur_date, hour)
    store.fs.create_dir(part, recursive=True)
    pq.write_table(table, f"{part}/{name}")
    if success:
        open(f"{part}/{SUCCESS_MARKER}", "w").close()
    return part


def test_wrong_type_names_partition_file_column_types(store):
    t = tiny_logs()
    t = t.set_column(t.schema.get_field_index("banner_pos"), "banner_pos",
                     pa.array([str(i) for i in range(t.num_rows)]))
    part = _write_raw(store, t, name="bad.parquet")
    with pytest.raises(ContractError) as exc:
        validate_partition(store, "logs", "2026-11-01", 3)
    msg = str(exc.value)
    assert part in msg and "bad.parquet" in msg and "'banner_pos'" in msg
    assert "string" in msg and "int32" in msg


def test_missing_column(store):
    t = tiny_logs().drop_columns(["item_id"])
    _write_raw(store, t, name="nocol.parquet")
    with pytest.raises(ContractError, match=r"nocol\.parquet: column 'item_id' is missing"):
        validate_partition(store, "logs", "2026-11-01", 3)


def test_conversion_without_click_is_a_data_error(store):
    t = tiny_logs()
    conv = [1] * t.num_rows
    t = t.set_column(t.schema.get_field_index("conversion"), "conversion", pa.array(conv, pa.int8()))
    _write_raw(store, t)
    with pytest.raises(ContractError, match="'conversion' is 1 on 10 row"):
        validate_partition(store, "logs", "2026-11-01", 3)


def test_event_time_outside_hour(store):
    _write_raw(store, tiny_logs(hour=4), hour=3)
    with pytest.raises(ContractError, match="'event_time' has values outside"):
        validate_partition(store, "logs", "2026-11-01", 3)


def test_missing_marker_and_empty_partition(store):
    _write_raw(store, tiny_logs(), success=False)
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        validate_partition(store, "logs", "2026-11-01", 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate_partition(store, "logs", "2026-11-01", 5)


def test_min_rows(store):
    write_partition(store, "logs", tiny_logs(), "2026-11-01", 3)
    with pytest.raises(ContractError, match="fewer than the minimum 100"):
        validate_partition(store, "logs", "2026-11-01", 3, min_rows=100)


def test_failed_check_writes_nothing(cfg, store):
    from tasks.ingest.check_hour import step as check_hour

    t = tiny_logs().drop_columns(["click"])
    _write_raw(store, t)
    before = sorted(p.name for p in store.local_path(store.root).rglob("*"))
    with pytest.raises(ContractError, match="'click' is missing"):
        check_hour("2026-11-01", cfg, hour=3)
    after = sorted(p.name for p in store.local_path(store.root).rglob("*"))
    assert before == after
    assert not store.exists(store.partition("log_checks", "2026-11-01", 3))


def test_check_hour_records_report(cfg, store):
    from tasks.ingest.check_hour import step as check_hour

    write_partition(store, "logs", tiny_logs(), "2026-11-01", 3)
    out = check_hour("2026-11-01", cfg, hour=3)
    rep = store.read_json(out["report"])
    assert rep["rows"] == {"logs": 20} and rep["check"]["clicks"] == 10
    assert rep["config_hash"] == cfg.digest() and rep["code_version"]


def test_atomic_output_failure_keeps_previous(store):
    final = store.path("outputs", "dt=2026-11-01")
    with store.atomic_output(final) as tmp:
        store.write_text(f"{tmp}/a.txt", "v1")
    with pytest.raises(RuntimeError):
        with store.atomic_output(final) as tmp:
            store.write_text(f"{tmp}/a.txt", "v2-half")
            raise RuntimeError("crash mid-write")
    assert store.read_text(f"{final}/a.txt") == "v1"
    leftovers = [p.name for p in store.local_path(store.path("outputs")).iterdir()]
    assert leftovers == ["dt=2026-11-01"]
    with store.atomic_output(final) as tmp:          # a re-run replaces it whole
        store.write_text(f"{tmp}/b.txt", "v3")
    assert not store.exists(f"{final}/a.txt") and store.read_text(f"{final}/b.txt") == "v3"


def test_file_uri_root(tmp_path):
    from dailyrec.storage import open_store

    s = open_store(f"file://{tmp_path}/uri-root")
    write_partition(s, "logs", tiny_logs(), "2026-11-01", 3)
    assert validate_partition(s, "logs", "2026-11-01", 3).rows == 20
