"""
### daily_retrieval

Turns one day of impression logs (`cur_date`) into a trained, evaluated two-tower retrieval
model, and publishes it when it passes its gate:

| task | step (also a CLI: `python -m tasks.<module> --cur-date D`) |
|---|---|
| `start` | resolves `cur_date` and the run's config overrides (params) |
| `wait_for_logs` | waits (reschedule mode) for the 24 hourly `_SUCCESS` markers |
| `validate_day` | `tasks.validate_day`: contract and volumes; an empty or truncated day stops here |
| `build_features` | `tasks.features`: counters, catalog, vocabularies (SQL in `sql/`, DuckDB) |
| `select_samples` | `tasks.sample`: positives, random/hard negatives, holdout hours |
| `train_two_tower` | `tasks.train_two_tower`: warm start, LR decay, checkpoints (pool `dailyrec_training`) |
| `evaluate_gate` | `tasks.evaluate_two_tower`: new vs yesterday's vs popularity; the gate |
| `should_publish` | continues only if the gate passed and the `publish` param is on |
| `export_embeddings` | `tasks.export_embeddings`: a vector for every catalog item |
| `build_index` | `tasks.build_index`: FAISS index, recall vs exact search |
| `publish_redis` | `tasks.publish_retrieval`: versioned load, atomic switch, retention |
| `serving_check` | `tasks.recall`: reads Redis back and recommends for a known user |
| `report` | `tasks.report`: the run's summary (runs whatever happened upstream) |

**Schedule**: `CronDataIntervalTimetable("0 0 * * *", "UTC")`: the run for day D starts when D
is over and processes D. Backfill: `airflow backfill create --dag-id daily_retrieval
--from-date 2026-11-01 --to-date 2026-11-03`. Manual trigger: give `cur_date` in the form.
Runs chain through warm start, so `max_active_runs=1`: one at a time, in date order.
See docs/scheduling.md and docs/pipeline.md.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from dailyrec.assets import FEATURES_ASSET, TRAINING_POOL
from dailyrec.runctx import default_args


@dag(
    dag_id="daily_retrieval",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["dailyrec", "retrieval", "daily"],
    doc_md=__doc__,
    params={
        "cur_date": Param(None, type=["null", "string"], format="date",
                          description="Day to process (YYYY-MM-DD). Empty: the run's day."),
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
    @task
    def start(**context) -> dict:
        from dailyrec.runctx import RETRIEVAL_PARAM_KEYS, start_run

        return start_run(context, RETRIEVAL_PARAM_KEYS)

    @task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
    def wait_for_logs(run: dict) -> bool:
        from dailyrec.runctx import config_for
        from tasks.validate_day import missing_hours

        missing = missing_hours(run["cur_date"], config_for(run))
        print(f"{run['cur_date']}: {24 - len(missing)}/24 hours complete; missing {missing}")
        return not missing

    @task
    def validate_day(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.validate_day import validate_day as step

        return step(run["cur_date"], config_for(run))

    @task(outlets=[FEATURES_ASSET])
    def build_features(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.features import build_features as step

        return step(run["cur_date"], config_for(run))

    @task
    def select_samples(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.user_vectors import select_samples_with_model as step

        return step(run["cur_date"], config_for(run))

    @task(pool=TRAINING_POOL, retries=0)
    def train_two_tower(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.train_two_tower import train_two_tower as step

        return step(run["cur_date"], config_for(run))

    @task(retries=0)
    def evaluate_gate(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.evaluate_two_tower import evaluate_two_tower as step

        return step(run["cur_date"], config_for(run))

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def should_publish(run: dict, gate: dict) -> bool:
        from dailyrec.runctx import config_for

        if not gate["passed"]:
            print(f"gate failed for {run['cur_date']}: {gate['reasons']}; nothing is published")
            return False
        if not config_for(run).run.publish:
            print("publish is off for this run (param publish=false)")
            return False
        return True

    @task
    def export_embeddings(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.export_embeddings import export_embeddings as step

        return step(run["cur_date"], config_for(run))

    @task
    def build_index(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.publish_retrieval import build_index_with_user_queries as step

        return step(run["cur_date"], config_for(run))

    @task(retries=3)
    def publish_redis(run: dict, **context) -> dict:
        from dailyrec.runctx import config_for
        from tasks.publish_retrieval import publish_two_tower as step

        return step(run["cur_date"], config_for(run), allow_backwards=bool(context["params"].get("allow_backwards")))

    @task
    def serving_check(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.recall import serving_check as step

        return step(run["cur_date"], config_for(run))

    @task(trigger_rule="all_done", retries=0)
    def report(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.report import retrieval_report as step

        return step(run["cur_date"], config_for(run))

    run = start()
    waited = wait_for_logs(run)
    checked = validate_day(run)
    feats = build_features(run)
    samples = select_samples(run)
    model = train_two_tower(run)
    gate = evaluate_gate(run)
    go = should_publish(run, gate)
    emb = export_embeddings(run)
    index = build_index(run)
    pub = publish_redis(run)
    served = serving_check(run)
    waited >> checked >> feats >> samples >> model >> gate
    go >> emb >> index >> pub >> served >> report(run)


daily_retrieval()
