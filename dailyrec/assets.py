"""Airflow Assets shared by the DAG files (lineage in the UI) and the pool name of training tasks.

Only DAG files import this module (it imports ``airflow.sdk``); steps never do.
"""

from __future__ import annotations

from airflow.sdk import Asset

TRAINING_POOL = "dailyrec_training"
"""One slot: training jobs must not overrun the two cores (``./dev demo`` creates the pool)."""

# The retrieval DAG's features output (features/dt=YYYY-MM-DD/ under the data root).
FEATURES_ASSET = Asset(
    name="dailyrec_features",
    uri="x-dailyrec://features",
    group="dailyrec",
    extra={"path": "<data_root>/features/dt=YYYY-MM-DD/", "done_marker": "_manifest.json",
           "producer": "daily_retrieval.build_features"},
)
