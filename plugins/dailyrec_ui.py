"""Airflow loads this file from its plugins folder (``./dev`` sets ``AIRFLOW__CORE__PLUGINS_FOLDER``
to this folder): the ``dailyrec`` plugin, :mod:`dailyrec.ui.plugin`."""

from dailyrec.ui.plugin import DailyrecPlugin

__all__ = ["DailyrecPlugin"]
