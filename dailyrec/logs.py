"""Quiet start-up for Airflow tasks: a healthy run's task logs have no ERROR line.

Airflow 3's task supervisor logs every line a task writes to **stderr** at level ERROR. TensorFlow's
C++ start-up lines (CPU features, oneDNN, absl's "before InitializeLog" notice) and Python
``warnings`` go to stderr, so without this each training task showed a few red "errors".
:func:`quiet_startup` (called by every task of :mod:`dailyrec.dag_tasks` before a stage runs):

* ``TF_CPP_MIN_LOG_LEVEL=2`` unless set (C++ INFO and WARNING lines off; real C++ errors still show);
* Python ``warnings`` go to the logging system (logger ``py.warnings``, level WARNING) instead of stderr;
* the ``absl``, ``tensorflow`` and ``faiss.loader`` loggers log WARNING and above only;
* the first ``import tensorflow`` runs with file descriptor 2 captured (:class:`QuietTensorFlowImport`):
  TensorFlow 2.21 writes its oneDNN notice and absl's "before InitializeLog" line straight to fd 2
  while it loads, whatever ``TF_CPP_MIN_LOG_LEVEL`` says (measured: the lines appear with level 3
  too), so the captured output is written back without the lines matching :data:`TF_CHATTER`.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from typing import Any

NOISY_LOGGERS = ("absl", "tensorflow", "faiss.loader", "h5py")
TF_CHATTER = re.compile(r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|"
                        r"rebuild TensorFlow with the appropriate compiler flags")
"""TensorFlow's start-up lines on fd 2 that :class:`QuietTensorFlowImport` drops (nothing else)."""


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` with fd 2 sent to a temporary file, then writes the
    file's lines back to fd 2 except :data:`TF_CHATTER` (a real error during the import still shows)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                self.inner.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                kept = [ln for ln in tmp.read().splitlines(keepends=True)
                        if not TF_CHATTER.search(ln.decode(errors="replace"))]
                if kept:
                    os.write(2, b"".join(kept))


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` hook for the first ``import tensorflow`` of the process (then it removes
    itself): its module is loaded by :class:`_QuietLoader`. Installing it costs nothing when the
    task never imports TensorFlow."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        self.remove()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec

    @classmethod
    def install(cls) -> None:
        """Add the hook once, unless TensorFlow is already imported."""
        if "tensorflow" not in sys.modules and not any(isinstance(f, cls) for f in sys.meta_path):
            sys.meta_path.insert(0, cls())

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def quiet_startup() -> None:
    """Route TensorFlow / absl start-up chatter below WARNING and warnings into logging (idempotent;
    call it before TensorFlow is imported for the C++ part to apply)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    QuietTensorFlowImport.install()
    logging.captureWarnings(True)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
