"""Steps of the hourly incremental training (``hourly_training`` DAG, docs/hourly.md)."""
