"""Glue between an Airflow run and the pipeline's step functions (light: no heavy imports).

``cur_date`` rule (see docs/scheduling.md), the same for every DAG of the project:

1. the run's ``cur_date`` param, when a manual trigger names one;
2. otherwise the run's ``logical_date`` when it sits on the schedule's grid (midnight UTC for
   daily DAGs, the top of the hour for hourly ones): scheduled runs and backfills of a
   ``CronDataIntervalTimetable`` have ``logical_date == data_interval_start`` = the day (hour)
   they process, and ``airflow dags test DAG 2026-11-01`` processes 2026-11-01;
3. otherwise (a manual trigger "now" with no date) the last complete interval,
   ``data_interval_start``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# Exceptions that are deterministic: retrying cannot help, so the task fails at once.
DETERMINISTIC_ERRORS = [
    "dailyrec.errors.ContractError",
    "dailyrec.config.ConfigError",
    "dailyrec.errors.RecallTooLow",
]


def retry_policy() -> Any:
    """Retry transient failures (I/O) with the task's retries; fail at once on bad input."""
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(rules=[
        RetryRule(exception=DETERMINISTIC_ERRORS, action=RetryAction.FAIL,
                  reason="bad input or config: a retry would fail the same way"),
    ])


def default_args(retries: int = 2) -> dict[str, Any]:
    return {
        "owner": "dailyrec",
        "retries": retries,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=10),
        "retry_policy": retry_policy(),
    }


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _interval_start(context: dict[str, Any], hourly: bool) -> dt.datetime:
    logical = _utc(context.get("logical_date"))
    if logical is not None:
        on_grid = logical.minute == 0 and logical.second == 0 and logical.microsecond == 0
        if on_grid and (hourly or logical.hour == 0):
            return logical
    start = _utc(context.get("data_interval_start"))
    if start is not None:
        return start
    if logical is not None:
        return logical
    raise ValueError("the run has neither a cur_date param, a logical_date nor a data interval")


def resolve_cur_date(context: dict[str, Any]) -> str:
    """The day a daily run processes, ``YYYY-MM-DD``."""
    from dailyrec.dates import parse_date

    param = (context.get("params") or {}).get("cur_date")
    if param:
        return parse_date(str(param)).isoformat()
    return _interval_start(context, hourly=False).date().isoformat()


def resolve_hour(context: dict[str, Any]) -> tuple[str, int]:
    """The (day, hour) an hourly run processes."""
    from dailyrec.dates import check_hour, parse_date

    params = context.get("params") or {}
    if params.get("cur_date") and params.get("hour") is not None:
        return parse_date(str(params["cur_date"])).isoformat(), check_hour(int(params["hour"]))
    if params.get("cur_date") or params.get("hour") is not None:
        raise ValueError("give both cur_date and hour, or neither")
    start = _interval_start(context, hourly=True)
    return start.date().isoformat(), start.hour


def overrides_from_params(params: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Turn trigger-form params into config overrides: ``{param: "section.key"}``.

    Params left at ``None`` are not overrides. A free-form ``config_overrides`` param (a dict of
    dotted keys) is merged last, so any config key can be set per run.
    """
    out = {key: params[p] for p, key in mapping.items() if params.get(p) is not None}
    extra = params.get("config_overrides") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"config_overrides must be an object of dotted keys, got {extra!r}")
    out.update(extra)
    return out


# Trigger-form params of the daily DAGs -> config keys.
RETRIEVAL_PARAM_KEYS = {
    "loss": "training.loss",
    "epochs": "training.epochs",
    "negatives_per_positive": "sampling.negatives_per_positive",
    "hard_negative_sources": "sampling.hard_negative_sources",
    "publish": "run.publish",
    "index_factory": "index.factory",
    "allow_backwards": "run.allow_backwards",
}
RANKING_PARAM_KEYS = {
    "num_experts": "ranking.num_experts",
    "loss_weight_click": "ranking.loss_weights.click",
    "loss_weight_conversion": "ranking.loss_weights.conversion",
    "epochs": "ranking.epochs",
    "publish": "run.publish",
}


def start_run(context: dict[str, Any], mapping: dict[str, str], hourly: bool = False) -> dict[str, Any]:
    """First task of every DAG: the run's ``cur_date`` (and ``hour`` when ``hourly``) and its config
    overrides, validated now (every cross-field rule of the config included), so a bad param fails
    the run at once with the key's name, before any work."""
    from dailyrec.config import load_config

    params = dict(context.get("params") or {})
    run: dict[str, Any] = {"overrides": overrides_from_params(params, mapping)}
    if hourly:
        run["cur_date"], run["hour"] = resolve_hour(context)
    else:
        run["cur_date"] = resolve_cur_date(context)
    cfg = load_config(overrides=run["overrides"])
    run["config_hash"] = cfg.digest()
    return run


def config_for(run: dict[str, Any]) -> Any:
    from dailyrec.config import load_config

    return load_config(overrides=run.get("overrides"))
