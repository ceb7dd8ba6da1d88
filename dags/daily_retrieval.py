"""
### daily_retrieval

Turns one day of impression logs (`cur_date`) into a trained, evaluated two-tower retrieval
model, and publishes it when it passes its gate:

| task | stage (also a CLI: `python -m tasks.<stage> --cur-date D`) | what it does |
|---|---|---|
| `start` | | resolves `cur_date` and the run's config overrides (params); refuses a bad config |
| `wait_for_logs` | `ingest.validate_day` (its `ready`) | waits (reschedule mode) for the 24 hourly `_SUCCESS` markers |
| `wait_for_earlier_runs` | | waits (reschedule mode) while a run of this DAG for an earlier date is unfinished: runs go in date order |
| `wait_for_last_pass` | | with `passes.enabled`: waits (reschedule mode) while an `hourly_training` run of the day is unfinished (training consolidates the day's last pass); passes off: goes on at once |
| `validate_day` | `ingest.validate_day` | contract and volumes; an empty or truncated day stops here |
| `build_features` | `retrieval.features` | counters, catalog, vocabularies (SQL in `sql/`, DuckDB) |
| `select_samples` | `retrieval.sample` | positives, random/hard negatives, holdout hours |
| `train_two_tower` | `retrieval.train_two_tower` | warm start (passes on: from the day's last pass, `passes.consolidate_from`), LR decay, checkpoints (queue `training`, pool `dailyrec_training`) |
| `evaluate_gate` | `retrieval.evaluate_two_tower` | new vs yesterday's vs popularity; the gate |
| `should_publish` | | continues only if the gate passed and the `publish` param is on |
| `export_embeddings` | `retrieval.export_embeddings` | a vector for every catalog item |
| `build_index` | `retrieval.build_index` | FAISS index, recall vs exact search on real user vectors |
| `publish_redis` | `retrieval.publish_redis` | versioned load, atomic switch, retention, registry entry |
| `serving_check` | `serving.serving_check` | reads Redis back and recommends for a known and a new user |
| `report` | `retrieval.report` | the run's summary and verdict (its return value); the teardown of `start`: runs whatever happened upstream, and a failed task still fails the run |

**Schedule**: `CronDataIntervalTimetable("0 0 * * *", "UTC")`: the run for day D starts when D
is over and processes D. No `start_date`: a run for any date (2001-01-31 too) processes it.
Backfill: `airflow backfill create --dag-id daily_retrieval --from-date 2026-11-01 --to-date
2026-11-03`. Manual trigger: give `cur_date` in the form (no date: the day that just ended).
Runs chain through warm start: whatever created them, `wait_for_earlier_runs` makes them work in
date order (a run waits while an earlier date's run is unfinished; a failed run does not block).
With `passes.enabled` (hourly passes, `hourly_training`) the run is the day's consolidation: it
waits for the day's passes and trains from the last one; the next day's first pass waits for it
(docs/scheduling.md, "Hourly passes"). See docs/scheduling.md and docs/pipeline.md.
"""

from __future__ import annotations

from airflow.sdk import Param, TaskGroup, dag

from dailyrec.dag_tasks import (CHAINED_MAX_ACTIVE_RUNS, FEATURES_ASSET, TRAINING_POOL, TRAINING_QUEUE, cur_date_param,
                                run_stage, schedule_args, should_publish, start, wait_for_earlier_runs,
                                wait_for_last_pass, wait_until_ready, with_report)
from dailyrec.runctx import RETRIEVAL_PARAM_KEYS


@dag(
    dag_id="daily_retrieval",
    **schedule_args("0 0 * * *", max_active_runs=CHAINED_MAX_ACTIVE_RUNS),
    tags=["dailyrec", "retrieval", "daily"],
    doc_md=__doc__,
    params={
        "cur_date": cur_date_param(),
        "loss": Param(None, type=["null", "string"], enum=[None, "bce", "softmax"],
                      values_display={"null": "(config: training.loss)", "bce": "bce: binary cross-entropy",
                                      "softmax": "softmax: in-batch sampled softmax"},
                      description="Two-tower loss (empty: config training.loss)"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                        description="Training epochs (empty: config training.epochs)"),
        "negatives_per_positive": Param(None, type=["null", "integer"], minimum=0, maximum=100,
                                        description="Negatives sampled per positive (empty: config "
                                                    "sampling.negatives_per_positive)"),
        "hard_negative_sources": Param(None, type=["null", "array"],
                                       items={"type": "string", "enum": ["exposed", "same_category", "model"]},
                                       description="Where hard negatives come from: exposed (shown, not clicked), "
                                                   "same_category, model (yesterday's model's near misses); "
                                                   "empty: config sampling.hard_negative_sources"),
        "publish": Param(True, type="boolean", description="Publish to Redis when the gate passes"),
        "index_factory": Param(None, type=["null", "string"],
                               description="FAISS factory string, e.g. 'IVF256,Flat' (empty: by catalog size)"),
        "allow_backwards": Param(False, type="boolean",
                                 description="Let an old date's publish move Redis 'current' back in time"),
        "config_overrides": Param({}, type="object",
                                  description='Any config key, dotted: {"sampling.popularity_alpha": 0.5}'),
    },
)
def daily_retrieval():
    # `start` is upstream of the first task only; the others read the run from its XCom (no fan of
    # edges), and the groups (prefix_group_id=False: task ids stay as in the table) read as the pipeline
    run = start(RETRIEVAL_PARAM_KEYS)
    with TaskGroup("inputs", prefix_group_id=False, tooltip="wait for the day's logs, run order, the day's passes, "
                                                           "validation"):
        waited = wait_until_ready.override(task_id="wait_for_logs")("ingest.validate_day")
        in_order = wait_for_earlier_runs()
        passes = wait_for_last_pass()
        checked = run_stage.override(task_id="validate_day")("ingest.validate_day")
        waited >> in_order >> passes >> checked
    with TaskGroup("data", prefix_group_id=False, tooltip="features and training samples"):
        feats = run_stage.override(task_id="build_features", outlets=[FEATURES_ASSET])("retrieval.features")
        samples = run_stage.override(task_id="select_samples")("retrieval.sample")
        feats >> samples
    with TaskGroup("train", prefix_group_id=False, tooltip="two-tower training and the evaluation gate"):
        model = run_stage.override(task_id="train_two_tower", pool=TRAINING_POOL, queue=TRAINING_QUEUE, retries=0)(
            "retrieval.train_two_tower")
        gate = run_stage.override(task_id="evaluate_gate", retries=0)("retrieval.evaluate_two_tower")
        model >> gate
    with TaskGroup("publish", prefix_group_id=False, tooltip="only if the gate passed: embeddings, index, Redis"):
        go = should_publish(gate)
        emb = run_stage.override(task_id="export_embeddings")("retrieval.export_embeddings")
        index = run_stage.override(task_id="build_index")("retrieval.build_index")
        pub = run_stage.override(task_id="publish_redis", retries=3)("retrieval.publish_redis")
        served = run_stage.override(task_id="serving_check")("serving.serving_check")
        go >> emb >> index >> pub >> served
    checked >> feats
    samples >> model
    with_report("retrieval.report", run, waited, served)

daily_retrieval()
