"""Keras next-token-prediction model: embedding -> LSTM/CIFG layers -> [projection] -> vocabulary.

Defaults are TFF's Stack Overflow NWP baseline (Reddi et al. 2021): embedding 96,
one LSTM layer of 670 units, a dense layer of 96, then logits over the
vocabulary (pad, words, OOV buckets, BOS, EOS). `char_model_config()` is TFF's
Shakespeare character baseline (McMahan et al. 2017): embedding 8, two LSTM
layers of 256 units with he-normal kernels, no projection, logits over 90 ids,
run on TF's fused LSTM kernel (`block_lstm`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_research.models import block_lstm
from tff_research.models import cifg

CELL_TYPES = ("lstm", "cifg")
# How an "lstm" cell runs: Keras's layer, or the same function on TF's fused
# kernel (`block_lstm`: 5x faster steps on a CPU, for trailing padding only).
LSTM_IMPLEMENTATIONS = ("keras", "block")
KERNEL_INITIALIZERS = {"glorot_uniform": tf.keras.initializers.GlorotUniform,
                       "he_normal": tf.keras.initializers.HeNormal}


class DropMask(tf.keras.layers.Layer):
  """Ends Keras mask propagation at the logits.

  Keras turns a mask on `y_pred` into a sample weight inside `Loss.__call__`,
  which would make our (already padding-masked, scalar) loss a per-token tensor
  whose gradient is a *sum* over tokens. The loss and metrics mask padding
  themselves, so the mask stops here.
  """

  def call(self, inputs):
    return tf.identity(inputs)  # a new tensor: the input's `_keras_mask` stays behind

  def compute_mask(self, inputs, mask=None):
    return None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int           # output classes, i.e. Vocabulary.size
  embedding_size: int = 96
  latent_size: int = 670
  num_layers: int = 1
  cell: str = "lstm"
  projection: bool = True            # a dense layer of embedding_size before the logits
  kernel_initializer: str = "glorot_uniform"  # of the LSTM layers: or "he_normal" (TFF's char model)
  lstm_implementation: str = "keras"  # or "block": see LSTM_IMPLEMENTATIONS

  def __post_init__(self):
    for name in ("vocab_size", "embedding_size", "latent_size", "num_layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.cell not in CELL_TYPES:
      raise ValueError(f"unknown cell {self.cell!r}; choose one of: {', '.join(CELL_TYPES)}")
    if self.kernel_initializer not in KERNEL_INITIALIZERS:
      raise ValueError(f"unknown kernel initializer {self.kernel_initializer!r}; "
                       f"choose one of: {', '.join(KERNEL_INITIALIZERS)}")
    if self.lstm_implementation not in LSTM_IMPLEMENTATIONS:
      raise ValueError(f"unknown LSTM implementation {self.lstm_implementation!r}; "
                       f"choose one of: {', '.join(LSTM_IMPLEMENTATIONS)}")
    if self.lstm_implementation == "block" and self.cell != "lstm":
      raise ValueError(f"lstm_implementation='block' runs LSTM cells only, not {self.cell!r}")


def char_model_config(vocab_size: int = 90) -> ModelConfig:
  """TFF 0.87's `shakespeare.char_prediction_models.create_recurrent_model` in our builder."""
  return ModelConfig(vocab_size, embedding_size=8, latent_size=256, num_layers=2, cell="lstm",
                     projection=False, kernel_initializer="he_normal", lstm_implementation="block")


def build_nwp_model(config: ModelConfig, seed: int | None = None,
                    output_bias: Sequence[float] | None = None,
                    initialize: bool = True) -> tf.keras.Model:
  """An uncompiled Keras model mapping [batch, time] ids to [batch, time, vocab] logits.

  `output_bias` initializes the logits' bias (e.g. log unigram frequencies, see
  `unigram_log_prior`), so training starts from the unigram model instead of
  spending its first hundreds of steps learning word frequencies.

  `initialize=False` gives every weight a zeros initializer: for models whose
  weights are assigned right after they are built, as TFF's client work and
  evaluation do with the broadcast weights. Inside a TFF computation the
  initializers run on every call, i.e. for every client of every round, and the
  LSTM's orthogonal initializer alone (a QR decomposition) was about a fifth of
  the worker's time (see BENCHMARKS.md).
  """
  def init(real):
    return real if initialize else "zeros"

  def glorot(offset):
    return init(tf.keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset))

  def lstm_kernel(offset):
    initializer = KERNEL_INITIALIZERS[config.kernel_initializer]
    return init(initializer(seed=None if seed is None else seed + offset))

  inputs = tf.keras.Input(shape=(None,), dtype=tf.int32, name="tokens")
  x = tf.keras.layers.Embedding(config.vocab_size, config.embedding_size, mask_zero=True,
                                embeddings_initializer=init(tf.keras.initializers.RandomUniform(
                                    -0.05, 0.05, seed=seed)), name="embedding")(inputs)
  for layer in range(config.num_layers):
    if config.cell == "lstm":
      lstm_layer = (block_lstm.BlockLSTM if config.lstm_implementation == "block"
                    else functools.partial(tf.keras.layers.LSTM, return_sequences=True))
      rnn = lstm_layer(config.latent_size, kernel_initializer=lstm_kernel(10 + layer),
                       recurrent_initializer=init(tf.keras.initializers.Orthogonal(
                           seed=None if seed is None else seed + 20 + layer)),
                       unit_forget_bias=initialize, name=f"lstm_{layer}")
    else:
      rnn = tf.keras.layers.RNN(cifg.CIFGCell(config.latent_size,
                                                 seed=None if seed is None else seed + 10 + layer,
                                                 initialize=initialize),
                                return_sequences=True,
                                name=f"cifg_{layer}")
    x = rnn(x)
  if config.projection:
    x = tf.keras.layers.Dense(config.embedding_size, kernel_initializer=glorot(1), name="projection")(x)
  if output_bias is not None and len(output_bias) != config.vocab_size:
    raise ValueError(f"output_bias has {len(output_bias)} values for {config.vocab_size} classes")
  bias_initializer = ("zeros" if output_bias is None or not initialize
                      else tf.keras.initializers.Constant(np.asarray(output_bias, np.float32)))
  logits = tf.keras.layers.Dense(config.vocab_size, kernel_initializer=glorot(2),
                                 bias_initializer=bias_initializer, name="logits")(x)
  logits = DropMask(name="drop_mask")(logits)
  return tf.keras.Model(inputs, logits, name=f"nwp_{config.cell}")


def unigram_log_prior(target_rows: Sequence[np.ndarray], vocab_size: int, pad_id: int = 0) -> np.ndarray:
  """log p(token) over the targets of `target_rows` (add-one smoothed, padding excluded)."""
  counts = np.ones(vocab_size, np.float64)
  for rows in target_rows:
    targets = np.asarray(rows)[:, 1:].ravel()
    counts += np.bincount(targets[targets != pad_id], minlength=vocab_size)[:vocab_size]
  return np.log(counts / counts.sum()).astype(np.float32)
