"""Coupled input-forget gate (CIFG) LSTM cell, as in Gboard's federated NWP model.

Hard et al. 2018 ("Federated Learning for Mobile Keyboard Prediction") use a
CIFG-LSTM: the input gate is tied to the forget gate (i = 1 - f), which removes
a quarter of the recurrent parameters at about the same accuracy.
"""
from __future__ import annotations

import tensorflow as tf


class CIFGCell(tf.keras.layers.Layer):
  """LSTM cell with i = 1 - f; three gate blocks (f, o, candidate) instead of four."""

  def __init__(self, units: int, seed: int | None = None, initialize: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.seed = seed
    self.initialize = initialize  # False: zeros everywhere (weights assigned after building)
    self.state_size = [units, units]
    self.output_size = units

  def build(self, input_shape):
    input_dim = input_shape[-1]
    init = lambda real: real if self.initialize else "zeros"  # noqa: E731
    self.kernel = self.add_weight(
        shape=(input_dim, 3 * self.units), name="kernel",
        initializer=init(tf.keras.initializers.GlorotUniform(seed=self.seed)))
    self.recurrent_kernel = self.add_weight(
        shape=(self.units, 3 * self.units), name="recurrent_kernel", initializer=init(
            tf.keras.initializers.Orthogonal(seed=None if self.seed is None else self.seed + 1)))
    bias_init = init(tf.keras.initializers.Constant(
        [1.0] * self.units + [0.0] * (2 * self.units)))  # forget-gate bias 1, as Keras LSTM
    self.bias = self.add_weight(shape=(3 * self.units,), name="bias", initializer=bias_init)
    self.built = True

  def call(self, inputs, states):
    h_prev, c_prev = states
    z = tf.matmul(inputs, self.kernel) + tf.matmul(h_prev, self.recurrent_kernel) + self.bias
    z_f, z_o, z_c = tf.split(z, 3, axis=-1)
    forget = tf.sigmoid(z_f)
    c = forget * c_prev + (1.0 - forget) * tf.tanh(z_c)
    h = tf.sigmoid(z_o) * tf.tanh(c)
    return h, [h, c]

  def get_config(self):
    return {**super().get_config(), "units": self.units, "seed": self.seed, "initialize": self.initialize}
