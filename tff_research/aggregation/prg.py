"""Mask PRGs: how a 128-bit seed becomes the words that mask a client's vector.

A client's mask is PRG(b_u) + sum over neighbours v of +-PRG(s_uv) (word-wise,
mod 2^32 or mod 2^64); the server removes the survivors' self masks and the
dropped clients' pairwise masks the same way. Two PRGs:

* `aes-ctr` (default, cryptographic): AES-128 in counter mode (NIST SP
  800-38A) keyed by the seed, counter block starting at 0, the keystream read
  as little-endian words. Each seed keys one stream only: b_u is fresh from
  the OS every round, s_uv is HKDF output bound to the round and the pair
  (`key_agreement`). No TF op on TFF's worker computes AES (and
  `tf.py_function` does not run there), so the client's side of the
  simulation expands its seeds in Python with OpenSSL (`cryptography`,
  AES-NI) and hands its computation the one summed mask vector: through a
  memory file on a local worker (`runtime.handoff`; a few ms per client),
  inline as a tensor when the workers are remote (13 ms per MB here). The
  server's correction travels the same way.
* `philox` (opt-in: fast, not cryptographic): TF's Philox-4x32-10
  (`tf.random.stateless_uniform`) expands the seeds inside the worker. Its
  key is 64 bits and it makes no cryptographic claim; it is kept for speed
  comparisons and for runs where the masks only need to look random.

Either way the masked vector is uniform over Z_{2^w} to anyone without the
seeds. The stochastic rounding of the quantizer draws from Philox in both
cases, keyed by the client's own 128-bit rounding seed from the OS CSPRNG
(`protocol.ClientState`): the server cannot replay a client's rounding, so
randomness a client adds (rounding now, noise for privacy later) stays the
client's. Each memory file a material uses has a path of its own, random
and removed once the round's computations have read it (`runtime.handoff`).
"""
from __future__ import annotations

import collections
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import config as config_lib
from tff_research.aggregation.secagg import key_agreement as ka
from tff_research.aggregation.secagg import streams
from tff_research.runtime import handoff

PRGS = config_lib.PRGS
DEFAULT_PRG = config_lib.DEFAULT_PRG
_BLOCK = streams.BLOCK
_PHILOX = "philox"
SignedSeed = streams.SignedSeed


class MaskPrg:
  """Mask material for the clients' and the server's computations, and the graph code using it.

  Built for one masked-vector shape: `dim` words of `word_dtype` (tf.uint32 or tf.uint64).
  """
  name = ""
  cryptographic = False

  def __init__(self, dim: int, word_dtype: tf.DType):
    self.dim = int(dim)
    self.word_dtype = tf.as_dtype(word_dtype)
    self.np_dtype = self.word_dtype.as_numpy_dtype

  def client_material_type(self) -> tff.Type:
    return tff.types.to_type(collections.OrderedDict(
        **self._mask_type(), rounding_seed=tff.TensorType(np.int64, [2])))

  def server_material_type(self) -> tff.Type:
    return tff.types.to_type(collections.OrderedDict(**self._mask_type()))

  def client_material(self, seeds: Sequence[SignedSeed], rounding_seed: bytes) -> collections.OrderedDict:
    """What a client hands its masking computation (Python side)."""
    return collections.OrderedDict(**self._mask_material(seeds), rounding_seed=ka.seed_to_tf(rounding_seed))

  def server_material(self, seeds: Sequence[SignedSeed]) -> collections.OrderedDict:
    """What the server hands its unmasking computation (Python side)."""
    return collections.OrderedDict(**self._mask_material(seeds))

  def release(self) -> None:
    """Frees what the materials made since the last release (after the computations ran)."""

  def add_masks(self, acc: tf.Tensor, material: Any) -> tf.Tensor:
    """Graph code: acc + sum_j sign_j PRG(seed_j), word-wise mod 2^w."""
    raise NotImplementedError

  def _mask_type(self) -> dict[str, tff.Type]:
    raise NotImplementedError

  def _mask_material(self, seeds: Sequence[SignedSeed]) -> dict[str, Any]:
    raise NotImplementedError


class AesCtrMasks(MaskPrg):
  """AES-128-CTR masks, expanded where the client (or server) runs and handed over summed.

  A subclass may set another `stream_cipher` (any `cryptography` stream
  cipher's encryptor from a 16-byte seed) and keep the rest.
  """
  name = "aes-ctr"
  cryptographic = True
  stream_cipher = staticmethod(streams.aes_ctr)

  def __init__(self, dim: int, word_dtype: tf.DType, use_memory_files: Optional[bool] = None):
    super().__init__(dim, word_dtype)
    self.use_memory_files = handoff.available() if use_memory_files is None else use_memory_files
    self._open: list[handoff.MemoryFile] = []

  def _mask_type(self):
    if self.use_memory_files:
      return {"mask": tff.TensorType(np.str_)}  # the path of a memory file
    return {"mask": tff.TensorType(self.np_dtype, [self.dim])}

  def _mask_material(self, seeds):
    if not self.use_memory_files:
      return {"mask": streams.add_signed_streams(np.zeros(self.dim, self.np_dtype), seeds, self.stream_cipher)}
    file = handoff.MemoryFile(self.dim, self.np_dtype)
    self._open.append(file)
    streams.add_signed_streams(file.array, seeds, self.stream_cipher)
    return {"mask": file.path}

  def release(self) -> None:
    while self._open:
      self._open.pop().close()

  def add_masks(self, acc, material):
    mask = material["mask"]
    if self.use_memory_files:
      mask = handoff.read_tensor(mask, self.word_dtype, self.dim)
    return acc + mask


class PhiloxMasks(MaskPrg):
  """Philox-4x32-10 masks expanded inside the worker from the seeds (not cryptographic)."""
  name = "philox"
  cryptographic = False

  def _mask_type(self):
    return {"seeds": tff.TensorType(np.int64, [None, 2]), "signs": tff.TensorType(np.int32, [None])}

  def _mask_material(self, seeds):
    words = np.asarray([ka.seed_to_tf(seed) for seed, _ in seeds], np.int64).reshape([-1, 2])
    return {"seeds": words, "signs": np.asarray([sign for _, sign in seeds], np.int32)}

  def add_masks(self, acc, material):
    return signed_philox_sum(acc, material["seeds"], material["signs"], self.dim)


def philox_words(seed: tf.Tensor, size: int, dtype: tf.DType = tf.uint32) -> tf.Tensor:
  """`size` Philox words (uint32 or uint64) from a 128-bit seed (two int64 words). Graph code.

  Always drawn as 64-bit words (a uint32 stream is each 64-bit word split in
  two), about a fifth faster per 32 bits than drawing uint32; for an even
  `size` there is no trailing slice to copy.
  """
  if dtype == tf.uint64:
    return tf.random.stateless_uniform([size], seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint64, alg=_PHILOX)
  words = tf.random.stateless_uniform([(size + 1) // 2], seed=seed, minval=None, maxval=None,
                                      dtype=tf.uint64, alg=_PHILOX)
  stream = tf.reshape(tf.bitcast(words, tf.uint32), [-1])
  return stream if size % 2 == 0 else stream[:size]


def signed_philox_sum(acc: tf.Tensor, seeds: tf.Tensor, signs: tf.Tensor, size: int) -> tf.Tensor:
  """acc + sum_j signs[j] * Philox(seeds[j]) in acc's dtype (signs +1, -1 or 0). Graph code.

  One branch per mask, chosen on the (scalar) sign: one pass over the vector
  and no expansion at all for sign 0, where selecting elementwise between
  both results cost two extra passes per mask.
  """

  def body(i, acc):
    sign = signs[i]
    acc = tf.cond(
        tf.equal(sign, 0), lambda: acc,
        lambda: tf.cond(tf.equal(sign, 1), lambda: acc + philox_words(seeds[i], size, acc.dtype),
                        lambda: acc - philox_words(seeds[i], size, acc.dtype)))
    return i + 1, acc

  _, acc = tf.while_loop(lambda i, _: i < tf.shape(seeds)[0], body, (tf.constant(0), acc))
  return acc


def build_mask_prg(name: str, dim: int, word_dtype: tf.DType) -> MaskPrg:
  """The mask PRG `name` (one of PRGS) for vectors of `dim` words of `word_dtype`."""
  if name == AesCtrMasks.name:
    return AesCtrMasks(dim, word_dtype)
  if name == PhiloxMasks.name:
    return PhiloxMasks(dim, word_dtype)
  raise ValueError(f"unknown mask PRG {name!r}; choose one of: {', '.join(PRGS)}")
