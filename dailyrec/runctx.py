"""Glue between an Airflow run and the pipeline's step functions (light: no heavy imports).

``cur_date`` rule (see docs/scheduling.md), the same for every DAG of the project:

1. the run's ``cur_date`` param, when a manual trigger names one;
2. otherwise the run's ``logical_date`` when it sits on the schedule's grid (midnight UTC for
   daily DAGs, the top of the hour for hourly ones): scheduled runs and backfills of a
   ``CronDataIntervalTimetable`` have ``logical_date == data_interval_start`` = the day (hour)
   they process, and ``airflow dags test DAG 2026-11-01`` processes 2026-11-01;
3. otherwise the last complete interval before the run's ``logical_date``, or, for a run with no
   logical date (``airflow dags trigger DAG``, REST ``"logical_date": null``), before the time it
   was triggered (``run_after``): a manual trigger "now" processes the day (hour) that just ended.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# Exceptions that are deterministic: retrying cannot help, so the task fails at once. Every error
# of the project for bad input, config or data is a ValueError (ContractError, ConfigError,
# RecallTooLow ...); GateRejected refuses to publish a model that failed its gate; MissingPassError
# (a FileNotFoundError) stops the hourly chain at a missing hour: retrying cannot bring the hour back.
DETERMINISTIC_ERRORS = [
    "builtins.ValueError",
    "builtins.TypeError",
    "builtins.KeyError",
    "dailyrec.errors.GateRejected",
    "dailyrec.errors.MissingPassError",
]


def retry_policy() -> Any:
    """Fail at once on bad input, config or data (docs/scheduling.md, "Retries"); anything else
    (I/O: ``OSError``, Redis unreachable, a file not there yet) is retried with the task's retries."""
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(rules=[
        RetryRule(exception=DETERMINISTIC_ERRORS, action=RetryAction.FAIL,
                  reason="bad input, config or data: a retry would fail the same way"),
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


def as_utc(value: Any) -> dt.datetime | None:
    """A datetime (or ISO string) in UTC; naive values are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _floor(t: dt.datetime, hourly: bool) -> dt.datetime:
    """The start of the interval (hour, or UTC day) that contains ``t``."""
    t = t.replace(minute=0, second=0, microsecond=0)
    return t if hourly else t.replace(hour=0)


def _run_after(context: dict[str, Any]) -> dt.datetime | None:
    dag_run = context.get("dag_run")
    return as_utc(context.get("run_after") or getattr(dag_run, "run_after", None))


def _interval_start(context: dict[str, Any], hourly: bool) -> dt.datetime:
    """Rules 2 and 3 of the module docstring: the start of the interval the run processes."""
    step = dt.timedelta(hours=1) if hourly else dt.timedelta(days=1)
    logical = as_utc(context.get("logical_date"))
    if logical is not None and _floor(logical, hourly) == logical:
        return logical
    when = logical or _run_after(context)
    if when is None:
        raise ValueError("the run has neither a cur_date param, a logical_date nor a run_after time")
    return _floor(when, hourly) - step


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


def accepted_keys(mapping: dict[str, str], hourly: bool = False, overridable: bool | None = None) -> list[str]:
    """The top-level trigger conf keys a DAG accepts: exactly its params (test_dag_integrity checks).
    ``overridable`` (default: not ``hourly``): the DAG has the ``config_overrides`` param."""
    overridable = not hourly if overridable is None else overridable
    return sorted({"cur_date", *mapping, *(("hour",) if hourly else ()),
                   *(("config_overrides",) if overridable else ())})


def check_conf_keys(context: dict[str, Any], mapping: dict[str, str], hourly: bool = False,
                    overridable: bool | None = None) -> None:
    """Refuse a trigger conf with top-level keys the DAG has no param for (``ConfigError`` naming
    them and the accepted ones): Airflow itself would accept and ignore ``{"learning_rate": 0.1}``."""
    from dailyrec.config import ConfigError

    conf = getattr(context.get("dag_run"), "conf", None) or {}
    accepted = accepted_keys(mapping, hourly, overridable)
    unknown = sorted(set(conf) - set(accepted))
    if unknown:
        hint = (' (any config key goes in config_overrides, dotted: {"training.epochs": 3})'
                if "config_overrides" in accepted else "")
        raise ConfigError(f"unknown trigger conf key(s) {unknown}; accepted keys: {accepted}{hint}")


def start_run(context: dict[str, Any], mapping: dict[str, str], hourly: bool = False,
              overridable: bool | None = None) -> dict[str, Any]:
    """First task of every DAG: the run's ``cur_date`` (and ``hour`` when ``hourly``) and its config
    overrides, validated now (unknown conf keys, every cross-field rule of the config), so a bad
    trigger fails the run at once with the key's name, before any work."""
    from dailyrec.config import load_config

    check_conf_keys(context, mapping, hourly, overridable)
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


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))


def run_verdict(states: dict[str, Any], gate: dict[str, Any] | None) -> str:
    """One line for the run's page (the ``report`` task's return value): which tasks failed (the
    run fails), else the gate's decision and whether the model was published."""
    failed = sorted(t for t, s in states.items() if t != "report" and _state(s) == "failed")
    if failed:
        return f"FAILED: {', '.join(failed)} (see their logs); nothing was published"
    if gate is None:
        return "no gate verdict: the run stopped before evaluate_gate"
    if not gate.get("passed"):
        return f"gate failed: {'; '.join(map(str, gate.get('reasons') or [])) or 'no reason given'}; nothing published"
    published = any(_state(states.get(t)) == "success" for t in ("publish_redis", "publish_model"))
    return "gate passed; published" if published else "gate passed; not published (publish param off)"


def pass_verdict(states: dict[str, Any], published: dict[str, Any] | None) -> tuple[str, str | None]:
    """An hourly pass's verdict line and the Redis version it published (``publish_delta``'s
    return value ``published``; None when nothing was): which tasks failed (the run fails), else
    whether the pass's delta went online."""
    failed = sorted(t for t, s in states.items() if t != "report" and _state(s) == "failed")
    if failed:
        return f"FAILED: {', '.join(failed)} (see their logs); the chain stops at this pass", None
    version = (published or {}).get("version")
    if _state(states.get("publish_delta")) == "success" and version:
        return "pass trained; delta published", str(version)
    return "pass trained; no delta published" + (f" ({published['reason']})" if (published or {}).get("reason")
                                                 else ""), None
