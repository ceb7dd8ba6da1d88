"""The pipeline's exception types (light module: DAG files reference them at parse time)."""

from __future__ import annotations


class ContractError(ValueError):
    """Input data breaks the log contract. The message names partition, file and column."""


class GateRejected(RuntimeError):
    """A trained model did not pass the evaluation gate and must not be published."""


class RecallTooLow(ValueError):
    """The FAISS index's recall@K against exact search is below ``index.min_recall_at_k``."""


class WarmStartError(ContractError):
    """The warm-start model (an earlier day's ``model.keras``) cannot be read. The message names the
    file and the cause; bad input like a broken log, so a retry would fail the same way."""
