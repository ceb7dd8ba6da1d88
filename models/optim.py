"""Optimisation pieces shared by the two-tower and the MMoE models.

* :class:`DecayWithFloor`: exponential learning-rate decay with a floor.
* :class:`LazyAdam`: Adam that updates only the embedding rows a batch touches.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="dailyrec")
class DecayWithFloor(keras.optimizers.schedules.LearningRateSchedule):
    """``lr(step) = max(initial * decay_rate ** (step / decay_steps), floor)``.

    ``staircase=True`` uses ``floor(step / decay_steps)`` (decays in discrete jumps).
    """

    def __init__(self, initial_learning_rate: float, decay_rate: float, decay_steps: int,
                 floor: float = 0.0, staircase: bool = False):
        super().__init__()
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be > 0, got {decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_rate = float(decay_rate)
        self.decay_steps = int(decay_steps)
        self.floor = float(floor)
        self.staircase = bool(staircase)

    def __call__(self, step: Any) -> Any:
        p = ops.divide(ops.cast(step, "float32"), float(self.decay_steps))
        if self.staircase:
            p = ops.floor(p)
        lr = ops.multiply(self.initial_learning_rate, ops.power(self.decay_rate, p))
        return ops.maximum(lr, self.floor)

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_rate": self.decay_rate,
                "decay_steps": self.decay_steps, "floor": self.floor, "staircase": self.staircase}


@keras.saving.register_keras_serializable(package="dailyrec")
class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse (``tf.IndexedSlices``) gradients update only the rows they touch.

    Embedding tables get their gradient as ``IndexedSlices``; Keras' Adam densifies them and
    updates every row's moments each step, which for 200k-row tables dominates the step time.
    Here, as in TF1's ``LazyAdamOptimizer``, only the rows seen in the batch have their moments
    and values updated (rows absent from a batch keep their moments, they do not decay). Dense
    gradients (the MLPs) get the ordinary Adam update.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), position, tf.shape(rows)[0])
        lr = tf.cast(learning_rate, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, local_step)) / (1 - tf.pow(beta_1, local_step))
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def make_optimizer(opt_cfg: Any) -> keras.optimizers.Optimizer:
    """The optimizer of an ``OptimizerConfig`` (``name``, ``learning_rate``, ``decay_rate``,
    ``decay_steps``, ``floor``): :class:`LazyAdam` or Keras ``Adam`` on a :class:`DecayWithFloor`
    schedule. One builder for both models (two-tower: ``training.optimizer``; MMoE:
    ``ranking.optimizer``)."""
    schedule = DecayWithFloor(opt_cfg.learning_rate, opt_cfg.decay_rate, opt_cfg.decay_steps, opt_cfg.floor)
    if opt_cfg.name == "lazy_adam":
        return LazyAdam(learning_rate=schedule)
    if opt_cfg.name == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    raise ValueError(f"unknown optimizer {opt_cfg.name!r} (adam, lazy_adam)")
