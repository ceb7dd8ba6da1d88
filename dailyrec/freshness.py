"""Item freshness features: item age and recent clicks, leak-free, one definition for every caller.

A freshness feature is an item-side ``numeric`` feature of ``features.spec`` whose *name* says
what it is (no column of the logs or the catalog holds it; it is computed per row):

* ``item_age_days``: days from the start (00:00 UTC) of the item's ``item_created_dt`` to the row's
  ``as_of`` time, clipped at 0 (float; missing when ``item_created_dt`` is null);
* ``item_clicks_<H>h`` (``H`` in 1..168): the item's clicks in the ``H`` hours before ``as_of``,
  ``[as_of - H h, as_of)`` (float; *missing* when that interval starts before the first instant the
  click log given covers, so a count is never silently truncated).

``as_of`` is what the feature may know (docs/features-and-sampling.md, "Item freshness features"),
by ``features.freshness_as_of`` (:func:`row_as_of`): ``day_start`` (default) floors a row's time to
00:00 UTC of its day, the staleness the exported vectors of a day have; ``event_time`` keeps it:

* a training row of ``train.parquet`` (a positive and its negatives): the positive click's
  ``event_time`` or its day's start (strictly earlier clicks only; ``dailyrec.sampling.output``);
* the evaluation gate (the holdout of ``cur_date``): the start of the holdout span (or its day's
  start), for every catalog item (``tasks.retrieval.evaluate_two_tower``);
* serving day ``D+1`` (``tasks.retrieval.export_embeddings``, the ``model`` hard negatives of the
  sample step): the end of ``D`` (00:00 UTC of ``D+1``), every catalog item.

Every caller computes the values with :func:`item_freshness` over the clicks
:func:`read_clicks` reads from the logs (``click = 1`` rows of the complete hourly partitions), so training and
serving share one definition. The normalisation statistics are computed by the features step
over the training window's impressions with the same function (:func:`freshness_stats`).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

AGE = "item_age_days"
CLICKS = re.compile(r"item_clicks_(\d+)h")
MAX_HOURS = 168
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
EPOCH = date(1970, 1, 1)


def is_freshness(name: str) -> bool:
    """Whether feature ``name`` is a freshness feature (:data:`AGE` or ``item_clicks_<H>h``)."""
    return name == AGE or CLICKS.fullmatch(name) is not None


def window_hours(name: str) -> int | None:
    """``H`` of ``item_clicks_<H>h``, None for :data:`AGE`. ``ValueError`` for another name or an
    ``H`` outside 1..:data:`MAX_HOURS`."""
    if name == AGE:
        return None
    m = CLICKS.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is not a freshness feature (expected {AGE!r} or 'item_clicks_<H>h')")
    h = int(m.group(1))
    if not 1 <= h <= MAX_HOURS:
        raise ValueError(f"freshness feature {name!r}: H={h} outside 1..{MAX_HOURS}")
    return h


def freshness_names(cfg: Any) -> list[str]:
    """The freshness features of ``cfg.features.spec`` (item side), in spec order."""
    return [f.name for f in cfg.features.spec if f.side == "item" and is_freshness(f.name)]


def lookback_days(names: list[str]) -> int:
    """Whole days of clicks before a day's start that the longest ``item_clicks_<H>h`` needs (0 without one)."""
    hours = [window_hours(n) or 0 for n in names]
    return -(-max(hours, default=0) // 24)


def day_start_us(day: str) -> int:
    """00:00 UTC of ``day`` (``YYYY-MM-DD``) in microseconds since the epoch (int)."""
    return (date.fromisoformat(day) - EPOCH).days * US_PER_DAY


def iso_to_us(ts: str) -> int:
    """An ISO-8601 UTC timestamp (``...Z`` or ``+00:00``) in microseconds since the epoch."""
    t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int((t - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))


class ClickLog:
    """Clicks as sorted ``(item code, time)`` keys: ``item`` (int64[C] codes into an item list),
    ``time`` (int64[C] microseconds since the epoch, UTC), ``since`` (int: the first instant the
    log is complete from; a lookback starting earlier gives a missing count)."""

    def __init__(self, item: np.ndarray, time: np.ndarray, since: int) -> None:
        item = np.asarray(item, np.int64)
        time = np.asarray(time, np.int64)
        if item.shape != time.shape:
            raise ValueError(f"click log: item {item.shape} and time {time.shape} differ in length")
        self.since = int(since)
        self.base = int(min(self.since, int(time.min()) if len(time) else self.since))
        span = (int(time.max()) if len(time) else self.base) - self.base + 2
        self.width = span
        if len(item) and int(item.max()) >= (2 ** 62) // span:
            raise ValueError(f"click log: {int(item.max()) + 1} items over {span} us do not fit int64 keys")
        self.keys = np.sort(item * span + (time - self.base)) if len(item) else np.zeros(0, np.int64)

    def count(self, item: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """``int64[n]``: clicks of ``item[i]`` with ``lo[i] <= time < hi[i]`` (microseconds)."""
        w = self.width
        rel_lo = np.clip(np.asarray(lo, np.int64) - self.base, 0, w)
        rel_hi = np.clip(np.asarray(hi, np.int64) - self.base, 0, w)
        base = np.asarray(item, np.int64) * w
        return (np.searchsorted(self.keys, base + rel_hi, side="left")
                - np.searchsorted(self.keys, base + rel_lo, side="left")).astype(np.int64)


def item_freshness(names: list[str], clicks: ClickLog, item: np.ndarray, as_of: np.ndarray | int,
                   created_day: np.ndarray | None) -> dict[str, np.ndarray]:
    """The freshness features ``names`` of query rows: ``{name: float32[n]}``, NaN = missing.

    Args:
        names: freshness feature names (:func:`is_freshness`).
        clicks: the click log (its item codes index the same item list as ``item``).
        item: int64[n] item codes of the rows.
        as_of: int64[n] (or one int) microseconds since the epoch: what the row may know (clicks
            strictly before it; module docstring).
        created_day: int32[n] ``item_created_dt`` as days since 1970-01-01 with NaN/negative for
            null (float64 array accepted), needed for :data:`AGE` only.
    Raises:
        ValueError: a name that is not a freshness feature, or :data:`AGE` without ``created_day``.
    """
    item = np.asarray(item, np.int64)
    at = np.broadcast_to(np.asarray(as_of, np.int64), item.shape)
    out: dict[str, np.ndarray] = {}
    for name in names:
        h = window_hours(name)
        if h is None:
            if created_day is None:
                raise ValueError(f"freshness feature {AGE!r} needs the items' item_created_dt")
            cd = np.asarray(created_day, np.float64)
            age = np.maximum(0.0, (at - cd * US_PER_DAY) / US_PER_DAY)
            out[name] = np.where(np.isnan(cd), np.nan, age).astype(np.float32)
            continue
        lo = at - h * US_PER_HOUR
        n = clicks.count(item, lo, at).astype(np.float32)
        out[name] = np.where(lo < clicks.since, np.float32(np.nan), n)
    return out


def created_days(table: pa.Table) -> np.ndarray:
    """``float64[n]``: ``item_created_dt`` of ``table`` as days since 1970-01-01, NaN for null
    (``KeyError`` naming the column when it is absent)."""
    if "item_created_dt" not in table.column_names:
        raise KeyError(f"freshness feature {AGE!r}: column 'item_created_dt' missing (columns: {table.column_names})")
    col = table.column("item_created_dt").cast(pa.date32()).cast(pa.int32())
    return np.asarray(col.to_numpy(zero_copy_only=False), np.float64) if col.null_count == 0 else \
        np.asarray(pc.fill_null(col.cast(pa.float64()), float("nan")).to_numpy(), np.float64)


def _read_log(store: Any, days: list[str], catalog_ids: pa.Array, clicks_only: bool
              ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(item codes int64[n], event_time int64[n] us, first day with logs or None)`` of the events
    (``clicks_only``: ``click = 1`` rows) of the complete hourly log partitions of ``days`` on items
    of ``catalog_ids`` (codes = positions in it). Reads ``item_id``, ``event_time``, ``click``."""
    from dailyrec.events import log_inputs

    files: list[str] = []
    first = None
    for day in days:
        try:
            f, _ = log_inputs(store, [day], day)
        except FileNotFoundError:
            continue
        first = first or day
        files += f
    if not files:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), first
    parts = []
    for path in files:
        with store.fs.open_input_file(path) as fh:
            t = pq.read_table(fh, columns=["item_id", "event_time", "click"])
        parts.append((t.filter(pc.equal(t["click"], 1)) if clicks_only else t).select(["item_id", "event_time"]))
    t = pa.concat_tables(parts)
    code = pc.index_in(t["item_id"], value_set=catalog_ids)
    keep = pc.is_valid(code)
    code = np.asarray(code.filter(keep).to_numpy(zero_copy_only=False), np.int64)
    time = np.asarray(t["event_time"].filter(keep).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
                      .to_numpy(zero_copy_only=False), np.int64)
    return code, time, first


def read_clicks(store: Any, days: list[str], catalog_ids: pa.Array) -> ClickLog:
    """The clicks (``click = 1``) of the complete hourly log partitions of ``days`` (ascending ISO
    dates; days without logs are skipped) on items of ``catalog_ids`` (codes = positions in it),
    as a :class:`ClickLog` complete from the start of the first day that has logs (the start of
    ``days[-1]`` when none has). Reads ``item_id``, ``event_time``, ``click`` with pyarrow."""
    code, time, first = _read_log(store, days, catalog_ids, clicks_only=True)
    return ClickLog(code, time, day_start_us(first or days[-1]))


def freshness_stats(store: Any, cfg: Any, cur_date: str, catalog: pa.Table) -> dict[str, dict[str, Any]]:
    """Normalisation statistics of the spec's freshness features, as ``numeric_stats.json`` holds
    them (``{feature: {"mean", "std", "rows", "count", "missing", "transform"}}``, rounded as
    :func:`dailyrec.features.numeric_stats` rounds): one value per impression of the training window
    (the ``sampling.window_days`` days up to ``cur_date`` without its last ``training.holdout_hours``
    hours, as ``sql/numeric_stats.sql``), each as of its ``event_time`` or its day's start
    (:func:`row_as_of`, ``features.freshness_as_of``; :func:`item_freshness` over the clicks from
    ``lookback_days`` before the window). ``{}`` without such features."""
    from dailyrec.features import STAT_DIGITS
    from models.features import numeric_transform

    names = freshness_names(cfg)
    if not names:
        return {}
    ids = catalog.column("item_id").combine_chunks()
    win = days_before(cur_date, cfg.sampling.window_days - 1)
    clicks = read_clicks(store, days_before(win[0], lookback_days(names))[:-1] + win, ids)
    item, time, _ = _read_log(store, win, ids, clicks_only=False)
    keep = time < day_start_us(cur_date) + (24 - cfg.training.holdout_hours) * US_PER_HOUR
    item, time = item[keep], time[keep]
    vals = item_freshness(names, clicks, item, row_as_of(time, cfg.features.freshness_as_of),
                          created_days(catalog)[item] if AGE in names else None)
    spec = {f.name: f for f in cfg.features.spec}
    out = {}
    for n in names:
        x = vals[n].astype(np.float64)
        x = numeric_transform(x[~np.isnan(x)], spec[n].transform)
        mean = float(f"{x.mean():.{STAT_DIGITS}g}") if len(x) else 0.0
        std = float(f"{x.std():.{STAT_DIGITS}g}") if len(x) else 1.0
        out[n] = {"mean": mean, "std": std if std > 0 else 1.0, "rows": int(len(item)), "count": int(len(x)),
                  "missing": int(len(item) - len(x)), "transform": spec[n].transform}
    return out


def days_before(day: str, n: int) -> list[str]:
    """The ``n`` days before ``day`` then ``day`` itself, ascending ISO dates."""
    d = date.fromisoformat(day)
    return [(d - timedelta(days=k)).isoformat() for k in range(n, -1, -1)]


def row_as_of(times: np.ndarray, mode: str) -> np.ndarray:
    """``int64[n]``: the ``as_of`` of rows at ``times`` (int64 us) under ``features.freshness_as_of``:
    the times themselves (``event_time``) or 00:00 UTC of their day (``day_start``)."""
    t = np.asarray(times, np.int64)
    if mode == "event_time":
        return t
    if mode == "day_start":
        return (t // US_PER_DAY) * US_PER_DAY
    raise ValueError(f"features.freshness_as_of: unknown mode {mode!r} (expected 'day_start' or 'event_time')")


def catalog_freshness(store: Any, cfg: Any, cur_date: str, catalog: pa.Table, as_of: int,
                      days: list[str] | None = None) -> pa.Table:
    """``catalog`` with the spec's freshness features appended (float32 columns) for every item as
    of ``as_of`` (microseconds since the epoch): the evaluation gate (holdout start), the export
    and the model negatives (end of ``cur_date``). Clicks: :func:`read_clicks` over the
    ``lookback_days`` before ``as_of``'s day through ``cur_date``. Unchanged without such features."""
    names = freshness_names(cfg)
    if not names:
        return catalog
    ids = catalog.column("item_id").combine_chunks()
    as_of_day = (EPOCH + timedelta(days=int(as_of // US_PER_DAY))).isoformat()
    first = days_before(as_of_day, lookback_days(names))[0]
    days = days or [d for d in days_before(cur_date, (date.fromisoformat(cur_date) - date.fromisoformat(first)).days)]
    clicks = read_clicks(store, days, ids)
    vals = item_freshness(names, clicks, np.arange(len(ids), dtype=np.int64), as_of,
                          created_days(catalog) if AGE in names else None)
    for n in names:
        arr = pa.array(vals[n], mask=np.isnan(vals[n]))
        catalog = catalog.set_column(catalog.column_names.index(n), n, arr) if n in catalog.column_names \
            else catalog.append_column(n, arr)
    return catalog


def next_day(day: str) -> str:
    """The ISO date after ``day``."""
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


class RowFreshness:
    """What the sample step needs to add the freshness features to ``train.parquet``'s rows:
    ``names``, the :class:`ClickLog` over the window and its lookback (codes = catalog rows), and
    ``created`` (float64[I] ``item_created_dt`` days, or None without :data:`AGE`)."""

    def __init__(self, names: list[str], clicks: ClickLog, created: np.ndarray | None,
                 mode: str = "day_start") -> None:
        self.names, self.clicks, self.created, self.mode = names, clicks, created, mode

    def columns(self, item: np.ndarray, as_of: np.ndarray) -> dict[str, pa.Array]:
        """``{name: float32 Arrow array}`` (null = missing) of rows with catalog codes ``item`` as of
        the positive click's ``event_time`` (int64 us, for its negatives too) under ``mode`` (:func:`row_as_of`)."""
        vals = item_freshness(self.names, self.clicks, item, row_as_of(as_of, self.mode),
                              self.created[item] if self.created is not None else None)
        return {n: pa.array(v, mask=np.isnan(v)) for n, v in vals.items()}


def row_freshness(store: Any, cfg: Any, cur_date: str, catalog: pa.Table) -> RowFreshness | None:
    """:class:`RowFreshness` for the sample step of ``cur_date`` (clicks of the
    ``sampling.window_days`` days up to ``cur_date`` and :func:`lookback_days` before them), None
    without freshness features."""
    names = freshness_names(cfg)
    if not names:
        return None
    win = days_before(cur_date, cfg.sampling.window_days - 1)
    clicks = read_clicks(store, days_before(win[0], lookback_days(names))[:-1] + win,
                         catalog.column("item_id").combine_chunks())
    return RowFreshness(names, clicks, created_days(catalog) if AGE in names else None, cfg.features.freshness_as_of)
