"""Centralized (server-side) training of the NWP model, the baseline federated results are compared with.

The same Keras model and metrics as the federated runs, trained with plain
minibatch SGD (or Adam) on the union of the train clients' sequences, for a
given number of example passes so that the comparison is at equal work.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_research.data import nwp
from tff_research.learning import optimizers as optimizers_lib
from tff_research.metrics import nwp_metrics
from tff_research.models import nwp as nwp_models
from tff_research.runtime.eager import in_eager_mode


@dataclasses.dataclass
class CentralizedResult:
  model: tf.keras.Model
  steps: int
  examples_seen: int
  final_train_loss: float


def pooled_sequences(data: nwp.NWPData, split: str = "train",
                     client_ids: Optional[Sequence[str]] = None) -> np.ndarray:
  """All token windows of `client_ids` (default: every client) of `split`, in client order."""
  rows = data.train if split == "train" else data.test
  ids = sorted(rows) if client_ids is None else list(client_ids)
  return np.concatenate([rows[c] for c in ids]) if ids else np.zeros((0, data.sequence_length + 1), np.int32)


def build_train_step(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer,
                     sequence_length: int, pad_id: int = 0):
  """One SGD step on a batch (x, y) of [batch, sequence_length] ids; returns the loss.

  The input signature keeps partial batches from retracing the function.
  """
  loss_fn = nwp_metrics.MaskedSparseCategoricalCrossentropy(pad_id)
  spec = tf.TensorSpec([None, sequence_length], tf.int32)

  @tf.function(input_signature=[spec, spec])
  def train_step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  return train_step


@in_eager_mode
def train_centralized(model_config: nwp_models.ModelConfig, data: nwp.NWPData, examples: int,
                      batch_size: int = 16, optimizer: optimizers_lib.OptimizerConfig = (
                          optimizers_lib.OptimizerConfig("sgd", 1.0)),
                      seed: int = 0, output_bias=None) -> CentralizedResult:
  """Trains on shuffled pooled train sequences until `examples` sequences were seen."""
  if examples < 1:
    raise ValueError(f"examples must be positive, got {examples}")
  model = nwp_models.build_nwp_model(model_config, seed=seed, output_bias=output_bias)
  train_step = build_train_step(model, optimizers_lib.build_keras_optimizer(optimizer),
                                data.sequence_length, data.vocab.pad_id)
  pool = pooled_sequences(data, "train")
  rng = np.random.default_rng(seed)
  seen, steps, loss = 0, 0, float("nan")
  while seen < examples:
    order = rng.permutation(len(pool))
    for start in range(0, len(order), batch_size):
      batch = pool[order[start:start + min(batch_size, examples - seen)]]
      loss = float(train_step(batch[:, :-1], batch[:, 1:]))
      seen += len(batch)
      steps += 1
      if seen >= examples:
        break
  return CentralizedResult(model, steps, seen, loss)


@in_eager_mode
def evaluate_keras_model(model: tf.keras.Model, data: nwp.NWPData, client_ids: Sequence[str],
                         batch_size: int = 64) -> dict[str, float]:
  """The federated evaluation's metrics (same names) over the test data of `client_ids`, pooled.

  Federated evaluation sums metric numerators and denominators over clients,
  so on the same clients both give the same numbers for the same model.
  """
  metrics = nwp_metrics.build_nwp_metrics(data.accuracy_excluded_ids, data.vocab.pad_id)
  pool = pooled_sequences(data, "test", client_ids)
  for start in range(0, len(pool), batch_size):
    batch = pool[start:start + batch_size]
    logits = model(batch[:, :-1], training=False)
    for metric in metrics:
      metric.update_state(batch[:, 1:], logits)
  return {m.name: float(m.result()) for m in metrics}
