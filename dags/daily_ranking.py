"""
### daily_ranking

Turns one day of impression logs (`cur_date`) into a trained, evaluated MMoE ranking model with
two tasks, click and conversion, and publishes it when it passes its gate:

| task | step (also a CLI: `python -m tasks.<module> --cur-date D`) |
|---|---|
| `start` | resolves `cur_date` and the run's config overrides (params) |
| `wait_for_features` | waits (reschedule mode) for `features/dt=D/_manifest.json`, written by `daily_retrieval`'s `build_features` |
| `build_ranking_samples` | `tasks.ranking_samples`: impressions with both labels, non-clicks down-sampled, holdout hours (SQL in `sql/ranking_*.sql`) |
| `train_mmoe` | `tasks.train_mmoe`: MMoE + shared-bottom baseline, warm start, LR decay, checkpoints (pool `dailyrec_training`) |
| `evaluate_gate` | `tasks.evaluate_mmoe`: AUC / log loss / calibration per task, gate diagnostics; new vs baseline vs yesterday's; the gate |
| `should_publish` | continues only if the gate passed and the `publish` param is on |
| `publish_model` | `tasks.score.publish_mmoe`: `registry/mmoe/dt=D/published.json` points at the SavedModel |
| `score_check` | `tasks.score.score_check`: the published model loads and scores holdout rows |
| `report` | `tasks.report.ranking_report`: the run's summary (runs whatever happened upstream) |

**Schedule**: `CronDataIntervalTimetable("0 0 * * *", "UTC")`, like `daily_retrieval`: the run
for day D starts when D is over and processes D. It is a DAG of its own so that it can be
backfilled (`airflow backfill create --dag-id daily_ranking --from-date 2026-11-01 --to-date
2026-11-03`) and triggered on its own, and so that its failures never hold back retrieval. It is
time-scheduled rather than asset-scheduled because Airflow cannot backfill an asset-triggered
DAG; the dependency on the retrieval DAG's features is the sensor, and the features are declared
as the asset `dailyrec_features` (an inlet of the sensor) for lineage.
Runs chain through warm start, so `max_active_runs=1`. See docs/ranking.md.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from dailyrec.assets import FEATURES_ASSET, TRAINING_POOL
from dailyrec.runctx import default_args


@dag(
    dag_id="daily_ranking",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["dailyrec", "ranking", "daily"],
    doc_md=__doc__,
    params={
        "cur_date": Param(None, type=["null", "string"], format="date",
                          description="Day to process (YYYY-MM-DD). Empty: the run's day."),
        "num_experts": Param(None, type=["null", "integer"], minimum=1, maximum=64,
                             description="MMoE shared experts (empty: config ranking.num_experts)"),
        "loss_weight_click": Param(None, type=["null", "number"], minimum=0,
                                   description="Loss weight of the click task (empty: config)"),
        "loss_weight_conversion": Param(None, type=["null", "number"], minimum=0,
                                        description="Loss weight of the conversion task (empty: config)"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=100),
        "publish": Param(True, type="boolean", description="Publish the model when the gate passes"),
        "config_overrides": Param({}, type="object",
                                  description='Any config key, dotted: {"ranking.negative_downsample_rate": 0.25}'),
    },
)
def daily_ranking():
    @task
    def start(**context) -> dict:
        from dailyrec.runctx import RANKING_PARAM_KEYS, start_run

        return start_run(context, RANKING_PARAM_KEYS)

    @task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule", inlets=[FEATURES_ASSET])
    def wait_for_features(run: dict) -> bool:
        from dailyrec.runctx import config_for
        from tasks.ranking_samples import features_ready

        ready = features_ready(run["cur_date"], config_for(run))
        print(f"features of {run['cur_date']}: {'ready' if ready else 'not built yet (daily_retrieval)'}")
        return ready

    @task
    def build_ranking_samples(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.ranking_samples import build_ranking_samples as step

        return step(run["cur_date"], config_for(run))

    @task(pool=TRAINING_POOL, retries=0)
    def train_mmoe(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.train_mmoe import train_mmoe as step

        return step(run["cur_date"], config_for(run))

    @task(retries=0)
    def evaluate_gate(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.evaluate_mmoe import evaluate_mmoe as step

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
    def publish_model(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.score import publish_mmoe as step

        return step(run["cur_date"], config_for(run))

    @task
    def score_check(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.score import score_check as step

        return step(run["cur_date"], config_for(run))

    @task(trigger_rule="all_done", retries=0)
    def report(run: dict) -> dict:
        from dailyrec.runctx import config_for
        from tasks.report import ranking_report as step

        return step(run["cur_date"], config_for(run))

    run = start()
    waited = wait_for_features(run)
    samples = build_ranking_samples(run)
    model = train_mmoe(run)
    gate = evaluate_gate(run)
    go = should_publish(run, gate)
    published = publish_model(run)
    checked = score_check(run)
    waited >> samples >> model >> gate
    go >> published >> checked >> report(run)


daily_ranking()
