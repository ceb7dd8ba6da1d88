"""Retrieval sample selection: positives, negatives of several sources, holdout (the maths of the
``tasks.retrieval.sample`` stage). See docs/features-and-sampling.md.

Inputs: the hourly logs of the last ``sampling.window_days`` days up to ``cur_date``, the users
snapshot of ``cur_date`` and ``features/dt=D/catalog.parquet``. The heavy lifting is DuckDB SQL
(``sql/sample_*.sql``) and vectorised numpy; no per-row Python.

* training window: the window minus the last ``training.holdout_hours`` hours of ``cur_date``;
  ``holdout.parquet`` holds the clicks of those hours (user features + context + item_id).
* positives (:mod:`.positives`): the window's clicks on catalog items, hot items down-sampled
  (word2vec keep probability ``min(1, sqrt(t/f) + t/f)``, ``f`` = the item's share of the clicks,
  ``t = sampling.positive_subsample_t``) and/or capped per item (``positive_cap_per_item``).
* random negatives (:mod:`.negatives`): ``negatives_per_positive`` per positive from the whole
  catalog with ``q_j ∝ (clicks_j + 1) ** popularity_alpha`` (clicks in the training window; the +1
  floor keeps cold items drawable), never an item the user clicked in the window (collisions
  resampled, the rest dropped); ``log_q = log q_j``.
* hard negatives (``sampling.hard_negative_sources``, ``hard_negatives_per_positive`` each):
  ``exposed`` (impressed to the user, never clicked), ``same_category`` (a uniform catalog item
  of the positive's category the user did not click), ``model`` (:mod:`.model`:
  :func:`model_hard_negatives` on the previous model's vectors, :class:`ModelVectors`; skipped
  with a warning when there are none).

Output (atomic, :mod:`.output`: streamed one row group at a time), ``samples/dt=D/``: ``train.parquet``, ``holdout.parquet``, ``seen.parquet`` (the
distinct user/item clicks of the training window, before down-sampling), ``_manifest.json``
(with per-source statistics). Deterministic under ``(sampling.seed, cur_date)``.
"""

from dailyrec.sampling.model import ModelVectors, model_hard_negatives, previous_model_vectors
from dailyrec.sampling.select import SOURCES, select_samples

__all__ = ["SOURCES", "ModelVectors", "model_hard_negatives", "previous_model_vectors", "select_samples"]
