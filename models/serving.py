"""Raw features in, model outputs out: the one dtype rule, SavedModel export and loading.

Both models (the two-tower towers and the MMoE ranker) take raw feature values and are served
through the same mechanism:

* :func:`tf_dtype` -- THE dtype rule: a feature whose spec has ``dtype == "int"`` (which the config
  validator ties to ``kind == "int"``) is ``tf.int64``, ``dtype == "float"`` (``kind == "numeric"``)
  is ``tf.float32`` (NaN = missing), every other feature is ``tf.string``.
* :func:`input_signature` / :func:`dummy_features` -- the ``[None]`` raw-feature signature and a
  placeholder batch of a spec list (used to build models).
* :func:`string_array` / :func:`raw_column` -- numpy level: one raw column -> the array fed to
  TensorFlow (``tf.data`` pipelines in ``dailyrec.inputs`` use them).
* :func:`to_tensors` -- tensor level: ``{name: array-like[B]}`` -> ``{name: Tensor[B]}`` cast to a
  signature (extra keys ignored, a missing key raises ``KeyError``).
* :func:`export_model` -- a SavedModel (``keras.export.ExportArchive``, each variable stored once)
  whose ``serving_default`` takes one ``[None]`` tensor per raw feature; :func:`export_tower` /
  :func:`export_towers` (outputs ``{"embedding": float32[B, D]}``; a tower also has the
  :data:`IDS_SIGNATURE` endpoint on int64 row ids) and :func:`export_ranking_model` (outputs
  ``{task: float32[B]}``).
* :class:`LoadedModel` -- one loaded SavedModel, callable on numpy/lists/tensors in batches;
  :func:`load_tower` (returns the ``embedding`` array) and :func:`load_ranking_model` (returns
  ``{task: array}``).
* :func:`save_keras` / :func:`load_keras` -- the whole Keras model (``<dir>/model.keras``) for warm
  start.

This module never imports Airflow, storage or Redis.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from models.ranking import RankingModel
    from models.two_tower import TwoTowerModel, _Tower

KERAS_FILE = "model.keras"
SIGNATURE = "serving_default"
IDS_SIGNATURE = "embed_ids"
"""A tower SavedModel's second endpoint: the same tower on pre-encoded ``int64`` row ids
(``dailyrec.stream.IdEncoder``) instead of raw values, for batch jobs that encode on the Arrow side."""
EMBEDDING = "embedding"

Signature = Mapping[str, tf.TensorSpec]


# --------------------------------------------------------------------------------------------
# The dtype rule
# --------------------------------------------------------------------------------------------


def _spec_dict(spec: Any) -> Mapping[str, Any]:
    return spec.model_dump() if hasattr(spec, "model_dump") else spec


def feature_dtype(spec: Any) -> str:
    """The one dtype rule of raw feature values: ``"int"``, ``"float"`` or ``"string"``.

    ``spec``: a ``FeatureSpec`` or its dict. ``dtype`` decides; a dict without ``dtype`` falls back
    on ``kind`` (``dailyrec.config.FeatureSpec`` requires ``kind == "int"`` <=> ``dtype == "int"``
    and ``kind == "numeric"`` <=> ``dtype == "float"``).
    """
    s = _spec_dict(spec)
    return s.get("dtype") or {"int": "int", "numeric": "float"}.get(s.get("kind"), "string")


def tf_dtype(spec: Any) -> tf.DType:
    """``tf.int64`` for an ``int`` feature (:func:`feature_dtype`), ``tf.float32`` for a ``float``
    (``numeric``) one, ``tf.string`` for every other one."""
    return {"int": tf.int64, "float": tf.float32}.get(feature_dtype(spec), tf.string)


def input_signature(specs: Sequence[Any]) -> dict[str, tf.TensorSpec]:
    """``{name: tf.TensorSpec([None], tf_dtype(spec), name=name)}``: the raw-feature signature."""
    out = {}
    for spec in specs:
        name = _spec_dict(spec)["name"]
        out[name] = tf.TensorSpec([None], tf_dtype(spec), name=name)
    return out


def ids_signature(specs: Sequence[Any]) -> dict[str, tf.TensorSpec]:
    """``{name: tf.TensorSpec([None], tf.int64, name=name)}``: every feature as embedding-table row
    ids (``dailyrec.stream.IdEncoder``), the input of a tower's :data:`IDS_SIGNATURE` endpoint; a
    ``numeric`` feature stays ``tf.float32`` (its raw value: it has no table)."""
    out = {}
    for s in specs:
        name = _spec_dict(s)["name"]
        out[name] = tf.TensorSpec([None], tf.float32 if tf_dtype(s) == tf.float32 else tf.int64, name=name)
    return out


def dummy_features(specs: Sequence[Any], batch: int = 2) -> dict[str, tf.Tensor]:
    """``{name: Tensor[batch]}`` of placeholder raw values (``""`` / 0 / 0.0), used to build models."""
    out: dict[str, tf.Tensor] = {}
    for spec in specs:
        name, dtype = _spec_dict(spec)["name"], tf_dtype(spec)
        out[name] = tf.fill([batch], "") if dtype == tf.string else tf.zeros([batch], dtype)
    return out


def _signature(specs_or_signature: Signature | Sequence[Any]) -> Signature:
    if isinstance(specs_or_signature, Mapping):
        return specs_or_signature
    return input_signature(specs_or_signature)


# --------------------------------------------------------------------------------------------
# Raw values -> arrays / tensors
# --------------------------------------------------------------------------------------------


def string_array(values: Any) -> np.ndarray:
    """Any column -> an array ``tf.constant`` turns into ``tf.string``: ``str``/``bytes`` arrays
    are returned as they are (bytes stay bytes), anything else goes through ``str`` element-wise
    (``5 -> "5"``, ``1.5 -> "1.5"``)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "SU":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(v, (str, bytes)) for v in arr.ravel()):
        return arr
    return np.array([str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)


def float_array(values: Any) -> np.ndarray:
    """A numeric column -> ``float32`` array, ``None`` (and NaN) -> NaN, the missing value of a
    ``numeric`` feature. Raises ``ValueError`` for a value that is not a number."""
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        arr = np.array([np.nan if v is None else v for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)
    return arr.astype(np.float32)


def raw_column(values: Any, dtype: tf.DType | None = None) -> np.ndarray:
    """One raw feature column -> the numpy array to feed TensorFlow.

    ``dtype`` ``tf.string``: :func:`string_array`; ``tf.int64``: ``astype(int64)``; ``tf.float32``:
    :func:`float_array`; ``None`` (no spec known): strings/objects -> :func:`string_array`,
    integers -> int64, anything else (floats, bools) unchanged.
    """
    if dtype == tf.float32:
        return float_array(values)
    arr = np.asarray(values)
    if dtype == tf.string or (dtype is None and arr.dtype.kind in "OUS"):
        return string_array(arr)
    if dtype == tf.int64 or arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return arr


def to_tensor(value: Any, dtype: tf.DType, rank: int | None = 1) -> tf.Tensor:
    """One raw value column (tensor, numpy array, list) -> a ``[B]`` tensor of ``dtype`` (``rank``
    2: a ``[B, N]`` matrix kept as it is, e.g. the user history ``history_item_ids``).

    Strings: tensors of another dtype through ``tf.strings.as_string``, other values through
    :func:`string_array`. Integers: ``tf.cast`` (floats truncate; strings raise
    ``tf.errors.UnimplementedError``). Floats (``numeric`` features): :func:`float_array` (``None``
    -> NaN, the missing value).
    """
    if tf.is_tensor(value):
        if value.dtype != dtype:
            value = tf.strings.as_string(value) if dtype == tf.string else tf.cast(value, dtype)
    elif dtype == tf.string:
        value = tf.constant(string_array(value))
    elif dtype == tf.float32:
        value = tf.constant(float_array(value))
    else:
        value = tf.cast(value, dtype)
    return value if rank == 2 else tf.reshape(value, [-1])


def to_tensors(features: Mapping[str, Any], specs_or_signature: Signature | Sequence[Any],
               where: str = "") -> dict[str, tf.Tensor]:
    """``{name: array-like[B]}`` -> ``{name: Tensor[B]}`` for every input of the signature.

    ``specs_or_signature``: ``{name: tf.TensorSpec}`` or a list of feature specs. Extra keys are
    ignored. Raises ``KeyError`` naming the missing feature(s) (prefixed by ``where``).
    """
    sig = _signature(specs_or_signature)
    missing = [n for n in sig if n not in features]
    if missing:
        prefix = f"{where}: " if where else ""
        raise KeyError(f"{prefix}missing input feature(s) {missing}; got {sorted(features)}")
    return {name: to_tensor(features[name], spec.dtype, spec.shape.rank) for name, spec in sig.items()}


def row_batches(features: Mapping[str, Any], batch_size: int) -> Iterator[dict[str, Any]]:
    """Consecutive row slices ``{name: values[start:start + batch_size]}`` (one, empty, for 0 rows)."""
    n = len(next(iter(features.values())))
    for start in range(0, max(n, 1), batch_size):
        yield {k: v[start:start + batch_size] for k, v in features.items()}


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_model(model: keras.Model, directory: str | os.PathLike[str], signature: Signature,
                 serve: Callable[[dict[str, Any]], dict[str, Any]],
                 extra_endpoints: Mapping[str, tuple[Signature, Callable[[dict[str, Any]], dict[str, Any]]]]
                 | None = None) -> str:
    """Write ``model`` as a SavedModel at ``directory`` with the endpoint ``serving_default``.

    ``signature``: ``{name: tf.TensorSpec([None], ...)}`` (see :func:`input_signature`); ``serve``:
    ``{name: Tensor[B]} -> {output: Tensor}``, traced by ``keras.export.ExportArchive``.
    ``extra_endpoints``: ``{endpoint name: (signature, fn)}`` written as further signatures over the
    same variables. Written by :func:`models.savedmodel.write_savedmodel`: each variable stored once
    (the directory is about the variables' bytes plus the graph), the same bytes for the same
    weights. Returns the directory.
    """
    from models.savedmodel import write_savedmodel

    return write_savedmodel(model, directory, {SIGNATURE: (signature, serve), **(extra_endpoints or {})})


def export_tower(tower: "_Tower", path: str | os.PathLike[str]) -> str:
    """Write ``tower`` as a SavedModel at ``path``.

    Signatures: ``serving_default``: raw values ``{feature: [None]}`` (``tf.string`` / ``tf.int64``
    by :func:`tf_dtype`) -> ``{"embedding": float32[None, D]}``; :data:`IDS_SIGNATURE`
    (``embed_ids``): ``{feature: int64[None]}`` row ids of each feature's embedding table
    (``dailyrec.stream.IdEncoder``) -> the same ``{"embedding": float32[None, D]}``. A user tower
    with a history (``models.history``) also takes ``history_item_ids``: ``tf.string[None, None]``
    (``""`` = padding) / ``int64[None, None]`` on ``embed_ids``.
    """

    def serve(features: dict[str, Any]) -> dict[str, Any]:
        return {EMBEDDING: tower(features, training=False)}

    return export_model(tower, path, tower.input_signature(), serve,
                        extra_endpoints={IDS_SIGNATURE: (tower.ids_signature(), serve)})


def export_towers(model: "TwoTowerModel", directory: str | os.PathLike[str]) -> dict[str, str]:
    """Export both towers: ``{"user_tower": <dir>/user_tower, "item_tower": <dir>/item_tower}``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {"user_tower": export_tower(model.user_tower, directory / "user_tower"),
            "item_tower": export_tower(model.item_tower, directory / "item_tower")}


def export_ranking_model(model: "RankingModel", directory: str | os.PathLike[str]) -> str:
    """Write a SavedModel whose ``serving_default`` takes raw features.

    Signature inputs: one ``tf.TensorSpec([None], tf.string | tf.int64)`` per feature, named after
    it; outputs ``{task: float32[B]}`` probabilities. Returns the directory.
    """
    tasks = list(model.tasks)

    def serve(features: dict[str, Any]) -> dict[str, Any]:
        out = model(features, training=False)
        return {t: tf.reshape(out[t], [-1]) for t in tasks}

    return export_model(model, directory, model.input_signature(), serve)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class LoadedModel:
    """A loaded :func:`export_model` SavedModel, callable on raw features.

    ``model({name: array-like[B]}, batch_size)`` -> ``{output: np.ndarray[B, ...]}``, or only the
    ``output`` array when the loader was given one (``load_tower``: ``float32[B, D]``). Inputs go
    through :func:`to_tensors` (cast to the signature, extra keys ignored, ``KeyError`` for a
    missing one) and run in slices of ``batch_size`` rows.

    ``signature``: the endpoint to call (default ``serving_default``; a tower also has
    :data:`IDS_SIGNATURE`); ``KeyError`` if the SavedModel has no such signature.

    Attributes: ``path``, ``signature``, ``signatures`` (every signature name of the SavedModel),
    ``input_signature`` (``{name: tf.TensorSpec}``), ``dtypes`` (``{name: tf.DType}``),
    ``feature_names`` (sorted), ``outputs`` (sorted output names; ``tasks`` is the same list for the
    ranker).
    """

    def __init__(self, path: str | os.PathLike[str], output: str | None = None, signature: str = SIGNATURE,
                 loaded: Any = None):
        self.path = str(path)
        self._loaded = loaded if loaded is not None else tf.saved_model.load(self.path)  # keeps resources alive
        self.signatures = sorted(self._loaded.signatures.keys())
        if signature not in self.signatures:
            raise KeyError(f"{self.path}: no signature {signature!r}; the SavedModel has {self.signatures}")
        self.signature = signature
        self._fn = self._loaded.signatures[signature]
        self.input_signature: dict[str, tf.TensorSpec] = dict(self._fn.structured_input_signature[1])
        self.dtypes: dict[str, tf.DType] = {k: v.dtype for k, v in self.input_signature.items()}
        self.feature_names = sorted(self.input_signature)
        self.outputs = sorted(self._fn.structured_outputs)
        if output is not None and output not in self.outputs:
            raise KeyError(f"{self.path}: no output {output!r}; the signature has {self.outputs}")
        self.output = output

    @property
    def tasks(self) -> list[str]:
        return self.outputs

    def endpoint(self, signature: str) -> "LoadedModel":
        """The same loaded SavedModel (no second load) called through another ``signature``."""
        return LoadedModel(self.path, output=self.output, signature=signature, loaded=self._loaded)

    def __call__(self, features: Mapping[str, Any], batch_size: int = 65536) -> Any:
        chunks: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        for part in row_batches(features, batch_size):
            out = self._fn(**to_tensors(part, self.input_signature, where=self.path))
            for k in self.outputs:
                chunks[k].append(out[k].numpy())
        result = {k: np.concatenate(v) for k, v in chunks.items()}
        return result[self.output] if self.output is not None else result


def load_tower(path: str | os.PathLike[str], signature: str = SIGNATURE) -> LoadedModel:
    """Load a tower written by :func:`export_tower` as a ``dict -> np.ndarray float32[B, D]`` callable
    (``signature``: ``serving_default``, raw values, or :data:`IDS_SIGNATURE`, int64 row ids)."""
    return LoadedModel(path, output=EMBEDDING, signature=signature)


def load_ranking_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load :func:`export_ranking_model` output; a ``dict -> {task: np.ndarray[B]}`` callable."""
    return LoadedModel(path)


# --------------------------------------------------------------------------------------------
# Whole Keras models (warm start)
# --------------------------------------------------------------------------------------------


def save_keras(model: keras.Model, directory: str | os.PathLike[str]) -> str:
    """Save the full Keras model (config, weights, optimizer state) to ``<directory>/model.keras``;
    returns that path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / KERAS_FILE
    model.save(str(path))
    normalise_archive(path)
    return str(path)


def _renumber_shared(obj: Any, ids: dict[int, int]) -> Any:
    """``shared_object_id`` values (Keras writes ``id(obj)``, a memory address) renumbered 1, 2, ...
    in order of appearance; the same object keeps one number, which is all the loader needs."""
    if isinstance(obj, dict):
        return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else _renumber_shared(v, ids))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_renumber_shared(v, ids) for v in obj]
    return obj


def normalise_archive(path: str | os.PathLike[str]) -> None:
    """Make a ``.keras`` zip depend on the model only: every entry gets the zip epoch as its time,
    ``metadata.json`` loses ``date_saved`` (Keras writes the wall clock into both and reads neither
    when loading) and ``config.json``'s ``shared_object_id`` memory addresses become 1, 2, ...; a
    re-run that trains the same weights then writes the same bytes (docs/storage.md)."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as zin:
        entries = [(i, zin.read(i)) for i in zin.infolist()]
    tmp = Path(f"{path}.tmp")
    with zipfile.ZipFile(tmp, "w") as zout:
        for info, data in entries:
            if info.filename == "metadata.json":
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "date_saved"}).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared(json.loads(data), {})).encode()
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data,
                          compress_type=info.compress_type)
    tmp.replace(path)


def load_keras(path: str | os.PathLike[str], compile: bool = True, expect: type | None = None) -> Any:
    """Load :func:`save_keras` output (its directory or the ``.keras`` file itself).

    ``expect``: raise ``TypeError`` unless the loaded model is an instance of this class.
    """
    p = Path(path)
    if p.suffix != ".keras":
        p = p / KERAS_FILE
    model = keras.saving.load_model(str(p), compile=compile)
    if expect is not None and not isinstance(model, expect):
        raise TypeError(f"{path}: expected a {expect.__name__}, got {type(model).__name__}")
    return model
