"""Your own Keras model in place of the package's LSTM/CIFG: `--keras_model=package.module:function`.

The function takes the vocabulary size and returns an uncompiled Keras model
mapping [batch, time] int32 token ids to [batch, time, vocab_size] logits,
the shape `models.nwp.build_nwp_model` has; the data, the loop, the metrics,
the checkpoints and every aggregator (secure sum, DP) work around it as they
do around ours:

    def build(vocab_size: int) -> tf.keras.Model:
      return tf.keras.Sequential([
          tf.keras.layers.Embedding(vocab_size, 32),
          tf.keras.layers.GRU(64, return_sequences=True),
          tf.keras.layers.Dense(vocab_size)])

From Python, `run_experiment(config, keras_model=build)` takes the function
itself (a notebook's, say). TFF builds the model inside its computations
for every client, so the function must build a fresh model on each call and
use no Python state that changes; `learning.model_fn` seeds Keras before the
one build the initial weights come from.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

KerasModelBuilder = Callable[[int], Any]  # vocab_size -> tf.keras.Model


def resolve(spec: str) -> KerasModelBuilder:
  """The function `spec` ("package.module:function") names; ValueError in one line where it cannot be had."""
  module_name, _, function_name = spec.partition(":")
  if not module_name or not function_name:
    raise ValueError(f"--keras_model must be 'package.module:function', got {spec!r}")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"--keras_model: cannot import {module_name}: {e}") from None
  builder = getattr(module, function_name, None)
  if not callable(builder):
    raise ValueError(f"--keras_model: {module_name} has no function {function_name}")
  return builder


def build(builder: KerasModelBuilder, vocab_size: int, sequence_length: int) -> Any:
  """The builder's model with its weights created (a Sequential without an Input layer has none until called)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = builder(vocab_size)
  if not model.built:
    model(tf.zeros([1, sequence_length], tf.int32), training=False)
  return model


def build_checked(builder: KerasModelBuilder, vocab_size: int, sequence_length: int, name: str = "") -> Any:
  """The builder's model, checked once: a Keras model from [1, sequence_length] ids to [1, sequence_length, vocab].

  Raises:
    ValueError: one line naming what is wrong with it.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  label = name or getattr(builder, "__name__", "the keras_model function")
  try:
    model = builder(vocab_size)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--keras_model: {label}({vocab_size}) failed: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}") from None
  if not isinstance(model, tf.keras.Model):
    raise ValueError(f"--keras_model: {label} returned {type(model).__name__}, not a tf.keras.Model")
  try:
    logits = model(np.zeros([1, sequence_length], np.int32), training=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--keras_model: {label}'s model cannot take [batch, time] int32 token ids: "
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
  want = (1, sequence_length, vocab_size)
  if tuple(logits.shape) != want:
    raise ValueError(f"--keras_model: {label}'s model gives logits of shape {tuple(logits.shape)} for "
                     f"[1, {sequence_length}] ids; the task needs {want} (one logit per token id)")
  return model
