"""Fixed-point encoding of a value structure into Z_{2^b}, and back (graph code).

A client's value (any nested structure of float and integer tensors) becomes
one vector: float leaves clipped to [-c, c] and integer leaves to
[-int_clip, int_clip] (non-finite values become 0), counting what was
clipped; floats quantized to fixed point with scale s and unbiased
stochastic rounding (float32 leaves in 4-byte arithmetic, exactly; see
`Quantizer._quantize_float32`); the clipped count appended as one more
coordinate (so it, too, is summed securely), padded so every mask is whole
PRG words; mapped to Z_{2^b} in uint32 words, or at b <= 21 packed into
uint64 words.

No overflow: with at most n clients, |sum| <= n (c s + 1) must stay below
2^(b-1) so the signed sum is recovered exactly; it is checked when the
quantizer is built. The default scale is the largest power of two that fits
(power of two: x*s is exact in float64).

Packing at b <= 21: floor(64 / b) coordinates share one 64-bit word, each in
a b-bit lane as q + o with o = floor((2^(b-1) - 1) / n), so that every lane
value lies in [0, 2o] and the lanes of n clients sum below 2^b: the plain sum
of packed words never carries from one lane into the next. Masks are then
uniform 64-bit words added mod 2^64 (each masked word is uniform over
Z_{2^64}), so a client expands 64 / floor(64 / b) mask bits per coordinate
instead of 32 (21.3 at b = 21, 16 at b = 16); the server unmasks mod 2^64,
splits the lanes and subtracts n o. At 13 <= b <= 16 the four lanes are
16 bits wide and hold consecutive coordinates, so packing and splitting are
a bitcast. The quantization is the one of b bits either way: packing changes
the cost, not the result. `bits=0` lets `choose_bits` take the fewest mask
bits that hold the sum of n clients with at least AUTO_MIN_LEVELS = 2^9
levels per client over [-c, c] (and the integer leaves): 16 bits for up to
31 clients, and up to 127 where the clip meets the power-of-two scale well
(c = 16: 512 levels at 100 clients); 21 bits for up to 2,045 clients (4,094);
else 32. At b <= 16 the stochastic rounding draws 16 random bits per
coordinate instead of 32.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import config as config_lib
from tff_research.aggregation import prg as prg_lib

PACK_MAX_BITS = 21  # b <= 21 packs floor(64 / b) lanes per masked 64-bit word
ROUND16_MAX_BITS = 16  # b <= 16: stochastic rounding in int32 fixed point with 16-bit draws
# bits=0 picks the first of AUTO_BITS (four, then three coordinates per masked
# 64-bit word) that holds the sum of n clients with at least this many
# fixed-point levels per client over [-c, c] (and the integer leaves), else 32.
AUTO_BITS = (16, 21)
AUTO_MIN_LEVELS = 2**9


def _largest_power_of_two_scale(limit: int, num_clients: int, clip: float) -> Optional[float]:
  """The largest power-of-two s with n (c s + 1) <= limit, or None if there is none."""
  max_scale = (limit / num_clients - 1) / clip
  return 2.0**math.floor(math.log2(max_scale)) if max_scale > 0 else None


def choose_bits(num_clients: int, clip: float, int_clip: int, has_float: bool = True,
                has_int: bool = True, scale: Optional[float] = None) -> int:
  """What bits=0 means: the first b of AUTO_BITS (16: four coordinates per
  masked 64-bit word, 21: three) whose field holds the sum of `num_clients`
  clients, n * int_clip for the integer leaves and, for the float leaves, at
  least AUTO_MIN_LEVELS fixed-point levels per client over [-c, c]; else 32.
  The mask work per coordinate is 16, 21.3 or 32 PRG bits."""
  n = int(num_clients)
  for bits in AUTO_BITS:
    limit = 2**(bits - 1) - 1
    if has_int and n * int_clip > limit:
      continue
    if has_float:
      s = scale if scale is not None else _largest_power_of_two_scale(limit, n, clip)
      if s is None or n * (clip * s + 1) > limit or 2 * clip * s < AUTO_MIN_LEVELS:
        continue
    return bits
  return 32


class Quantizer:
  """Fixed-point encoding of a value structure into Z_{2^b}, and back. Graph code."""

  def __init__(self, value_type: Any, num_clients: int, config: config_lib.SecureSumConfig):
    self.value_type = tff.types.to_type(value_type)
    self.template = tff.types.structure_from_tensor_type_tree(lambda t: t, self.value_type)
    self.leaves = tf.nest.flatten(self.template)
    if not self.leaves:
      raise ValueError("value_type has no tensors")
    self._check_leaves()
    self.sizes = [int(np.prod(leaf.shape, dtype=np.int64)) for leaf in self.leaves]
    self.payload_dim = sum(self.sizes) + 1  # + the clipped-values counter
    self.num_clients = int(num_clients)
    if self.num_clients < 1:
      raise ValueError("num_clients must be >= 1")
    has_float = any(np.issubdtype(leaf.dtype, np.floating) for leaf in self.leaves)
    has_int = any(np.issubdtype(leaf.dtype, np.integer) for leaf in self.leaves)
    self.bits = int(config.bits) or choose_bits(self.num_clients, float(config.clip), int(config.int_clip),
                                                has_float, has_int, config.scale)
    self.modulus = 2**self.bits
    self._choose_layout()
    self.clip = float(config.clip)
    # The largest float32 <= c: float32 leaves are clipped there (the same thing).
    clip32 = np.float32(self.clip)
    self.clip32 = float(clip32 if float(clip32) <= self.clip else np.nextafter(clip32, np.float32(0)))
    self.int_clip = int(config.int_clip)
    self._choose_scale(config, has_float, has_int)

  def _check_leaves(self) -> None:
    for leaf in self.leaves:
      if not tff.types.is_shape_fully_defined(leaf.shape):
        raise ValueError(f"secure sum needs fully defined shapes, got {leaf}")
      if not (np.issubdtype(leaf.dtype, np.floating) or np.issubdtype(leaf.dtype, np.integer)):
        raise ValueError(f"secure sum supports float and integer tensors, got {leaf}")

  def _choose_layout(self) -> None:
    """Lanes per masked word, and the masked vector's length in words."""
    # b <= PACK_MAX_BITS: floor(64 / b) coordinates share each masked 64-bit
    # word (see module docstring), so a client expands fewer mask bits per
    # coordinate (64 / 3 at b = 21 instead of 32).
    self.lanes = 64 // self.bits if self.bits <= PACK_MAX_BITS else 1
    self.word_dtype = tf.uint64 if self.lanes > 1 else tf.uint32
    words = -(-self.payload_dim // self.lanes)
    # 13 <= b <= 16: four 16-bit lanes, word j holding coordinates 4j..4j+3:
    # packing and unpacking are a bitcast (no shifts, no lane slices).
    self.lanes16 = self.lanes == 4
    if self.lanes16:
      self.words = self.dim = words
    elif self.lanes > 1:
      # Lane i of word j holds coordinate i * words + j; a multiple of 16
      # words keeps each lane's slice 64-byte aligned, which TF slices
      # without a copy.
      self.words = -(-words // 16) * 16
      self.dim = self.words
    else:
      # An even length lets a Philox mask be drawn as whole 64-bit words
      # with no trailing slice (a copy of the whole mask); the pad is a masked 0.
      self.words = words
      self.dim = words + words % 2

  def _choose_scale(self, config: config_lib.SecureSumConfig, has_float: bool, has_int: bool) -> None:
    """The fixed-point scale, checked against overflow of the n clients' sum."""
    limit = 2**(self.bits - 1) - 1  # largest |sum| that decodes correctly
    n = self.num_clients
    if config.scale is None:
      scale = _largest_power_of_two_scale(limit, n, self.clip)
      if scale is None:
        raise ValueError(f"bits={self.bits} are too few for n={n} clients with clip {self.clip}: "
                         "no fixed-point scale avoids overflow")
      self.scale = scale
    else:
      self.scale = float(config.scale)
    if has_float and n * (self.clip * self.scale + 1) > limit:
      raise ValueError(
          f"overflow: n * (c * s + 1) = {n} * ({self.clip} * {self.scale} + 1) exceeds 2^(b-1) - 1 = "
          f"{limit} for bits={self.bits}; use more bits, a smaller clip or scale, or fewer clients")
    if has_int and n * self.int_clip > limit:
      raise ValueError(f"overflow: n * int_clip = {n} * {self.int_clip} exceeds 2^(b-1) - 1 = {limit} "
                       f"for bits={self.bits}")
    self.count_cap = limit // n  # the clipped counter saturates here
    # Packed lanes carry q + offset in [0, 2 offset]: every |q| <= limit // n
    # by the rules above, so n such values sum below 2^b and never carry into
    # the next lane.
    self.offset = limit // n
    mantissa, _ = math.frexp(self.scale)
    # x * s is exact in float32 only for a power-of-two scale (the default).
    self._scale_is_power_of_two = mantissa == 0.5 and 2.0**-100 < self.scale < 2.0**100

  @property
  def word_np_dtype(self) -> type:
    """numpy dtype of a masked word: uint64 when packed, else uint32."""
    return np.uint64 if self.lanes > 1 else np.uint32

  @property
  def step(self) -> float:
    """Quantization step 1/s of float leaves; each client's rounding error is < step."""
    return 1.0 / self.scale

  def encode(self, value: Any, rounding_seed: tf.Tensor,
             multiplier: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Clip, quantize (stochastic rounding), map to Z_{2^b}: uint32, or packed uint64 words. Graph code.

    `multiplier` (a float32 scalar, e.g. a client's weight) scales every
    float leaf before clipping; at a power-of-two scale it folds into the
    scale for free, with the same bits as multiplying first.
    """
    parts, clipped = [], tf.constant(0, tf.int64)
    for i, (leaf, x) in enumerate(zip(self.leaves, tf.nest.flatten(value))):
      x = tf.reshape(x, [-1])
      if np.issubdtype(leaf.dtype, np.floating):
        # Rounding draws in float32 (half the Philox words of float64): P(round
        # up) is within 2^-22 of the fraction: unbiased to within 2^-22 of a step.
        seed = tf.random.experimental.stateless_fold_in(rounding_seed, i)
        if leaf.dtype == np.float32 and self._scale_is_power_of_two:
          q, out = self._quantize_float32(x, seed, multiplier)
        else:
          q, out = self._quantize_float64(x if multiplier is None else x * tf.cast(multiplier, x.dtype), seed)
      else:
        x = tf.cast(x, tf.int64)
        out = tf.reduce_sum(tf.cast(tf.abs(x) > self.int_clip, tf.int64))
        # int64 -> uint32 keeps the low 32 bits: q mod 2^32 (two's complement),
        # the same as floormod(q, 2^32) without an int64 division per value.
        q = tf.cast(tf.clip_by_value(x, -self.int_clip, self.int_clip), tf.uint32)
      clipped += out
      parts.append(q)
    parts.append(tf.cast(tf.reshape(tf.minimum(clipped, self.count_cap), [1]), tf.uint32))
    padded = self.words * self.lanes if self.lanes > 1 else self.dim  # whole lanes, or an even length
    parts.append(tf.zeros([padded - self.payload_dim], tf.uint32))
    if self.lanes == 1:
      return self._reduce(tf.concat(parts, axis=0))  # mod 2^b
    return self._pack(parts)

  def _pack(self, parts: list[tf.Tensor]) -> tf.Tensor:
    """uint32 q mod 2^32 per coordinate (parts of lanes * words of them, padded)
    -> uint64 words whose lane i holds coordinate i * words + j as q + offset,
    b bits; with `lanes16`, coordinate 4 j + i in 16-bit lane i."""
    if self.lanes16:  # q mod 2^16 per part (a 2-byte concat); + offset wraps back to q + offset in [0, 2 offset]
      lanes = tf.concat([tf.cast(part, tf.uint16) for part in parts], axis=0) + tf.constant(self.offset, tf.uint16)
      return tf.bitcast(tf.reshape(lanes, [self.words, 4]), tf.uint64)
    shifted = tf.concat(parts, axis=0) + tf.constant(self.offset, tf.uint32)  # q + offset >= 0 (wraps back from q < 0)
    w = self.words
    lanes = [tf.cast(shifted[i * w:(i + 1) * w], tf.uint64) for i in range(self.lanes)]
    lanes = [lanes[0]] + [tf.bitwise.left_shift(lane, tf.constant(i * self.bits, tf.uint64))
                          for i, lane in enumerate(lanes) if i > 0]
    return tf.math.add_n(lanes)  # disjoint bits: sum = or

  def _unpack(self, words: tf.Tensor, clients: tf.Tensor) -> tf.Tensor:
    """Summed uint64 words of `clients` clients -> the signed int64 sum per coordinate."""
    if self.lanes16:
      sums = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:self.payload_dim]
      return tf.cast(sums, tf.int64) - tf.cast(clients, tf.int64) * self.offset
    mask = tf.constant(self.modulus - 1, tf.uint64)
    lanes = [tf.bitwise.bitwise_and(tf.bitwise.right_shift(words, tf.constant(i * self.bits, tf.uint64)), mask)
             for i in range(self.lanes)]
    sums = tf.concat(lanes, axis=0)[:self.payload_dim]
    return tf.cast(sums, tf.int64) - tf.cast(clients, tf.int64) * self.offset

  def _quantize_float32(self, x: tf.Tensor, seed: tf.Tensor,
                        multiplier: Optional[tf.Tensor] = None) -> tuple[tf.Tensor, tf.Tensor]:
    """float32 leaf -> (q mod 2^32 as uint32, count out of range), all in 4-byte arithmetic.

    Exact without float64: y = x * s is exact (s is a power of two); when
    every |y| <= clip32 * s (the usual case: this check also fails on NaN and
    inf, as max and min propagate NaN) nothing needs clipping, else
    non-finite values become 0 and the rest are clipped at clip32, and no
    float32 lies in (clip32, c], so that is clipping at c. A `multiplier` m
    folds into the scale: fl(x m) s = fl(x (m s)) for a power-of-two s. |q| < 2^31 by the overflow rule.

    Stochastic rounding, q = floor(y) + [u < y - floor(y)] in distribution:
    * b <= 16 (ROUND16_MAX_BITS): in int32 fixed point with 16 fractional
      bits, q = (trunc(y 2^16) + r) >> 16 for a uniform 16-bit r (a quarter of
      a 64-bit PRG word per coordinate). |y| < 2^15 there, so y 2^16 fits an
      int32; P(round up) is within 2^-16 of the fraction.
    * else: in float32 with a float32 uniform u (23 random bits); y - floor(y)
      is exact except for -1 < y < 0, where it is within 2^-25 of the true
      fraction, so P(round up) is within 2^-22 of it.
    """
    fixed = self.bits <= ROUND16_MAX_BITS
    unit = 2.0**16 if fixed else 1.0  # y is carried as y * unit
    scale = tf.constant(self.scale * unit, tf.float32)
    y = x * (scale if multiplier is None else multiplier * scale)
    bound = tf.constant(self.clip32 * self.scale * unit, tf.float32)
    # Two read-only reductions (NaN propagates through both, so NaN fails the check)
    in_range = tf.logical_and(tf.reduce_max(y) <= bound, tf.reduce_min(y) >= -bound)

    def clip():
      xm = x if multiplier is None else x * multiplier
      kept = tf.where(tf.math.is_finite(xm), xm, tf.zeros_like(xm))
      kept = tf.clip_by_value(kept, -self.clip32, self.clip32)
      return kept * scale, tf.reduce_sum(tf.cast(tf.not_equal(kept, xm), tf.int64))  # out of range, +-inf, NaN

    y, out = tf.cond(in_range, lambda: (y, tf.constant(0, tf.int64)), clip)
    if fixed:
      size = int(x.shape[0])
      draws = tf.reshape(tf.bitcast(prg_lib.philox_words(seed, -(-size // 4), tf.uint64), tf.uint16), [-1])[:size]
      q = tf.bitwise.right_shift(tf.cast(y, tf.int32) + tf.cast(draws, tf.int32), 16)
      return tf.bitcast(q, tf.uint32), out
    floor = tf.floor(y)
    u = tf.random.stateless_uniform(tf.shape(y), seed=seed, dtype=tf.float32, alg="philox")
    q = tf.cast(floor + tf.cast(u < y - floor, tf.float32), tf.int32)
    return tf.bitcast(q, tf.uint32), out

  def _quantize_float64(self, x: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Other float leaves, or any scale that is not a power of two: in float64."""
    x = tf.cast(x, tf.float64)
    finite = tf.math.is_finite(x)
    x = tf.where(finite, x, tf.zeros_like(x))
    out = tf.logical_or(tf.logical_not(finite), tf.abs(x) > self.clip)
    y = tf.clip_by_value(x, -self.clip, self.clip) * self.scale
    floor = tf.floor(y)
    u = tf.random.stateless_uniform(tf.shape(y), seed=seed, dtype=tf.float32, alg="philox")
    q = tf.cast(floor + tf.cast(tf.cast(u, tf.float64) < y - floor, tf.float64), tf.int64)
    return tf.cast(q, tf.uint32), tf.reduce_sum(tf.cast(out, tf.int64))  # low 32 bits: q mod 2^32

  def _reduce(self, v: tf.Tensor) -> tf.Tensor:
    """mod 2^b for one coordinate per word; packed words live in Z_{2^64}."""
    if self.bits == 32 or self.lanes > 1:
      return v
    return tf.bitwise.bitwise_and(v, tf.constant(self.modulus - 1, tf.uint32))

  def encode_and_mask(self, value: Any, material: Any, masks: prg_lib.MaskPrg,
                      multiplier: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The vector a client uploads: encode(value) + its masks mod 2^b (2^64 when packed). Graph code."""
    encoded = self.encode(value, material["rounding_seed"], multiplier)
    return self._reduce(masks.add_masks(encoded, material))

  def checked_unmask_and_decode(self, masked_sum: tf.Tensor, correction: Any, masks: prg_lib.MaskPrg,
                                clients: tf.Tensor) -> tuple[Any, tf.Tensor]:
    """`unmask_and_decode`, failing in the graph for more clients than the overflow bound covers.

    The driver checks the count in Python first; this stops a direct call of
    a server computation from decoding a sum that may have wrapped around.
    """
    check = tf.debugging.assert_less_equal(
        clients, tf.constant(self.num_clients, tf.int32),
        message=f"more clients than the {self.num_clients} the overflow bound was built for")
    with tf.control_dependencies([check]):
      return self.unmask_and_decode(tf.identity(masked_sum), correction, masks, clients)

  def unmask_and_decode(self, masked_sum: tf.Tensor, correction: Any, masks: prg_lib.MaskPrg,
                        clients: tf.Tensor):
    """Removes the masks that `correction` (the server's material) rebuilds, decodes. Graph code.

    `clients`: how many vectors were summed. Returns (value structure,
    clipped count as int64).
    """
    unmasked = self._reduce(masked_sum - masks.add_masks(tf.zeros([self.dim], self.word_dtype), correction))
    if self.lanes > 1:
      signed = self._unpack(unmasked, clients)
    else:
      s = tf.cast(unmasked, tf.int64)
      signed = tf.where(s >= 2**(self.bits - 1), s - self.modulus, s)
    leaves, offset = [], 0
    for leaf, size in zip(self.leaves, self.sizes):
      part = signed[offset:offset + size]
      offset += size
      if np.issubdtype(leaf.dtype, np.floating):
        part = tf.cast(part, tf.float64) / self.scale
      leaves.append(tf.reshape(tf.cast(part, leaf.dtype), leaf.shape))
    return tf.nest.pack_sequence_as(self.template, leaves), signed[self.payload_dim - 1]

  def upload_bytes(self) -> int:
    """Bytes of one masked vector: its 64-bit words when packed, else b bits per coordinate."""
    if self.lanes > 1:
      return 8 * self.words
    return math.ceil(self.payload_dim * self.bits / 8)
