"""Scale-out benchmark, part ``celery`` (``./dev bench scaleout --only celery [OPTIONS]``): the wall
time of one demo date of ``daily_retrieval`` through Airflow's CeleryExecutor workers, and the same
run under the LocalExecutor as the baseline, measured one after the other in the same command.

Each run gets the same fresh world: a new PostgreSQL database (Airflow's metadata; Celery's result
backend too), a demo day generated into its own data root with the same seed and sizes, a Redis
namespace of its own, and the stack of :class:`dailyrec.deployment.LocalStack` (api-server,
scheduler, dag-processor; under Celery also the two workers of ``dailyrec.deployment.WORKERS`` on
a Redis broker with a key prefix of its own). The clock runs from the REST trigger of the run to its
end as seen by polling every 2 s, so it includes what Celery adds: queueing through the broker,
the result backend round trip, a worker process per task. ``*_sum_task_s`` is the sum of the task
instances' own durations; ``*_overhead_s`` the rest of the wall time (scheduling, queueing,
process start-up: what a distributed executor costs per task). On one 2-core machine Celery buys
no speed (the DAG is a chain: one task at a time); the figure is the price of the path to a
cluster, where the training queue's worker is another machine.

The machine is shared (load averages are recorded per run): ``--repeats`` pairs of runs (2), the
second in the reverse order, and the medians are the headline figures.

Options: ``--events-per-day`` (20000), ``--users`` (300), ``--items`` (150), ``--epochs`` (1),
``--order local,celery``, ``--repeats`` (2), ``--broker redis://127.0.0.1:6379/13``, ``--online-redis
redis://127.0.0.1:6379/14``, ``--timeout-min`` (30 per run).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import load_avg  # noqa: E402
from dailyrec.deployment import REPO, TRAINING_QUEUE, LocalStack, free_port, stack_env  # noqa: E402

DAY = "2026-11-01"
DAG_ID = "daily_retrieval"
# the gate only refuses a collapse (cold start, tiny world): both runs go through the publish branch
RELAXED = {"DAILYREC__VALIDATION__MIN_ROWS_PER_DAY": "100", "DAILYREC__EVALUATION__REQUIRE_BEAT_POPULARITY": "false",
           "DAILYREC__EVALUATION__MAX_DROP_VS_PREVIOUS": "1.0", "DAILYREC__TRAINING__BATCH_SIZE": "256"}


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="./dev bench scaleout --only celery", description=__doc__.split("\n")[0])
    ap.add_argument("--events-per-day", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--order", default="local,celery", help="executors in run order, comma-separated")
    ap.add_argument("--repeats", type=int, default=2,
                    help="pairs of runs; every second pair runs in the reverse order (the machine is shared)")
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/13", help="Celery broker (Redis)")
    ap.add_argument("--online-redis", default="redis://127.0.0.1:6379/14", help="the online store (REDIS_URL)")
    ap.add_argument("--timeout-min", type=float, default=30, help="minutes per run")
    return ap.parse_args(argv)


def _database():
    """A new database on the PostgreSQL of 127.0.0.1:5432 (user postgres), dropped afterwards."""
    from dailyrec.loopback import fresh_pg_database

    return fresh_pg_database("dailyrec_bench")


def _drop_keys(url: str, pattern: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match=pattern, count=1000))
    if keys:
        r.delete(*keys)


def _seconds(ti: dict[str, Any]) -> float:
    return float(ti.get("duration") or 0.0)


def one_run(executor: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``daily_retrieval`` for :data:`DAY` through a fresh stack with ``executor`` (``celery``/``local``)."""
    tag = uuid.uuid4().hex[:8]
    prefix, namespace = f"dailyrec-bench-{tag}:", f"bench-celery-{tag}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("DAILYREC") and k != "REDIS_URL"}
    load0 = load_avg()
    with _database() as db:
        port = free_port()
        env = stack_env(work / executor / "airflow", db, port, secrets.token_hex(32), executor, args.broker, base=base)
        env.update({**RELAXED, "DAILYREC__DEMO__EVENTS_PER_DAY": str(args.events_per_day),
                    "DAILYREC__DEMO__N_USERS": str(args.users), "DAILYREC__DEMO__N_ITEMS": str(args.items),
                    "DAILYREC__TRAINING__EPOCHS": str(args.epochs), "TF_CPP_MIN_LOG_LEVEL": "2",
                    "DAILYREC_DATA_ROOT": str(work / executor / "data"), "REDIS_URL": args.online_redis,
                    "DAILYREC__REDIS__NAMESPACE": namespace,
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": prefix})
        gen = subprocess.run([sys.executable, "-m", "dailyrec.demo.generator", "--start-date", DAY, "--days", "1"],
                             env=env, cwd=str(REPO), capture_output=True, text=True, timeout=900)
        if gen.returncode != 0:
            raise RuntimeError(f"demo generator failed:\n{gen.stderr[-3000:]}")
        stack = LocalStack(env, work / executor / "stack", port)
        t0 = time.perf_counter()
        try:
            stack.prepare()
            t1 = time.perf_counter()
            stack.start()
            t2 = time.perf_counter()
            run = stack.run_dag(DAG_ID, f"bench_{executor}__{DAY}", {"cur_date": DAY}, timeout=args.timeout_min * 60)
            tis = stack.task_instances(DAG_ID, f"bench_{executor}__{DAY}")
        finally:
            left = stack.stop()
            _drop_keys(args.broker, f"{prefix}*")
            _drop_keys(args.online_redis, f"{namespace}:*")
    if run["state"] != "success":
        failed = {t: ti["state"] for t, ti in tis.items() if ti["state"] != "success"}
        raise RuntimeError(f"{executor}: run {run['state']}: {failed}; logs in {stack.workdir}")
    if left:
        raise RuntimeError(f"{executor}: processes left behind: {left}")
    task_s = {t: round(_seconds(ti), 1) for t, ti in sorted(tis.items())}
    return {"wall_s": run["wall_s"], "sum_task_s": round(sum(task_s.values()), 1),
            "overhead_s": round(run["wall_s"] - sum(task_s.values()), 1),
            "prepare_s": round(t1 - t0, 1), "stack_start_s": round(t2 - t1, 1), "tasks": len(tis),
            "queues": sorted({ti["queue"] for ti in tis.values()}),
            "training_queue_tasks": sorted(t for t, ti in tis.items() if ti["queue"] == TRAINING_QUEUE),
            "task_s": task_s, "load_avg_1m": {"start": load0, "end": load_avg()}}


def measure(argv: list[str]) -> dict[str, Any]:
    """The ``celery`` part's metrics: ``celery_dag_wall_s``, ``local_dag_wall_s`` (medians over
    ``--repeats`` pairs, every second pair in the reverse order), ``celery_vs_local_wall_ratio``
    (celery / local of the medians) and per pair, every run's wall time, the medians of the per-task
    sums, overheads and stack start-ups, and per run its details (``celery_runs``: per-task seconds,
    queues, stack start-up, load average)."""
    args = _args(argv)
    order = [e.strip() for e in args.order.split(",") if e.strip()]
    if sorted(order) != ["celery", "local"]:
        raise SystemExit(f"--order: give both executors once, e.g. local,celery (got {args.order!r})")
    runs: dict[str, list[dict[str, Any]]] = {"celery": [], "local": []}
    work = REPO / ".work" / "bench-scaleout-celery"   # the last run's data and process logs stay for a look
    for r in range(args.repeats):
        for executor in (order if r % 2 == 0 else order[::-1]):
            print(f"[scaleout celery] pair {r + 1}/{args.repeats}, {executor}: one demo date of {DAG_ID} ...",
                  flush=True)
            shutil.rmtree(work / executor, ignore_errors=True)
            runs[executor].append(one_run(executor, args, work))
            print(f"[scaleout celery] {executor}: {runs[executor][-1]['wall_s']} s", flush=True)

    def med(executor: str, key: str) -> float:
        return round(statistics.median(x[key] for x in runs[executor]), 1)

    c, lo = med("celery", "wall_s"), med("local", "wall_s")
    return {
        "celery_dag_wall_s": c, "local_dag_wall_s": lo, "celery_vs_local_wall_ratio": round(c / lo, 3),
        "celery_dag_wall_s_runs": [x["wall_s"] for x in runs["celery"]],
        "local_dag_wall_s_runs": [x["wall_s"] for x in runs["local"]],
        "celery_vs_local_wall_ratio_per_pair": [round(a["wall_s"] / b["wall_s"], 3)
                                                for a, b in zip(runs["celery"], runs["local"])],
        "celery_sum_task_s": med("celery", "sum_task_s"), "local_sum_task_s": med("local", "sum_task_s"),
        "celery_overhead_s": med("celery", "overhead_s"), "local_overhead_s": med("local", "overhead_s"),
        "celery_stack_start_s": med("celery", "stack_start_s"), "local_stack_start_s": med("local", "stack_start_s"),
        "celery_tasks": runs["celery"][0]["tasks"], "celery_repeats": args.repeats,
        "celery_run_order": ",".join(order) + (" then reversed, alternating" if args.repeats > 1 else ""),
        "celery_demo_events_per_day": args.events_per_day, "celery_demo_users": args.users,
        "celery_demo_items": args.items, "celery_demo_epochs": args.epochs,
        "celery_runs": runs,
    }
