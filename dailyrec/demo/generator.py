"""Synthetic, realistic demo logs in the log contract (see docs/demo-data.md).

For each date it simulates one day of ad/recommendation impressions and writes

* ``logs/dt=YYYY-MM-DD/hour=HH`` (24 hourly partitions, ``_SUCCESS`` + ``_manifest.json``),
* ``users/dt=YYYY-MM-DD`` (the user universe, the same every day),
* ``items/dt=YYYY-MM-DD`` (the catalog of that day: the items active that day).

The model behind it lives in these modules:

* :mod:`dailyrec.demo.world`: the **universe** (users with demographics, a sparse Dirichlet
  preference over categories around their segment's profile, activity, click and purchase
  propensities, device, IPs, app-vs-web habit; publishers specialised in a category; sites and
  apps) drawn once from ``demo.seed``, and the **catalog** of a day (items with a category, a
  publisher and domain, Zipf-like popularity, click and conversion quality, a lifetime);
* :mod:`dailyrec.demo.dynamics`: the **intra-day dynamics** (items born during the day with a
  popularity burst, per-segment interests drifting by hour);
* :mod:`dailyrec.demo.impressions`: a day's **impressions**, their context columns, **clicks**
  (calibrated to ``CTR_TARGET``) and **conversions** (after a click, calibrated to ``CVR_TARGET``);
* :mod:`dailyrec.demo.sampling`: vectorised Walker alias tables (per-user category tables,
  per-category item tables) and the random streams;
* :mod:`dailyrec.demo.strings`: string columns as numpy gathers of fixed-width ids wrapped as
  Arrow ``string`` arrays; the knobs are in :mod:`dailyrec.demo.params`.

Everything is vectorised (no per-event Python). A day is deterministic given the config and the
date, whatever the number of threads.

CLI::

    python -m dailyrec.demo.generator --start-date 2026-11-01 --days 3 [--events-per-day N] [--set k=v ...] [--json]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dailyrec import cli
from dailyrec.config import Config
from dailyrec.contract import write_partition
from dailyrec.dates import date_range, parse_date
from dailyrec.demo.impressions import simulate_day
from dailyrec.demo.params import EPOCH_ORDINAL, US_PER_HOUR, knobs
from dailyrec.demo.world import catalog, retired_on
from dailyrec.storage import Timer, make_manifest, open_store

log = logging.getLogger("dailyrec.generate_demo")

STEP = "generate_demo"


# ---- writing -------------------------------------------------------------------------------------
def _hour_slices(logs: pa.Table, cur_date: str) -> list[tuple[int, int]]:
    d = parse_date(cur_date)
    start = (d.toordinal() - EPOCH_ORDINAL) * 24 * US_PER_HOUR
    ts = logs.column("event_time").combine_chunks().cast(pa.int64()).to_numpy()
    bounds = np.searchsorted(ts, start + np.arange(25, dtype=np.int64) * US_PER_HOUR)
    return [(int(bounds[h]), int(bounds[h + 1] - bounds[h])) for h in range(24)]


def _inputs(cfg: Config) -> dict[str, Any]:
    return {"generator": "dailyrec.demo.generator", "seed": cfg.demo.seed,
            "anchor_date": parse_date(cfg.demo.start_date).isoformat(), "params": knobs()}


def _count(col: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(col).as_py() or 0)


def write_day(cfg: Config, cur_date: str, tables: dict[str, pa.Table], timer: Timer | None = None) -> list[str]:
    """Write one simulated day: 24 hourly log partitions, the users and the items snapshots.

    Each partition is replaced atomically (``write_partition``) with its manifest; returns the paths.
    """
    timer = timer or Timer()
    store = open_store(cfg)
    inputs = _inputs(cfg)
    logs = tables["logs"]
    paths = []
    for h, (off, n) in enumerate(_hour_slices(logs, cur_date)):
        part = logs.slice(off, n)
        manifest = make_manifest(STEP, cfg, cur_date, inputs, {"logs": n}, dict(timer.timings), hour=h,
                                 clicks=_count(part.column("click")), conversions=_count(part.column("conversion")))
        paths.append(write_partition(store, "logs", part, cur_date, h, manifest=manifest))
    for ds in ("users", "items"):
        t = tables[ds]
        manifest = make_manifest(STEP, cfg, cur_date, inputs, {ds: t.num_rows}, dict(timer.timings))
        paths.append(write_partition(store, ds, t, cur_date, manifest=manifest))
    return paths


def _day_summary(cfg: Config, d: str, tables: dict[str, pa.Table], timer: Timer) -> dict[str, Any]:
    logs = tables["logs"]
    clicks, convs = _count(logs.column("click")), _count(logs.column("conversion"))
    cat_ = catalog(cfg, d)
    is_new = cat_.items["created"] == cat_.ordinal
    new, born = int(is_new.sum()), int((is_new & (cat_.items["birth"] > 0)).sum())
    retired = retired_on(cfg, d)
    log.info("%s: %d events, %d clicks (ctr %.4f), %d conversions (cvr %.4f), %d users, "
             "catalog %d items (+%d new, %d of them born during the day, -%d retired) in %.2fs "
             "(simulate %.2fs, write %.2fs)",
             d, logs.num_rows, clicks, clicks / logs.num_rows, convs, convs / max(clicks, 1),
             tables["users"].num_rows, len(cat_.ids), new, born, retired, timer.total(),
             timer.timings["simulate"], timer.timings["write"])
    return {"date": d, "events": logs.num_rows, "clicks": clicks, "conversions": convs,
            "ctr": round(clicks / logs.num_rows, 4), "catalog": len(cat_.ids), "new_items": new,
            "born_during_day": born, "retired_items": retired, "seconds": timer.total()}


def generate(cfg: Config, start_date: str, days: int) -> dict[str, Any]:
    """Simulate and write ``days`` days from ``start_date``; every partition atomically.

    Re-running a date replaces exactly that date's partitions (24 hours of logs, users, items).
    Returns a summary: dates, events, clicks, conversions, ctr, cvr, users, items, per_day, paths,
    seconds.
    """
    t0 = time.perf_counter()
    store = open_store(cfg)
    dates = date_range(start_date, days)
    per_day: list[dict[str, Any]] = []
    seen_items = np.zeros(0, dtype=np.int64)
    for d in dates:
        timer = Timer()
        with timer.step("simulate"):
            tables = simulate_day(cfg, d, timer)
        with timer.step("write"):
            write_day(cfg, d, tables, timer)
        per_day.append(_day_summary(cfg, d, tables, timer))
        seen_items = np.union1d(seen_items, catalog(cfg, d).items["index"])
        del tables
    events = sum(p["events"] for p in per_day)
    clicks = sum(p["clicks"] for p in per_day)
    convs = sum(p["conversions"] for p in per_day)
    return {
        "dates": dates,
        "events": events,
        "clicks": clicks,
        "conversions": convs,
        "ctr": round(clicks / events, 4) if events else 0.0,
        "cvr": round(convs / clicks, 4) if clicks else 0.0,
        "users": cfg.demo.n_users,
        "items": len(seen_items),
        "per_day": per_day,
        "paths": {ds: store.path(ds) for ds in ("logs", "users", "items")},
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---- CLI -----------------------------------------------------------------------------------------
def generate_cli(cfg: Config, start_date: str | None = None, days: int | None = None,
                 events_per_day: int | None = None) -> dict[str, Any]:
    """Generate synthetic demo logs, users and items snapshots in the log contract.

    ``start_date`` defaults to ``demo.start_date``, ``days`` to ``demo.days``; ``events_per_day``
    sets ``demo.events_per_day``. Returns :func:`generate`'s summary; raises ``ValueError`` for a
    bad date or ``days < 1``.
    """
    if events_per_day is not None:
        cfg = cfg.with_overrides({"demo.events_per_day": events_per_day})
    start = parse_date(start_date or cfg.demo.start_date).isoformat()
    days = days if days is not None else cfg.demo.days
    if days < 1:
        raise ValueError("--days must be >= 1")
    return generate(cfg, start, days)


def print_summary(s: dict[str, Any]) -> None:
    """The one-line human summary of :func:`generate_cli` (``--json`` prints the whole dict)."""
    print(f"generated {s['events']:,} events over {len(s['dates'])} day(s) {s['dates'][0]}..{s['dates'][-1]}: "
          f"{s['clicks']:,} clicks (ctr {s['ctr']:.4f}), {s['conversions']:,} conversions "
          f"(cvr {s['cvr']:.4f}), {s['users']:,} users, {s['items']:,} items; "
          f"{s['seconds']:.1f}s -> {s['paths']['logs'].rsplit('/', 1)[0]}")


if __name__ == "__main__":
    cli.main(generate_cli, render=print_summary)
