"""Importers of public logs (dailyrec/ingest/avazu.py, dailyrec/ingest/movielens.py) -> the log contract.

The real-data tests use ../shared/data (relative to the repo root) and skip cleanly without it;
the synthetic ones (ML-1M format, unsorted Avazu, error cases) always run.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dailyrec import cli
from dailyrec.config import load_config
from dailyrec.contract import LOG_SCHEMA, read_partition, validate_partition
from dailyrec.storage import SUCCESS_MARKER, open_store
from dailyrec.ingest import avazu as avazu_mod
from dailyrec.ingest import movielens as ml_mod
from dailyrec.ingest.common import InputError, print_summary
from dailyrec.ingest.avazu import import_avazu
from dailyrec.ingest.movielens import import_movielens

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
AVAZU_SAMPLE = SHARED / "avazu-sample" / "avazu_train_head10k.csv"
ML100K = SHARED / "movielens-100k"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} (../shared/data is absent in a fresh clone)")
    return path


def _cfg(root: Path):
    return load_config(overrides={"storage.data_root": str(root)})


def _success_hours(store, date: str) -> list[int]:
    return [h for h in range(24) if store.exists(f"{store.partition('logs', date, h)}/{SUCCESS_MARKER}")]


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# ---- Avazu ----------------------------------------------------------------------------------------

def _expected_avazu(path: Path) -> list[dict[str, str]]:
    """An independent (csv module, per row) reading of the mapping rules."""
    out = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            anon = r["device_id"] == "a99f214a"
            site = r["app_id"] == "ecad2386"
            out.append({
                "request_id": r["id"], "click": int(r["click"]), "hour": r["hour"],
                "user_id": f"{r['device_id']}:{r['device_ip']}" if anon else r["device_id"],
                "item_id": f"site:{r['site_id']}" if site else f"app:{r['app_id']}",
                "item_category": r["site_category"] if site else r["app_category"],
                "item_domain": r["site_domain"] if site else r["app_domain"],
                "item_publisher": "site" if site else "app",
                "C20": int(r["C20"]), "device_type": int(r["device_type"]), "site_id": r["site_id"],
            })
    return out


@pytest.fixture(scope="module")
def avazu_import(tmp_path_factory):
    _need(AVAZU_SAMPLE)
    root = tmp_path_factory.mktemp("avazu")
    summary = import_avazu(_cfg(root), AVAZU_SAMPLE)
    return root, summary


def test_avazu_sample_rows_hour_and_partitions(avazu_import):
    root, summary = avazu_import
    expected = _expected_avazu(AVAZU_SAMPLE)
    assert len(expected) == 9_999
    assert summary["rows"] == 9_999 and summary["rows_read"] == 9_999
    assert summary["dates"] == ["2014-10-21"] and summary["hours"] == 1
    assert summary["clicks"] == sum(r["click"] for r in expected) and summary["conversions"] == 0
    assert summary["empty_hours_filled"] == 23
    store = open_store(_cfg(root))
    assert store.list_partitions("logs") == ["2014-10-21"]
    rep = validate_partition(store, "logs", "2014-10-21", 0, min_rows=9_999)
    assert rep.rows == 9_999 and rep.stats["clicks"] == summary["clicks"] and rep.stats["conversions"] == 0
    assert _success_hours(store, "2014-10-21") == list(range(24))
    for h in range(1, 24):
        assert validate_partition(store, "logs", "2014-10-21", h).rows == 0
    assert validate_partition(store, "users", "2014-10-21").rows == summary["users"]
    assert validate_partition(store, "items", "2014-10-21").rows == summary["items"]
    manifest = store.read_json(f"{store.partition('logs', '2014-10-21', 0)}/_manifest.json")
    assert manifest["step"] == "import_avazu" and manifest["rows"] == {"logs": 9_999}


def test_avazu_mapping_rules(avazu_import):
    root, summary = avazu_import
    store = open_store(_cfg(root))
    t = read_partition(store, "logs", "2014-10-21", 0)
    got = {r["request_id"]: r for r in t.to_pylist()}
    expected = _expected_avazu(AVAZU_SAMPLE)
    assert len(got) == len(expected)
    lo = dt.datetime(2014, 10, 21, tzinfo=dt.timezone.utc)
    for e in expected:
        g = got[e["request_id"]]
        assert g["user_id"] == e["user_id"] and g["item_id"] == e["item_id"]
        assert g["click"] == e["click"] and g["conversion"] == 0
        assert g["C20"] == e["C20"] and g["device_type"] == e["device_type"] and g["site_id"] == e["site_id"]
        assert lo <= g["event_time"] < lo + dt.timedelta(hours=1)
    # both kinds of users and items are present in the sample
    assert any(":" in e["user_id"] for e in expected) and any(":" not in e["user_id"] for e in expected)
    assert {e["item_publisher"] for e in expected} == {"site", "app"}
    # spread event times keep the file order
    times = t.column("event_time").to_pylist()
    assert times == sorted(times) and [r["request_id"] for r in expected] == t.column("request_id").to_pylist()

    users = read_partition(store, "users", "2014-10-21")
    assert set(users.column("user_id").to_pylist()) == {e["user_id"] for e in expected}
    assert set(users.column("user_gender").to_pylist()) == {"unknown"}
    assert set(users.column("user_segment").to_pylist()) == {"unknown"}
    assert users.column("user_age_bucket").null_count == users.num_rows

    items = {r["item_id"]: r for r in read_partition(store, "items", "2014-10-21").to_pylist()}
    combos = collections.defaultdict(collections.Counter)
    for e in expected:
        combos[e["item_id"]][(e["item_category"], e["item_domain"], e["item_publisher"])] += 1
    assert set(items) == set(combos)
    for item_id, counter in combos.items():
        r = items[item_id]
        assert r["item_publisher"] == item_id.split(":")[0]
        assert r["item_created_dt"] == dt.date(2014, 10, 21)
        best = max(counter.values())   # the most frequent combination, ties -> smallest
        assert (r["item_category"], r["item_domain"], r["item_publisher"]) == \
            min(c for c, n in counter.items() if n == best)


def test_avazu_no_fill_and_hour_start(tmp_path):
    _need(AVAZU_SAMPLE)
    s = import_avazu(_cfg(tmp_path), AVAZU_SAMPLE, fill_empty_hours=False, event_time="hour_start")
    store = open_store(_cfg(tmp_path))
    assert s["empty_hours_filled"] == 0 and _success_hours(store, "2014-10-21") == [0]
    t = read_partition(store, "logs", "2014-10-21", 0)
    assert pc.count_distinct(t.column("event_time")).as_py() == 1


def _avazu_rows(n_hours: int, per_hour: int) -> tuple[list[str], list[list[str]]]:
    """Synthetic Avazu rows: ``per_hour`` sample-like rows in each of ``n_hours`` hours from 14102100."""
    header = avazu_mod.AVAZU_COLUMNS
    rows = []
    for h in range(n_hours):
        day, hour = divmod(h, 24)
        for i in range(per_hour):
            app = "ecad2386" if i % 3 else f"app{i % 5}"
            rows.append([f"{h}{i:06d}", str(i % 2), f"1410{21 + day:02d}{hour:02d}", "1005", "0",
                         f"site{i % 7}", "sdom", "scat", app, "adom", "acat",
                         "a99f214a" if i % 2 else f"dev{i % 11}", f"ip{i % 13}", "model", "1", "0",
                         "15706", "320", "50", "1722", "0", "35", "-1", "79"])
    return header, rows


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def _dataset_rows(root: Path) -> dict[str, list[dict]]:
    out = {}
    for ds, key in [("logs", "request_id"), ("users", "user_id"), ("items", "item_id")]:
        t = pq.read_table(root / ds)
        t = t.drop_columns([c for c in ("event_time",) if c in t.column_names])
        out[ds] = sorted(({k: str(v) for k, v in r.items()} for r in t.to_pylist()),
                         key=lambda r: (r["dt"], r.get("hour", ""), r[key]))
    return out


def test_avazu_unsorted_input_is_detected_and_buffered(tmp_path):
    import random

    header, rows = _avazu_rows(n_hours=30, per_hour=40)      # 2014-10-21 00:00 .. 2014-10-22 05:00
    sorted_csv = _write_csv(tmp_path / "sorted.csv", header, rows)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    shuffled_csv = _write_csv(tmp_path / "shuffled.csv", header, shuffled)

    a = import_avazu(_cfg(tmp_path / "a"), sorted_csv, block_size=8_192)        # streaming, many blocks
    b = import_avazu(_cfg(tmp_path / "b"), shuffled_csv, block_size=1 << 20)    # detected in block 1
    c = import_avazu(_cfg(tmp_path / "c"), shuffled_csv, block_size=8_192, unsorted=True)
    for s in (a, b, c):
        assert s["rows"] == 1_200 and s["hours"] == 30 and s["dates"] == ["2014-10-21", "2014-10-22"]
        assert s["empty_hours_filled"] == 18
    ra = _dataset_rows(tmp_path / "a")
    assert ra == _dataset_rows(tmp_path / "b") == _dataset_rows(tmp_path / "c")
    store = open_store(_cfg(tmp_path / "c"))
    for date in ("2014-10-21", "2014-10-22"):
        assert _success_hours(store, date) == list(range(24))
        for h in range(24):
            validate_partition(store, "logs", date, h)


def test_avazu_late_row_after_written_hours_fails_and_removes_them(tmp_path):
    header, rows = _avazu_rows(n_hours=6, per_hour=50)
    late = _write_csv(tmp_path / "late.csv", header, [*rows, rows[0]])
    root = tmp_path / "data"
    with pytest.raises(InputError, match=r"late\.csv, line 302, column 'hour': the file is not sorted"):
        import_avazu(_cfg(root), late, block_size=4_096)
    assert _all_files(root) == []


def test_avazu_date_filter(tmp_path):
    header, rows = _avazu_rows(n_hours=30, per_hour=10)
    src = _write_csv(tmp_path / "two_days.csv", header, rows)
    s = import_avazu(_cfg(tmp_path / "d"), src, start="2014-10-22", end="2014-10-22")
    assert s["dates"] == ["2014-10-22"] and s["rows"] == 60 and s["rows_filtered_out"] == 240
    store = open_store(_cfg(tmp_path / "d"))
    assert store.list_partitions("logs") == ["2014-10-22"]
    # item_created_dt is the first day in the whole file, also before --start
    items = read_partition(store, "items", "2014-10-22")
    assert set(items.column("item_created_dt").to_pylist()) == {dt.date(2014, 10, 21)}


def test_avazu_missing_column_names_column_and_file(tmp_path):
    header, rows = _avazu_rows(n_hours=2, per_hour=5)
    drop = header.index("device_ip")
    bad = _write_csv(tmp_path / "no_ip.csv", [c for c in header if c != "device_ip"],
                     [[v for k, v in enumerate(r) if k != drop] for r in rows])
    root = tmp_path / "data"
    with pytest.raises(InputError) as exc:
        import_avazu(_cfg(root), bad)
    assert "'device_ip'" in str(exc.value) and "no_ip.csv" in str(exc.value)
    assert _all_files(root) == []
    # test.csv (no click) is refused with an explanation
    no_click = _write_csv(tmp_path / "test.csv", [c for c in header if c != "click"],
                          [[v for k, v in enumerate(r) if k != 1] for r in rows])
    with pytest.raises(InputError, match=r"test\.csv.*'click'.*no 'click' labels"):
        import_avazu(_cfg(root), no_click)


@pytest.mark.parametrize("column, value, match", [
    ("hour", "14102199", r"line 4, column 'hour': cannot parse as YYMMDDHH, got '14102199'"),
    ("click", "2", r"line 4, column 'click': click must be 0 or 1"),
    ("C14", "abc", r"line 4, column 'C14': not an integer"),
])
def test_avazu_bad_value_names_file_line_column(tmp_path, column, value, match):
    header, rows = _avazu_rows(n_hours=1, per_hour=5)
    rows[2][header.index(column)] = value
    bad = _write_csv(tmp_path / "bad.csv", header, rows)
    root = tmp_path / "data"
    with pytest.raises(InputError, match=r"bad\.csv, " + match):
        import_avazu(_cfg(root), bad)
    assert _all_files(root) == []


def test_avazu_ragged_row_names_line(tmp_path):
    header, rows = _avazu_rows(n_hours=1, per_hour=5)
    rows[3] = rows[3][:-2]
    bad = _write_csv(tmp_path / "ragged.csv", header, rows)
    with pytest.raises(InputError, match=r"ragged\.csv: line 5: expected 24 fields, got 22"):
        import_avazu(_cfg(tmp_path / "data"), bad)


def test_avazu_fill_keeps_existing_partitions(tmp_path):
    header, rows = _avazu_rows(n_hours=3, per_hour=5)
    root = tmp_path / "data"
    import_avazu(_cfg(root), _write_csv(tmp_path / "h0.csv", header, rows[:5]))          # hour 00
    s = import_avazu(_cfg(root), _write_csv(tmp_path / "h12.csv", header, rows[5:]))     # hours 01-02
    assert s["hours"] == 2 and s["empty_hours_filled"] == 0
    assert s["existing_hours_kept"] == 22         # hour 00 with events + 21 empty hours of the first run
    store = open_store(_cfg(root))
    assert validate_partition(store, "logs", "2014-10-21", 0).rows == 5


def test_avazu_gzip_input(tmp_path):
    import gzip

    header, rows = _avazu_rows(n_hours=2, per_hour=5)
    src = tmp_path / "train.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    s = import_avazu(_cfg(tmp_path / "data"), src, fill_empty_hours=False)
    assert s["rows"] == 10 and s["hours"] == 2


def _cli(fn, argv: list[str]) -> int:
    """Exit code of the importer CLI ``python -m dailyrec.ingest.<source> ARGV``, run in this process."""
    try:
        cli.main(fn, argv=argv, render=print_summary)
    except SystemExit as exc:
        return exc.code
    return 0


def test_avazu_cli(tmp_path, capsys):
    header, rows = _avazu_rows(n_hours=2, per_hour=5)
    src = _write_csv(tmp_path / "train.csv", header, rows)
    rc = _cli(avazu_mod.import_avazu_cli,
              ["--input", str(src), "--data-root", str(tmp_path / "data"), "--set", "run.publish=false"])
    out = capsys.readouterr()
    assert rc == 0 and "rows   : 10" in out.out and "2014-10-21" in out.out
    rc = _cli(avazu_mod.import_avazu_cli, ["--input", str(tmp_path / "missing.csv"), "--data-root", str(tmp_path / "data")])
    assert rc == 2 and "missing.csv" in capsys.readouterr().err


# ---- MovieLens ------------------------------------------------------------------------------------

def _ml100k_ratings() -> list[tuple[int, int, int, int]]:
    with open(ML100K / "u.data") as fh:
        return [tuple(int(x) for x in line.split("\t")) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def ml100k_import(tmp_path_factory):
    _need(ML100K / "u.data")
    root = tmp_path_factory.mktemp("ml100k")
    # the import checks every partition it writes; the test re-checks them all independently below
    summary = import_movielens(_cfg(root), ML100K, validate=False)
    return root, summary


def test_movielens_100k_counts(ml100k_import):
    root, s = ml100k_import
    ratings = _ml100k_ratings()
    assert len(ratings) == 100_000
    assert s["format"] == "movielens-100k"
    assert s["rows"] == 100_000 and s["clicks"] == 100_000
    assert s["conversions"] == sum(r[2] >= 4 for r in ratings) == 55_375
    assert s["users"] == 943 and s["items"] == 1_682
    days = sorted({dt.datetime.fromtimestamp(r[3], dt.timezone.utc).date().isoformat() for r in ratings})
    assert s["dates"] == days and s["first_date"] == "1997-09-20" and s["last_date"] == "1998-04-22"


def test_movielens_100k_partitions_validate(ml100k_import):
    root, s = ml100k_import
    store = open_store(_cfg(root))
    per_day = collections.Counter(dt.datetime.fromtimestamp(r[3], dt.timezone.utc).date().isoformat()
                                  for r in _ml100k_ratings())
    span = store.list_partitions("logs")
    assert set(s["dates"]) <= set(span) and set(span) - set(s["dates"]) == set(s["dates_without_events"])
    rows = clicks = conversions = 0
    for date in span:
        assert _success_hours(store, date) == list(range(24)), date
        day_rows = 0
        for h in range(24):
            rep = validate_partition(store, "logs", date, h)
            day_rows += rep.rows
            clicks += rep.stats["clicks"]
            conversions += rep.stats["conversions"]
        assert day_rows == per_day.get(date, 0), date
        rows += day_rows
        validate_partition(store, "users", date)
        validate_partition(store, "items", date)
    assert (rows, clicks, conversions) == (100_000, 100_000, 55_375)


def test_movielens_100k_mapping(ml100k_import):
    root, s = ml100k_import
    store = open_store(_cfg(root))
    ratings = _ml100k_ratings()
    first = min(ratings, key=lambda r: (r[3], r[0], r[1]))
    date = dt.datetime.fromtimestamp(first[3], dt.timezone.utc)
    t = read_partition(store, "logs", date.date().isoformat(), date.hour)
    row = t.filter(pc.equal(t.column("request_id"), f"u{first[0]}:m{first[1]}:{first[3]}")).to_pylist()[0]
    assert row["user_id"] == f"u{first[0]}" and row["item_id"] == f"m{first[1]}"
    assert row["event_time"] == date and row["click"] == 1 and row["conversion"] == int(first[2] >= 4)
    assert row["C1"] == 0 and row["device_model"] == "unknown"

    last = s["last_date"]
    users = {r["user_id"]: r for r in read_partition(store, "users", last).to_pylist()}
    assert len(users) == 943
    # u.user line 1: 1|24|M|technician|85711 ; line 2: 2|53|F|other|94043
    assert users["u1"] == {"user_id": "u1", "user_gender": "M", "user_age_bucket": 1, "user_segment": "technician"}
    assert users["u2"]["user_age_bucket"] == 5 and users["u2"]["user_segment"] == "other"
    items = {r["item_id"]: r for r in read_partition(store, "items", last).to_pylist()}
    assert len(items) == 1_682
    # 1|Toy Story (1995)|01-Jan-1995|...|0|0|0|1|1|1|0... -> first genre Animation
    assert items["m1"]["item_category"] == "Animation" and items["m1"]["item_domain"] == "1990s"
    assert items["m1"]["item_publisher"] == "movielens"
    assert items["m267"]["item_domain"] == "unknown" and items["m267"]["item_category"] == "unknown"
    first_m1 = min(r[3] for r in ratings if r[1] == 1)
    assert items["m1"]["item_created_dt"] == dt.datetime.fromtimestamp(first_m1, dt.timezone.utc).date()
    # snapshots are cumulative: users known up to the first date are those who rated on it
    d0 = s["first_date"]
    d0_users = {f"u{r[0]}" for r in ratings
                if dt.datetime.fromtimestamp(r[3], dt.timezone.utc).date().isoformat() == d0}
    assert set(read_partition(store, "users", d0).column("user_id").to_pylist()) == d0_users


def test_movielens_100k_date_filter(tmp_path):
    _need(ML100K / "u.data")
    s = import_movielens(_cfg(tmp_path), ML100K, start="1997-10-01", end="1997-10-03")
    per_day = collections.Counter(dt.datetime.fromtimestamp(r[3], dt.timezone.utc).date().isoformat()
                                  for r in _ml100k_ratings())
    want = sum(per_day[d] for d in ("1997-10-01", "1997-10-02", "1997-10-03"))
    assert s["dates"] == ["1997-10-01", "1997-10-02", "1997-10-03"] and s["rows"] == want
    assert s["rows_filtered_out"] == 100_000 - want
    store = open_store(_cfg(tmp_path))
    assert store.list_partitions("logs") == s["dates"]
    # users known on 1997-10-01 include those whose first rating was before --start
    users = read_partition(store, "users", "1997-10-01").column("user_id").to_pylist()
    before = {f"u{r[0]}" for r in _ml100k_ratings()
              if dt.datetime.fromtimestamp(r[3], dt.timezone.utc).date().isoformat() <= "1997-10-01"}
    assert set(users) == before


def _ml1m_dir(path: Path, users: bool = True) -> Path:
    path.mkdir()
    day1 = int(dt.datetime(2000, 5, 1, 10, 15, tzinfo=dt.timezone.utc).timestamp())
    day2 = int(dt.datetime(2000, 5, 2, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp())
    (path / "ratings.dat").write_text(
        f"1::10::5::{day1}\n1::20::3::{day1 + 60}\n2::10::4::{day2}\n3::30::1::{day2 - 7200}\n")
    if users:
        (path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::12::55117\n")
    (path / "movies.dat").write_bytes(
        "10::GoldenEye (1995)::Action|Adventure|Thriller\n"
        "20::Amélie (2001)::Comedy|Romance\n"
        "30::Metropolis (1927)::Sci-Fi\n".encode("latin-1"))
    return path


def test_movielens_1m_format(tmp_path):
    src = _ml1m_dir(tmp_path / "ml-1m")
    s = import_movielens(_cfg(tmp_path / "data"), src)
    assert s["format"] == "movielens-1m"
    assert s["rows"] == 4 and s["clicks"] == 4 and s["conversions"] == 2
    assert s["dates"] == ["2000-05-01", "2000-05-02"] and s["hours"] == 3
    assert s["empty_hours_filled"] == 48 - 3
    store = open_store(_cfg(tmp_path / "data"))
    for date in s["dates"]:
        assert _success_hours(store, date) == list(range(24))
        for h in range(24):
            validate_partition(store, "logs", date, h)
    t = read_partition(store, "logs", "2000-05-01", 10)
    assert t.column("request_id").to_pylist() == [
        f"u1:m10:{int(dt.datetime(2000, 5, 1, 10, 15, tzinfo=dt.timezone.utc).timestamp())}",
        f"u1:m20:{int(dt.datetime(2000, 5, 1, 10, 16, tzinfo=dt.timezone.utc).timestamp())}"]
    assert t.column("conversion").to_pylist() == [1, 0]
    u1 = read_partition(store, "users", "2000-05-01").to_pylist()
    assert u1 == [{"user_id": "u1", "user_gender": "F", "user_age_bucket": 0, "user_segment": "K-12 student"}]
    u2 = {r["user_id"]: r for r in read_partition(store, "users", "2000-05-02").to_pylist()}
    assert set(u2) == {"u1", "u2", "u3"}
    assert u2["u2"]["user_age_bucket"] == 6 and u2["u2"]["user_segment"] == "self-employed"
    assert u2["u3"]["user_age_bucket"] == 2 and u2["u3"]["user_segment"] == "programmer"
    items = {r["item_id"]: r for r in read_partition(store, "items", "2000-05-02").to_pylist()}
    assert items["m10"]["item_category"] == "Action" and items["m10"]["item_domain"] == "1990s"
    assert items["m20"]["item_category"] == "Comedy" and items["m20"]["item_domain"] == "2000s"
    assert items["m30"]["item_domain"] == "1920s"
    assert items["m10"]["item_created_dt"] == dt.date(2000, 5, 1)
    assert items["m30"]["item_created_dt"] == dt.date(2000, 5, 2)
    assert [r["item_id"] for r in read_partition(store, "items", "2000-05-01").to_pylist()] == ["m10", "m20"]


def test_movielens_1m_without_users_file(tmp_path):
    src = _ml1m_dir(tmp_path / "ml-10m-like", users=False)
    s = import_movielens(_cfg(tmp_path / "data"), src, fill_empty_hours=False)
    assert s["rows"] == 4 and s["empty_hours_filled"] == 0
    store = open_store(_cfg(tmp_path / "data"))
    users = read_partition(store, "users", "2000-05-02")
    assert set(users.column("user_gender").to_pylist()) == {"unknown"}
    assert users.column("user_age_bucket").null_count == 3


def test_movielens_gap_days_are_filled(tmp_path):
    src = _ml1m_dir(tmp_path / "ml")
    ts = int(dt.datetime(2000, 5, 5, 8, tzinfo=dt.timezone.utc).timestamp())
    with open(src / "ratings.dat", "a") as fh:
        fh.write(f"2::30::5::{ts}\n")
    s = import_movielens(_cfg(tmp_path / "data"), src)
    assert s["dates"] == ["2000-05-01", "2000-05-02", "2000-05-05"]
    assert s["dates_without_events"] == ["2000-05-03", "2000-05-04"]
    store = open_store(_cfg(tmp_path / "data"))
    for date in ("2000-05-03", "2000-05-04"):
        assert _success_hours(store, date) == list(range(24))
        assert validate_partition(store, "users", date).rows == 3


@pytest.mark.parametrize("content, match", [
    ("1\t10\t5\t956000000\n2\t20\tfive\t956000000\n", r"u\.data, line 2, column 'rating': unparsable rating"),
    ("1\t10\t5\t956000000\n2\t20\t9\t956000000\n", r"u\.data, line 2, column 'rating': rating out of range"),
    ("1\t10\t5\t956000000\n2\tx\t4\t956000000\n", r"u\.data, line 2, column 'item': not an integer"),
    ("1\t10\t5\t956000000\n2\t20\t4\n", r"u\.data: line 2: expected 4 fields, got 3"),
])
def test_movielens_bad_ratings_name_file_line_column(tmp_path, content, match):
    src = tmp_path / "ml-100k"
    src.mkdir()
    (src / "u.data").write_text(content)
    (src / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (src / "u.item").write_text("10|A (1995)|01-Jan-1995||url" + "|0" * 19 + "\n")
    root = tmp_path / "data"
    with pytest.raises(InputError, match=match):
        import_movielens(_cfg(root), src)
    assert _all_files(root) == []


def test_movielens_directory_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a MovieLens directory"):
        import_movielens(_cfg(tmp_path / "data"), empty)
    both = _ml1m_dir(tmp_path / "both")
    (both / "u.data").write_text("1\t10\t5\t956000000\n")
    with pytest.raises(InputError, match="both u.data and ratings.dat"):
        import_movielens(_cfg(tmp_path / "data"), both)
    no_movies = _ml1m_dir(tmp_path / "no_movies")
    (no_movies / "movies.dat").unlink()
    with pytest.raises(FileNotFoundError, match="movies.dat is missing"):
        import_movielens(_cfg(tmp_path / "data"), no_movies)
    assert _all_files(tmp_path / "data") == []


def test_movielens_cli(tmp_path, capsys):
    src = _ml1m_dir(tmp_path / "ml-1m")
    rc = _cli(ml_mod.import_movielens_cli, ["--input", str(src), "--data-root", str(tmp_path / "data"),
                                            "--no-fill-empty-hours"])
    assert rc == 0 and "rows   : 4" in capsys.readouterr().out
    rc = _cli(ml_mod.import_movielens_cli, ["--input", str(src), "--data-root", str(tmp_path / "data"),
                                            "--start", "2000-13-01"])
    assert rc == 2 and "2000-13-01" in capsys.readouterr().err


def test_empty_partition_has_the_contract_schema(tmp_path):
    src = _ml1m_dir(tmp_path / "ml-1m")
    import_movielens(_cfg(tmp_path / "data"), src)
    store = open_store(_cfg(tmp_path / "data"))
    f = next((tmp_path / "data" / "logs" / "dt=2000-05-01" / "hour=00").glob("*.parquet"))
    assert pq.read_schema(f).remove_metadata().equals(LOG_SCHEMA) and pq.read_metadata(f).num_rows == 0
    assert validate_partition(store, "logs", "2000-05-01", 0).rows == 0


# ---- repeated lines (issue 15, item 11) -------------------------------------------------------------

def _ml100k_dir(path: Path, ratings: str) -> Path:
    path.mkdir()
    (path / "u.data").write_text(ratings)
    (path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (path / "u.item").write_text("".join(f"{m}|M{m} (1995)|01-Jan-1995||url" + "|0" * 19 + "\n" for m in (10, 20)))
    return path


def test_movielens_repeated_line_is_dropped_and_counted(tmp_path, capsys):
    lines = ["1\t10\t5\t956000000", "2\t20\t3\t956000100", "1\t20\t4\t956003700", "2\t20\t3\t956000100"]
    src = _ml100k_dir(tmp_path / "ml-100k", "\n".join(lines) + "\n")
    root = tmp_path / "data"
    rc = _cli(ml_mod.import_movielens_cli, ["--input", str(src), "--data-root", str(root)])
    assert rc == 0 and "repeated lines dropped 1" in capsys.readouterr().out
    s = import_movielens(_cfg(root), src)
    assert s["duplicate_rows_dropped"] == 1 and s["rows"] == 3 and s["rows_read"] == 4
    store = open_store(_cfg(root))
    logs = pq.read_table(root / "logs")
    ids = logs.column("request_id").to_pylist()
    assert sorted(ids) == sorted(["u1:m10:956000000", "u2:m20:956000100", "u1:m20:956003700"])
    for h in range(24):   # the contract's unique key holds in every hour
        validate_partition(store, "logs", "2000-04-17", h)


def test_movielens_conflicting_lines_name_both(tmp_path):
    src = _ml100k_dir(tmp_path / "ml-100k", "1\t10\t5\t956000000\n2\t20\t3\t956000100\n1\t10\t2\t956000000\n")
    root = tmp_path / "data"
    with pytest.raises(InputError, match=r"u\.data: lines 1, 3 have the same user/item/ts 1/10/956000000 but "
                                         r"differ in column\(s\) 'rating'"):
        import_movielens(_cfg(root), src)
    assert _all_files(root) == []


def test_avazu_repeated_line_is_dropped_and_a_conflict_named(tmp_path):
    header, rows = _avazu_rows(n_hours=2, per_hour=5)
    rep = _write_csv(tmp_path / "rep.csv", header, [*rows[:3], rows[1], *rows[3:], rows[7]])
    s = import_avazu(_cfg(tmp_path / "a"), rep)
    assert s["duplicate_rows_dropped"] == 2 and s["rows"] == 10 and s["rows_read"] == 12
    store = open_store(_cfg(tmp_path / "a"))
    for h in (0, 1):
        t = validate_partition(store, "logs", "2014-10-21", h)
        assert t.rows == 5
    clash = [*rows[:3], list(rows[1]), *rows[3:]]
    clash[3][header.index("click")] = "0" if rows[1][header.index("click")] == "1" else "1"
    bad = _write_csv(tmp_path / "clash.csv", header, clash)
    with pytest.raises(InputError, match=rf"clash\.csv: lines 3, 5 have the same request_id {rows[1][0]} but "
                                         r"differ in column\(s\) 'click'"):
        import_avazu(_cfg(tmp_path / "b"), bad)
    assert _all_files(tmp_path / "b") == []
