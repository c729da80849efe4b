"""Next-word-prediction metrics that federate correctly (sum of counters, then finalize).

Papers report accuracy *without* special tokens (padding, OOV, BOS, EOS): a
model that learns to predict EOS or OOV would otherwise look good. Every metric
here keeps a numerator and a denominator, so TFF's default
sum-then-finalize aggregation gives the exact pooled value over clients.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

# Per-graph memo of what the loss and the metrics compute from the same
# (labels, logits) tensors: in a training step the per-token cross-entropy
# over the 10k-way softmax is as costly as the metrics together (8.6 ms of a
# ~90 ms demo step, measured), and TF does not merge the identical ops. Kept
# as an attribute of the graph, so it lives exactly as long as the graph (a
# weak-keyed dict would not do: its values refer to the graph's tensors).
_MEMO_ATTR = "_tff_research_nwp_memo"


def _shared(name: str, y_true, y_pred, compute: Callable[[], tf.Tensor]) -> tf.Tensor:
  """`compute()`, or the tensor an earlier call made from the same tensors in this graph."""
  if tf.executing_eagerly() or not hasattr(y_pred, "graph"):
    return compute()
  graph = tf.compat.v1.get_default_graph()
  if y_pred.graph is not graph or getattr(y_true, "graph", graph) is not graph:
    return compute()  # inputs captured from an outer graph: no reuse across graphs
  memo = getattr(graph, _MEMO_ATTR, None)
  if memo is None:
    memo = {}
    setattr(graph, _MEMO_ATTR, memo)
  key = (name, id(y_true), id(y_pred))
  hit = memo.get(key)
  if hit is None or hit[0] is not y_true or hit[1] is not y_pred:
    hit = (y_true, y_pred, compute())
    memo[key] = hit
  return hit[2]


def token_cross_entropy(y_true, y_pred) -> tf.Tensor:
  """Per-token cross-entropy of logits `y_pred` against ids `y_true` (shared in a graph)."""
  return _shared("cross_entropy", y_true, y_pred, lambda: tf.keras.losses.sparse_categorical_crossentropy(
      tf.cast(y_true, tf.int32), y_pred, from_logits=True))


def _top1(y_true, y_pred) -> tf.Tensor:
  """Most likely id per position, flattened (shared in a graph)."""
  return _shared("argmax", y_true, y_pred, lambda: tf.argmax(
      tf.reshape(y_pred, [-1, tf.shape(y_pred)[-1]]), axis=-1, output_type=tf.int32))


class MaskedCategoricalAccuracy(tf.keras.metrics.Metric):
  """Top-k accuracy over targets not in `masked_ids` (k=1: accuracy; k>1: recall@k)."""

  def __init__(self, masked_ids: Sequence[int] = (0,), top_k: int = 1, name: str = "accuracy", **kwargs):
    super().__init__(name=name, **kwargs)
    self.masked_ids = [int(i) for i in masked_ids]
    self.top_k = int(top_k)
    self.correct = self.add_weight(name="correct", initializer="zeros", dtype=tf.float32)
    self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float32)

  def update_state(self, y_true, y_pred, sample_weight=None):
    y_true_in = y_true
    y_true = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    logits = tf.reshape(y_pred, [-1, tf.shape(y_pred)[-1]])
    keep = tf.ones_like(y_true, tf.bool)
    for token in self.masked_ids:
      keep = tf.logical_and(keep, tf.not_equal(y_true, token))
    hit = tf.math.in_top_k(y_true, logits, self.top_k) if self.top_k > 1 else tf.equal(
        _top1(y_true_in, y_pred), y_true)
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
    losses = token_cross_entropy(y_true, y_pred)
    y_true = tf.cast(y_true, tf.int32)
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
    losses = token_cross_entropy(y_true, y_pred)
    y_true = tf.cast(y_true, tf.int32)
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
