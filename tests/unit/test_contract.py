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


# ---- string encoding, null keys, duplicate keys, unexpected entries (issue 15, items 8-11) ------------
def _with_bytes(table, column, row, raw: bytes):
    """``table`` with the ``row``-th value of string ``column`` replaced by the bytes ``raw``."""
    vals = table.column(column).combine_chunks().view(pa.binary()).to_pylist()
    vals[row] = raw
    return table.set_column(table.schema.get_field_index(column), column,
                            pa.array(vals, pa.binary()).view(pa.string()))


BAD_UTF8 = bytes.fromhex("ff fe c3 28 62 61 64")


def test_invalid_utf8_names_file_column_row(store):
    part = _write_raw(store, _with_bytes(tiny_logs(), "item_id", 3, BAD_UTF8), name="enc.parquet")
    with pytest.raises(ContractError) as exc:
        validate_partition(store, "logs", "2026-11-01", 3)
    msg = str(exc.value)
    assert part in msg and "enc.parquet" in msg and "column 'item_id' is not valid UTF-8 at row 3" in msg
    assert "ff fe c3 28 62 61 64" in msg


def test_invalid_utf8_in_a_side_column_and_a_snapshot(store):
    t = _with_bytes(_with_bytes(tiny_logs(), "site_domain", 7, b"\xc3"), "site_domain", 12, b"ok\xff")
    _write_raw(store, t)
    with pytest.raises(ContractError, match=r"column 'site_domain' is not valid UTF-8 at rows 7, 12 \(bytes c3\)"):
        validate_partition(store, "logs", "2026-11-01", 3)
    from tests.helpers import make_users

    users = _with_bytes(make_users(["u0", "u1", "u2"]), "user_segment", 1, b"\xe9t\xe9")  # latin-1, not UTF-8
    write_partition(store, "users", users, "2026-11-01")
    with pytest.raises(ContractError, match=r"users/dt=2026-11-01, file part-00000\.parquet: column "
                                            r"'user_segment' is not valid UTF-8 at row 1"):
        validate_partition(store, "users", "2026-11-01")


def test_binary_key_column_is_a_type_error(store):
    t = tiny_logs()
    t = t.set_column(t.schema.get_field_index("item_id"), "item_id",
                     pa.array([BAD_UTF8] * t.num_rows, pa.binary()))
    _write_raw(store, t, name="bin.parquet")
    with pytest.raises(ContractError, match=r"bin\.parquet: column 'item_id' has type binary, expected string"):
        validate_partition(store, "logs", "2026-11-01", 3)


@pytest.mark.parametrize("column", ["user_id", "item_id", "request_id"])
def test_null_key_names_column_and_rows(store, column):
    t = tiny_logs()
    vals = t.column(column).to_pylist()
    vals[2] = vals[7] = None
    t = t.set_column(t.schema.get_field_index(column), column, pa.array(vals, pa.string()))
    _write_raw(store, t, name="nulls.parquet")
    with pytest.raises(ContractError, match=rf"nulls\.parquet: column '{column}' has 2 null value\(s\) "
                                            r"\(rows 2, 7\); it may not be null"):
        validate_partition(store, "logs", "2026-11-01", 3)


def test_duplicate_request_id_across_files_names_files_and_rows(store):
    t = tiny_logs()
    part = _write_raw(store, t.slice(0, 10), name="a.parquet")
    _write_raw(store, t.slice(5, 15), name="b.parquet")      # rows 5-9 again
    with pytest.raises(ContractError) as exc:
        validate_partition(store, "logs", "2026-11-01", 3)
    msg = str(exc.value)
    assert msg.startswith(f"partition {part}: column 'request_id' has duplicate values")
    assert "'r2026-11-01-03-5' at file a.parquet row 5; file b.parquet row 0" in msg
    assert "(and 2 more duplicated value(s))" in msg
    # the same for a snapshot key over two files
    items_part = store.partition("items", "2026-11-01")
    from tests.helpers import make_items

    write_partition(store, "items", make_items(["i0", "i1"]), "2026-11-01")
    pq.write_table(make_items(["i2", "i1"]), f"{items_part}/part-00001.parquet")
    with pytest.raises(ContractError, match=r"'item_id' has duplicate values .*'i1' at file part-00000\.parquet "
                                            r"row 1; file part-00001\.parquet row 1"):
        validate_partition(store, "items", "2026-11-01")


def test_unexpected_entries_in_a_partition_are_named(cfg, store):
    from tasks.ingest.check_hour import step as check_hour

    part = write_partition(store, "logs", tiny_logs(), "2026-11-01", 3)
    # hidden / underscore names (writes in progress, markers, manifests) are part of the contract
    store.fs.create_dir(f"{part}/.tmp-part-1-abc")
    store.write_text(f"{part}/_manifest.json", "{}")
    assert check_hour("2026-11-01", cfg, hour=3)["rows"] == 20
    store.write_text(f"{part}/part-00001.csv", "a,b\n")
    store.fs.create_dir(f"{part}/retry")
    with pytest.raises(ContractError) as exc:
        check_hour("2026-11-01", cfg, hour=3)
    assert str(exc.value).startswith(f"{part}: unexpected file 'part-00001.csv', folder 'retry'")
    assert "only *.parquet files" in str(exc.value)
