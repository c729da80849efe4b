"""Keras next-word-prediction model: embedding -> LSTM/CIFG -> projection -> vocabulary.

Defaults are TFF's Stack Overflow NWP baseline (Reddi et al. 2021): embedding 96,
one LSTM layer of 670 units, a dense layer of 96, then logits over the
vocabulary (pad, words, OOV buckets, BOS, EOS).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from tff_research.models import cifg

CELL_TYPES = ("lstm", "cifg")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int           # output classes, i.e. Vocabulary.size
  embedding_size: int = 96
  latent_size: int = 670
  num_layers: int = 1
  cell: str = "lstm"

  def __post_init__(self):
    for name in ("vocab_size", "embedding_size", "latent_size", "num_layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.cell not in CELL_TYPES:
      raise ValueError(f"unknown cell {self.cell!r}; choose one of: {', '.join(CELL_TYPES)}")


def build_nwp_model(config: ModelConfig, seed: int | None = None) -> tf.keras.Model:
  """An uncompiled Keras model mapping [batch, time] ids to [batch, time, vocab] logits."""
  initializer = lambda offset: tf.keras.initializers.GlorotUniform(  # noqa: E731
      seed=None if seed is None else seed + offset)
  inputs = tf.keras.Input(shape=(None,), dtype=tf.int32, name="tokens")
  x = tf.keras.layers.Embedding(config.vocab_size, config.embedding_size, mask_zero=True,
                                embeddings_initializer=tf.keras.initializers.RandomUniform(
                                    -0.05, 0.05, seed=seed), name="embedding")(inputs)
  for layer in range(config.num_layers):
    if config.cell == "lstm":
      rnn = tf.keras.layers.LSTM(config.latent_size, return_sequences=True,
                                 kernel_initializer=initializer(10 + layer),
                                 recurrent_initializer=tf.keras.initializers.Orthogonal(
                                     seed=None if seed is None else seed + 20 + layer),
                                 name=f"lstm_{layer}")
    else:
      rnn = tf.keras.layers.RNN(cifg.CIFGCell(config.latent_size,
                                                 seed=None if seed is None else seed + 10 + layer),
                                return_sequences=True,
                                name=f"cifg_{layer}")
    x = rnn(x)
  x = tf.keras.layers.Dense(config.embedding_size, kernel_initializer=initializer(1),
                            name="projection")(x)
  logits = tf.keras.layers.Dense(config.vocab_size, kernel_initializer=initializer(2),
                                 name="logits")(x)
  return tf.keras.Model(inputs, logits, name=f"nwp_{config.cell}")
