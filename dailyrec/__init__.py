"""dailyrec: the small shared package of the daily recommender pipeline.

Config, storage paths and atomic writes, the log contract, dates and the Redis connection.
Importing this package is light (no TensorFlow, FAISS, pandas or numpy): DAG files use it at
parse time.
"""

__version__ = "0.1.0"
