"""The demo generator's model parameters that are not (yet) in ``DemoConfig``, and its stream tags.

Every value here is recorded in the manifests through :func:`knobs` (the main ones) and the
generator version; changing one changes the generated data (bump :data:`GENERATOR_VERSION`).
See docs/demo-data.md for what each one models.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

GENERATOR_VERSION = 2
"""2: intra-day dynamics (items born during the day with a popularity burst; hourly interest drift)."""

CTR_TARGET = 0.17
"""Average click-through rate of a day (Avazu: ~0.17)."""
CTR_DAILY_JITTER = 0.03
"""Relative day-to-day noise of the CTR target (the day's target is CTR_TARGET * (1 + N(0, .)))."""
CVR_TARGET = 0.06
"""Average conversion rate after a click."""
ITEM_MEAN_LIFETIME_DAYS = 30.0
"""Mean lifetime of an item; new items per day = n_items / ITEM_MEAN_LIFETIME_DAYS (steady catalog)."""
ITEM_MIN_LIFETIME_DAYS = 3
"""An item stays live at least this many days (lifetime = this + an exponential)."""
ZIPF_EXPONENT = 0.9
"""Item popularity ~ rank^-s (weights u^-s, u uniform)."""
FRESH_BOOST = 1.5
FRESH_DECAY_DAYS = 2.0
"""Exposure boost of new items: popularity * (1 + FRESH_BOOST * exp(-age_days / FRESH_DECAY_DAYS))."""
POPULAR_SHARE = 0.35
"""Share of impressions drawn from global popularity (the rest from the user's categories)."""
USER_PREF_CONCENTRATION = 1.0
"""Total Dirichlet concentration of a user's category preference (small = sparse, few categories)."""
USER_PREF_FLOOR = 0.02
"""Share of a user's preference spread uniformly over all categories (exploration)."""
AFFINITY_WEIGHT = 0.8
AFFINITY_EPS = 0.15
N_SEGMENTS = 8
# Intra-day dynamics (dailyrec.demo.dynamics): freshness matters to a model updated every hour.
BIRTH_SHARE = 0.6
"""Share of a day's new items born DURING the day (birth hour in BIRTH_HOURS); the others are born at 00:00."""
BIRTH_HOURS = (1, 21)
"""Inclusive range of the birth hours of the items born during the day (uniform)."""
BURST_BOOST = 4.0
BURST_DECAY_HOURS = 3.0
"""Exposure of an item on its creation day, hour h >= birth hour b: its daily weight (popularity x fresh
boost) * (1 + BURST_BOOST * exp(-(h - b) / BURST_DECAY_HOURS)); zero before b."""
TREND_HOURS = 4
"""A segment's trending category changes every TREND_HOURS hours (smooth crossfade between slots)."""
TREND_SHARE = 0.2
"""Share of the preference-driven impressions that go to the segment's trending category of the hour."""
TREND_LOGIT = 1.0
"""Click-logit bonus of the trending category (times its current intensity, 0..1)."""
N_SITES = 400
N_APPS = 400
N_DEVICE_MODELS = 600

# Hour-of-day traffic shape (UTC, arbitrary units) and the CTR effect of the hour (logit).
DIURNAL = np.array([0.55, 0.40, 0.30, 0.25, 0.25, 0.32, 0.50, 0.75, 0.95, 1.00, 1.00, 1.05,
                    1.15, 1.10, 1.00, 1.00, 1.05, 1.15, 1.30, 1.45, 1.55, 1.50, 1.20, 0.85])
HOUR_LOGIT = (0.12 * np.cos(2 * np.pi * (np.arange(24) - 21) / 24)).astype(np.float32)
# banner_pos: Avazu is almost only 0 and 1; deeper positions are rarer and click less.
BANNER_POS_P = np.array([0.72, 0.26, 0.005, 0.005, 0.004, 0.003, 0.002, 0.001])
POS_LOGIT = np.array([0.0, 0.12, -0.35, -0.45, -0.55, -0.65, -0.75, -0.85], dtype=np.float32)
# C15 x C16 banner sizes.
BANNER_SIZES = np.array([[320, 50], [300, 250], [728, 90], [216, 36], [300, 50], [480, 320]], dtype=np.int32)
BANNER_SIZE_P = np.array([0.93, 0.035, 0.02, 0.008, 0.005, 0.002])
C18_P = np.array([0.42, 0.07, 0.15, 0.36])
C19_VALUES = np.array([35, 39, 161, 163, 167, 175, 297, 303, 431, 687, 1063, 1327], dtype=np.int32)
C21_VALUES = np.array([23, 32, 33, 42, 46, 48, 51, 52, 61, 69, 71, 79, 91, 100, 117, 157, 159,
                       171, 204, 212, 221, 229], dtype=np.int32)
# Avazu's placeholder values of the site columns on app traffic and of the app columns on web.
NULL_SITE = ("85f751fd", "c4e18dd6", "50e219e0")
NULL_APP = ("ecad2386", "7801e8d9", "07d7df22")
UNKNOWN_DEVICE_ID = "a99f214a"

# Tags of the random streams: numpy.random.default_rng([seed, TAG, ...]) (see dailyrec.demo.sampling.rng).
TAG_USERS, TAG_ITEMS, TAG_DAY, TAG_CONTEXT, TAG_PUBLISHERS, TAG_CLICK = 1, 2, 3, 4, 5, 6
TAG_BIRTH, TAG_TREND = 7, 8
US_PER_HOUR = 3_600_000_000
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def knobs() -> dict[str, Any]:
    """The module-level generator parameters (recorded in every manifest)."""
    return {
        "ctr_target": CTR_TARGET, "cvr_target": CVR_TARGET,
        "item_mean_lifetime_days": ITEM_MEAN_LIFETIME_DAYS, "item_min_lifetime_days": ITEM_MIN_LIFETIME_DAYS,
        "zipf_exponent": ZIPF_EXPONENT, "popular_share": POPULAR_SHARE,
        "user_pref_concentration": USER_PREF_CONCENTRATION, "affinity_weight": AFFINITY_WEIGHT,
        "fresh_boost": FRESH_BOOST, "birth_share": BIRTH_SHARE, "birth_hours": list(BIRTH_HOURS),
        "burst_boost": BURST_BOOST, "burst_decay_hours": BURST_DECAY_HOURS, "trend_hours": TREND_HOURS,
        "trend_share": TREND_SHARE, "trend_logit": TREND_LOGIT, "generator_version": GENERATOR_VERSION,
    }
