"""What runs at the clients before the masked sum quantizes, and at the server after it decodes.

The extension point around the secure sum (`masked_sum.SecureSumFactory(
encoders=...)`), in the spirit of pfl-research's postprocessors and TFF's
encoded aggregators:

* `client_encode(value, seed)` runs in each client's TF computation, in the
  order given, on the value as the client holds it (in a weighted sum,
  before it is weighted). `seed` is a `[2]` int64 stateless-RNG seed derived
  from the client's own rounding seed (OS CSPRNG: the server cannot replay
  it), so an encoder that draws noise draws a client's secret randomness.
* `server_decode(total, clients)` runs in the server's TF computation, in
  reverse order, on the decoded sum (in a weighted sum, on sum(w x) before
  the division by sum(w)); `clients` is how many values were summed.

An encoder keeps the value's structure and dtypes unless it says otherwise
(`encoded_type`): distributed DP (`privacy.distributed`) turns a model update
into one integer vector, wrapped mod 2^b (`modular_bits` = b), which the
quantizer then sums modulo 2^b instead of clipping it. The fixed-point quantizer
(`quantization.Quantizer`) is the last client step and the first server
step of every secure sum, so encoders work in floating point and the masks
still cover everything a client sends. Encoders are linear or
sum-preserving by contract (a decoded sum of encoded values is the sum of the
values, up to their own noise): e.g. a random rotation, or DP noise whose
decode is the identity.
"""
from __future__ import annotations

import abc
from typing import Any, Optional, Sequence

import tensorflow as tf


class Encoder(abc.ABC):
  """One client-side encoding of a value and its server-side decoding of the sum (module docstring)."""
  # b where the encoded integer leaves are residues mod 2^b (the secure sum
  # must then run mod 2^b, `quantization.Quantizer(modular=True)`); None: plain values.
  modular_bits: Optional[int] = None

  def encoded_type(self, value_type: Any) -> Any:
    """The TFF type of `client_encode`'s result for a value of `value_type` (default: the same)."""
    return value_type

  @abc.abstractmethod
  def client_encode(self, value: Any, seed: tf.Tensor) -> Any:
    """Graph code at a client: the encoded value, same structure and dtypes."""

  @abc.abstractmethod
  def server_decode(self, total: Any, clients: tf.Tensor) -> Any:
    """Graph code at the server: the decoded sum of `clients` encoded values."""


# Keeps encoders' seeds apart from the quantizer's per-leaf rounding streams (stateless_fold_in(seed, leaf)).
_ENCODER_STREAM = 0x656e63


def encoded_type(encoders: Sequence[Encoder], value_type: Any) -> Any:
  """The type every encoder in turn makes of `value_type`: what the quantizer receives."""
  for encoder in encoders:
    value_type = encoder.encoded_type(value_type)
  return value_type


def modular_bits(encoders: Sequence[Encoder]) -> Optional[int]:
  """The b of the last encoder that wraps its output mod 2^b (None: none does)."""
  bits = [e.modular_bits for e in encoders if e.modular_bits is not None]
  return bits[-1] if bits else None


def encode_all(encoders: Sequence[Encoder], value: Any, rounding_seed: tf.Tensor) -> Any:
  """The value through every encoder in order, encoder i seeded from (rounding_seed, stream, i). Graph code."""
  for i, encoder in enumerate(encoders):
    seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(rounding_seed, _ENCODER_STREAM), i)
    value = encoder.client_encode(value, seed)
  return value


def decode_all(encoders: Sequence[Encoder], total: Any, clients: tf.Tensor) -> Any:
  """The sum through every encoder's decode, last encoder first. Graph code."""
  for encoder in reversed(encoders):
    total = encoder.server_decode(total, clients)
  return total
