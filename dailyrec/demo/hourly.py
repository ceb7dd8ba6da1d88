"""The demo's hourly passes (``./dev demo``, after the daily runs; docs/hourly.md).

The day after the demo's last daily run is generated with the others; its first ``n`` hours then
"land" one after the other: the demo writes an hour's ``_SUCCESS`` marker (its data is already
there, without the marker it does not count) and at once runs ``airflow dags test hourly_training
<D>T<HH>:00:00+00:00`` with ``passes.enabled`` in the run's ``config_overrides``: the pass is
scored by the serving model (prequential metrics), trained from the previous pass (hour 0: the
daily base of the day before) and published to Redis as a delta. The **freshness** of a pass is
measured from outside, as a user would see it: seconds from the moment its ``_SUCCESS`` was
written to the moment Redis' ``current`` names the pass's delta version (polled every 0.2 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dailyrec.config import Config

log = logging.getLogger("dailyrec.demo")
POLL_S = 0.2


def hold_markers(store: Any, day: str, hours: list[int]) -> None:
    """Remove the ``_SUCCESS`` markers of ``hours`` of ``day``: those hours have not landed yet."""
    from dailyrec.storage import SUCCESS_MARKER

    for h in hours:
        marker = f"{store.partition('logs', day, h)}/{SUCCESS_MARKER}"
        if store.exists(marker):
            store.fs.delete_file(marker)


def _land(store: Any, day: str, hour: int) -> float:
    """Write the hour's ``_SUCCESS`` (the hour lands); returns the wall-clock time it was written."""
    from dailyrec.storage import SUCCESS_MARKER

    with store.fs.open_output_stream(f"{store.partition('logs', day, hour)}/{SUCCESS_MARKER}"):
        pass
    return time.time()


class _Watch(threading.Thread):
    """Polls Redis' ``current`` version until it names ``tag`` (``<D>T<HH>``); ``seen`` is the time."""

    def __init__(self, cfg: Config, tag: str) -> None:
        super().__init__(daemon=True)
        self.cfg, self.tag, self.stop = cfg, tag, threading.Event()
        self.seen: float | None = None
        self.version: str | None = None

    def run(self) -> None:
        from dailyrec.publishing.reader import current_version

        while not self.stop.is_set():
            try:
                cur = current_version(self.cfg) or ""
            except Exception:  # noqa: BLE001 - Redis busy or restarting: poll again
                cur = ""
            if cur.startswith(self.tag):
                self.seen, self.version = time.time(), cur
                return
            time.sleep(POLL_S)


def run_passes(cfg: Config, day: str, hours: list[int], overrides: dict[str, Any],
               run_dag: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Land each hour of ``hours`` and run its pass (``run_dag("hourly_training", "<D>T<HH>:00:00+00:00",
    overrides)``); returns the runs with ``freshness_s`` (None when its delta never served).

    Raises ``RuntimeError`` when a pass fails (the chain stops there)."""
    import sys

    from dailyrec.storage import open_store

    store = open_store(cfg)
    hold_markers(store, day, hours)
    runs = []
    for h in hours:
        watch = _Watch(cfg, f"{day}T{h:02d}")
        t0 = _land(store, day, h)
        watch.start()
        log.info("hour %s %02d landed: airflow dags test hourly_training ...", day, h)
        res = run_dag("hourly_training", f"{day}T{h:02d}:00:00+00:00", overrides)
        watch.stop.set()
        watch.join(timeout=5)
        res.update(hour=h, cur_date=day, version=watch.version,
                   freshness_s=round(watch.seen - t0, 1) if watch.seen else None)
        runs.append(res)
        log.info("hourly_training %s %02d: %s in %.0fs, freshness %s s", day, h, "ok" if res["ok"] else "FAILED",
                 res["seconds"], res["freshness_s"])
        if not res["ok"]:
            print(res["tail"], file=sys.stderr)
            raise RuntimeError(f"hourly_training failed for {day} hour {h:02d}; see the log above")
    return runs


def hourly_lines(store: Any, runs: list[dict[str, Any]], k: int) -> list[str]:
    """The summary's table: per pass its prequential metrics (the serving model scored the pass
    before training on it), its warm source, its delta and the freshness."""
    def get(path: str) -> Any:
        return store.read_json(path) if store.exists(path) else {}

    def f3(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "-"

    lines = [f"hourly passes (passes.enabled; prequential = the serving model scores each pass BEFORE training on "
             f"it; pop = recall@K of the most-clicked items of the 24 hours before the pass; freshness = seconds from "
             f"the hour's _SUCCESS to its delta serving in Redis):",
             f"{'cur_date':<10}  {'hour':>4}  {'impr.':>6}  {'clicks':>6}  {f'recall@{k}':>9}  {'pop':>5}  {'AUC':>5}  "
             f"{f'new-item r@{k}':>12}  {'rank AUC':>8}  {'warm from':>13}  {'delta +/-':>9}  {'fresh s':>7}  "
             "Redis version"]
    for r in runs:
        d, h = r["cur_date"], r["hour"]
        part = f"dt={d}/hour={h:02d}"
        pq = get(store.path("prequential/two_tower", part, "metrics.json"))
        rq = get(store.path("prequential/mmoe", part, "metrics.json"))
        man = get(store.path("passes/two_tower", part, "_manifest.json"))
        delta = get(store.path("deltas/two_tower", part, "_manifest.json")).get("counts") or {}
        rauc = ((rq.get("tasks") or {}).get("click") or {}).get("auc", rq.get("click_auc"))
        warm = (man.get("warm_start") or {}).get("from") or "-"
        lines.append(f"{d:<10}  {h:>4}  {pq.get('impressions', '-'):>6}  {pq.get('clicks', '-'):>6}  "
                     f"{f3(pq.get(f'recall_at_{k}')):>9}  {f3(pq.get(f'popularity_recall_at_{k}')):>5}  "
                     f"{f3(pq.get('auc')):>5}  "
                     f"{f3(pq.get(f'new_item_recall_at_{k}')):>12}  {f3(rauc):>8}  {warm:>13}  "
                     f"{str(delta.get('upsert', '-')) + '/' + str(delta.get('delete', '-')):>9}  "
                     f"{r['freshness_s'] if r['freshness_s'] is not None else '-':>7}  "
                     f"{r.get('version') or '-'}")
    lines.append(f"per-pass metrics: {store.path('prequential')}/<model>/dt=*/hour=*/metrics.json")
    return lines
