"""Writing a SavedModel: each variable stored once, and the same bytes for the same weights.

:func:`write_savedmodel` is what :func:`models.serving.export_model` (both towers, the ranker) runs:
``keras.export.ExportArchive`` with three corrections,

* each variable stored once (keras-team/keras#23553, :func:`_track_each_variable_once`): the
  SavedModel is about the variables' bytes plus the graph, not twice the variables;
* the endpoint's variables listed in the model's own order (:func:`_variables_in_model_order`),
  not in an order of memory addresses;
* ``fingerprint.pb``'s random uuid replaced by one derived from its content (:func:`_content_uuid`).

This module never imports Airflow, storage or Redis.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

Endpoint = tuple[Mapping[str, tf.TensorSpec], Callable[[dict[str, Any]], dict[str, Any]]]


def write_savedmodel(model: keras.Model, directory: str | os.PathLike[str], endpoints: Mapping[str, Endpoint]) -> str:
    """Write ``model`` as a SavedModel at ``directory``; returns the directory.

    ``endpoints``: ``{name: ({input: tf.TensorSpec}, fn)}`` in order, ``fn`` taking ``{input:
    Tensor}`` and returning ``{output: Tensor}``; each becomes a signature of that name (the first
    one is also ``serving_default`` unless one is named so). Raises ``ValueError`` without endpoints.
    """
    if not endpoints:
        raise ValueError(f"{directory}: a SavedModel needs at least one endpoint")
    archive = keras.export.ExportArchive()
    archive.track(model)
    _track_each_variable_once(archive, model)
    for name, (signature, fn) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=[dict(signature)])
    with _variables_in_model_order(model):
        archive.write_out(str(directory), verbose=False)
    _content_uuid(Path(directory) / "fingerprint.pb")
    return str(directory)


def _track_each_variable_once(archive: Any, model: keras.Model) -> None:
    """Make the SavedModel store every variable once (keras-team/keras#23553).

    ``ExportArchive.track(model)`` lists the model's ``keras.Variable`` wrappers under
    ``variables`` / ``trainable_variables`` / ``non_trainable_variables``, while ``write_out`` adds
    the ``tf.Variable`` objects the endpoint's traced function captured under ``_all_variables``.
    They are two distinct trackable objects over the same buffer, so TensorFlow's checkpoint
    (which de-duplicates by object identity) writes every tensor twice: the 1M-id item tower was
    261 MB instead of ~130 MB, and a loaded SavedModel held every table twice in memory.
    Re-registering the three collections (through the public ``add_variable_collection``) with
    the underlying ``tf.Variable`` objects makes both paths reach the same objects, so each is
    written, and restored, once. The loaded object keeps its ``variables`` attribute.
    """
    def raw(variables: Sequence[Any]) -> list[Any]:
        out = []
        for v in variables:
            value = getattr(v, "value", v)  # keras.Variable -> its tf.Variable (no autocast scope here)
            out.append(value if isinstance(value, tf.Variable) else v)
        return out

    archive.add_variable_collection("variables", raw(model.variables))
    archive.add_variable_collection("trainable_variables", raw(model.trainable_variables))
    archive.add_variable_collection("non_trainable_variables", raw(model.non_trainable_variables))


def _content_uuid(path: Path) -> None:
    """Replace the random ``uuid`` TensorFlow writes into a SavedModel's ``fingerprint.pb`` with one
    derived from the fingerprint's content hashes (graph, signatures, object graph, checkpoint): the
    same model gets the same uuid and the same bytes."""
    import hashlib

    from tensorflow.core.protobuf import fingerprint_pb2

    if not path.exists():
        return
    fp = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    fp.uuid = ""
    fp.uuid = str(int(hashlib.sha256(fp.SerializeToString(deterministic=True)).hexdigest()[:32], 16))
    path.write_bytes(fp.SerializeToString(deterministic=True))


@contextlib.contextmanager
def _variables_in_model_order(model: keras.Model) -> Iterator[None]:
    """While exporting, list the endpoint's variables in the model's own order. TensorFlow gives a
    traced function's variables in the order of a set of object ids (memory addresses), and Keras
    writes them into the SavedModel in that order, so without this the same weights give different
    ``saved_model.pb`` / ``variables.*`` bytes in every process."""
    from keras.src.export import saved_model_export_archive as sma

    position = {id(v.value): i for i, v in enumerate(model.variables)}
    original = sma._list_variables_used_by_fns

    def ordered(fns: Any) -> tuple[list[Any], list[Any]]:
        return tuple(sorted(vs, key=lambda v: position.get(id(v), len(position))) for vs in original(fns))

    sma._list_variables_used_by_fns = ordered
    try:
        yield
    finally:
        sma._list_variables_used_by_fns = original
