"""MMoE and shared-bottom layers, and their parameter budgets.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018.

Pieces (shapes in ``[...]``; ``B`` is the batch size):

* :class:`MMoE` -- the layer: ``[B, d]`` -> one ``[B, expert_units[-1]]`` mixture per task.
* :class:`SharedBottom` -- the baseline layer with the same interface (one MLP, its output
  repeated per task).
* :func:`mmoe_param_count`, :func:`towers_param_count`, :func:`matched_shared_bottom_units` --
  trainable parameter counts, and the shared-bottom widths with the MMoE's parameter budget.

The ranking model built on these layers is :mod:`models.ranking`; its export and loading
:mod:`models.serving`; synthetic training rows :mod:`models.synthetic`.

This module never imports Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


def _mlp_params(d_in: int, units: Sequence[int]) -> int:
    total, prev = 0, int(d_in)
    for u in units:
        total += (prev + 1) * int(u)
        prev = int(u)
    return total


def mmoe_param_count(d_in: int, num_experts: int, expert_units: Sequence[int], num_tasks: int,
                     task_specific_experts: int = 0) -> int:
    """Trainable parameters of :class:`MMoE` (experts + gates) for a ``[B, d_in]`` input."""
    n_total = num_experts + num_tasks * task_specific_experts
    n_seen = num_experts + task_specific_experts
    return n_total * _mlp_params(d_in, expert_units) + num_tasks * (d_in + 1) * n_seen


def towers_param_count(d_in: int, tower_units: Sequence[int], num_tasks: int) -> int:
    """Trainable parameters of ``num_tasks`` towers (MLP ``tower_units`` + a 1-unit head)."""
    last = int(tower_units[-1]) if tower_units else int(d_in)
    return num_tasks * (_mlp_params(d_in, tower_units) + last + 1)


def matched_shared_bottom_units(d_in: int, num_experts: int, expert_units: Sequence[int],
                                num_tasks: int, task_specific_experts: int = 0,
                                tower_units: Sequence[int] = ()) -> list[int]:
    """Widths of a shared-bottom MLP with about the parameter budget of the MMoE it replaces.

    The budget compared is everything above the input: MMoE (all experts + gates) + towers fed
    ``expert_units[-1]`` features, against shared MLP + the same towers fed its last width.
    The shared MLP keeps the experts' depth and shape: every width is ``expert_units`` scaled by
    one factor ``s``, found by bisection (parameters grow monotonically with ``s``), then the
    closest of the neighbouring integer widths is taken.
    """
    units = [int(u) for u in expert_units]
    if not units:
        raise ValueError("expert_units must not be empty")
    target = (mmoe_param_count(d_in, num_experts, units, num_tasks, task_specific_experts)
              + towers_param_count(units[-1], tower_units, num_tasks))

    def widths(s: float) -> list[int]:
        return [max(1, int(round(u * s))) for u in units]

    def params(w: list[int]) -> int:
        return _mlp_params(d_in, w) + towers_param_count(w[-1], tower_units, num_tasks)

    lo, hi = 0.0, 1.0
    while params(widths(hi)) < target:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if params(widths(mid)) < target:
            lo = mid
        else:
            hi = mid
    return min((widths(lo), widths(hi)), key=lambda w: abs(params(w) - target))


def _stacked_glorot(fan_in: int, fan_out: int) -> keras.initializers.Initializer:
    # Glorot-uniform of one [fan_in, fan_out] expert kernel; a 3-D Glorot would count the expert
    # axis as a receptive field and shrink the scale by the number of experts.
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(minval=-limit, maxval=limit)


@keras.saving.register_keras_serializable(package="dailyrec")
class MMoE(keras.layers.Layer):
    """Multi-gate mixture of experts.

    Args:
        num_experts: ``N`` experts shared by all tasks.
        expert_units: widths of every expert MLP (ReLU after each layer, last one included).
        num_tasks: ``T``.
        task_specific_experts: ``K`` extra experts per task, seen only by that task's gate.

    Experts are stored stacked (``expert_kernel_l``: ``[E, in, out]``, ``expert_bias_l``:
    ``[E, out]``, ``E = N + T*K``) and evaluated together (one matmul per layer). Expert ``e`` is:
    ``e < N`` shared; ``N + t*K + k`` the ``k``-th expert of task ``t``. Task ``t``'s gate
    (``gate_kernel_t``: ``[d, N + K]``, ``gate_bias_t``: ``[N + K]``) is a softmax over
    :meth:`seen_experts` ``(t)`` (shared first, then its own).

    Call:
        inputs: ``[B, d]`` float.
        return_gates: also return the gates.
    Returns:
        ``[Tensor[B, expert_units[-1]]] * T`` mixtures; with ``return_gates=True`` a pair
        ``(mixtures, gates)``, gates ``[Tensor[B, N + K]] * T`` (rows sum to one).
    """

    def __init__(self, num_experts: int, expert_units: Sequence[int], num_tasks: int = 2,
                 task_specific_experts: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if num_experts < 0 or task_specific_experts < 0 or num_experts + task_specific_experts < 1:
            raise ValueError("MMoE needs at least one expert per task "
                             f"(num_experts={num_experts}, task_specific_experts={task_specific_experts})")
        if num_tasks < 1 or not expert_units:
            raise ValueError("MMoE needs num_tasks >= 1 and non-empty expert_units")
        self.num_experts = int(num_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.num_tasks = int(num_tasks)
        self.task_specific_experts = int(task_specific_experts)
        self.total_experts = self.num_experts + self.num_tasks * self.task_specific_experts
        self.expert_kernels: list[Any] = []
        self.expert_biases: list[Any] = []
        self.gate_kernels: list[Any] = []
        self.gate_biases: list[Any] = []

    @property
    def output_dim(self) -> int:
        return self.expert_units[-1]

    def seen_experts(self, task: int) -> list[int]:
        """Indices (into the stacked experts) of the experts task ``task``'s gate mixes."""
        n, k = self.num_experts, self.task_specific_experts
        return list(range(n)) + list(range(n + task * k, n + (task + 1) * k))

    def expert_labels(self, task: int, task_names: Sequence[str] | None = None) -> list[str]:
        """Readable names of :meth:`seen_experts` ``(task)``: ``shared_i`` / ``<task>_k``."""
        name = task_names[task] if task_names else f"task{task}"
        return ([f"shared_{i}" for i in range(self.num_experts)]
                + [f"{name}_{k}" for k in range(self.task_specific_experts)])

    def build(self, input_shape: Any) -> None:
        d = int(input_shape[-1])
        prev = d
        for i, u in enumerate(self.expert_units):
            self.expert_kernels.append(self.add_weight(
                name=f"expert_kernel_{i}", shape=(self.total_experts, prev, u),
                initializer=_stacked_glorot(prev, u)))
            self.expert_biases.append(self.add_weight(
                name=f"expert_bias_{i}", shape=(self.total_experts, u), initializer="zeros"))
            prev = u
        n_seen = self.num_experts + self.task_specific_experts
        for t in range(self.num_tasks):
            self.gate_kernels.append(self.add_weight(
                name=f"gate_kernel_{t}", shape=(d, n_seen), initializer="glorot_uniform"))
            self.gate_biases.append(self.add_weight(
                name=f"gate_bias_{t}", shape=(n_seen,), initializer="zeros"))
        self.built = True

    def experts(self, inputs: Any) -> Any:
        """All expert outputs: ``[B, d]`` -> ``[B, E, expert_units[-1]]``."""
        if not self.built:
            self.build(tuple(inputs.shape))
        # First layer: one [B, d] x [d, E*u] matmul; deeper layers: batched matmuls over the
        # expert axis in [E, B, u] layout (both about twice as fast as einsum on CPU).
        x = ops.cast(inputs, self.compute_dtype)
        e = self.total_experts
        k0, b0 = self.expert_kernels[0], self.expert_biases[0]
        d, u = int(k0.shape[1]), int(k0.shape[2])
        h = ops.matmul(x, ops.reshape(ops.transpose(k0, (1, 0, 2)), (d, e * u)))
        h = ops.relu(ops.reshape(h, (-1, e, u)) + b0)  # [B, E, u]
        if len(self.expert_kernels) > 1:
            h = ops.transpose(h, (1, 0, 2))  # [E, B, u]
            for k, b in zip(self.expert_kernels[1:], self.expert_biases[1:]):
                h = ops.relu(ops.matmul(h, k) + ops.expand_dims(b, 1))
            h = ops.transpose(h, (1, 0, 2))
        return h

    def gates(self, inputs: Any) -> list[Any]:
        """Gate weights: ``[B, d]`` -> ``[Tensor[B, N + K]] * T`` (softmax, rows sum to one)."""
        if not self.built:
            self.build(tuple(inputs.shape))
        x = ops.cast(inputs, self.compute_dtype)
        return [ops.softmax(ops.matmul(x, k) + b, axis=-1)
                for k, b in zip(self.gate_kernels, self.gate_biases)]

    def call(self, inputs: Any, return_gates: bool = False) -> Any:
        h = self.experts(inputs)
        gates = self.gates(inputs)
        n, k = self.num_experts, self.task_specific_experts
        outputs = []
        for t, g in enumerate(gates):
            if k == 0:
                seen = h
            else:
                own = h[:, n + t * k:n + (t + 1) * k, :]
                seen = own if n == 0 else ops.concatenate([h[:, :n, :], own], axis=1)
            outputs.append(ops.sum(ops.expand_dims(g, -1) * seen, axis=1))
        return (outputs, gates) if return_gates else outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_experts": self.num_experts,
                "expert_units": self.expert_units, "num_tasks": self.num_tasks,
                "task_specific_experts": self.task_specific_experts}


@keras.saving.register_keras_serializable(package="dailyrec")
class SharedBottom(keras.layers.Layer):
    """Shared-bottom baseline: one MLP (``units``, ReLU), its output handed to every task.

    Call: ``[B, d]`` -> ``[Tensor[B, units[-1]]] * num_tasks`` (the same tensor ``num_tasks``
    times, so it is a drop-in replacement for :class:`MMoE`).
    """

    def __init__(self, units: Sequence[int], num_tasks: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        if not units:
            raise ValueError("SharedBottom needs non-empty units")
        self.units = [int(u) for u in units]
        self.num_tasks = int(num_tasks)
        self.dense = [keras.layers.Dense(u, activation="relu", name=f"{self.name}_dense_{i}")
                      for i, u in enumerate(self.units)]

    @property
    def output_dim(self) -> int:
        return self.units[-1]

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for layer in self.dense:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        self.built = True

    def call(self, inputs: Any) -> list[Any]:
        h = inputs
        for layer in self.dense:
            h = layer(h)
        return [h] * self.num_tasks

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "num_tasks": self.num_tasks}
