"""Synthetic ranking rows for tests and throughput checks (numpy only, no TensorFlow).

Not for model quality claims: the labels follow a hidden per-value score, so any model that can
memorise per-value effects learns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def synthetic_ranking_data(specs: list[Any], n: int, seed: int = 0,
                           vocabularies: Mapping[str, list[str]] | None = None,
                           id_cardinality: int = 500) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Learnable synthetic rows for tests and throughput checks (not for model quality claims).

    Each feature takes values from a small set (vocabulary ids when given, else ``id_cardinality``
    strings ``"<name>_<i>"`` / integers ``0..buckets``); every value carries a hidden random
    score, ``click ~ Bernoulli(sigmoid(sum of scores - 1))`` and ``conversion`` = click and a
    second Bernoulli driven by another score. Returns ``(features [n], labels [n])``.
    """
    rng = np.random.default_rng(seed)
    feats: dict[str, np.ndarray] = {}
    s_click = np.zeros(n)
    s_conv = np.zeros(n)
    for s in (x.model_dump() if hasattr(x, "model_dump") else dict(x) for x in specs):
        name = s["name"]
        if s.get("dtype", "string") == "string":
            vocab = (vocabularies or {}).get(name) or [f"{name}_{i}" for i in range(id_cardinality)]
            idx = rng.integers(0, len(vocab), size=n)
            feats[name] = np.asarray(vocab, dtype=object)[idx]
            card = len(vocab)
        else:
            card = int(s["buckets"])
            idx = rng.integers(0, card, size=n)
            feats[name] = idx.astype(np.int64)
        s_click += rng.normal(0, 0.6, size=card)[idx]
        s_conv += rng.normal(0, 0.6, size=card)[idx]
    p_click = 1 / (1 + np.exp(-(s_click - 1.0)))
    click = (rng.random(n) < p_click).astype(np.float32)
    p_conv = 1 / (1 + np.exp(-(s_conv + 0.5 * s_click - 0.5)))
    conv = click * (rng.random(n) < p_conv).astype(np.float32)
    return feats, {"click": click, "conversion": conv}
