"""The hourly pass chain as the DAGs see it (docs/hourly.md; docs/scheduling.md, "Hourly passes").

A pass ``(cur_date, h0)`` covers hours ``h0 .. h0 + s - 1`` (``s = training.split_per_pass``) and
warm starts from the pass before it, the first pass of a day from the daily base of the day
before (:func:`dailyrec.passes.warm_source_for_pass`). The ``hourly_training`` run of the hour that
ENDS a pass trains it; the other hours' runs, and every run while ``passes.enabled`` is off,
short-circuit (:func:`pass_gate`). The chain and the daily consolidation agree through sensors:

* ``wait_for_previous_pass`` (:func:`check_previous_pass`): a pass waits, in hour order, for every
  unfinished earlier run of ``hourly_training`` (:mod:`dailyrec.runorder`), and the first pass of D
  for the daily runs of D-1 (its base); then its warm source must exist, else
  :class:`~dailyrec.errors.MissingPassError` naming the missing pass or base: a missing hour stops
  the chain, it never skips data;
* ``wait_for_last_pass`` in ``daily_retrieval`` (:func:`check_last_pass`): with passes on, the daily
  run of D waits while a run of ``hourly_training`` for D is unfinished; its training then starts
  from D's last pass (:func:`consolidation_source`, ``passes.consolidate_from``).

The shared training pool (``dailyrec_training``, 1 slot) keeps the two DAGs from training at once.
Light module: no heavy import at module level (DAG tasks call it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

HOURLY_DAG = "hourly_training"
DAILY_DAGS = ("daily_retrieval", "daily_ranking")
PASS_MODELS = ("two_tower", "mmoe")
"""The models a pass of ``hourly_training`` trains: each chains from its own previous pass or base."""
MANIFEST = "_manifest.json"


def pass_span(cfg: Any, hour: int) -> tuple[int, int]:
    """``(first, last)`` hour of the pass containing ``hour`` (:func:`dailyrec.passes.pass_hours`)."""
    from dailyrec.passes import pass_hours

    hours = pass_hours(cfg, hour)
    return hours[0], hours[-1]


def pass_gate(cfg: Any, hour: int) -> tuple[bool, str]:
    """``(True, ...)`` when the run of ``hour`` trains a pass: passes are on and ``hour`` ends one;
    else ``(False, why there is nothing to do)``."""
    first, last = pass_span(cfg, hour)
    if not cfg.passes.enabled:
        return False, (f"hour {hour:02d}: passes are disabled (config passes.enabled: false): nothing to do "
                       "(the daily run trains as without passes)")
    if hour != last:
        return False, (f"hour {hour:02d}: not the end of a pass (training.split_per_pass="
                       f"{cfg.training.split_per_pass}: the pass of hours {first:02d}-{last:02d} trains in "
                       f"the run of hour {last:02d}): nothing to do")
    span = f"hour {hour:02d}" if first == last else f"hours {first:02d}-{last:02d}"
    return True, f"hour {hour:02d} ends the pass of {span}: it trains"


def _day_before(cur_date: str) -> str:
    return (dt.date.fromisoformat(cur_date) - dt.timedelta(days=1)).isoformat()


def _warm_source_for_pass(store: Any, cfg: Any, name: str, cur_date: str, hour: int) -> tuple[str, str]:
    """:func:`dailyrec.passes.warm_source_for_pass` (the passes' rule, one place)."""
    from dailyrec.passes import warm_source_for_pass

    return warm_source_for_pass(store, cfg, name, cur_date, hour)


def check_previous_pass(dag_run: Any, run: dict[str, Any]) -> tuple[bool, str]:
    """``wait_for_previous_pass``' poke for the run of ``run["hour"]`` (a pass end).

    Returns ``(False, what it waits for)`` while an earlier hour's run of ``hourly_training`` is
    unfinished, or (first pass of the day) a daily run of the day before is; ``(True, the warm
    source)`` once the pass it starts from is there.

    Raises:
        MissingPassError: nothing is left to wait for and the previous pass (or the day before's
            daily base) is missing: its run failed or never ran. Names the missing pass/hour.
    """
    from dailyrec.errors import MissingPassError
    from dailyrec.runctx import config_for
    from dailyrec.runorder import check_order, unfinished
    from dailyrec.storage import open_store

    cfg, cur, hour = config_for(run), run["cur_date"], run["hour"]
    first, _ = pass_span(cfg, hour)
    ok, what = check_order(dag_run, cur, hour)
    if not ok:
        return False, what
    if first == 0:
        before = _day_before(cur)
        for dag_id in DAILY_DAGS:
            waiting = [r for r in unfinished(dag_id) if r.cur_date == before]
            if waiting:
                return False, (f"pass ({cur}, 00) waits for the daily base of {before}: {dag_id} run "
                               f"{waiting[0].describe()} is unfinished")
    try:
        found = pass_sources(open_store(cfg), cfg, cur, first)
    except MissingPassError as exc:
        prev = f"daily runs of {_day_before(cur)}" if first == 0 else f"run of hour {first - 1:02d}"
        raise MissingPassError(f"pass ({cur}, {first:02d}) cannot start and nothing is left to wait for (no "
                               f"unfinished {prev}): {exc}") from exc
    return True, f"pass ({cur}, {first:02d}) starts {', '.join(found)}: {what}"


def pass_sources(store: Any, cfg: Any, cur_date: str, hour: int) -> list[str]:
    """``["<model> from <label> (<dir>)", ...]``: the warm source of every model the pass holding
    ``hour`` trains (:data:`PASS_MODELS`: the DAG trains both, so neither may start a pass without its
    own previous pass or base).

    Raises:
        MissingPassError: a model's previous pass or base is missing (the first one, named)."""
    out = []
    for name in PASS_MODELS:
        label, src = _warm_source_for_pass(store, cfg, name, cur_date, hour)
        out.append(f"{name} from {label} ({src})")
    return out


def last_pass(store: Any, name: str, cur_date: str) -> tuple[int, str] | None:
    """``(hour, dir)`` of the newest pass model of ``cur_date`` that can be started from
    (``passes/<name>/dt=D/hour=HH/`` with its ``_manifest.json`` and its checkpoint ``model/``;
    ``hour`` is the pass's first hour), or None when D had no pass."""
    from dailyrec.passes import CHECKPOINT_DIR, pass_dir

    for hour in range(23, -1, -1):
        d = pass_dir(store, name, cur_date, hour)
        if store.exists(f"{d}/{MANIFEST}") and store.exists(f"{d}/{CHECKPOINT_DIR}"):
            return hour, d
    return None


def check_last_pass(run: dict[str, Any]) -> tuple[bool, str]:
    """``wait_for_last_pass``' poke (``daily_retrieval``): with passes off, ``True`` at once; with
    passes on, ``False`` while a run of ``hourly_training`` for the run's ``cur_date`` is unfinished,
    then ``True`` with the pass the consolidation starts from (or that D had none)."""
    from dailyrec.runctx import config_for
    from dailyrec.runorder import unfinished
    from dailyrec.storage import open_store

    cfg, cur = config_for(run), run["cur_date"]
    if not cfg.passes.enabled:
        return True, "passes are disabled (passes.enabled: false): nothing to wait for"
    waiting = [r for r in unfinished(HOURLY_DAG, hourly=True) if r.cur_date == cur]
    if waiting:
        more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
        return False, f"daily run of {cur} waits for its passes: {HOURLY_DAG} run {waiting[0].describe()}{more}"
    found = last_pass(open_store(cfg), "two_tower", cur)
    if found is None:
        return True, (f"{cur} had no pass (no {HOURLY_DAG} run of {cur} is unfinished): the daily run starts "
                      "from the previous base")
    first, _ = pass_span(cfg, 23)
    note = "" if found[0] == first else f" (not the day's last pass, hour {first:02d}: the chain stopped)"
    return True, (f"{cur}'s newest pass is ({cur}, {found[0]:02d}){note}; passes.consolidate_from="
                  f"{cfg.passes.consolidate_from}")


def consolidation_source(run: Any, name: str) -> tuple[str, str] | None | bool:
    """Where the daily run of ``run.cur_date`` starts with passes on (``passes.consolidate_from``):
    ``(label "D<T>HH", pass dir)`` for D's last pass, ``None`` for a cold start (``scratch``), or
    ``False`` for "as without passes" (``base``, or D had no pass: logged)."""
    how = run.cfg.passes.consolidate_from
    if how == "scratch":
        run.log.info("cold start (passes.consolidate_from=scratch)")
        return None
    if how == "base":
        run.log.info("warm start from the previous daily base (passes.consolidate_from=base)")
        return False
    found = last_pass(run.store, name, run.cur_date)
    if found is None:
        run.log.info("%s: %s had no pass: warm start from the previous daily base", name, run.cur_date)
        return False
    hour, path = found
    first, _ = pass_span(run.cfg, 23)
    if hour != first:
        run.log.warning("%s: the newest pass of %s is hour %02d, not the day's last (%02d)", name, run.cur_date,
                        hour, first)
    run.log.info("%s: consolidation of %s starts from its last pass (%s, %02d): %s", name, run.cur_date,
                 run.cur_date, hour, path)
    return f"{run.cur_date}T{hour:02d}", path
