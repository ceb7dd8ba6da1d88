"""The day validation (tasks/ingest/validate_day.py) and its record (dailyrec/validation.py): every
bad input of a day is named, and the steps reading logs refuse a day that did not pass
(issue 15, items 8-11). Real Parquet partitions written with the shared builders; no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dailyrec.contract import read_partition, write_partition
from dailyrec.dates import date_range
from dailyrec.errors import ContractError
from dailyrec.storage import open_store
from tests.helpers import (DAY0, REPO, SMALL_DAY_VALIDATION, config, make_items, make_users, random_day,
                           validate_day, write_day)

D2 = date_range(DAY0, 2)[1]
USERS, ITEMS = [f"u{i}" for i in range(12)], [f"i{i}" for i in range(8)]


def _day(store, day=DAY0, n=240, seed=0, validate=False):
    write_day(store, day, random_day(day, n, len(USERS), len(ITEMS), seed), make_users(USERS), make_items(ITEMS),
              validate=validate)


def _cfg(tmp_path, **extra):
    return config(tmp_path, **{"sampling.window_days": 2, "features.counter_windows_days": [1, 2],
                               "training.holdout_hours": 2, **extra})


def _bad_bytes(table, column, row, raw):
    vals = table.column(column).combine_chunks().view(pa.binary()).to_pylist()
    vals[row] = raw
    return table.set_column(table.schema.get_field_index(column), column,
                            pa.array(vals, pa.binary()).view(pa.string()))


def _rewrite_hour(store, day, hour, change):
    """Replace hour ``hour`` of ``day`` with ``change(its table)`` (raw Parquet: no conforming cast)."""
    part = store.partition("logs", day, hour)
    t = pq.read_table(f"{part}/part-00000.parquet")
    pq.write_table(change(t), f"{part}/part-00000.parquet")
    return part


def _tree(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---- item 8: invalid UTF-8 through the user's command ---------------------------------------------
def test_validate_day_cli_refuses_invalid_utf8_naming_file_column_row(tmp_path):
    cfg = _cfg(tmp_path)
    store = open_store(cfg)
    _day(store)
    part = _rewrite_hour(store, DAY0, 5, lambda t: _bad_bytes(t, "item_id", 1, bytes.fromhex("ff fe c3 28 62 61 64")))
    sets = [a for k, v in SMALL_DAY_VALIDATION.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "DAILYREC_DATA_ROOT": str(store.root)}
    res = subprocess.run([sys.executable, "-m", "tasks.ingest.validate_day", "--cur-date", DAY0, *sets],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert (f"error: partition {part}, file part-00000.parquet: column 'item_id' is not valid UTF-8 at row 1 "
            "(bytes ff fe c3 28 62 61 64)") in res.stderr
    record = store.partition("day_checks", DAY0)
    failed = store.read_json(f"{record}/failed.json")
    assert failed["passed"] is False and "'item_id' is not valid UTF-8" in failed["error"]
    assert not store.exists(f"{record}/report.json")


# ---- item 9: unexpected partitions under a day ------------------------------------------------------
def test_stray_partitions_under_a_day_are_named(tmp_path):
    cfg = _cfg(tmp_path)
    store = open_store(cfg)
    _day(store)
    day = store.partition("logs", DAY0)
    stray = random_day(DAY0, 337, len(USERS), len(ITEMS), seed=9)
    store.fs.create_dir(f"{day}/hour=24")
    pq.write_table(stray, f"{day}/hour=24/part-00000.parquet")       # 337 rows that would vanish
    store.fs.create_dir(f"{day}/hour=ab")
    store.fs.create_dir(f"{day}/hour=5")                             # not zero-padded
    store.write_text(f"{day}/notes.txt", "shipped late\n")
    store.fs.create_dir(f"{day}/.tmp-hour=07-abc")                   # a write in progress: allowed
    with pytest.raises(ContractError) as exc:
        validate_day(store, DAY0)
    msg = str(exc.value)
    assert msg.startswith(f"{day}: unexpected file 'notes.txt', folder 'hour=24', folder 'hour=5', "
                          "folder 'hour=ab'")
    assert "only folders hour=00 .. hour=23" in msg
    for name in ("hour=24", "hour=ab", "hour=5", "notes.txt"):
        store.fs.delete_file(f"{day}/{name}") if name.endswith(".txt") else store.fs.delete_dir(f"{day}/{name}")
    assert validate_day(store, DAY0)["rows"] == 240


# ---- item 11: a request_id repeated over the day's hours ---------------------------------------------
def test_duplicate_request_id_across_hours_is_named(tmp_path):
    store = open_store(_cfg(tmp_path))
    _day(store)
    t3 = read_partition(store, "logs", DAY0, 3)
    key = t3.column("request_id")[0].as_py()

    def reuse(t):
        ids = t.column("request_id").to_pylist()
        ids[2] = key
        return t.set_column(t.schema.get_field_index("request_id"), "request_id", pa.array(ids, pa.string()))

    _rewrite_hour(store, DAY0, 4, reuse)
    with pytest.raises(ContractError) as exc:
        validate_day(store, DAY0)
    assert (f"column 'request_id' has duplicate values (it must be unique): {key!r} at "
            "hour=03/part-00000.parquet row 0; hour=04/part-00000.parquet row 2") in str(exc.value)


# ---- item 10: the steps reading logs require a passed validation record -------------------------------
def test_steps_refuse_a_day_that_failed_validation(tmp_path):
    from tasks.ranking.ranking_samples import step as ranking_samples
    from tasks.retrieval.features import step as features
    from tasks.retrieval.sample import step as sample

    cfg = _cfg(tmp_path)
    store = open_store(cfg)
    _day(store, validate=True)
    features(DAY0, cfg)
    sample(DAY0, cfg)
    outputs = {ds: _tree(store.local_path(store.partition(ds, DAY0))) for ds in ("features", "samples")}

    # a re-delivered hour with a null user_id: not validated yet -> refused as changed
    def null_user(t):
        users = t.column("user_id").to_pylist()
        users[1] = None
        return t.set_column(t.schema.get_field_index("user_id"), "user_id", pa.array(users, pa.string()))

    _rewrite_hour(store, DAY0, 6, null_user)
    with pytest.raises(ContractError, match=r"file\(s\) changed since the day passed validation: "
                                            r"logs/dt=2026-11-01/hour=06/part-00000\.parquet"):
        sample(DAY0, cfg)
    # validation now fails naming the column and row, and its record replaces the passed one
    with pytest.raises(ContractError, match=r"hour=06, file part-00000\.parquet: column 'user_id' has 1 null "
                                            r"value\(s\) \(row 1\)"):
        validate_day(store, DAY0)
    record = store.partition("day_checks", DAY0)
    assert not store.exists(f"{record}/report.json") and store.exists(f"{record}/failed.json")
    for name, run in (("features", features), ("sample", sample), ("ranking_samples", ranking_samples)):
        with pytest.raises(ContractError) as exc:
            run(DAY0, cfg)
        msg = str(exc.value)
        assert msg.startswith(f"step {name} (cur_date {DAY0}) reads logs that have not passed validation: "
                              f"{DAY0} failed validation: ")
        assert "column 'user_id'" in msg and f"python -m tasks.ingest.validate_day --cur-date {DAY0}" in msg
    assert {ds: _tree(store.local_path(store.partition(ds, DAY0))) for ds in outputs} == outputs
    assert not store.exists(store.partition("ranking_samples", DAY0))
    # fixed input + a passed validation: the steps run again
    _rewrite_hour(store, DAY0, 6, lambda t: t.set_column(t.schema.get_field_index("user_id"), "user_id",
                                                         pc.fill_null(t.column("user_id"), "u0")))
    assert validate_day(store, DAY0)["rows"] == 240
    assert features(DAY0, cfg)["path"] == store.partition("features", DAY0)


def test_a_never_validated_day_in_the_window_is_refused(tmp_path):
    from tasks.retrieval.features import step as features

    cfg = _cfg(tmp_path)
    store = open_store(cfg)
    _day(store, DAY0, seed=1)
    _day(store, D2, seed=2)
    with pytest.raises(FileNotFoundError) as exc:
        features(D2, cfg)
    msg = str(exc.value)
    for d in (DAY0, D2):
        assert f"logs/dt={d} has not passed validation" in msg
        assert f"python -m tasks.ingest.validate_day --cur-date {d}" in msg
    validate_day(store, D2)
    with pytest.raises(FileNotFoundError, match=rf"logs/dt={DAY0} has not passed") as exc:
        features(D2, cfg)
    assert f"dt={D2} has not" not in str(exc.value)
    validate_day(store, DAY0)
    assert features(D2, cfg)["days"] == [DAY0, D2]


def test_passed_record_lists_the_checked_files(tmp_path):
    store = open_store(_cfg(tmp_path))
    _day(store)
    out = validate_day(store, DAY0)
    files = json.loads(open(out["report"]).read())["input_files"]
    assert f"logs/dt={DAY0}/hour=00/part-00000.parquet" in files and f"items/dt={DAY0}/_SUCCESS" in files
    assert len([f for f in files if f.endswith(".parquet")]) == 24 + 2
    # a snapshot rewritten with the same content is still a change: re-validate
    write_partition(store, "users", make_users(USERS), DAY0)
    from dailyrec.validation import require_validated

    with pytest.raises(ContractError, match=rf"users/dt={DAY0}/part-00000\.parquet"):
        require_validated(store, [DAY0], DAY0, "features")


def test_an_empty_window_day_is_read_but_never_trained_on(tmp_path):
    """A volume failure (an empty day: ML-100K has two) leaves the day usable inside a later date's
    window; a contract failure of a window day refuses the later date."""
    from dailyrec.validation import validate_days
    from tasks.retrieval.features import step as features

    cfg = _cfg(tmp_path, **{"validation.min_rows_per_hour": 0, "validation.min_rows_per_day": 1,
                            "validation.min_clicks_per_day": 1})
    store = open_store(cfg)
    write_day(store, DAY0, random_day(DAY0, 0, 1, 1, 0), make_users(USERS), make_items(ITEMS), validate=False)
    _day(store, D2, seed=2)
    verdicts = validate_days(cfg, [D2, DAY0])
    assert verdicts[D2] == "passed" and "0 rows in the day, fewer than validation.min_rows_per_day=1" in verdicts[DAY0]
    failed = store.read_json(f"{store.partition('day_checks', DAY0)}/failed.json")
    assert failed["contract_ok"] is True and failed["error_type"] == "ContractError"
    assert features(D2, cfg)["days"] == [DAY0, D2]
    with pytest.raises(ContractError, match=rf"{DAY0} failed validation: .*0 rows in the day"):
        features(DAY0, cfg)
    # the same window day breaking the contract refuses the later date
    store.write_text(f"{store.partition('logs', DAY0)}/hour=24", "stray")
    assert "unexpected file 'hour=24'" in validate_days(cfg, [DAY0])[DAY0]
    with pytest.raises(ContractError, match=rf"step features \(cur_date {D2}\) .*{DAY0} failed validation: "
                                            r".*unexpected file 'hour=24'"):
        features(D2, cfg)
