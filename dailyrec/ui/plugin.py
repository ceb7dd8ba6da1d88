"""The ``dailyrec`` Airflow plugin (Airflow 3.3's plugin interface), loaded by ``plugins/dailyrec_ui.py``.

* ``fastapi_apps``: :data:`dailyrec.ui.app.app`, mounted by the API server at ``/dailyrec``;
* ``external_views``: a **Report** tab on every DAG run (destination ``dag_run``; the page says so
  for DAGs without a report), and **Model history** and **Serving** pages in the navigation bar
  (under "Browse"); each is an iframe of the app's pages, so plots are server-side PNGs and nothing
  is fetched from the internet;
* ``listeners``: :mod:`dailyrec.ui.notes`, which writes each daily run's note when it ends.

``airflow plugins`` lists it; ``./dev`` points ``AIRFLOW__CORE__PLUGINS_FOLDER`` at ``plugins/``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dailyrec.ui import notes
from dailyrec.ui.app import BASE, app

REPORT_VIEW = {"name": "Report", "href": f"{BASE.lstrip('/')}/report/{{DAG_ID}}/{{RUN_ID}}",
               "destination": "dag_run", "url_route": "dailyrec_report"}
HISTORY_VIEW = {"name": "Model history", "href": f"{BASE.lstrip('/')}/history?pipeline=retrieval",
                "destination": "nav", "category": "browse", "url_route": "dailyrec_history"}
SERVING_VIEW = {"name": "Serving", "href": f"{BASE.lstrip('/')}/serving", "destination": "nav",
                "category": "browse", "url_route": "dailyrec_serving"}


class DailyrecPlugin(AirflowPlugin):
    """Run report tab, model history and serving pages, and run notes for dailyrec."""

    name = "dailyrec"
    fastapi_apps = [{"app": app, "url_prefix": BASE, "name": "dailyrec pages"}]
    external_views = [REPORT_VIEW, HISTORY_VIEW, SERVING_VIEW]
    listeners = [notes]
