"""The pipeline's exception types (light module: DAG files reference them at parse time)."""

from __future__ import annotations


class ContractError(ValueError):
    """Input data breaks the log contract. The message names partition, file and column."""


class GateRejected(RuntimeError):
    """A trained model did not pass the evaluation gate and must not be published."""


class RecallTooLow(ValueError):
    """The FAISS index's recall@K against exact search is below ``index.min_recall_at_k``."""


class NothingToEvaluate(ValueError):
    """A day too sparse to evaluate: its holdout (the last ``training.holdout_hours`` hours) has no
    rows or no clicks. ``evaluate_gate`` fails with it (not retried), so the run fails and nothing is
    published; the message names the holdout file and the config key (docs/scheduling.md)."""


class WarmStartError(ContractError):
    """The warm-start model (an earlier day's ``model.keras``) cannot be read. The message names the
    file and the cause; bad input like a broken log, so a retry would fail the same way."""


class DistributedTrainingError(RuntimeError):
    """A worker of a distributed training task (``training.distribute``, ``dailyrec.distributed``)
    failed, was killed or could not start. The message names the worker, how it ended (exit code or
    signal) and its log; every other worker process was stopped. Retried like any transient failure."""


class MissingPassError(FileNotFoundError):
    """A pass of the hourly chain cannot start: the pass before it (or, for a day's first pass, the
    daily base of the day before) is missing and will not come (its run failed, or there is none).
    A missing hour stops the chain: no pass skips data (docs/hourly.md). The message names the
    missing pass ``(cur_date, hour)`` or base and what to run. Not retried (the run fails at once)."""
