"""Quiet start-up for Airflow tasks: a healthy run's task logs have no ERROR line.

Airflow 3's task supervisor logs every line a task writes to **stderr** at level ERROR. TensorFlow's
C++ start-up lines (CPU features, oneDNN, absl's "before InitializeLog" notice) and Python
``warnings`` go to stderr, so without this each training task showed a few red "errors".
:func:`quiet_startup` (called by every task of :mod:`dailyrec.dag_tasks` before a stage runs):

* ``TF_CPP_MIN_LOG_LEVEL=2`` unless set (C++ INFO and WARNING lines off; real C++ errors still show);
* Python ``warnings`` go to the logging system (logger ``py.warnings``, level WARNING) instead of stderr;
* the ``absl``, ``tensorflow`` and ``faiss.loader`` loggers log WARNING and above only.
"""

from __future__ import annotations

import logging
import os

NOISY_LOGGERS = ("absl", "tensorflow", "faiss.loader", "h5py")


def quiet_startup() -> None:
    """Route TensorFlow / absl start-up chatter below WARNING and warnings into logging (idempotent;
    call it before TensorFlow is imported for the C++ part to apply)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.captureWarnings(True)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
