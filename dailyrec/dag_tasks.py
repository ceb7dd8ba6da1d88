"""The Airflow tasks every DAG of the project shares, defined once and reused with ``.override()``.

DAG files only wire these (``dags/*.py``); steps never import this module (it imports
``airflow.sdk``, nothing heavy):

* :func:`start`: the run's ``cur_date`` (and hour) and its config overrides from the trigger
  params, validated before any work (``ConfigError`` names the key);
* :func:`run_stage`: calls a stage of :mod:`dailyrec.stages` (``stage="retrieval.features"``),
  the same ``step`` function its CLI calls; ``.override(task_id=..., pool=..., outlets=...)``.
  The working tasks take the run (``cur_date``, overrides) from ``start``'s XCom rather than as an
  argument, so the graph has no fan of edges from ``start``: the DAG wires ``start`` upstream of
  its first task only, and the run flows down the chain;
* :func:`wait_until_ready`: a reschedule-mode sensor on the stage's ``ready`` check;
* :func:`wait_for_earlier_runs`: a reschedule-mode sensor that holds a run of a chained DAG while
  an earlier date's run of the same DAG is unfinished (:mod:`dailyrec.runorder`);
* :func:`should_publish`: short-circuits the publish branch unless the gate passed and the
  ``publish`` param is on;
* the hourly pass chain (:mod:`dailyrec.passchain`): :func:`should_train_pass` short-circuits an
  hourly run unless passes are on and its hour ends a pass; :func:`wait_for_previous_pass` holds a
  pass in hour order until the pass (or daily base) it starts from is there, and fails with
  ``MissingPassError`` when it can never come; :func:`wait_for_last_pass` holds the daily run while
  the day's passes are unfinished;
* :func:`report`: the run's summary, verdict and note, wired as the *teardown* of ``start``
  (:func:`with_report`): it runs whatever happened upstream, and a failed task still fails the run.
  Its return value carries ``note`` (``cur_date``, verdict, published version), which the
  ``dailyrec`` Airflow plugin's listener writes as the run's note when the run ends
  (:mod:`dailyrec.ui.notes`: the Task SDK has no call to set a run's note, docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, task

from dailyrec.deployment import DEFAULT_QUEUE, TRAINING_QUEUE

START_DATE = None
"""No start date: a run for any date processes that date (a ``start_date`` would make Airflow
create no task at all for an older logical date, and the run "succeed" having done nothing).
With ``catchup=False`` the scheduler creates only the latest interval's run when a DAG is unpaused."""

CHAINED_MAX_ACTIVE_RUNS = 8
"""Runs a daily DAG may have active at once; their order is ``wait_for_earlier_runs``' business."""

TRAINING_POOL = "dailyrec_training"
"""One slot: training jobs must not overrun the two cores (``./dev demo`` creates the pool;
``config/pools.json`` for a deployment)."""

__all__ = ["DEFAULT_QUEUE", "TRAINING_QUEUE"]   # the DAGs' Celery queues (dailyrec.deployment): a task
# that trains a model runs with ``queue=TRAINING_QUEUE``, every other task on Airflow's default queue

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
    the interval that just ended), no start date, no catchup, the retry policy of ``default_args``."""
    from dailyrec.runctx import default_args

    return {"schedule": CronDataIntervalTimetable(cron, timezone="UTC"), "start_date": START_DATE,
            "catchup": False, "max_active_runs": max_active_runs, "default_args": default_args()}


def cur_date_param(description: str = "Day to process (YYYY-MM-DD). Empty: the run's day.") -> Param:
    """The trigger form's ``cur_date`` (validated as a calendar date by the form)."""
    return Param(None, type=["null", "string"], format="date", description=description)


@task
def start(param_keys: dict[str, str], hourly: bool = False, ordered: bool | None = None,
          overridable: bool | None = None, **context: Any) -> dict[str, Any]:
    """The run's ``{"cur_date", ["hour"], "overrides", "config_hash"}`` (see docs/scheduling.md);
    a run of a DAG whose runs go in order (``ordered``, default: the daily DAGs) without a logical
    date also claims its place in the run order. ``overridable``: the DAG has the
    ``config_overrides`` param (default: the daily DAGs)."""
    from dailyrec.runctx import start_run
    from dailyrec.runorder import claim

    run = start_run(context, param_keys, hourly=hourly, overridable=overridable)
    if (not hourly) if ordered is None else ordered:
        claim(context["dag"].dag_id, context.get("dag_run"), run["cur_date"], run.get("hour"))
    return run


def run_of(context: dict[str, Any]) -> dict[str, Any]:
    """The run (``start``'s return value: ``cur_date``, overrides...) from XCom; also quiets the
    task's start-up logging (:func:`dailyrec.logs.quiet_startup`).

    Raises:
        RuntimeError: ``start`` left no value (it did not run in this DAG run)."""
    from dailyrec.logs import quiet_startup

    quiet_startup()
    run = context["ti"].xcom_pull(task_ids="start")
    if not run:
        raise RuntimeError(f"no run from the 'start' task of {context['dag_run'].run_id}: start must succeed first")
    return run


@task
def run_stage(stage: str, **context: Any) -> dict[str, Any]:
    """Run one stage of :mod:`dailyrec.stages` for this run (:func:`run_of`); its small result dict
    goes to XCom."""
    from dailyrec.stages import call

    return call(stage, run_of(context))


@task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
def wait_until_ready(stage: str, **context: Any) -> bool:
    """Pokes the stage's ``ready`` check (no worker slot held between pokes)."""
    from dailyrec.stages import poke

    run = run_of(context)
    ok, what = poke(stage, run)
    print(f"{stage} for {run['cur_date']}" + (f" hour {run['hour']:02d}" if "hour" in run else "") + f": {what}")
    return ok


@task.sensor(poke_interval=60, timeout=7 * 24 * 3600, mode="reschedule")
def wait_for_earlier_runs(**context: Any) -> bool:
    """Holds this run while an unfinished run of the same DAG comes first (an earlier ``cur_date``,
    or the same one triggered earlier): runs of a chained DAG work in date order, whatever created them."""
    from dailyrec.runorder import check_order

    ok, what = check_order(context["dag_run"], run_of(context)["cur_date"])
    print(what)
    return ok


@task.short_circuit(ignore_downstream_trigger_rules=False)
def should_train_pass(**context: Any) -> bool:
    """Continue only if passes are on (``passes.enabled``) and the run's hour ends a pass
    (``training.split_per_pass``); else say why there is nothing to do."""
    from dailyrec.passchain import pass_gate
    from dailyrec.runctx import config_for

    run = run_of(context)
    ok, why = pass_gate(config_for(run), run["hour"])
    print(f"{run['cur_date']} {why}")
    return ok


@task.sensor(poke_interval=60, timeout=12 * 3600, mode="reschedule")
def wait_for_previous_pass(**context: Any) -> bool:
    """Holds a pass while an earlier hour's run (or, for the day's first pass, a daily run of the day
    before) is unfinished, until the pass it starts from is there (:func:`dailyrec.passchain.
    check_previous_pass`); fails at once with ``MissingPassError`` naming the missing hour when it
    can never come (a missing hour stops the chain)."""
    from dailyrec.passchain import check_previous_pass

    ok, what = check_previous_pass(context["dag_run"], run_of(context))
    print(what)
    return ok


@task.sensor(poke_interval=60, timeout=12 * 3600, mode="reschedule")
def wait_for_last_pass(**context: Any) -> bool:
    """With passes on, holds the daily run of D while a run of ``hourly_training`` for D is
    unfinished (its training consolidates D's last pass); passes off: goes on at once."""
    from dailyrec.passchain import check_last_pass

    ok, what = check_last_pass(run_of(context))
    print(what)
    return ok


@task.short_circuit(ignore_downstream_trigger_rules=False)
def should_publish(gate: dict[str, Any], **context: Any) -> bool:
    """Continue to the publish branch only if the gate passed and the run's ``publish`` is on."""
    from dailyrec.runctx import config_for

    run = run_of(context)
    if not gate["passed"]:
        print(f"gate failed for {run['cur_date']}: {gate['reasons']}; nothing is published")
        return False
    if not config_for(run).run.publish:
        print("publish is off for this run (param publish=false)")
        return False
    return True


@task(task_id="report", retries=0)
def report(stage: str, run: dict[str, Any], **context: Any) -> dict[str, Any]:
    """The run's report (the stage's ``step``), plus its ``verdict``: the gate's decision, or which
    tasks failed, and its ``note`` (one line: ``cur_date``, verdict, published version; the plugin's
    listener makes it the run's note). The verdict is the task's return value (its XCom) and its
    log's last line."""
    from dailyrec.logs import quiet_startup
    from dailyrec.runctx import run_verdict
    from dailyrec.stages import call
    from dailyrec.ui.notes import run_note

    quiet_startup()
    ti, dag_run = context["ti"], context["dag_run"]
    states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id]).get(dag_run.run_id, {})
    if "hour" in run:   # an hourly pass: nothing to report when the run short-circuited
        return _pass_report(stage, run, states, ti)
    out = dict(call(stage, run))
    out["verdict"] = run_verdict(states, ti.xcom_pull(task_ids="evaluate_gate"))
    shipped = out["verdict"].endswith("; published")   # this run published (not an older entry of the date)
    out["note"] = run_note(run["cur_date"], out["verdict"], out.get("published_version") if shipped else None)
    print(f"verdict for {run['cur_date']}: {out['verdict']}")
    return out


def _pass_report(stage: str, run: dict[str, Any], states: dict[str, Any], ti: Any) -> dict[str, Any]:
    """:func:`report` of an hourly pass: the stage's summary and :func:`dailyrec.runctx.pass_verdict`,
    or, for a run that had nothing to do (:func:`dailyrec.passchain.pass_gate`), only why."""
    from dailyrec.passchain import pass_gate
    from dailyrec.runctx import config_for, pass_verdict
    from dailyrec.stages import call
    from dailyrec.ui.notes import run_note

    when = f"{run['cur_date']} {run['hour']:02d}:00"
    ok, why = pass_gate(config_for(run), run["hour"])
    if ok:
        out = dict(call(stage, run))
        out["verdict"], version = pass_verdict(states, ti.xcom_pull(task_ids="publish_delta"))
    else:
        out, version = {"cur_date": run["cur_date"], "hour": run["hour"], "verdict": f"nothing to do: {why}"}, None
    out["note"] = run_note(when, out["verdict"], version)
    print(f"verdict for {when}: {out['verdict']}")
    return out


def with_report(stage: str, run: Any, first: Any, last: Any) -> Any:
    """``run >> first``, ``last >> report(stage, run)``: ``start`` (whose XComArg is ``run``) is
    upstream of the first task only (the others read the run from its XCom, :func:`run_of`), and
    the report is its teardown: it runs once everything upstream is done, whatever their states,
    and, being a teardown, its own success does not decide the run's state: any failed task fails
    the run."""
    run >> first
    summary = report(stage, run)
    last >> summary
    return summary.as_teardown(setups=run.operator)
