"""Import a MovieLens ratings directory (100K or 1M format) into the log contract.

    python -m dailyrec.ingest.movielens --input DIR [--data-root DIR] [--set key=value]
        [--start YYYY-MM-DD --end YYYY-MM-DD] [--no-fill-empty-hours] [--format auto|100k|1m]

The format is detected from the files in ``DIR``:

* **100K**: ``u.data`` (tab-separated ``user item rating timestamp``), ``u.user``
  (``id|age|gender|occupation|zip``), ``u.item`` (``id|title|release date|video release|url|``
  19 genre flags, latin-1), ``u.genre`` optional (genre names, else the documented list);
* **1M**: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
  (``MovieID::Title::Genres``, genres ``|``-separated, latin-1), ``users.dat``
  (``UserID::Gender::Age::Occupation::Zip-code``; optional, as in the 10M release, which this
  format also covers: users then get "unknown" attributes).

Mapping (docs/importers.md): every rating is a click (``click`` = 1), ``conversion`` = rating >= 4;
``event_time`` = the unix timestamp (UTC), which also gives ``dt``/``hour``; ``user_id`` = "u<id>",
``item_id`` = "m<id>", ``request_id`` = "u<id>:m<id>:<timestamp>"; the Avazu context columns
MovieLens does not have get constants (ints 0, strings "unknown"). Users snapshot of a date = every
user whose first rating (in the whole file) is on or before that date, with ``user_gender``,
``user_age_bucket`` (0 <18, 1 18-24, 2 25-34, 3 35-44, 4 45-49, 5 50-55, 6 56+) and
``user_segment`` = occupation name; items snapshot likewise with ``item_category`` = first genre,
``item_domain`` = release decade ("1990s"), ``item_publisher`` = "movielens",
``item_created_dt`` = date of the item's first rating.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.ingest.common import (DEFAULT_STR, InputError, PartitionWriter, check_mask, complete_logs,
                                    concat_str, date_filter, date_span, day_of, duplicate_lines, hour_bounds,
                                    in_range_mask, items_table, parse_int, print_summary, users_table,
                                    with_data_root)
from dailyrec.storage import open_store

log = logging.getLogger("dailyrec.import")

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]
#: ML-1M ``users.dat`` occupation codes (from the 1M README).
OCCUPATIONS_1M = ["other or not specified", "academic/educator", "artist", "clerical/admin",
                  "college/grad student", "customer service", "doctor/health care",
                  "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
                  "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
                  "tradesman/craftsman", "unemployed", "writer"]
#: Lower bounds of the age buckets 0..6 (the ML-1M age groups; ML-100K ages are bucketed alike).
AGE_BUCKET_LOWER = [18, 25, 35, 45, 50, 56]
CONVERSION_MIN_RATING = 4.0
PUBLISHER = "movielens"
FORMATS = {
    "100k": {"ratings": "u.data", "users": "u.user", "items": "u.item"},
    "1m": {"ratings": "ratings.dat", "users": "users.dat", "items": "movies.dat"},
}
_YEAR_IN_TITLE = re.compile(r"\((\d{4})[^)]*\)\s*$")


# ---- format detection -----------------------------------------------------------------------------

def detect_format(directory: Path, fmt: str = "auto") -> str:
    if not directory.is_dir():
        raise FileNotFoundError(f"MovieLens input {directory} is not a directory")
    present = {k for k, files in FORMATS.items() if (directory / files["ratings"]).is_file()}
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"format must be auto, 100k or 1m, got {fmt!r}")
        if fmt not in present:
            raise FileNotFoundError(f"{directory}: no {FORMATS[fmt]['ratings']} for the {fmt} format")
        return fmt
    if not present:
        raise FileNotFoundError(
            f"{directory}: not a MovieLens directory: expected u.data + u.user + u.item (100K) or "
            f"ratings.dat + movies.dat [+ users.dat] (1M)")
    if len(present) > 1:
        raise InputError(f"{directory}: holds both u.data and ratings.dat; choose with --format 100k|1m")
    return present.pop()


# ---- parsing --------------------------------------------------------------------------------------

def read_ratings(path: Path) -> pd.DataFrame:
    """``user, item, rating, ts`` (vectorised; a bad value raises naming file, line and column)."""
    raw = path.read_bytes()
    sep = "\t"
    if b"::" in raw[:4096]:
        raw = raw.replace(b"::", b"\t")
    names = ["user", "item", "rating", "timestamp"]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(raw),
            read_options=pacsv.ReadOptions(column_names=names, block_size=32 << 20),
            parse_options=pacsv.ParseOptions(delimiter=sep, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names}),
        )
    except pa.ArrowInvalid as exc:
        where = "unknown line"
        lines = raw.split(b"\n")
        for lineno, line in enumerate(lines, start=1):
            fields = line.count(b"\t") + 1
            if fields != 4 and not (line == b"" and lineno == len(lines)):
                where = f"line {lineno}: expected 4 fields, got {fields}"
                break
        raise InputError(f"{path}: {where}: cannot parse ({exc})") from None
    del raw
    file = str(path)
    at = lambda i: f"line {i + 1}"  # noqa: E731  (no header; empty lines are not skipped)
    user = parse_int(table.column("user"), file=file, column="user", line_of=at, type=pa.int64(), lo=0)
    item = parse_int(table.column("item"), file=file, column="item", line_of=at, type=pa.int64(), lo=0)
    ts = parse_int(table.column("timestamp"), file=file, column="timestamp", line_of=at, type=pa.int64(),
                   lo=0, hi=4_102_444_800)  # < 2100-01-01
    rating_s = pc.utf8_trim_whitespace(table.column("rating"))
    check_mask(pc.invert(pc.match_substring_regex(rating_s, r"^[0-9]+(\.[0-9]+)?$")), rating_s, file=file,
               column="rating", line_of=at, what="unparsable rating (expected a number 0.5-5)")
    rating = pc.cast(rating_s, pa.float64())
    check_mask(pc.or_(pc.less_equal(rating, 0.0), pc.greater(rating, 5.0)), rating_s, file=file,
               column="rating", line_of=at, what="rating out of range (expected 0 < rating <= 5)")
    return pd.DataFrame({
        "user": user.to_numpy(), "item": item.to_numpy(),
        "rating": rating.to_numpy(), "ts": ts.to_numpy(),
    })


def _lines(path: Path, sep: str) -> list[tuple[int, list[str]]]:
    text = path.read_text(encoding="latin-1")
    return [(n, line.rstrip("\r").split(sep)) for n, line in enumerate(text.split("\n"), start=1)
            if line.strip()]


def _int(value: str, path: Path, lineno: int, column: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InputError(f"{path}, line {lineno}, column '{column}': not an integer, got {value!r}") from None


def age_bucket(age: int) -> int:
    return int(np.searchsorted(AGE_BUCKET_LOWER, age, side="right"))


@dataclass
class Users:
    ids: np.ndarray          # int64
    gender: list[str]
    age_bucket: list[int | None]
    segment: list[str]


def read_users_100k(path: Path) -> Users:
    ids, gender, age, seg = [], [], [], []
    for n, parts in _lines(path, "|"):
        if len(parts) < 4:
            raise InputError(f"{path}, line {n}: expected id|age|gender|occupation|zip, got {len(parts)} field(s)")
        ids.append(_int(parts[0], path, n, "user id"))
        a = parts[1].strip()
        age.append(age_bucket(_int(a, path, n, "age")) if a else None)
        gender.append(parts[2].strip() or DEFAULT_STR)
        seg.append(parts[3].strip() or DEFAULT_STR)
    return Users(np.array(ids, dtype=np.int64), gender, age, seg)


def read_users_1m(path: Path) -> Users:
    ids, gender, age, seg = [], [], [], []
    for n, parts in _lines(path, "::"):
        if len(parts) < 4:
            raise InputError(f"{path}, line {n}: expected UserID::Gender::Age::Occupation::Zip-code, "
                             f"got {len(parts)} field(s)")
        ids.append(_int(parts[0], path, n, "UserID"))
        gender.append(parts[1].strip() or DEFAULT_STR)
        a = parts[2].strip()
        age.append(age_bucket(_int(a, path, n, "Age")) if a else None)
        occ = _int(parts[3], path, n, "Occupation")
        seg.append(OCCUPATIONS_1M[occ] if 0 <= occ < len(OCCUPATIONS_1M) else f"occupation-{occ}")
    return Users(np.array(ids, dtype=np.int64), gender, age, seg)


@dataclass
class Items:
    ids: np.ndarray          # int64
    category: list[str]
    domain: list[str]


def _decade(year: int | None) -> str:
    return f"{year // 10 * 10}s" if year else DEFAULT_STR


def _title_year(title: str) -> int | None:
    m = _YEAR_IN_TITLE.search(title.strip())
    return int(m.group(1)) if m else None


def read_items_100k(path: Path, genre_path: Path) -> Items:
    genres = GENRES_100K
    if genre_path.is_file():
        named = [(p[0], _int(p[1], genre_path, n, "genre id")) for n, p in _lines(genre_path, "|") if len(p) >= 2]
        genres = [name for name, _ in sorted(named, key=lambda x: x[1])] or GENRES_100K
    ids, cat, dom = [], [], []
    for n, parts in _lines(path, "|"):
        if len(parts) != 5 + len(genres):
            raise InputError(f"{path}, line {n}: expected {5 + len(genres)} '|'-separated fields "
                             f"(id|title|release date|video release|url|{len(genres)} genre flags), "
                             f"got {len(parts)}")
        ids.append(_int(parts[0], path, n, "movie id"))
        flags = parts[5:]
        first = next((g for g, f in zip(genres, flags) if f.strip() == "1"), DEFAULT_STR)
        cat.append(first)
        year = None
        rel = parts[2].strip()
        if rel:
            try:
                year = dt.datetime.strptime(rel, "%d-%b-%Y").year
            except ValueError:
                raise InputError(f"{path}, line {n}, column 'release date': expected DD-Mon-YYYY, "
                                 f"got {rel!r}") from None
        dom.append(_decade(year or _title_year(parts[1])))
    return Items(np.array(ids, dtype=np.int64), cat, dom)


def read_items_1m(path: Path) -> Items:
    ids, cat, dom = [], [], []
    for n, parts in _lines(path, "::"):
        if len(parts) < 3:
            raise InputError(f"{path}, line {n}: expected MovieID::Title::Genres, got {len(parts)} field(s)")
        ids.append(_int(parts[0], path, n, "MovieID"))
        title, genres = "::".join(parts[1:-1]), parts[-1].strip()
        first = genres.split("|")[0].strip() if genres else ""
        cat.append(first if first and first != "(no genres listed)" else DEFAULT_STR)
        dom.append(_decade(_title_year(title)))
    return Items(np.array(ids, dtype=np.int64), cat, dom)


# ---- dimension snapshots --------------------------------------------------------------------------

def _prefixed(prefix: str, ids: np.ndarray) -> pa.Array:
    return concat_str(prefix, pc.cast(pa.array(ids, pa.int64()), pa.string()))


def _lookup(known_ids: np.ndarray, values: list[Any], wanted: np.ndarray, default: Any) -> list[Any]:
    """``values`` aligned with ``known_ids`` -> values for ``wanted`` ids (``default`` if unknown)."""
    pos = {int(i): k for k, i in enumerate(known_ids)}
    return [values[pos[int(w)]] if int(w) in pos else default for w in wanted]


def _build_users(ids: np.ndarray, users: Users | None) -> pa.Table:
    if users is None:
        return users_table(_prefixed("u", ids))
    return users_table(
        _prefixed("u", ids),
        pa.array(_lookup(users.ids, users.gender, ids, DEFAULT_STR), pa.string()),
        pa.array(_lookup(users.ids, users.age_bucket, ids, None), pa.int32()),
        pa.array(_lookup(users.ids, users.segment, ids, DEFAULT_STR), pa.string()),
    )


def _build_items(ids: np.ndarray, first_day: np.ndarray, items: Items) -> pa.Table:
    n = len(ids)
    return items_table(
        _prefixed("m", ids),
        pa.array(_lookup(items.ids, items.category, ids, DEFAULT_STR), pa.string()),
        pa.array(_lookup(items.ids, items.domain, ids, DEFAULT_STR), pa.string()),
        pa.repeat(pa.scalar(PUBLISHER), n),
        pa.array(first_day.astype(np.int32), pa.int32()).cast(pa.date32()),
    )


# ---- import ---------------------------------------------------------------------------------------

@dataclass
class _Parsed:
    """Every input file of a MovieLens directory, parsed (nothing written yet)."""

    fmt: str
    files: dict[str, str]
    users: Users | None
    items: Items
    ratings: pd.DataFrame     # user, item, rating, ts (see read_ratings)
    unknown_users: int        # user ids of the ratings missing from the users file
    unknown_items: int
    seconds: float


def _parse(directory: Path, fmt: str) -> _Parsed:
    """Parse the ratings, users and items files of ``directory`` (``fmt``: "100k" or "1m", see detect_format)."""
    t0 = time.perf_counter()
    files = FORMATS[fmt]
    users_path, items_path = directory / files["users"], directory / files["items"]
    if not items_path.is_file():
        raise FileNotFoundError(f"{directory}: {files['items']} is missing (needed for the items snapshots)")
    if fmt == "100k":
        if not users_path.is_file():
            raise FileNotFoundError(f"{directory}: u.user is missing (needed for the users snapshots)")
        users, items = read_users_100k(users_path), read_items_100k(items_path, directory / "u.genre")
    else:
        users = read_users_1m(users_path) if users_path.is_file() else None
        if users is None:
            log.warning("%s: no users.dat; users get gender/segment 'unknown' and a null age bucket", directory)
        items = read_items_1m(items_path)
    df = read_ratings(directory / files["ratings"])
    parse_s = time.perf_counter() - t0
    log.info("%s: %s format, %d ratings parsed in %.2fs", directory, fmt, len(df), parse_s)

    missing_u = np.setdiff1d(df["user"].unique(), users.ids) if users is not None else np.empty(0)
    missing_i = np.setdiff1d(df["item"].unique(), items.ids)
    if len(missing_u):
        log.warning("%d user id(s) of the ratings are not in %s (default attributes)",
                    len(missing_u), users_path.name)
    if len(missing_i):
        log.warning("%d movie id(s) of the ratings are not in %s (default attributes)",
                    len(missing_i), items_path.name)
    return _Parsed(fmt, files, users, items, df, len(missing_u), len(missing_i), parse_s)


def _write_logs(writer: PartitionWriter, df: pd.DataFrame) -> None:
    """The hourly log partitions of ``df`` (sorted by ``ts``): one vectorised table, sliced per hour."""
    t0 = time.perf_counter()
    ts = df["ts"].to_numpy()
    user_id = _prefixed("u", df["user"].to_numpy())
    item_id = _prefixed("m", df["item"].to_numpy())
    core = pa.table({
        "event_time": pa.array(ts * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "request_id": concat_str(user_id, ":", item_id, ":", pc.cast(pa.array(ts, pa.int64()), pa.string())),
        "user_id": user_id,
        "item_id": item_id,
        "click": pa.repeat(pa.scalar(1, pa.int8()), len(df)),
        "conversion": pa.array((df["rating"].to_numpy() >= CONVERSION_MIN_RATING).astype(np.int8)),
    })
    for hour_key, a, b in hour_bounds(ts // 3600):
        writer.write_hour(complete_logs(core.slice(a, b - a)), day_of(hour_key // 24), hour_key % 24)
    log.info("wrote %d hour partition(s) over %d date(s) in %.2fs", writer.hours_with_events,
             len(writer.dates()), time.perf_counter() - t0)


def _write_snapshots(writer: PartitionWriter, dates: list[str], first_user: pd.Series, first_item: pd.Series,
                     parsed: _Parsed) -> None:
    """Users and items snapshots of ``dates``: everything known (first rating) up to each date.

    ``first_user``/``first_item``: epoch day of the first rating, indexed by sorted id.
    """
    t0 = time.perf_counter()
    all_users = _build_users(first_user.index.to_numpy(), parsed.users)
    all_items = _build_items(first_item.index.to_numpy(), first_item.to_numpy(), parsed.items)
    u_first, i_first = first_user.to_numpy(), first_item.to_numpy()
    for date in dates:
        d = (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days
        writer.write_snapshot("users", all_users.filter(pa.array(u_first <= d)), date)
        writer.write_snapshot("items", all_items.filter(pa.array(i_first <= d)), date)
    log.info("wrote %d users + %d items snapshot(s) in %.2fs", len(dates), len(dates), time.perf_counter() - t0)


def _drop_repeated_lines(ratings: pd.DataFrame, file: str) -> tuple[pd.DataFrame, int]:
    """Drop exact repeats of a rating line (counted); the same user, movie and timestamp with another
    rating is an :class:`InputError` naming both lines (``request_id`` must be unique)."""
    lines = duplicate_lines(ratings.assign(line=np.arange(1, len(ratings) + 1)), ["user", "item", "ts"], "line",
                            file=file)   # read_ratings: row i is line i + 1
    if not lines:
        return ratings, 0
    return ratings.drop(index=np.asarray(lines) - 1).reset_index(drop=True), len(lines)


def import_movielens(cfg: Config, directory: str | Path, *, start: str | None = None,
                     end: str | None = None, fill_empty_hours: bool = True, fmt: str = "auto",
                     validate: bool = True) -> dict[str, Any]:
    """Import a MovieLens 100K/1M directory; returns the summary dict.

    Every file is parsed before anything is written; a malformed one raises :class:`InputError`
    (file, line, column), a missing one ``FileNotFoundError``; a failure while writing removes the
    partitions this run had written. An exact repeat of a ratings line is dropped (counted in
    ``duplicate_rows_dropped``); the same user, movie and timestamp with another rating is an error.
    """
    t_start = time.perf_counter()
    directory = Path(directory)
    if directory.is_file():
        directory = directory.parent
    fmt = detect_format(directory, fmt)
    lo, hi = date_filter(start, end)
    parsed = _parse(directory, fmt)   # a bad file writes nothing at all
    df, dropped = _drop_repeated_lines(parsed.ratings, str(directory / parsed.files["ratings"]))

    # -- first-rating day per user/item, over the whole file (independent of --start/--end)
    df["day"] = df["ts"] // 86400
    first_user = df.groupby("user", sort=True)["day"].min()
    first_item = df.groupby("item", sort=True)["day"].min()

    keep = in_range_mask(df["day"].to_numpy(), lo, hi)
    filtered_out = 0
    if keep is not None:
        filtered_out = int((~keep).sum())
        df = df[keep]
    df = df.sort_values(["ts", "user", "item"], kind="stable", ignore_index=True)

    inputs = {"source": str(directory.resolve()), "format": f"movielens-{fmt}",
              "files": {k: v for k, v in parsed.files.items() if (directory / v).is_file()}}
    writer = PartitionWriter(cfg, open_store(cfg), "import_movielens", inputs, validate=validate)
    with writer.all_or_nothing():   # a failure removes what this run wrote
        _write_logs(writer, df)
        # with the fill, the dates without events inside the span get snapshots (and 24 empty hours) too
        snapshot_dates = date_span(writer.dates()) if fill_empty_hours else writer.dates()
        _write_snapshots(writer, snapshot_dates, first_user, first_item, parsed)
        if fill_empty_hours:
            writer.fill_empty_hours(snapshot_dates)
    summary = writer.summary(
        source=str(directory), format=f"movielens-{fmt}", rows_read=int(len(df) + filtered_out + dropped),
        rows_filtered_out=filtered_out, duplicate_rows_dropped=dropped,
        users=int(df["user"].nunique()), items=int(df["item"].nunique()),
        unknown_user_ids=parsed.unknown_users, unknown_item_ids=parsed.unknown_items,
        parse_seconds=round(parsed.seconds, 3),
        seconds=round(time.perf_counter() - t_start, 3),
    )
    log.info("movielens import done: %d rows, %d hour(s) + %d empty, %d date(s) in %.2fs", summary["rows"],
             summary["hours"], summary["empty_hours_filled"], summary["n_dates"], summary["seconds"])
    return summary


# ---- CLI ------------------------------------------------------------------------------------------

def import_movielens_cli(cfg: Config, input: str, start: str | None = None, end: str | None = None,
                         fill_empty_hours: bool = True, format: Literal["auto", "100k", "1m"] = "auto",
                         validate: bool = True, data_root: str | None = None) -> dict[str, Any]:
    """Import a MovieLens 100K or 1M directory into the log contract.

    ``input``: the directory (a local path); ``start``/``end``: inclusive YYYY-MM-DD date filter;
    ``fill_empty_hours``: snapshots and empty, valid, _SUCCESS-marked hour partitions for the
    dates without events inside the imported span; ``format``: the input format (default:
    detected from the files present); ``validate``: re-read every written partition with
    validate_partition; ``data_root`` overrides storage.data_root. Returns
    :func:`import_movielens`'s summary.
    """
    return import_movielens(with_data_root(cfg, data_root), input, start=start, end=end,
                            fill_empty_hours=fill_empty_hours, fmt=format, validate=validate)


if __name__ == "__main__":
    cli.main(import_movielens_cli, render=print_summary)
