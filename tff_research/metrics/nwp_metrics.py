"""Next-word-prediction metrics that federate correctly (sum of counters, then finalize).

Papers report accuracy *without* special tokens (padding, OOV, BOS, EOS): a
model that learns to predict EOS or OOV would otherwise look good. Every metric
here keeps a numerator and a denominator, so TFF's default
sum-then-finalize aggregation gives the exact pooled value over clients.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


class MaskedCategoricalAccuracy(tf.keras.metrics.Metric):
  """Top-k accuracy over targets not in `masked_ids` (k=1: accuracy; k>1: recall@k)."""

  def __init__(self, masked_ids: Sequence[int] = (0,), top_k: int = 1, name: str = "accuracy", **kwargs):
    super().__init__(name=name, **kwargs)
    self.masked_ids = [int(i) for i in masked_ids]
    self.top_k = int(top_k)
    self.correct = self.add_weight(name="correct", initializer="zeros", dtype=tf.float32)
    self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float32)

  def update_state(self, y_true, y_pred, sample_weight=None):
    y_true = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    logits = tf.reshape(y_pred, [-1, tf.shape(y_pred)[-1]])
    keep = tf.ones_like(y_true, tf.bool)
    for token in self.masked_ids:
      keep = tf.logical_and(keep, tf.not_equal(y_true, token))
    hit = tf.math.in_top_k(y_true, logits, self.top_k) if self.top_k > 1 else tf.equal(
        tf.argmax(logits, axis=-1, output_type=tf.int32), y_true)
    weight = tf.cast(keep, tf.float32)
    self.correct.assign_add(tf.reduce_sum(tf.cast(hit, tf.float32) * weight))
    self.total.assign_add(tf.reduce_sum(weight))

  def result(self):
    return tf.math.divide_no_nan(self.correct, self.total)

  def get_config(self):
    return {**super().get_config(), "masked_ids": self.masked_ids, "top_k": self.top_k}


class MaskedCrossEntropy(tf.keras.metrics.Metric):
  """Mean cross-entropy per non-padding token; `perplexity=True` reports exp of it."""

  def __init__(self, pad_id: int = 0, perplexity: bool = False, name: str = "loss", **kwargs):
    super().__init__(name=name, **kwargs)
    self.pad_id = int(pad_id)
    self.perplexity = bool(perplexity)
    self.total_loss = self.add_weight(name="total_loss", initializer="zeros", dtype=tf.float32)
    self.tokens = self.add_weight(name="tokens", initializer="zeros", dtype=tf.float32)

  def update_state(self, y_true, y_pred, sample_weight=None):
    y_true = tf.cast(y_true, tf.int32)
    losses = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    weight = tf.cast(tf.not_equal(y_true, self.pad_id), tf.float32)
    self.total_loss.assign_add(tf.reduce_sum(losses * weight))
    self.tokens.assign_add(tf.reduce_sum(weight))

  def result(self):
    mean = tf.math.divide_no_nan(self.total_loss, self.tokens)
    return tf.exp(mean) if self.perplexity else mean

  def get_config(self):
    return {**super().get_config(), "pad_id": self.pad_id, "perplexity": self.perplexity}


class MaskedSparseCategoricalCrossentropy(tf.keras.losses.Loss):
  """Training loss: cross-entropy averaged over non-padding tokens of the batch."""

  def __init__(self, pad_id: int = 0, name: str = "masked_cross_entropy"):
    super().__init__(name=name, reduction=tf.keras.losses.Reduction.NONE)
    self.pad_id = pad_id

  def call(self, y_true, y_pred):
    y_true = tf.cast(y_true, tf.int32)
    losses = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    weight = tf.cast(tf.not_equal(y_true, self.pad_id), losses.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(losses * weight), tf.reduce_sum(weight))


def build_nwp_metrics(special_ids: Sequence[int], pad_id: int = 0) -> list[tf.keras.metrics.Metric]:
  """The metric set every NWP run reports (names are the metrics.csv columns)."""
  return [
      MaskedCategoricalAccuracy(special_ids, 1, name="accuracy"),
      MaskedCategoricalAccuracy([pad_id], 1, name="accuracy_with_special"),
      MaskedCategoricalAccuracy(special_ids, 3, name="recall_at_3"),
      MaskedCrossEntropy(pad_id, name="token_loss"),
      MaskedCrossEntropy(pad_id, perplexity=True, name="perplexity"),
  ]
