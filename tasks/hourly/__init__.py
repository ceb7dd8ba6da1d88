"""Steps of the hourly passes DAG (``hourly_training``; docs/hourly.md)."""
