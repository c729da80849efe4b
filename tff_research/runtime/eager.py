"""Eager TensorFlow code in a process where TFF computations were traced.

After TFF programs ran in the same process (seen under absl's `app.run`), TF's
context-switch stack can be left without its base eager entry. Keras then
thinks it is building a graph: `tf.keras.Input` becomes a v1 placeholder and an
RNN layer fails with "'SymbolicTensor' object cannot be interpreted as an
integer". `in_eager_mode` pushes eager mode back for the call.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from tensorflow.python.eager import context as tf_context  # pylint: disable=g-direct-tensorflow-import

F = TypeVar("F", bound=Callable[..., Any])


def in_eager_mode(fn: F) -> F:
  """`fn`, run with eager mode pushed on TF's context-switch stack."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with tf_context.eager_mode():
      return fn(*args, **kwargs)
  return wrapper  # type: ignore[return-value]
