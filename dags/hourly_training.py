"""
### hourly_training

Hourly incremental training (docs/hourly.md): for the hour that just ended, when it ends a
**pass** (`training.split_per_pass` consecutive hours, default 1), the serving models score the
pass before training on it (prequential metrics), then train on that pass only, warm starting
from the previous pass (the first pass of a day: the daily base of the day before), and publish
the touched items as a **delta** version in Redis:

| task | stage (also a CLI: `python -m tasks.<stage> --cur-date D --hour H`) | what it does |
|---|---|---|
| `start` | | resolves the hour (`cur_date` + `hour`, or the run's hour) and the run's config overrides |
| `should_train_pass` | | goes on only if `passes.enabled` and the hour ends a pass; else logs why there is nothing to do |
| `wait_for_pass_logs` | `hourly.pass_samples` (its `ready`) | waits (reschedule mode) for the `_SUCCESS` of every hour of the pass |
| `wait_for_previous_pass` | | waits (reschedule mode), in hour order, for the previous pass's run (hour 0: the daily runs of the day before); fails with `MissingPassError` naming the missing hour when it can never come |
| `pass_samples` | `hourly.pass_samples` | admission (show/click scores) and the pass's training samples |
| `prequential` | `hourly.prequential` | the serving two-tower scores the pass BEFORE training: recall@K, AUC, new-item recall |
| `train_pass` | `hourly.train_pass` | incremental training on the pass from the previous pass (queue `training`, pool `dailyrec_training`) |
| `export_delta` | `hourly.export_delta` | the vectors of the items the pass touched (upserts, evictions) |
| `publish_delta` | `hourly.publish_delta` | a delta version in Redis, one atomic switch (rollback works across deltas) |
| `ranking_prequential` | `hourly.ranking_prequential` | the serving MMoE scores the pass's impressions: AUC per task |
| `train_mmoe_pass` | `hourly.train_mmoe_pass` | incremental MMoE training on the pass, publish pointer (queue `training`, pool `dailyrec_training`) |
| `report` | `hourly.report` | the pass's summary (prequential metrics, delta, freshness) and verdict; the teardown of `start` |

**Schedule**: `CronDataIntervalTimetable("0 * * * *", "UTC")`, like `hourly_log_check`: the run
for hour H of day D starts when the hour is over and processes it. Manual trigger: `cur_date` and
`hour` in the form (neither: the hour that just ended), any config key in `config_overrides`
(`{"passes.enabled": true}`). Backfill by hour range:
`airflow backfill create --dag-id hourly_training --from-date 2026-11-02T00:00:00 --to-date 2026-11-02T05:00:00`.
Passes go in hour order whatever created them (`wait_for_previous_pass`, docs/scheduling.md,
"Hourly passes"); a missing hour stops the chain with a named error, it never skips data. The
daily run of D waits for D's passes and consolidates the last one (`wait_for_last_pass` in
`daily_retrieval`); the first pass of D+1 waits for that base. With `passes.enabled` off (the
default) every run short-circuits: nothing to do.
"""

from __future__ import annotations

from airflow.sdk import Param, TaskGroup, dag

from dailyrec.dag_tasks import (CHAINED_MAX_ACTIVE_RUNS, TRAINING_POOL, TRAINING_QUEUE, cur_date_param, run_stage,
                                schedule_args, should_train_pass, start, wait_for_previous_pass, wait_until_ready,
                                with_report)


@dag(
    dag_id="hourly_training",
    **schedule_args("0 * * * *", max_active_runs=CHAINED_MAX_ACTIVE_RUNS),
    tags=["dailyrec", "retrieval", "ranking", "hourly"],
    doc_md=__doc__,
    params={
        "cur_date": cur_date_param("Day of the hour to train (YYYY-MM-DD); empty = the run's hour"),
        "hour": Param(None, type=["null", "integer"], minimum=0, maximum=23,
                      description="Hour 0-23 (the pass ending at this hour trains); give it together with cur_date"),
        "config_overrides": Param({}, type="object",
                                  description='Any config key, dotted: {"passes.enabled": true, "passes.epochs": 2}'),
    },
)
def hourly_training():
    run = start({}, hourly=True, ordered=True, overridable=True)
    with TaskGroup("inputs", prefix_group_id=False, tooltip="a pass end? the pass's logs, the previous pass"):
        go = should_train_pass()
        waited = wait_until_ready.override(task_id="wait_for_pass_logs", poke_interval=60, timeout=6 * 3600)(
            "hourly.pass_samples")
        previous = wait_for_previous_pass()
        go >> waited >> previous
    with TaskGroup("retrieval", prefix_group_id=False, tooltip="samples, predict-then-train, delta publish"):
        samples = run_stage.override(task_id="pass_samples")("hourly.pass_samples")
        scored = run_stage.override(task_id="prequential")("hourly.prequential")
        model = run_stage.override(task_id="train_pass", pool=TRAINING_POOL, queue=TRAINING_QUEUE, retries=0)(
            "hourly.train_pass")
        delta = run_stage.override(task_id="export_delta")("hourly.export_delta")
        pub = run_stage.override(task_id="publish_delta", retries=3)("hourly.publish_delta")
        samples >> scored >> model >> delta >> pub
    with TaskGroup("ranking", prefix_group_id=False, tooltip="MMoE: predict-then-train on the pass"):
        ranked = run_stage.override(task_id="ranking_prequential")("hourly.ranking_prequential")
        mmoe = run_stage.override(task_id="train_mmoe_pass", pool=TRAINING_POOL, queue=TRAINING_QUEUE, retries=0)(
            "hourly.train_mmoe_pass")
        ranked >> mmoe
    previous >> samples
    pub >> ranked
    with_report("hourly.report", run, go, mmoe)


hourly_training()
