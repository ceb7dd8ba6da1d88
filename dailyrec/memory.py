"""Peak resident memory (RSS) of this process over spans of a step: the stage and its timed phases.

:class:`PeakMeter` is what :class:`dailyrec.storage.Timer` uses: every step's ``_manifest.json``
records ``peak_rss_mb = {"stage": MB, "phases": {phase: MB}, "method": ...}`` beside its
``timings_s`` (both describe the run, not the output: they are volatile keys, see
docs/storage.md), and the step's summary line logs them.

How it is measured (``method``):

* ``"VmHWM, reset per phase"`` (Linux, the normal case): ``VmHWM`` of ``/proc/self/status`` is the
  process's peak RSS; writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0) resets it to the
  current RSS. A meter resets it when it starts and when a phase starts, after folding the peak
  so far into every open span of every live meter: so a phase's figure is the peak between its
  start and its end, and the stage's figure the peak since the meter started, even when many
  tasks run one after the other in one process (``airflow dags test`` runs them in-process).
* ``"VmHWM, process lifetime"``: ``clear_refs`` is not writable (some containers, seccomp or
  ``/proc`` mounted read-only): nothing is reset, and every figure is the process's peak since
  it started, as of the end of the span (an upper bound of the span's own peak).
* ``"ru_maxrss, process lifetime"``: no ``/proc`` (macOS, BSD): ``resource.getrusage`` maxrss,
  the process's lifetime peak, with the same caveat. Note that on Linux a child's ``ru_maxrss``
  starts from its parent's RSS at ``fork``, which is why ``VmHWM`` is preferred.

Figures are MB (2**20 bytes), one decimal. Light module: standard library only.
"""

from __future__ import annotations

import itertools
import resource
import sys
import threading
import weakref
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
METHOD_RESET = "VmHWM, reset per phase"
METHOD_VMHWM = "VmHWM, process lifetime"
METHOD_RUSAGE = "ru_maxrss, process lifetime"

_LOCK = threading.RLock()
_LIVE: weakref.WeakSet[PeakMeter] = weakref.WeakSet()
_CAN_RESET: bool | None = None


def _status_kb(key: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """The process's peak RSS in MB: ``VmHWM`` (since the last reset), else ``ru_maxrss``."""
    kb = _status_kb("VmHWM")
    if kb is None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, kB elsewhere
    return round(kb / 1024, 1)


def rss_mb() -> float | None:
    """The process's current RSS (``VmRSS``) in MB, or ``None`` without ``/proc``."""
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024, 1)


def can_reset() -> bool:
    """Whether this process can reset its ``VmHWM`` (tried once: writes ``5`` to ``clear_refs``)."""
    global _CAN_RESET
    if _CAN_RESET is None:
        _CAN_RESET = _status_kb("VmHWM") is not None and _write_clear_refs()
    return _CAN_RESET


def _write_clear_refs() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def method() -> str:
    """How the figures of this process are measured (see the module doc)."""
    if _status_kb("VmHWM") is None:
        return METHOD_RUSAGE
    return METHOD_RESET if can_reset() else METHOD_VMHWM


def _fold_all() -> float:
    """Read the peak and fold it into every open span of every live meter; returns it."""
    now = peak_rss_mb()
    for meter in list(_LIVE):
        meter._fold(now)
    return now


def reset_peak() -> bool:
    """Fold the peak so far into every live meter, then reset ``VmHWM`` to the current RSS.

    Returns ``False`` (and resets nothing) where that is not allowed (see the module doc)."""
    with _LOCK:
        _fold_all()
        return can_reset() and _write_clear_refs()


class PeakMeter:
    """Peak RSS (MB) of the process since the meter started and over nested spans.

    ``open()`` starts a span (resetting ``VmHWM``, see the module doc) and returns its token;
    ``close(token)`` ends it and returns its peak in MB; :attr:`stage_mb` (a property) is the peak
    since the meter was created, :attr:`start_mb` the RSS when it was created (what the process
    already held: interpreter, libraries, an Airflow task runner). Spans may nest and overlap; several meters may live at once (each
    reset first folds the peak so far into all of them). Thread-safe.
    """

    def __init__(self) -> None:
        self._open: dict[int, float] = {}
        self._tokens = itertools.count()
        with _LOCK:
            _LIVE.add(self)
            reset_peak()
            self._stage = peak_rss_mb()
            self.start_mb = self._stage if can_reset() else (rss_mb() or self._stage)

    def _fold(self, now: float) -> None:
        self._stage = max(getattr(self, "_stage", now), now)
        for k, v in self._open.items():
            self._open[k] = max(v, now)

    def open(self) -> int:
        with _LOCK:
            reset_peak()
            token = next(self._tokens)
            self._open[token] = peak_rss_mb()
            return token

    def close(self, token: int) -> float:
        with _LOCK:
            _fold_all()
            return self._open.pop(token)

    @property
    def stage_mb(self) -> float:
        with _LOCK:
            _fold_all()
            return self._stage
