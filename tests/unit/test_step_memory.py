"""Per-stage and per-phase peak RSS in every step's manifest (dailyrec.memory, Timer, StepRun)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dailyrec import memory
from dailyrec.step import begin
from dailyrec.storage import Timer

pytestmark = pytest.mark.unit

MB = 2**20


def _touch(n_mb: int) -> np.ndarray:
    """``n_mb`` MB of resident memory (every page written)."""
    a = np.empty(n_mb * MB, dtype=np.uint8)
    a[::4096] = 1
    a.fill(1)
    return a


def test_a_phase_that_allocates_200_mb_shows_200_mb_more(cfg, caplog):
    run = begin("memory_probe", "2026-11-01", cfg)
    with run.timer.step("idle"):
        sum(range(1000))
    with run.timer.step("alloc"):
        block = _touch(220)
        del block
    with run.timer.step("after"):
        sum(range(1000))
    with caplog.at_level(logging.INFO, logger="dailyrec.memory_probe"):
        man = run.manifest(inputs=[], rows={})

    peaks = man["peak_rss_mb"]
    assert set(peaks) == {"stage", "start", "phases", "method"}
    assert 0 < peaks["start"] <= peaks["stage"]
    assert set(peaks["phases"]) == {"idle", "alloc", "after"} == set(man["timings_s"])
    assert peaks["phases"]["alloc"] >= peaks["phases"]["idle"] + 200, peaks
    assert peaks["stage"] >= peaks["phases"]["alloc"], peaks
    if peaks["method"] == memory.METHOD_RESET:
        # the peak was reset when "after" started: the freed block is not in its figure
        assert peaks["phases"]["after"] <= peaks["phases"]["alloc"] - 150, peaks
    else:
        assert peaks["phases"]["after"] >= peaks["phases"]["alloc"], peaks
    line = [r.getMessage() for r in caplog.records if r.name == "dailyrec.memory_probe"]
    assert line and line[-1].startswith("memory_probe dt=2026-11-01: ") and "peak RSS" in line[-1], line
    assert "alloc" in line[-1] and " MB" in line[-1], line


def test_nested_phases_and_two_timers_keep_each_others_peaks():
    outer = Timer()
    with outer.step("outer"):
        block = _touch(200)
        del block
        inner = Timer()                   # a second timer (resets the peak) inside a phase
        with inner.step("inner"):
            sum(range(1000))
    assert outer.peaks_mb["outer"] >= inner.peaks_mb["inner"] + 150 or memory.method() != memory.METHOD_RESET
    assert outer.stage_peak_mb() >= outer.peaks_mb["outer"]
    assert outer.peaks_mb["outer"] >= 200


def test_peak_reads_are_positive_and_the_method_is_named():
    assert memory.peak_rss_mb() > 0
    assert memory.method() in (memory.METHOD_RESET, memory.METHOD_VMHWM, memory.METHOD_RUSAGE)
    assert memory.reset_peak() == (memory.method() == memory.METHOD_RESET)
