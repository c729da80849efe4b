"""Pairwise-masked secure sum in TFF's Federated Core (Bonawitz et al. 2017).

What runs where:

* CLIENTS, `tff.tensorflow.computation` under `tff.federated_map`
  (`client_mask`): flatten the value (any nested structure of tensors) into one
  vector; clip float leaves to [-c, c] and integer leaves to
  [-int_clip, int_clip] (non-finite values become 0), counting what was
  clipped; quantize floats to fixed point with scale s and unbiased
  stochastic rounding (float32 leaves in 4-byte arithmetic, exactly; see
  `Quantizer._quantize_float32`); append the clipped count as one more
  coordinate (so it, too, is summed securely) and a 0 if that makes the
  length odd (every mask is then whole 64-bit PRG words); map to Z_{2^b} and
  add the self mask
  PRG(b_u) and the pairwise masks +PRG(s_uv) (u < v) / -PRG(s_uv) (u > v)
  for each neighbour v, all in uint32 arithmetic (which wraps mod 2^32 on
  TFF's runtime) and reduced mod 2^b; or, at b <= 21, in uint64 words that
  pack floor(64 / b) coordinates each (below). The mask material is a
  CLIENTS-placed input made in Python (`protocol.py`, `prg.py`): X25519,
  HKDF, Shamir and AES cannot run in a TF graph on the worker.
* SERVER: `tff.federated_sum` of the masked vectors (uint32 mod 2^32, hence
  mod 2^b; packed uint64 mod 2^64) and of 1 per client (the client count).
* SERVER, after Python has checked that the release is safe and rebuilt the
  seeds from survivors' Shamir shares (`unmask`): subtract the survivors'
  self masks and the dropped clients' unmatched pairwise masks, map Z_{2^b}
  back to signed integers, dequantize.

Masks come from a `prg.MaskPrg`: AES-128-CTR by default (cryptographic,
expanded on the client's side and handed over summed), Philox inside the
worker on request (fast, not cryptographic); see `prg`.

No overflow: with at most n clients, |sum| <= n (c s + 1) must stay below
2^(b-1) so the signed sum is recovered exactly; `SecureSumConfig` is checked
when the computation is built. The default scale is the largest power of two
that fits (power of two: x*s is exact in float64).

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

What the simulation shows: the protocol's arithmetic is exact (the unmasked
integer sum equals the plain one), each vector as it enters the server's sum
is uniform over Z_{2^b} whatever the input, dropouts below the threshold are
recovered, costs (bytes, time) are real. What it cannot show: every party runs
in one Python process and one TFF worker, so the isolation between clients
and server is by code structure only, and nothing is sent over a network.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import params as params_lib
from tff_research.aggregation import prg as prg_lib
from tff_research.aggregation import protocol as protocol_lib

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


@dataclasses.dataclass(frozen=True)
class SecureSumConfig:
  """Parameters of a secure sum; see module docstring for the overflow rule.

  Every value is checked here, so a bad one fails where the config is made,
  in one line.
  """
  clip: float = 1.0              # c: float leaves are clipped to [-c, c]
  bits: int = 32                 # b: arithmetic mod 2^b, b <= 32; 0 = choose (`choose_bits`)
  scale: Optional[float] = None  # s: fixed-point scale; None = largest power of 2 that fits
  int_clip: int = 2**16          # integer leaves are clipped to [-int_clip, int_clip]
  neighbors: Optional[int] = None  # k; None = the smallest the bound allows (`params`)
  threshold: Optional[int] = None  # t; None = chosen within the bound (`params`)
  max_dropout: float = params_lib.DEFAULT_MAX_DROPOUT  # delta of the threat model
  max_corrupt: float = params_lib.DEFAULT_MAX_CORRUPT  # gamma of the threat model
  prg: str = prg_lib.DEFAULT_PRG   # mask PRG: "aes-ctr" (cryptographic) or "philox" (fast, not)
  graph_seed: Optional[int] = None  # None: each round's graph order from the OS CSPRNG (tests fix it)

  def __post_init__(self):
    if not (_is_number(self.clip) and math.isfinite(self.clip) and self.clip > 0):
      raise ValueError(f"clip must be a finite number > 0, got {self.clip}")
    if self.scale is not None and not (_is_number(self.scale) and math.isfinite(self.scale) and self.scale > 0):
      raise ValueError(f"scale must be None or a finite number > 0, got {self.scale}")
    if not (isinstance(self.bits, int) and (self.bits == 0 or 2 <= self.bits <= 32)):
      raise ValueError(f"bits must be 0 (choose) or in [2, 32], got {self.bits}")
    if not (isinstance(self.int_clip, int) and self.int_clip >= 0):
      raise ValueError(f"int_clip must be an integer >= 0, got {self.int_clip}")
    for name in ("neighbors", "threshold"):
      value = getattr(self, name)
      if value is not None and not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be None (choose) or a positive integer, got {value}")
    if self.prg not in prg_lib.PRGS:
      raise ValueError(f"unknown mask PRG {self.prg!r}; choose one of: {', '.join(prg_lib.PRGS)}")
    self.threat()  # checks max_dropout and max_corrupt

  def threat(self) -> params_lib.ThreatModel:
    return params_lib.ThreatModel(max_dropout=self.max_dropout, max_corrupt=self.max_corrupt)

  def protocol_parameters(self, num_clients: int) -> params_lib.SecAggParameters:
    """k and t for a round of `num_clients` (raises ValueError if the given ones are unsafe)."""
    return params_lib.choose_parameters(num_clients, self.threat(), self.neighbors, self.threshold)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


class Quantizer:
  """Fixed-point encoding of a value structure into Z_{2^b}, and back. Graph code."""

  def __init__(self, value_type: Any, num_clients: int, config: SecureSumConfig):
    self.value_type = tff.types.to_type(value_type)
    self.template = tff.types.structure_from_tensor_type_tree(lambda t: t, self.value_type)
    self.leaves = tf.nest.flatten(self.template)
    if not self.leaves:
      raise ValueError("value_type has no tensors")
    for leaf in self.leaves:
      if not tff.types.is_shape_fully_defined(leaf.shape):
        raise ValueError(f"secure sum needs fully defined shapes, got {leaf}")
      if not (np.issubdtype(leaf.dtype, np.floating) or np.issubdtype(leaf.dtype, np.integer)):
        raise ValueError(f"secure sum supports float and integer tensors, got {leaf}")
    self.sizes = [int(np.prod(l.shape, dtype=np.int64)) for l in self.leaves]
    self.payload_dim = sum(self.sizes) + 1  # + the clipped-values counter
    self.num_clients = int(num_clients)
    if self.num_clients < 1:
      raise ValueError("num_clients must be >= 1")
    has_float = any(np.issubdtype(l.dtype, np.floating) for l in self.leaves)
    has_int = any(np.issubdtype(l.dtype, np.integer) for l in self.leaves)
    self.bits = int(config.bits) or choose_bits(self.num_clients, float(config.clip), int(config.int_clip),
                                                has_float, has_int, config.scale)
    self.modulus = 2**self.bits
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
    self.clip = float(config.clip)
    # The largest float32 <= c: float32 leaves are clipped there (the same thing).
    clip32 = np.float32(self.clip)
    self.clip32 = float(clip32 if float(clip32) <= self.clip else np.nextafter(clip32, np.float32(0)))
    self.int_clip = int(config.int_clip)
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
    float32 lies in (clip32, c], so that is clipping at c. A `multiplier` m folds into the scale: fl(x m) s = fl(x (m s))
    for a power-of-two s. |q| < 2^31 by the overflow rule.

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


@dataclasses.dataclass
class SecureSumResult:
  value: Any                 # the sum over surviving clients, same structure as the inputs
  clipped: int               # values clipped (or non-finite) over all surviving clients
  clients: int               # clients whose masked vector was summed (counted in Federated Core)
  dropped: int               # clients that dropped after stage 1
  upload_bytes_per_client: int
  threshold: int
  neighbors: int             # degree of the masking graph (n - 1: complete)
  prg: str                   # the mask PRG


def graph_order_seed(seed: Optional[int], round_num: int) -> Optional[int]:
  """The order seed of a round's graph: None (OS CSPRNG) unless a fixed seed is configured."""
  if seed is None:
    return None
  return int(np.random.SeedSequence([int(seed), int(round_num)]).generate_state(1)[0])


class SecureSum:
  """A secure sum over up to `num_clients` clients; the built computations are attributes.

  * `client_encode(value, material)`: tf computation, quantized vector without
    masks (what the server would see if masking were off);
  * `client_mask(value, material)`: tf computation, the masked vector a client uploads;
  * `server_view(values@CLIENTS, material@CLIENTS)`: federated computation
    returning the CLIENTS-placed masked vectors exactly as they enter the sum;
  * `masked_sum(values@CLIENTS, material@CLIENTS)`: -> <masked_sum@SERVER, clients@SERVER>;
  * `unmask(masked_sum@SERVER, clients@SERVER, correction@SERVER)`
    -> <value@SERVER, clipped@SERVER>;
  * `__call__(values, round_num, dropped)`: the whole protocol, every check included.

  `material` comes from `client_materials(round, ids)` and `correction` from
  `masks.server_material(round.unmask(...))`; call `masks.release()` once the
  computation that read them has returned.
  """

  def __init__(self, value_type: Any, num_clients: int, config: SecureSumConfig):
    self.config = config
    self.quantizer = q = Quantizer(value_type, num_clients, config)
    self.num_clients = q.num_clients
    self.parameters = config.protocol_parameters(self.num_clients)
    self.masks = masks = prg_lib.build_mask_prg(config.prg, q.dim, q.word_dtype)
    client_type, server_type = masks.client_material_type(), masks.server_material_type()
    vec_type = tff.TensorType(q.word_np_dtype, [q.dim])

    @tff.tensorflow.computation(q.value_type, client_type)
    def client_encode(value, material):
      return q.encode(value, material["rounding_seed"])

    @tff.tensorflow.computation(q.value_type, client_type)
    def client_mask(value, material):
      return q.encode_and_mask(value, material, masks)

    @tff.tensorflow.computation(vec_type, np.int32, server_type)
    def server_unmask(masked_sum, clients, correction):
      # Callers check the count in Python first (`unmask_round_sum`); this stops a
      # direct call from decoding a sum the overflow bound does not cover.
      check = tf.debugging.assert_less_equal(
          clients, tf.constant(q.num_clients, tf.int32),
          message=f"more clients than the {q.num_clients} the overflow bound was built for")
      with tf.control_dependencies([check]):
        value, clipped = q.unmask_and_decode(tf.identity(masked_sum), correction, masks, clients)
      return collections.OrderedDict(value=value, clipped=clipped)

    @tff.federated_computation(tff.FederatedType(q.value_type, tff.CLIENTS),
                               tff.FederatedType(client_type, tff.CLIENTS))
    def server_view(values, material):
      return tff.federated_map(client_mask, (values, material))

    @tff.federated_computation(tff.FederatedType(q.value_type, tff.CLIENTS),
                               tff.FederatedType(client_type, tff.CLIENTS))
    def masked_sum(values, material):
      masked = tff.federated_map(client_mask, (values, material))
      clients = tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS))
      return collections.OrderedDict(masked_sum=tff.federated_sum(masked), clients=clients)

    @tff.federated_computation(tff.FederatedType(vec_type, tff.SERVER),
                               tff.FederatedType(np.int32, tff.SERVER),
                               tff.FederatedType(server_type, tff.SERVER))
    def unmask(masked_sum, clients, correction):
      return tff.federated_map(server_unmask, tff.federated_zip((masked_sum, clients, correction)))

    self.client_encode = client_encode
    self.client_mask = client_mask
    self.server_unmask = server_unmask
    self.server_view = server_view
    self.masked_sum = masked_sum
    self.unmask = unmask

  def new_round(self, num_clients: int, round_num: int,
                rounding_rng: Optional[np.random.Generator] = None) -> protocol_lib.SecAggRound:
    """Stages 0-1 (keys and shares) for `num_clients` clients; fresh keys every call."""
    if num_clients > self.num_clients:
      raise ValueError(f"{num_clients} clients, but the overflow bound was built for {self.num_clients}")
    parameters = (self.parameters if num_clients == self.num_clients
                  else self.config.protocol_parameters(num_clients))
    return protocol_lib.SecAggRound(parameters, round_num, graph_order_seed(self.config.graph_seed, round_num),
                                    rounding_rng)

  def client_materials(self, rnd: protocol_lib.SecAggRound, ids: Iterable[int]) -> list[Any]:
    """The CLIENTS-placed mask material of clients `ids` (stage 2)."""
    ids = list(ids)
    return [self.masks.client_material(seeds, rounding) for seeds, rounding in
            zip(rnd.mask_seeds(ids), rnd.rounding_seeds(ids))]

  def masked_round_sum(self, rnd: protocol_lib.SecAggRound, values: Sequence[Any],
                       survivors: Sequence[int]) -> Any:
    """Stage 2: the survivors mask `values` (theirs, in order); the server sums them.

    Returns <masked_sum, clients> as `masked_sum` does.
    """
    try:
      return self.masked_sum(list(values), self.client_materials(rnd, survivors))
    finally:
      self.masks.release()

  def unmask_round_sum(self, rnd: protocol_lib.SecAggRound, masked: Any, survivors: Sequence[int],
                       dropped: Sequence[int]) -> Any:
    """Stage 3: checks, rebuilds the seeds from the survivors' shares, unmasks; <value, clipped>."""
    counted = int(masked["clients"])
    if counted != len(survivors) or counted > self.num_clients:
      raise protocol_lib.SecureAggregationError(
          f"the server counted {counted} masked vectors, expected {len(survivors)} (at most "
          f"{self.num_clients}): no aggregate is released")
    correction = self.masks.server_material(rnd.unmask(survivors, dropped))
    try:
      return self.unmask(masked["masked_sum"], masked["clients"], correction)
    finally:
      self.masks.release()

  def __call__(self, values: Sequence[Any], round_num: int = 0, dropped: Iterable[int] = (),
               rounding_rng: Optional[np.random.Generator] = None) -> SecureSumResult:
    """Runs the protocol on `values` (one structure per client); `dropped` clients
    drop after sharing their keys, so their masked vectors never reach the server.

    Raises `protocol.SecureAggregationError` (and releases nothing) when
    unmasking would not be safe (`protocol.check_release`).
    """
    n = len(values)
    rnd = self.new_round(n, round_num, rounding_rng)
    dropped = sorted(set(int(d) for d in dropped))
    if any(not 0 <= d < n for d in dropped):
      raise ValueError(f"dropped ids must be in [0, {n})")
    survivors = [u for u in range(n) if u not in set(dropped)]
    # The server refuses at stage 3 anyway; checking first spares stage 2.
    rnd.check_release(survivors, dropped)
    masked = self.masked_round_sum(rnd, [values[u] for u in survivors], survivors)
    res = self.unmask_round_sum(rnd, masked, survivors, dropped)
    return SecureSumResult(
        value=res["value"], clipped=int(res["clipped"]), clients=len(survivors), dropped=len(dropped),
        upload_bytes_per_client=self.quantizer.upload_bytes() + rnd.protocol_upload_bytes(),
        threshold=rnd.threshold, neighbors=rnd.degree, prg=self.masks.name)


def build_secure_sum(value_type: Any, num_clients: int,
                     config: SecureSumConfig = SecureSumConfig()) -> SecureSum:
  """Builds the Federated Core computations of a secure sum of `value_type`.

  Args:
    value_type: the (nested) tensor type each client contributes.
    num_clients: the most summands (the overflow bound, and the n the
      protocol parameters are chosen for).
    config: clipping, bits, threat model, graph and PRG (`SecureSumConfig`).

  Returns:
    A `SecureSum`.

  Raises:
    ValueError: at build time, in one line, when the bits are too few or the
      protocol parameters are unsafe.
  """
  return SecureSum(value_type, num_clients, config)
