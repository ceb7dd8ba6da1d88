"""dailyrec: the library of the daily/hourly recommender pipeline.

Organised by the pipeline's nouns (docs/architecture.md): config and the step prologue, the log
contract and a day's events, sampling, model inputs and training helpers, embeddings and the FAISS
index, the Redis publishing layout, the model registry, serving and scoring, reports, and the
tools (importers, demo). The steps under ``tasks/`` are thin calls into it.

Importing this package is light (no TensorFlow, FAISS, pandas or numpy): DAG files use
``dailyrec.dag_tasks`` and ``dailyrec.runctx`` at parse time.
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up lines (absl, oneDNN) go to stderr, which Airflow's task supervisor logs
# as ERROR; they are only silenced when this is set before TensorFlow loads. Every task imports this
# package first, so set it here too, not only in dailyrec.logs.quiet_startup (a user's value wins).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
