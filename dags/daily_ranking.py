"""
### daily_ranking

Turns one day of impression logs (`cur_date`) into a trained, evaluated MMoE ranking model with
two tasks, click and conversion, and publishes it when it passes its gate:

| task | stage (also a CLI: `python -m tasks.<stage> --cur-date D`) | what it does |
|---|---|---|
| `start` | | resolves `cur_date` and the run's config overrides (params); refuses a bad config |
| `wait_for_features` | `ranking.ranking_samples` (its `ready`) | waits (reschedule mode) for `features/dt=D/_manifest.json`, written by `daily_retrieval`'s `build_features` |
| `wait_for_earlier_runs` | | waits (reschedule mode) while a run of this DAG for an earlier date is unfinished: runs go in date order |
| `build_ranking_samples` | `ranking.ranking_samples` | impressions with both labels, non-clicks down-sampled, holdout hours (SQL in `sql/ranking_*.sql`) |
| `train_mmoe` | `ranking.train_mmoe` | MMoE + shared-bottom baseline, warm start, LR decay, checkpoints (queue `training`, pool `dailyrec_training`) |
| `evaluate_gate` | `ranking.evaluate_mmoe` | AUC / log loss / calibration per task, gate diagnostics; new vs baseline vs yesterday's; the gate |
| `should_publish` | | continues only if the gate passed and the `publish` param is on |
| `publish_model` | `ranking.publish_model` | `registry/mmoe/dt=D/published.json` points at the SavedModel |
| `score_check` | `serving.score_check` | the published model loads and scores holdout rows |
| `report` | `ranking.report` | the run's summary and verdict (its return value); the teardown of `start`: runs whatever happened upstream, and a failed task still fails the run |

**Schedule**: `CronDataIntervalTimetable("0 0 * * *", "UTC")`, like `daily_retrieval`: the run
for day D starts when D is over and processes D. It is a DAG of its own so that it can be
backfilled (`airflow backfill create --dag-id daily_ranking --from-date 2026-11-01 --to-date
2026-11-03`) and triggered on its own, and so that its failures never hold back retrieval. It is
time-scheduled rather than asset-scheduled because Airflow cannot backfill an asset-triggered
DAG; the dependency on the retrieval DAG's features is the sensor, and the features are declared
as the asset `dailyrec_features` (an inlet of the sensor) for lineage.
Runs chain through warm start: `wait_for_earlier_runs` makes them work in date order whatever
created them (docs/scheduling.md, "Run order"). No `start_date`: any date can be processed.
See docs/ranking.md.
"""

from __future__ import annotations

from airflow.sdk import Param, TaskGroup, dag

from dailyrec.dag_tasks import (CHAINED_MAX_ACTIVE_RUNS, FEATURES_ASSET, TRAINING_POOL, TRAINING_QUEUE, cur_date_param,
                                run_stage, schedule_args, should_publish, start, wait_for_earlier_runs,
                                wait_until_ready, with_report)
from dailyrec.runctx import RANKING_PARAM_KEYS


@dag(
    dag_id="daily_ranking",
    **schedule_args("0 0 * * *", max_active_runs=CHAINED_MAX_ACTIVE_RUNS),
    tags=["dailyrec", "ranking", "daily"],
    doc_md=__doc__,
    params={
        "cur_date": cur_date_param(),
        "num_experts": Param(None, type=["null", "integer"], minimum=1, maximum=64,
                             description="MMoE shared experts (empty: config ranking.num_experts)"),
        "loss_weight_click": Param(None, type=["null", "number"], minimum=0,
                                   description="Loss weight of the click task (empty: config)"),
        "loss_weight_conversion": Param(None, type=["null", "number"], minimum=0,
                                        description="Loss weight of the conversion task (empty: config)"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                        description="Training epochs (empty: config ranking.epochs)"),
        "publish": Param(True, type="boolean", description="Publish the model when the gate passes"),
        "config_overrides": Param({}, type="object",
                                  description='Any config key, dotted: {"ranking.negative_downsample_rate": 0.25}'),
    },
)
def daily_ranking():
    # `start` is upstream of the first task only; the others read the run from its XCom (no fan of
    # edges), and the groups (prefix_group_id=False: task ids stay as in the table) read as the pipeline
    run = start(RANKING_PARAM_KEYS)
    with TaskGroup("inputs", prefix_group_id=False, tooltip="wait for the day's features, run order"):
        waited = wait_until_ready.override(task_id="wait_for_features", inlets=[FEATURES_ASSET])(
            "ranking.ranking_samples")
        in_order = wait_for_earlier_runs()
        waited >> in_order
    with TaskGroup("data", prefix_group_id=False, tooltip="ranking samples"):
        samples = run_stage.override(task_id="build_ranking_samples")("ranking.ranking_samples")
    with TaskGroup("train", prefix_group_id=False, tooltip="MMoE (+ baseline) training and the evaluation gate"):
        model = run_stage.override(task_id="train_mmoe", pool=TRAINING_POOL, queue=TRAINING_QUEUE, retries=0)(
            "ranking.train_mmoe")
        gate = run_stage.override(task_id="evaluate_gate", retries=0)("ranking.evaluate_mmoe")
        model >> gate
    with TaskGroup("publish", prefix_group_id=False, tooltip="only if the gate passed: publish, scoring check"):
        go = should_publish(gate)
        published = run_stage.override(task_id="publish_model")("ranking.publish_model")
        checked = run_stage.override(task_id="score_check")("serving.score_check")
        go >> published >> checked
    in_order >> samples >> model
    with_report("ranking.report", run, waited, checked)

daily_ranking()
