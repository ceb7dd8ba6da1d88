"""
### hourly_log_check

For one hour of impression logs (`logs/dt=YYYY-MM-DD/hour=HH`):

1. **start**: which hour: the `cur_date` + `hour` params of a manual trigger, else
   the run's hour (`CronDataIntervalTimetable("0 * * * *")`: a run processes the hour that just
   ended), and for a trigger with no date at all (`airflow dags trigger hourly_log_check`) the
   last complete hour before it; unknown conf keys are refused (see docs/scheduling.md);
2. **wait_for_success**: waits, in *reschedule* mode (no worker slot held), for the hour's
   `_SUCCESS` marker, up to 6 hours;
3. **validate**: checks every Parquet file against the log contract (schema, nulls, labels,
   event times inside the hour, minimum rows) and records the row count and CTR in
   `log_checks/dt=.../hour=.../report.json`. A contract violation fails at once (no retry)
   with the partition, file and column in the message.

| task | stage (also a CLI: `python -m tasks.<stage> --cur-date D --hour H`) | what it does |
|---|---|---|
| `start` | | resolves the hour (`cur_date` + `hour`) |
| `wait_for_success` | `ingest.check_hour` (its `ready`) | waits for the hour's `_SUCCESS` (reschedule mode) |
| `validate` | `ingest.check_hour` | the contract check and the hour's report |
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from dailyrec.dag_tasks import cur_date_param, run_stage, schedule_args, start, wait_until_ready


@dag(
    dag_id="hourly_log_check",
    **schedule_args("0 * * * *", max_active_runs=4),
    tags=["dailyrec", "logs", "hourly"],
    doc_md=__doc__,
    params={
        "cur_date": cur_date_param("Day of the hour to check (YYYY-MM-DD); empty = the run's hour"),
        "hour": Param(None, type=["null", "integer"], minimum=0, maximum=23,
                      description="Hour 0-23; give it together with cur_date"),
    },
)
def hourly_log_check():
    run = start({}, hourly=True)
    waited = wait_until_ready.override(task_id="wait_for_success", poke_interval=60, timeout=6 * 3600)(
        "ingest.check_hour")
    run >> waited >> run_stage.override(task_id="validate")("ingest.check_hour")


hourly_log_check()
