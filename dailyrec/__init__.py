"""dailyrec: the library of the daily/hourly recommender pipeline.

Organised by the pipeline's nouns (docs/architecture.md): config and the step prologue, the log
contract and a day's events, sampling, model inputs and training helpers, embeddings and the FAISS
index, the Redis publishing layout, the model registry, serving and scoring, reports, and the
tools (importers, demo). The steps under ``tasks/`` are thin calls into it.

Importing this package is light (no TensorFlow, FAISS, pandas or numpy): DAG files use
``dailyrec.dag_tasks`` and ``dailyrec.runctx`` at parse time.
"""

__version__ = "0.1.0"
