"""The one prologue of every pipeline step: config, ``cur_date``, store, timer, input checks.

A step module under ``tasks/`` starts with::

    def step(cur_date: str, cfg: Config) -> dict:
        run = begin("train_two_tower", cur_date, cfg)
        run.require(run.path("samples", "train.parquet"),
                    hint="run python -m tasks.retrieval.sample --cur-date D first")
        with run.timer.step("read"):
            ...
        manifest = run.manifest(inputs=[...], rows={...}, extra_key=...)

``run.manifest`` records the timer's per-phase seconds (``timings_s``) and peak RSS
(``peak_rss_mb``: the stage's and each phase's, :mod:`dailyrec.memory`) and logs the step's
summary line with them.

A step that reads logs first calls ``run.require_validated(days)`` (the days it reads): it
refuses a day that failed ``tasks.ingest.validate_day``, was never checked, or changed since.

:func:`begin` normalises ``cur_date`` (``ValueError`` on anything but ``YYYY-MM-DD``), loads the
default config when ``cfg`` is ``None`` (a library caller's convenience; DAG tasks and CLIs always
pass one), opens the store and starts the step's timer. Light module: no heavy imports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dailyrec.config import Config, load_config
from dailyrec.dates import parse_date
from dailyrec.storage import Store, Timer, make_manifest, open_store


@dataclass
class StepRun:
    """What a step knows about its run. ``cur_date`` is ``YYYY-MM-DD``; time comes only from it."""

    name: str
    cur_date: str
    cfg: Config
    store: Store
    timer: Timer = field(default_factory=Timer)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dailyrec"))

    def partition(self, dataset: str, hour: int | None = None, cur_date: str | None = None) -> str:
        """``<root>/<dataset>/dt=<cur_date>[/hour=HH]`` (this run's date unless ``cur_date``)."""
        return self.store.partition(dataset, cur_date or self.cur_date, hour)

    def path(self, dataset: str, filename: str, cur_date: str | None = None) -> str:
        """A file in a date partition: ``<root>/<dataset>/dt=<cur_date>/<filename>``."""
        return f"{self.partition(dataset, cur_date=cur_date)}/{filename}"

    def require(self, *paths: str, hint: str = "") -> None:
        """Raise ``FileNotFoundError`` naming the first missing input and what produces it."""
        for p in paths:
            if not self.store.exists(p):
                raise FileNotFoundError(f"{p} is missing" + (f": {hint}" if hint else "")
                                        + f" (step {self.name}, cur_date {self.cur_date})")

    def require_validated(self, days: list[str] | None = None) -> None:
        """Refuse logs that did not pass ``tasks.ingest.validate_day``: ``cur_date`` and every day
        of ``days`` that has logs (:func:`dailyrec.validation.require_validated`)."""
        from dailyrec.validation import require_validated

        require_validated(self.store, days or [], self.cur_date, self.name)

    def manifest(self, inputs: list[str] | dict[str, Any], rows: dict[str, int], **extra: Any) -> dict[str, Any]:
        """The step's ``_manifest.json`` content with this run's timings and peak RSS so far.

        ``timings_s``: ``{phase: seconds}``; ``peak_rss_mb``: ``{"stage": MB, "phases": {phase:
        MB}, "method": ...}`` (:meth:`dailyrec.storage.Timer.peak_rss`; both are volatile keys,
        docs/storage.md). Also logs the step's summary line: ``<step> dt=<cur_date>: <seconds>s,
        peak RSS <MB> MB (<phase> <s>s <MB> MB, ...)``.
        """
        self.log.info("%s dt=%s: %s", self.name, self.cur_date, self.timer.summary())
        return make_manifest(self.name, self.cfg, self.cur_date, inputs=inputs, rows=rows,
                             timings=self.timer.timings, peak_rss_mb=self.timer.peak_rss(), **extra)


def begin(name: str, cur_date: str, cfg: Config | None = None) -> StepRun:
    """Start step ``name`` for ``cur_date``: the validated date, the config, the store, a timer.

    Raises:
        ValueError: ``cur_date`` is not a ``YYYY-MM-DD`` calendar date.
        dailyrec.config.ConfigError: ``cfg`` is ``None`` and the default config is invalid.
    """
    cfg = cfg if cfg is not None else load_config()
    day = parse_date(cur_date).isoformat()
    return StepRun(name=name, cur_date=day, cfg=cfg, store=open_store(cfg),
                   log=logging.getLogger(f"dailyrec.{name}"))
