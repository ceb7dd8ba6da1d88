"""
### daily_retrieval

Turns one day of impression logs (`cur_date`) into a trained, evaluated two-tower retrieval
model, and publishes it when it passes its gate:

| task | stage (also a CLI: `python -m tasks.<stage> --cur-date D`) | what it does |
|---|---|---|
| `start` | | resolves `cur_date` and the run's config overrides (params); refuses a bad config |
| `wait_for_logs` | `ingest.validate_day` (its `ready`) | waits (reschedule mode) for the 24 hourly `_SUCCESS` markers |
| `validate_day` | `ingest.validate_day` | contract and volumes; an empty or truncated day stops here |
| `build_features` | `retrieval.features` | counters, catalog, vocabularies (SQL in `sql/`, DuckDB) |
| `select_samples` | `retrieval.sample` | positives, random/hard negatives, holdout hours |
| `train_two_tower` | `retrieval.train_two_tower` | warm start, LR decay, checkpoints (pool `dailyrec_training`) |
| `evaluate_gate` | `retrieval.evaluate_two_tower` | new vs yesterday's vs popularity; the gate |
| `should_publish` | | continues only if the gate passed and the `publish` param is on |
| `export_embeddings` | `retrieval.export_embeddings` | a vector for every catalog item |
| `build_index` | `retrieval.build_index` | FAISS index, recall vs exact search on real user vectors |
| `publish_redis` | `retrieval.publish_redis` | versioned load, atomic switch, retention, registry entry |
| `serving_check` | `serving.serving_check` | reads Redis back and recommends for a known and a new user |
| `report` | `retrieval.report` | the run's summary (runs whatever happened upstream) |

**Schedule**: `CronDataIntervalTimetable("0 0 * * *", "UTC")`: the run for day D starts when D
is over and processes D. Backfill: `airflow backfill create --dag-id daily_retrieval
--from-date 2026-11-01 --to-date 2026-11-03`. Manual trigger: give `cur_date` in the form.
Runs chain through warm start, so `max_active_runs=1`: one at a time, in date order.
See docs/scheduling.md and docs/pipeline.md.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from dailyrec.dag_tasks import (FEATURES_ASSET, TRAINING_POOL, cur_date_param, report, run_stage, schedule_args,
                                should_publish, start, wait_until_ready)
from dailyrec.runctx import RETRIEVAL_PARAM_KEYS


@dag(
    dag_id="daily_retrieval",
    **schedule_args("0 0 * * *", max_active_runs=1),
    tags=["dailyrec", "retrieval", "daily"],
    doc_md=__doc__,
    params={
        "cur_date": cur_date_param(),
        "loss": Param(None, type=["null", "string"], enum=[None, "bce", "softmax"],
                      description="Two-tower loss (empty: config)"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=100),
        "negatives_per_positive": Param(None, type=["null", "integer"], minimum=0, maximum=100),
        "hard_negative_sources": Param(None, type=["null", "array"],
                                       items={"type": "string", "enum": ["exposed", "same_category", "model"]}),
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
    run = start(RETRIEVAL_PARAM_KEYS)
    waited = wait_until_ready.override(task_id="wait_for_logs")("ingest.validate_day", run)
    checked = run_stage.override(task_id="validate_day")("ingest.validate_day", run)
    feats = run_stage.override(task_id="build_features", outlets=[FEATURES_ASSET])("retrieval.features", run)
    samples = run_stage.override(task_id="select_samples")("retrieval.sample", run)
    model = run_stage.override(task_id="train_two_tower", pool=TRAINING_POOL, retries=0)(
        "retrieval.train_two_tower", run)
    gate = run_stage.override(task_id="evaluate_gate", retries=0)("retrieval.evaluate_two_tower", run)
    go = should_publish(run, gate)
    emb = run_stage.override(task_id="export_embeddings")("retrieval.export_embeddings", run)
    index = run_stage.override(task_id="build_index")("retrieval.build_index", run)
    pub = run_stage.override(task_id="publish_redis", retries=3)("retrieval.publish_redis", run)
    served = run_stage.override(task_id="serving_check")("serving.serving_check", run)
    waited >> checked >> feats >> samples >> model >> gate
    go >> emb >> index >> pub >> served >> report("retrieval.report", run)


daily_retrieval()
