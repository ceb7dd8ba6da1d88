"""Calibration of predictions made by a model trained on negatively down-sampled rows.

He, Pan, Jin et al., "Practical Lessons from Predicting Clicks on Ads at Facebook", ADKDD 2014,
section 6.3 "Model re-calibration"; the conversion head's variant is derived in docs/ranking.md,
"Calibration". numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CALIBRATION_FORMULA = "p_true = p / (p + (1 - p) / negative_downsample_rate) (dailyrec.ranking.calibration.calibrate)"
"""The formula as written into the ranking samples' manifest (``calibration``)."""


def calibrate(p: Any, rate: float) -> np.ndarray:
    """Undo negative down-sampling on a predicted click probability.

    A model trained on data where negatives were kept with probability ``rate`` (positives all
    kept) predicts ``p = q / (q + (1 - q) * rate)`` for a true probability ``q``; the inverse is
    ``q = p / (p + (1 - p) / rate)`` (He et al., "Practical Lessons from Predicting Clicks on Ads
    at Facebook", ADKDD 2014, section 6.3 "Model re-calibration").

    Args:
        p: predicted probabilities, any shape (array-like of floats in [0, 1]).
        rate: the negatives' keep probability, in (0, 1]; ``1`` returns ``p`` unchanged.
    Returns:
        float64 array of ``p``'s shape.
    Raises:
        ValueError: ``rate`` is not in (0, 1].
    """
    if not 0 < rate <= 1:
        raise ValueError(f"down-sample rate must be in (0, 1], got {rate!r}")
    p = np.asarray(p, dtype=np.float64)
    if rate == 1:
        return p
    return p / (p + (1.0 - p) / rate)


def calibrate_conversion(p_conversion: Any, p_click: Any, rate: float) -> np.ndarray:
    """Undo negative down-sampling on a predicted per-impression conversion probability.

    Conversions only follow clicks, so every conversion positive was kept, and the negatives
    dropped were non-click impressions: the down-sampled data over-represents conversions by
    ``1 / (c + (1 - c) * rate)`` where ``c`` is the true click probability of the row. With
    ``c = calibrate(p_click, rate)`` (``p_click`` the click head's raw prediction on the same
    row) the true conversion probability is ``p_conversion * (c + (1 - c) * rate)`` (the
    derivation is in docs/ranking.md, "Calibration").

    Args:
        p_conversion, p_click: raw predictions of the two heads on the same rows, same shape.
        rate: the negatives' keep probability, in (0, 1].
    Returns:
        float64 array of ``p_conversion``'s shape.
    Raises:
        ValueError: ``rate`` is not in (0, 1].
    """
    c = calibrate(p_click, rate)
    return np.asarray(p_conversion, dtype=np.float64) * (c + (1.0 - c) * rate)
