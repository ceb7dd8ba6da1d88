"""The Airflow tasks every DAG of the project shares, defined once and reused with ``.override()``.

DAG files only wire these (``dags/*.py``); steps never import this module (it imports
``airflow.sdk``, nothing heavy):

* :func:`start`: the run's ``cur_date`` (and hour) and its config overrides from the trigger
  params, validated before any work (``ConfigError`` names the key);
* :func:`run_stage`: calls a stage of :mod:`dailyrec.stages` (``stage="retrieval.features"``),
  the same ``step`` function its CLI calls; ``.override(task_id=..., pool=..., outlets=...)``;
* :func:`wait_until_ready`: a reschedule-mode sensor on the stage's ``ready`` check;
* :func:`should_publish`: short-circuits the publish branch unless the gate passed and the
  ``publish`` param is on;
* :data:`report`: ``run_stage`` with ``trigger_rule="all_done"``: the summary runs whatever happened.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, task

START_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
"""The first interval any DAG of the project schedules (catchup is off: backfills are explicit)."""

TRAINING_POOL = "dailyrec_training"
"""One slot: training jobs must not overrun the two cores (``./dev demo`` creates the pool)."""

FEATURES_ASSET = Asset(
    name="dailyrec_features",
    uri="x-dailyrec://features",
    group="dailyrec",
    extra={"path": "<data_root>/features/dt=YYYY-MM-DD/", "done_marker": "_manifest.json",
           "producer": "daily_retrieval.build_features"},
)
"""The retrieval DAG's features output (``features/dt=YYYY-MM-DD/`` under the data root)."""


def schedule_args(cron: str, max_active_runs: int) -> dict[str, Any]:
    """The ``@dag`` arguments every DAG shares: a UTC ``CronDataIntervalTimetable`` (a run processes
    the interval that just ended), the start date, no catchup, the retry policy of ``default_args``."""
    from dailyrec.runctx import default_args

    return {"schedule": CronDataIntervalTimetable(cron, timezone="UTC"), "start_date": START_DATE,
            "catchup": False, "max_active_runs": max_active_runs, "default_args": default_args()}


def cur_date_param(description: str = "Day to process (YYYY-MM-DD). Empty: the run's day.") -> Param:
    """The trigger form's ``cur_date`` (validated as a calendar date by the form)."""
    return Param(None, type=["null", "string"], format="date", description=description)


@task
def start(param_keys: dict[str, str], hourly: bool = False, **context: Any) -> dict[str, Any]:
    """The run's ``{"cur_date", ["hour"], "overrides", "config_hash"}`` (see docs/scheduling.md)."""
    from dailyrec.runctx import start_run

    return start_run(context, param_keys, hourly=hourly)


@task
def run_stage(stage: str, run: dict[str, Any]) -> dict[str, Any]:
    """Run one stage of :mod:`dailyrec.stages` for this run; its small result dict goes to XCom."""
    from dailyrec.stages import call

    return call(stage, run)


@task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
def wait_until_ready(stage: str, run: dict[str, Any]) -> bool:
    """Pokes the stage's ``ready`` check (no worker slot held between pokes)."""
    from dailyrec.stages import poke

    ok, what = poke(stage, run)
    print(f"{stage} for {run['cur_date']}" + (f" hour {run['hour']:02d}" if "hour" in run else "") + f": {what}")
    return ok


@task.short_circuit(ignore_downstream_trigger_rules=False)
def should_publish(run: dict[str, Any], gate: dict[str, Any]) -> bool:
    """Continue to the publish branch only if the gate passed and the run's ``publish`` is on."""
    from dailyrec.runctx import config_for

    if not gate["passed"]:
        print(f"gate failed for {run['cur_date']}: {gate['reasons']}; nothing is published")
        return False
    if not config_for(run).run.publish:
        print("publish is off for this run (param publish=false)")
        return False
    return True


report = run_stage.override(task_id="report", trigger_rule="all_done", retries=0)
"""The per-date report: runs whatever happened upstream (a gate failure still gets one)."""
