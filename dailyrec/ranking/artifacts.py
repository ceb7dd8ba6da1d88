"""Where a trained ranking model's files live inside its ``models/mmoe/dt=D`` folder, and the
negative down-sample rate it was trained with (its manifest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dailyrec.ranking import BASELINE

if TYPE_CHECKING:
    from dailyrec.storage import Store

KERAS_DIR = "model"
SAVED_MODEL_DIR = "saved_model"


def artifact_dirs(root: str, role: str = "main") -> tuple[str, str]:
    """(Keras model dir, SavedModel dir) inside a ``models/mmoe/dt=D`` folder: ``role`` "main" is
    the model that is evaluated and published, "baseline" the shared-bottom comparison.

    Raises:
        ValueError: ``role`` is neither "main" nor "baseline".
    """
    if role not in ("main", "baseline"):
        raise ValueError(f"role must be 'main' or 'baseline', got {role!r}")
    base = root if role == "main" else f"{root}/{BASELINE}"
    return f"{base}/{KERAS_DIR}", f"{base}/{SAVED_MODEL_DIR}"


def model_rate(store: Store, mdir: str) -> float:
    """The negative down-sample rate a model was trained with (its manifest; 1 when absent)."""
    from dailyrec.storage import MANIFEST

    man = store.read_json(f"{mdir}/{MANIFEST}")
    return float(man.get("negative_downsample_rate", 1.0))
