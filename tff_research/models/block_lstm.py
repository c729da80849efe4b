"""An LSTM layer on TF's fused `BlockLSTM` kernel, with a backward pass that is cheap on a CPU.

Same function and parameters as `tf.keras.layers.LSTM(units, return_sequences=True)`
(sigmoid gates, tanh cell, weights `kernel`, `recurrent_kernel`, `bias` in Keras's
i, f, c, o order), so the two share weights and initial values. Why it exists:
one training step of TFF's Shakespeare character model (batch 4, 80 steps,
2 x LSTM 256) took 468 ms with the Keras layer and 87 ms with this one on the
2-core CPU of BENCHMARKS.md, with gradients equal to within 4e-9.

Where the time went: Keras's LSTM runs a `while_loop` of small ops per time
step; TF's `BlockLSTMGrad` kernel is no better (400 of 430 ms), because it
accumulates the weight gradient one [input, 4 units] outer product per step.
Here the forward pass is one `BlockLSTM` op; the backward pass runs
`LSTMBlockCellGrad` and one [batch, 4 units] x [4 units, units] matmul per step,
and forms the weight and input gradients afterwards in one matmul each.

Padding: the layer ignores Keras masks. Where padding only trails each
sequence (as in `next_char` windows and the word pipelines' padded batches),
outputs at real tokens, and so masked losses and their gradients, equal the
masked Keras layer's; padding inside a sequence would not be skipped.
"""
from __future__ import annotations

import tensorflow as tf


def _to_block_order(gates: tf.Tensor) -> tf.Tensor:
  """Keras's gate order i, f, c, o -> BlockLSTM's i, c, f, o along the last axis."""
  i, f, c, o = tf.split(gates, 4, axis=-1)
  return tf.concat([i, c, f, o], axis=-1)


def _block_lstm(x_tm: tf.Tensor, w: tf.Tensor, b: tf.Tensor, units: int) -> tf.Tensor:
  """Hidden states [time, batch, units] of an LSTM over time-major inputs, zero initial state.

  Args:
    x_tm: inputs, [time, batch, input].
    w: [input + units, 4 units], input and recurrent kernels stacked, gates i, c, f, o.
    b: [4 units], gates i, c, f, o.
    units: the LSTM's size.
  """
  @tf.custom_gradient
  def run(x_tm, w, b):
    zeros = tf.zeros([tf.shape(x_tm)[1], units], x_tm.dtype)
    no_peephole = tf.zeros([units], x_tm.dtype)
    i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTM(
        seq_len_max=tf.cast(tf.shape(x_tm)[0], tf.int64), x=x_tm, cs_prev=zeros, h_prev=zeros, w=w,
        wci=no_peephole, wcf=no_peephole, wco=no_peephole, b=b, forget_bias=0.0, cell_clip=-1.0,
        use_peephole=False)

    def grad(dh):
      inputs = x_tm.shape[-1]
      cs_prev = tf.concat([zeros[None], cs[:-1]], 0)
      h_prev = tf.concat([zeros[None], h[:-1]], 0)
      # Transposed once: a transpose_b matmul inside the loop copied W at every step (5x slower).
      recurrent_t = tf.transpose(w[inputs:])

      def step(t, dh_next, dcs_next, gate_grads):
        dcs_prev, dgates, _, _, _ = tf.raw_ops.LSTMBlockCellGrad(
            x=x_tm[t], cs_prev=cs_prev[t], h_prev=h_prev[t], w=w, wci=no_peephole, wcf=no_peephole,
            wco=no_peephole, b=b, i=i[t], cs=cs[t], f=f[t], o=o[t], ci=ci[t], co=co[t], cs_grad=dcs_next,
            h_grad=dh[t] + dh_next, use_peephole=False)
        return t - 1, tf.matmul(dgates, recurrent_t), dcs_prev, gate_grads.write(t, dgates)

      steps = tf.shape(x_tm)[0]
      _, _, _, gate_grads = tf.while_loop(
          lambda t, *_: t >= 0, step,
          (steps - 1, zeros, zeros, tf.TensorArray(x_tm.dtype, size=steps)))
      dgates = tf.reshape(gate_grads.stack(), [-1, 4 * units])
      xh = tf.reshape(tf.concat([x_tm, h_prev], -1), [-1, inputs + units])
      dw = tf.matmul(xh, dgates, transpose_a=True)
      dx = tf.reshape(tf.matmul(dgates, tf.transpose(w[:inputs])), tf.shape(x_tm))
      return dx, dw, tf.reduce_sum(dgates, 0)

    return h, grad

  return run(x_tm, w, b)


class BlockLSTM(tf.keras.layers.Layer):
  """`tf.keras.layers.LSTM(units, return_sequences=True)` on the fused kernel (module docstring)."""

  def __init__(self, units: int, kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
               unit_forget_bias: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    self.recurrent_initializer = tf.keras.initializers.get(recurrent_initializer)
    self.unit_forget_bias = unit_forget_bias
    self.supports_masking = True  # masks pass through unused: see the module docstring

  def build(self, input_shape):
    units = self.units
    self.kernel = self.add_weight("kernel", [input_shape[-1], 4 * units], initializer=self.kernel_initializer)
    self.recurrent_kernel = self.add_weight("recurrent_kernel", [units, 4 * units],
                                            initializer=self.recurrent_initializer)
    forget = [1.0 if self.unit_forget_bias else 0.0] * units
    self.bias = self.add_weight("bias", [4 * units], initializer=tf.keras.initializers.Constant(
        [0.0] * units + forget + [0.0] * (2 * units)))
    self.built = True

  def call(self, inputs, mask=None):
    del mask  # trailing padding only: see the module docstring
    w = _to_block_order(tf.concat([self.kernel, self.recurrent_kernel], 0))
    h = _block_lstm(tf.transpose(inputs, [1, 0, 2]), w, _to_block_order(self.bias), self.units)
    return tf.transpose(h, [1, 0, 2])

  def compute_mask(self, inputs, mask=None):
    return mask
