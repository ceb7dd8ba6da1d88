"""The FastAPI app the Airflow API server mounts at ``/dailyrec`` (:mod:`dailyrec.ui.plugin`).

Every route needs an Airflow user (the UI's ``_token`` cookie, or ``Authorization: Bearer`` from
``POST /auth/token``), like Airflow's own API; a run's report also needs read access to its DAG.

=====================================================  ==============================================
route                                                  page
=====================================================  ==============================================
``GET /dailyrec/report/{dag_id}/{run_id}``             a run's Report tab (``cur_date`` from the run's
                                                       ``start`` task, the verdict from its ``report``)
``GET /dailyrec/report/date/{pipeline}/{cur_date}``    the report of a date (no Airflow run needed)
``GET /dailyrec/manifest/{pipeline}/{cur_date}/{step}`` the JSON a step wrote for that date
``GET /dailyrec/history?pipeline=retrieval|ranking``   the Model history page
``GET /dailyrec/serving[?user_id=U&k=K]``              the Serving page (a user's top-K)
=====================================================  ==============================================

Pages come from :mod:`dailyrec.ui.pages` and :mod:`dailyrec.ui.history`, with the data root of
the API server's environment (``DAILYREC_DATA_ROOT`` / ``DAILYREC_CONFIG``, as ``./dev ui`` sets it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

BASE = "/dailyrec"
PIPELINES = {"daily_retrieval": "retrieval", "daily_ranking": "ranking"}
"""DAG id -> pipeline whose report its runs get (an hourly training DAG maps here once it exists)."""

app = FastAPI(title="dailyrec pages", description="Run report, model history and serving pages of dailyrec",
              dependencies=[Depends(get_user)])


def _store() -> tuple[Any, Any]:
    from dailyrec.config import load_config
    from dailyrec.storage import open_store

    cfg = load_config()
    return cfg, open_store(cfg)


def _pipeline(name: str) -> str:
    if name not in ("retrieval", "ranking"):
        raise HTTPException(404, f"unknown pipeline {name!r}: retrieval or ranking")
    return name


def _xcom(dag_id: str, run_id: str, task_id: str) -> Any:
    """A task's return value in this run (Airflow's metadata DB: only to map a run to its date)."""
    from sqlalchemy import select

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
            XComModel.key == "return_value", XComModel.map_index == -1))
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def _report(pipeline: str, cur_date: str, run_verdict: str | None = None, note: str = "") -> str:
    from dailyrec.dates import parse_date
    from dailyrec.pass_curve import collect_passes
    from dailyrec.report import collect, sources_of
    from dailyrec.ui.pages import report_html

    try:
        cur_date = parse_date(cur_date).isoformat()
    except ValueError as e:
        raise HTTPException(404, str(e)) from e
    _, store = _store()
    sources = sources_of(pipeline)
    steps = collect(store, cur_date, sources)
    nav = (f'<nav><a href="{BASE}/history?pipeline={pipeline}" target="_top">Model history</a>'
           f'<a href="{BASE}/serving" target="_top">Serving</a>{note}</nav>')
    return report_html(pipeline, cur_date, steps, sources, run_verdict,
                       link=lambda step: f"{BASE}/manifest/{pipeline}/{cur_date}/{step}", nav=nav,
                       passes=collect_passes(store, cur_date))


@app.get("/report/date/{pipeline}/{cur_date}", response_class=HTMLResponse)
def report_of_date(pipeline: str, cur_date: str) -> str:
    """The report of ``cur_date`` from the data root alone."""
    return _report(_pipeline(pipeline), cur_date)


@app.get("/report/{dag_id}/{run_id}", response_class=HTMLResponse,
         dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
def report_of_run(dag_id: str, run_id: str) -> str:
    """The Report tab of a run: its ``cur_date`` from its ``start`` task, its verdict from ``report``."""
    from dailyrec.ui.pages import esc, page

    if dag_id not in PIPELINES:
        return page("no report", f"<h1>No report for {esc(dag_id)}</h1><p>Reports exist for "
                                 f"{', '.join(sorted(PIPELINES))}.</p>")
    run = _xcom(dag_id, run_id, "start")
    if not isinstance(run, dict) or "cur_date" not in run:
        return page("no report yet", f"<h1>No report yet</h1><p>Run <code>{esc(run_id)}</code> has not resolved "
                                     "its <code>cur_date</code> (its <code>start</code> task has not succeeded).</p>")
    rep = _xcom(dag_id, run_id, "report")
    verdict = rep.get("verdict") if isinstance(rep, dict) else None
    state = "" if verdict else " <span class='muted'>(the run's report task has not finished)</span>"
    return _report(PIPELINES[dag_id], run["cur_date"], verdict, state)


@app.get("/manifest/{pipeline}/{cur_date}/{step}")
def manifest(pipeline: str, cur_date: str, step: str) -> JSONResponse:
    """The JSON file a step wrote for ``cur_date`` (one of the report's sources)."""
    from dailyrec.dates import parse_date
    from dailyrec.report import sources_of

    sources = sources_of(_pipeline(pipeline))
    if step not in sources:
        raise HTTPException(404, f"unknown step {step!r} of {pipeline}: {sorted(sources)}")
    try:
        day = parse_date(cur_date).isoformat()
    except ValueError as e:
        raise HTTPException(404, str(e)) from e
    _, store = _store()
    path = store.path(sources[step].format(d=f"dt={day}"))
    if not store.exists(path):
        raise HTTPException(404, f"{step} wrote nothing for {day} ({path})")
    return JSONResponse(store.read_json(path))


@app.get("/history", response_class=HTMLResponse)
def history(pipeline: str = Query("retrieval")) -> str:
    """The Model history page of ``pipeline``."""
    from dailyrec.ui.history import history_html

    _, store = _store()
    p = _pipeline(pipeline)
    return history_html(store, p, BASE, report_link=lambda d: f"{BASE}/report/date/{p}/{quote(d)}")


@app.get("/serving", response_class=HTMLResponse)
def serving(user_id: str | None = Query(None, max_length=200), k: int = Query(20, ge=1, le=500)) -> str:
    """The Serving page; with ``user_id``, that user's top ``k`` from the published index."""
    from dailyrec.ui.history import serving_html

    cfg, _ = _store()
    return serving_html(cfg, user_id.strip() if user_id else None, k, BASE)
