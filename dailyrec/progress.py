"""Progress lines for long loops: rows done / total, rate and ETA, at most every ``every_s`` seconds.

    progress = Progress(log, "publish items", total=n, unit="keys")
    for chunk in chunks:
        ...
        progress.add(len(chunk))
    progress.done()

A healthy long step therefore logs at least every 30 s (docs/operations.md, "Logs"); the training
fit gets the same lines from a Keras callback (:func:`dailyrec.training.training_callbacks`).
Lines are INFO on the step's logger; nothing is printed to stderr (Airflow shows a task's stderr
as ERROR).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

EVERY_S = 30.0
"""Default seconds between two progress lines of one loop (the first line comes after EVERY_S too)."""


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Counts work done and logs ``"<label>: 1,200,000/3,000,000 rows (40.0%), 52,000 rows/s, ETA 0m35s"``.

    Args:
        log: the logger (the step's ``run.log``).
        label: what is being done.
        total: units in all (``None``: unknown, no percentage nor ETA).
        unit: the unit's name (``"rows"``, ``"examples"``...).
        every_s: seconds between lines (> 0).
        clock: a monotonic clock in seconds (tests pass a fake one).
    Raises:
        ValueError: ``every_s`` <= 0 or ``total`` < 0.
    """

    def __init__(self, log: logging.Logger, label: str, total: int | None = None, unit: str = "rows",
                 every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        if total is not None and total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.log, self.label, self.total, self.unit, self.every_s, self.clock = log, label, total, unit, every_s, clock
        self.done_units = 0
        self.t0 = self.last = clock()
        self.lines = 0

    def line(self) -> str:
        """The progress line for what is done now."""
        elapsed = max(self.clock() - self.t0, 1e-9)
        rate = self.done_units / elapsed
        text = f"{self.label}: {self.done_units:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100.0 * self.done_units / self.total:.1f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0:
            text += f", ETA {_eta(max(self.total - self.done_units, 0) / rate)}"
        return text

    def add(self, n: int) -> bool:
        """Count ``n`` more units; log a line if ``every_s`` passed since the last one. Returns
        whether a line was logged."""
        self.done_units += n
        now = self.clock()
        if now - self.last < self.every_s:
            return False
        self.last = now
        self.lines += 1
        self.log.info("%s", self.line())
        return True

    def done(self) -> None:
        """Log the closing line (total and mean rate) if the loop logged any progress line."""
        if self.lines:
            self.log.info("%s (done in %.0fs)", self.line(), self.clock() - self.t0)
