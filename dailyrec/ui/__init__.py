"""The pipeline's pages: the per-run report (also written as ``report.html``), the model history
and the serving page, and the Airflow plugin that shows them inside the Airflow UI.

* :mod:`dailyrec.ui.plots`: server-side matplotlib figures as inline PNG ``<img>`` tags;
* :mod:`dailyrec.ui.pages`: the HTML of each page, read from the manifests and the registry
  under the data root (never from Airflow's DB), and the serving answer for a typed user id;
* :mod:`dailyrec.ui.app`: the FastAPI app the Airflow API server mounts at ``/dailyrec``;
* :mod:`dailyrec.ui.plugin`: the ``AirflowPlugin`` (``plugins/dailyrec_ui.py`` loads it);
* :mod:`dailyrec.ui.notes`: each run's note (its day, verdict and published version).

Only :mod:`~dailyrec.ui.app`, :mod:`~dailyrec.ui.plugin` and :mod:`~dailyrec.ui.notes` import
Airflow or FastAPI; the pages and plots are plain library code (``report.html`` is written by the
report steps with them).
"""
