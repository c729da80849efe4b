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
bits that hold the sum of n clients with at least AUTO_MIN_LEVELS = 2^13
levels per client over [-c, c] (and the integer leaves): 16 bits for up to
7 clients (5 at c = 100, where the power-of-two scale fits less well), 21
bits for up to 255 (163), else 32. At b <= 16 the stochastic rounding draws
16 random bits per coordinate instead of 32.

Refused when the quantizer is built, in one line: fewer than
MIN_LEVELS_PER_CLIENT = 16 levels per client over [-c, c], and, for float32
leaves, a clip beyond the largest float32. With `track_error=True` (secure
FedAvg) each client also encodes its squared rounding error and its clipping
error as 2 K base-B digits before the counter (`_error_coordinates`), so the
server learns how far quantization moved the sum (`decode_error`) and, about
the clients, only those two sums.
"""
from __future__ import annotations

import collections
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
# Measured on the demo preset at 10 clients (BENCHMARKS.md, "Quantization
# study"): 16 bits at 3,200 levels (clip 100) moved each round's mean by 12 %
# (median, relative L2) and 4,096 (clip 16) by 3.9 %, while 21 bits at 204,800
# moved it 0.6 % and tracked plain FedAvg round for round on Shakespeare and
# on a corpus of man pages; 2^13 keeps 16 bits only for rounds of a few clients.
AUTO_BITS = (16, 21)
AUTO_MIN_LEVELS = 2**13
# Refused below this many fixed-point levels per client over [-c, c]
# (2 c s): a step is then more than c / 8, so every value inside the clip
# becomes one of a handful of integers and one client's rounding error (up
# to a step a coordinate) is as large as the clip itself. `scale=1e-300`
# (or too few bits for the clients) gave 0 or +-1 for every value. The
# coarsest sums the tests check exact (8 bits, 4-6 clients) keep 32.
MIN_LEVELS_PER_CLIENT = 16
# float32 leaves never exceed this (beyond it they are inf): a larger clip
# clips nothing and only coarsens the steps (`clip=1e300` quantized every
# update to 0 or +-1).
FLOAT32_MAX = float(np.finfo(np.float32).max)
# `track_error=True`: each client's squared rounding error (in steps^2) and
# clipping error (L2, in steps) are securely summed as fixed-point numbers
# with this many fractional bits, capped at ERROR_CAP, split into base-B
# digits (B - 1 = the largest value n clients can add without overflow), so
# the server gets exact sums of values far larger than one lane holds.
ERROR_FRACTION_BITS = 8
ERROR_CAP = 2.0**40
_ERROR_BITS = 49  # ERROR_CAP * 2^ERROR_FRACTION_BITS = 2^48 < 2^49


def _largest_power_of_two_scale(limit: int, num_clients: int, clip: float) -> Optional[float]:
  """The largest power-of-two s with n (c s + 1) <= limit, or None if there is none."""
  max_scale = (limit / num_clients - 1) / clip
  return 2.0**math.floor(math.log2(max_scale)) if max_scale > 0 else None


def _error_digits(bits: int, num_clients: int) -> tuple[int, int]:
  """(base B, digits K) of a tracked error: n clients' digits (each < B) sum to at
  most 2^(b-1) - 1, and K base-B digits hold every value below 2^_ERROR_BITS."""
  base = max(2, (2**(bits - 1) - 1) // int(num_clients) + 1)  # a base of 1 is refused by _choose_scale
  digits = 1
  while base**digits < 2**_ERROR_BITS:
    digits += 1
  return base, digits


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
  """Fixed-point encoding of a value structure into Z_{2^b}, and back. Graph code.

  Args:
    value_type: the (nested) tensor type of one client's value.
    num_clients: the most clients a sum may have (the overflow bound).
    config: clip, bits, scale and int_clip (`SecureSumConfig`).
    track_error: also sum each client's squared rounding error and its
      clipping error (two scalars, securely summed with the value) so the
      server can state how far quantization moved the sum
      (`checked_unmask_decode_and_error`); off, the layout is the value and
      the clipped counter only.
    modular: integer leaves are residues mod 2^b, summed mod 2^b and
      decoded into [-2^(b-1), 2^(b-1)) (the modular sum distributed DP needs:
      a wrapped sum is still the sum of the noisy values mod 2^b); they are
      not clipped, their overflow bound is not checked and nothing is packed.
  """

  def __init__(self, value_type: Any, num_clients: int, config: config_lib.SecureSumConfig,
               track_error: bool = False, modular: bool = False):
    self.modular = bool(modular)
    self.value_type = tff.types.to_type(value_type)
    self.template = tff.types.structure_from_tensor_type_tree(lambda t: t, self.value_type)
    self.leaves = tf.nest.flatten(self.template)
    if not self.leaves:
      raise ValueError("value_type has no tensors")
    self._check_leaves()
    self.sizes = [int(np.prod(leaf.shape, dtype=np.int64)) for leaf in self.leaves]
    self.num_clients = int(num_clients)
    if self.num_clients < 1:
      raise ValueError("num_clients must be >= 1")
    has_float = any(np.issubdtype(leaf.dtype, np.floating) for leaf in self.leaves)
    has_int = any(np.issubdtype(leaf.dtype, np.integer) for leaf in self.leaves)
    if any(leaf.dtype == np.float32 for leaf in self.leaves) and float(config.clip) > FLOAT32_MAX:
      raise ValueError(f"clip {config.clip:g} is beyond the largest float32 ({FLOAT32_MAX:.4g}): float32 values "
                       "never reach it, so it clips nothing and only coarsens the fixed-point steps")
    self.bits = int(config.bits) or choose_bits(self.num_clients, float(config.clip), int(config.int_clip),
                                                has_float, has_int, config.scale)
    self.modulus = 2**self.bits
    self.track_error = bool(track_error) and has_float
    self.error_base, self.error_digits = (_error_digits(self.bits, self.num_clients) if self.track_error
                                          else (0, 0))
    # The leaves, then two tracked errors of error_digits digits each, then the clipped-values counter.
    self.payload_dim = sum(self.sizes) + 2 * self.error_digits + 1
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
    # Residues mod 2^b fill whole lanes, so packed lanes would carry into each other.
    self.lanes = 64 // self.bits if self.bits <= PACK_MAX_BITS and not self.modular else 1
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
    if has_int and not self.modular and n * self.int_clip > limit:
      raise ValueError(f"overflow: n * int_clip = {n} * {self.int_clip} exceeds 2^(b-1) - 1 = {limit} "
                       f"for bits={self.bits}")
    levels = 2 * self.clip * self.scale
    if has_float and levels < MIN_LEVELS_PER_CLIENT:
      raise ValueError(
          f"clip {self.clip:g} and scale {self.scale:g} leave {levels:.3g} fixed-point levels per client over "
          f"[-c, c], fewer than MIN_LEVELS_PER_CLIENT = {MIN_LEVELS_PER_CLIENT}: every value would round to one of "
          "a few integers; use a larger scale, more bits or fewer clients")
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
    parts, clipped, errors = [], tf.constant(0, tf.int64), []
    for i, (leaf, x) in enumerate(zip(self.leaves, tf.nest.flatten(value))):
      x = tf.reshape(x, [-1])
      if np.issubdtype(leaf.dtype, np.floating):
        # Rounding draws in float32 (half the Philox words of float64): P(round
        # up) is within 2^-22 of the fraction: unbiased to within 2^-22 of a step.
        seed = tf.random.experimental.stateless_fold_in(rounding_seed, i)
        if leaf.dtype == np.float32 and self._scale_is_power_of_two:
          q, out, error = self._quantize_float32(x, seed, multiplier)
        else:
          q, out, error = self._quantize_float64(x if multiplier is None else x * tf.cast(multiplier, x.dtype),
                                                 seed)
        errors.append(error)
      elif self.modular:  # already a residue mod 2^b: summed as it is, never clipped
        q, out = tf.cast(tf.cast(x, tf.int64), tf.uint32), tf.constant(0, tf.int64)
      else:
        x = tf.cast(x, tf.int64)
        out = tf.reduce_sum(tf.cast(tf.abs(x) > self.int_clip, tf.int64))
        # int64 -> uint32 keeps the low 32 bits: q mod 2^32 (two's complement),
        # the same as floormod(q, 2^32) without an int64 division per value.
        q = tf.cast(tf.clip_by_value(x, -self.int_clip, self.int_clip), tf.uint32)
      clipped += out
      parts.append(q)
    if self.track_error:
      parts.append(self._error_coordinates(tf.add_n(errors)))
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

  def _quantize_float32(self, x: tf.Tensor, seed: tf.Tensor, multiplier: Optional[tf.Tensor] = None
                        ) -> tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
    """float32 leaf -> (q mod 2^32 as uint32, count out of range, errors (`_errors`)), in 4-byte arithmetic.

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
      out = tf.reduce_sum(tf.cast(tf.not_equal(kept, xm), tf.int64))  # out of range, +-inf, NaN
      return kept * scale, out, self._clipping_sq(kept, xm)

    y, out, clip_sq = tf.cond(
        in_range, lambda: (y, tf.constant(0, tf.int64), tf.constant(0.0, tf.float64)), clip)
    if fixed:
      size = int(x.shape[0])
      draws = tf.reshape(tf.bitcast(prg_lib.philox_words(seed, -(-size // 4), tf.uint64), tf.uint16), [-1])[:size]
      q = tf.bitwise.right_shift(tf.cast(y, tf.int32) + tf.cast(draws, tf.int32), 16)
    else:
      floor = tf.floor(y)
      u = tf.random.stateless_uniform(tf.shape(y), seed=seed, dtype=tf.float32, alg="philox")
      q = tf.cast(floor + tf.cast(u < y - floor, tf.float32), tf.int32)
    return tf.bitcast(q, tf.uint32), out, self._errors(q, y, clip_sq, unit)

  def _quantize_float64(self, x: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
    """Other float leaves, or any scale that is not a power of two: in float64."""
    x = tf.cast(x, tf.float64)
    finite = tf.math.is_finite(x)
    kept = tf.where(finite, x, tf.zeros_like(x))
    out = tf.logical_or(tf.logical_not(finite), tf.abs(kept) > self.clip)
    kept = tf.clip_by_value(kept, -self.clip, self.clip)
    y = kept * self.scale
    floor = tf.floor(y)
    u = tf.random.stateless_uniform(tf.shape(y), seed=seed, dtype=tf.float32, alg="philox")
    q = tf.cast(floor + tf.cast(tf.cast(u, tf.float64) < y - floor, tf.float64), tf.int64)
    errors = self._errors(q, y, self._clipping_sq(kept, x), 1.0)
    return tf.cast(q, tf.uint32), tf.reduce_sum(tf.cast(out, tf.int64)), errors  # low 32 bits: q mod 2^32

  def _clipping_sq(self, kept: tf.Tensor, original: tf.Tensor) -> tf.Tensor:
    """sum((kept - original)^2) in steps^2 (float64); a non-finite original saturates it. 0 when untracked."""
    if not self.track_error:
      return tf.constant(0.0, tf.float64)
    gap = (tf.cast(kept, tf.float64) - tf.cast(original, tf.float64)) * self.scale
    saturated = tf.fill(tf.shape(gap), tf.constant(ERROR_CAP**2, tf.float64))
    return tf.reduce_sum(tf.where(tf.math.is_finite(original), tf.square(gap), saturated))

  def _errors(self, q: tf.Tensor, y: tf.Tensor, clip_sq: tf.Tensor, unit: float) -> Optional[tf.Tensor]:
    """One leaf's (squared rounding error, squared clipping error) in steps^2 as float64[2]; None when untracked.

    `y` is the clipped value in steps times `unit`, `q` what it rounded to.
    The sum of squares runs in y's dtype (float32 for float32 leaves: one
    extra pass over the leaf, its rounding far below what the metric needs).
    """
    if not self.track_error:
      return None
    rounding = tf.reduce_sum(tf.square(tf.cast(q, y.dtype) - y * (1.0 / unit)))
    return tf.stack([tf.cast(rounding, tf.float64), clip_sq])

  def _error_coordinates(self, errors: tf.Tensor) -> tf.Tensor:
    """A client's (squared rounding, squared clipping) error -> 2 K base-B digits as uint32. Graph code.

    The rounding error travels squared (independent zero-mean errors add in
    square: the server wants sum_u ||r_u||^2), the clipping error as a norm
    (clipping pulls every client towards 0, so only sum_u ||c_u|| bounds
    ||sum_u c_u||). Each in fixed point with ERROR_FRACTION_BITS, capped at
    ERROR_CAP (NaN saturates it); each digit is < B, so n clients' digits sum
    without overflow and the server recovers both sums exactly.
    """
    values = tf.stack([errors[0], tf.sqrt(errors[1])])
    values = tf.where(tf.math.is_nan(values), tf.constant(ERROR_CAP, tf.float64), tf.minimum(values, ERROR_CAP))
    fixed = tf.cast(tf.round(values * 2.0**ERROR_FRACTION_BITS), tf.int64)
    base = self.error_base
    digits = [tf.math.floormod(tf.math.floordiv(fixed, base**j), base) for j in range(self.error_digits)]
    return tf.cast(tf.reshape(tf.transpose(tf.stack(digits)), [-1]), tf.uint32)  # rounding's digits, then clipping's

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

  def check_clients(self, clients: Any) -> None:
    """Python side: raises ValueError, in one line, for more clients than the overflow bound covers.

    For code that calls a server computation directly: the graph's own check
    (`checked_unmask_and_decode`) fails too, but as a multi-line error from
    TFF's worker.
    """
    counted = int(np.asarray(clients))
    if not 0 <= counted <= self.num_clients:
      raise ValueError(f"{counted} clients summed, but the overflow bound was built for at most "
                       f"{self.num_clients}: the sum may have wrapped around, so it is not decoded")

  def checked_unmask_and_decode(self, masked_sum: tf.Tensor, correction: Any, masks: prg_lib.MaskPrg,
                                clients: tf.Tensor) -> tuple[Any, tf.Tensor]:
    """`unmask_and_decode`, failing in the graph for more clients than the overflow bound covers.

    The driver checks the count in Python first; this stops a direct call of
    a server computation from decoding a sum that may have wrapped around.
    """
    return self._decode(self._checked_signed(masked_sum, correction, masks, clients))

  def checked_unmask_decode_and_error(self, masked_sum: tf.Tensor, correction: Any,
                                      masks: Optional[prg_lib.MaskPrg],
                                      clients: tf.Tensor) -> tuple[Any, tf.Tensor, Any]:
    """`checked_unmask_and_decode`, plus the quantization error of the sum (`track_error=True`). Graph code.

    Returns (value structure, clipped count as int64, an OrderedDict of
    float64 scalars: `quantization_error` and `clipping_error`, relative L2,
    see `decode_error`).
    """
    if not self.track_error:
      raise ValueError("the quantizer was built with track_error=False")
    signed = self._checked_signed(masked_sum, correction, masks, clients)
    value, clipped = self._decode(signed)
    return value, clipped, self.decode_error(signed)

  def checked_decode_sum_and_error(self, encoded_sum: tf.Tensor, clients: tf.Tensor) -> tuple[Any, tf.Tensor, Any]:
    """`checked_unmask_decode_and_error` of a plain sum of `encode`d vectors (no masks). Graph code.

    What the ideal functionality computes (`fixed_point`): the same words,
    the same decoding, no protocol.
    """
    return self.checked_unmask_decode_and_error(encoded_sum, None, None, clients)

  def _checked_signed(self, masked_sum, correction, masks: Optional[prg_lib.MaskPrg], clients) -> tf.Tensor:
    check = tf.debugging.assert_less_equal(
        clients, tf.constant(self.num_clients, tf.int32),
        message=f"more clients than the {self.num_clients} the overflow bound was built for")
    with tf.control_dependencies([check]):
      return self._unmask(tf.identity(masked_sum), correction, masks, clients)

  def unmask_and_decode(self, masked_sum: tf.Tensor, correction: Any, masks: prg_lib.MaskPrg,
                        clients: tf.Tensor):
    """Removes the masks that `correction` (the server's material) rebuilds, decodes. Graph code.

    `clients`: how many vectors were summed. Returns (value structure,
    clipped count as int64).
    """
    return self._decode(self._unmask(masked_sum, correction, masks, clients))

  def _unmask(self, masked_sum, correction, masks: Optional[prg_lib.MaskPrg], clients) -> tf.Tensor:
    """The signed int64 sum per payload coordinate (`masks` None: a sum of unmasked encodings)."""
    if masks is not None:
      masked_sum = masked_sum - masks.add_masks(tf.zeros([self.dim], self.word_dtype), correction)
    unmasked = self._reduce(masked_sum)
    if self.lanes > 1:
      return self._unpack(unmasked, clients)
    s = tf.cast(unmasked, tf.int64)
    return tf.where(s >= 2**(self.bits - 1), s - self.modulus, s)

  def _decode(self, signed: tf.Tensor) -> tuple[Any, tf.Tensor]:
    leaves, offset = [], 0
    for leaf, size in zip(self.leaves, self.sizes):
      part = signed[offset:offset + size]
      offset += size
      if np.issubdtype(leaf.dtype, np.floating):
        part = tf.cast(part, tf.float64) / self.scale
      leaves.append(tf.reshape(tf.cast(part, leaf.dtype), leaf.shape))
    return tf.nest.pack_sequence_as(self.template, leaves), signed[self.payload_dim - 1]

  def decode_error(self, signed: tf.Tensor) -> Any:
    """How far quantization moved the released sum of the float leaves, relative L2. Graph code.

    From what the server holds: the released sum S (in steps) and the two
    securely summed error scalars. Rounding errors are zero-mean and
    independent across clients (each rounds with its own secret seed), so
    E||sum_u r_u||^2 = sum_u ||r_u||^2: sqrt of the summed squares is the
    expected size of the sum's rounding error. Clipping pulls values towards
    0 and can add up, so its part is the bound sum_u ||c_u||. Both over
    ||S|| (the exact sum is unknown to the server; S differs from it by the
    error itself): `quantization_error` = (rounding + clipping) / ||S||,
    `clipping_error` = clipping / ||S||; inf where S is 0 but the error is not.
    """
    floats = [signed[sum(self.sizes[:i]):sum(self.sizes[:i + 1])] for i, leaf in enumerate(self.leaves)
              if np.issubdtype(leaf.dtype, np.floating)]
    norm = tf.norm(tf.cast(tf.concat(floats, axis=0), tf.float64))
    start, k = sum(self.sizes), self.error_digits
    digits = tf.reshape(tf.cast(signed[start:start + 2 * k], tf.float64), [2, k])
    powers = tf.constant([float(self.error_base**j) for j in range(k)], tf.float64)
    totals = tf.reduce_sum(digits * powers, axis=1) / 2.0**ERROR_FRACTION_BITS
    rounding, clipping = tf.sqrt(totals[0]), totals[1]

    def relative(error):
      return tf.where(norm > 0, error / tf.maximum(norm, 1e-300),
                      tf.where(error > 0, tf.constant(np.inf, tf.float64), tf.constant(0.0, tf.float64)))

    return collections.OrderedDict(quantization_error=relative(rounding + clipping),
                                   clipping_error=relative(clipping))

  def upload_bytes(self) -> int:
    """Bytes of one masked vector: its 64-bit words when packed, else b bits per coordinate."""
    if self.lanes > 1:
      return 8 * self.words
    return math.ceil(self.payload_dim * self.bits / 8)
