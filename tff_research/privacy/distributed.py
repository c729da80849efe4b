"""Distributed DP under our own secure sum: the distributed discrete Gaussian (Kairouz, Liu and Steinke 2021).

Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation", ICML 2021 (arXiv:2102.06387).
Each client, in its own TF computation and before its masks are added:

  flatten and concatenate the update, pad with zeros to d coordinates: the
     next power of two, or whole blocks of 2^17 beyond (`padded_layout`)
  -> randomized Hadamard rotation of each block (public signs, so the server
     can undo it)
  -> clip to L2 norm C
  -> scale by s (`choose_scale`, the paper's Sec. 4.4 heuristic, as TFF's
     `DistributedDpSumFactory` chooses it) and round stochastically to
     integers, redrawn until the norm is within the rounding-inflated bound
     (conditional rounding with bias beta, the paper's Sec. 4.1)
  -> add discrete Gaussian noise N_Z(0, (s sigma)^2), sigma = z C / sqrt(n_min)
  -> wrap into [-2^(b-1), 2^(b-1)) (mod 2^b)

and the secure sum adds the clients' vectors mod 2^b under the pairwise masks
(`masked_sum`, `quantization.Quantizer(modular=True)`). The server unmasks,
divides by s, rotates back and unpads: it only ever holds the noisy sum.

Randomness. The rounding and the noise of a client are drawn from its own
seed, which comes from the OS CSPRNG of that client (`encoders`: derived
from the rounding seed of `protocol.ClientState`), never from anything the
server knows; only tests inject it (`masked_sum.reproducible_rounding`).
TF's stateless Philox expands it in the worker (no AES op runs there):
a 64-bit key and no cryptographic claim, as in TFF's own factory.
The rotation's signs are public (a seed drawn once when the aggregator is
built): they spread an update over the coordinates so that few values wrap
around, and privacy does not depend on them.

Dropouts. Only the survivors' noise reaches the sum, so each client's share
is calibrated for the fewest survivors a round may release, n_min = n -
ceil(max_dropout n) (the secure sum refuses a release with more dropouts);
a round that would release fewer is refused. The accountant
(`ddgauss_accounting`) counts each round with its survivors.

Sensitivity. One client changes the scaled sum by at most the inflated L2
norm Delta_2 of its rounded vector (Theorem 1 of the paper; the noise is
still z C / sqrt(n_min) per client, so epsilon is a little above the central
Gaussian's at the same z: the accountant uses Delta_2, not s C).
"""
from __future__ import annotations

import collections
import dataclasses
import fractions
import math
import secrets
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_probability as tfp
from scipy import special

from tff_research.aggregation import config as secure_config_lib
from tff_research.aggregation import encoders as encoders_lib
from tff_research.aggregation import interactive
from tff_research.aggregation import masked_sum
from tff_research.privacy import config as config_lib
from tff_research.privacy import ddgauss_accounting

MEASUREMENTS_GROUP = "dp"
# The wrap-around probability a coordinate of the sum may have (TFF's
# `modclip_prob` default): the scale leaves this many standard deviations
# of the noisy sum inside 2^b.
MODCLIP_PROB = 1e-4
MAX_SCALE = 1e6  # TFF's cap: a larger scale no longer lowers the rounding error measurably
# Refused where rounding inflates the sensitivity by more than this (a few bits too few).
MAX_INFLATION = 1.25
# Any rounded draw is shorter than Delta_2 + sqrt(d) < this, so its squared norm fits int64 (`squared_integer_bound`).
MAX_SCALED_NORM = 2.0**31
MAX_ROUNDING_TRIES = 1000  # conditional rounding's redraws before it gives up (expected: about 1 / (1 - beta))
_ROUND_STREAM, _NOISE_STREAM = 1, 2


def k_stddevs(modclip_prob: float = MODCLIP_PROB) -> float:
  """Standard deviations of a normal variable beyond which it falls with probability `modclip_prob`."""
  return math.sqrt(2.0) * float(special.erfcinv(modclip_prob))


def choose_scale(local_stddev: float, l2_clip: float, bits: int, num_clients: int, dim: int) -> float:
  """s such that k stddevs of the noisy sum of `num_clients` clients fit in 2^b (paper's Sec. 4.4; TFF's rule).

  2^b = 2 k sqrt(c^2 n^2 / d + n (1/(4 s^2) + sigma^2)) s, solved for s,
  capped at MAX_SCALE; 0 where 2^(2b) <= n k^2 (too few bits for any scale).
  """
  k = k_stddevs()
  room = 2.0 ** (2 * bits) - num_clients * k**2
  if room <= 0:
    return 0.0
  spread = math.sqrt(l2_clip**2 * num_clients**2 / dim + num_clients * local_stddev**2)
  return min(math.sqrt(room) / (2.0 * k * spread), MAX_SCALE)


@dataclasses.dataclass(frozen=True)
class DdgaussParameters:
  """What a round of the distributed discrete Gaussian uses, in the unscaled domain unless named scaled."""
  l2_clip: float
  noise_multiplier: float
  bits: int
  beta: float
  dim: int           # the update's coordinates
  padded_dim: int    # d: whole blocks of `rotation_block` coordinates (`padded_layout`)
  max_clients: int   # n: the most clients a round sums (the scale's)
  min_clients: int   # n_min: the fewest survivors a round may release (the noise's)
  scale: float
  local_stddev: float  # sigma = z C / sqrt(n_min)

  @property
  def rotation_block(self) -> int:
    return padded_layout(self.dim)[0]

  @property
  def scaled_local_stddev(self) -> float:
    return self.local_stddev * self.scale

  @property
  def scaled_inflated_l2(self) -> float:
    """Delta_2: the rounded vector's L2 bound in the scaled domain (Theorem 1)."""
    return ddgauss_accounting.inflated_l2_norm(self.l2_clip * self.scale, self.beta, self.padded_dim)

  @property
  def inflation(self) -> float:
    return self.scaled_inflated_l2 / (self.l2_clip * self.scale)

  def accounted_round(self, num_train_clients: int) -> ddgauss_accounting.DdgaussRound:
    """A round of these parameters for the accountant: n of `num_train_clients` sampled, n_min survivors."""
    return ddgauss_accounting.DdgaussRound(
        l2_clip=self.l2_clip, scale=self.scale, beta=self.beta, dim=self.padded_dim, local_stddev=self.local_stddev,
        clients=self.min_clients, num_clients=int(num_train_clients), clients_per_round=self.max_clients)


def squared_integer_bound(l2_bound: float) -> int:
  """floor(l2_bound^2), exactly: an integer vector's norm is at most `l2_bound` iff its squared norm is at most this."""
  if not 0.0 <= l2_bound < MAX_SCALED_NORM:
    raise ValueError(f"exact integer rounding checks need an L2 bound in [0, 2^31), got {l2_bound:g}")
  return math.floor(fractions.Fraction(l2_bound) ** 2)


def ddgauss_parameters(dp: config_lib.DpConfig, dim: int, max_clients: int, min_clients: int,
                       bits: int) -> DdgaussParameters:
  """The parameters for updates of `dim` coordinates, or a one-line ValueError where `bits` are too few."""
  if not 2 <= bits <= 32:
    raise ValueError(f"distributed DP sums mod 2^b with 2 <= b <= 32, got bits={bits}")
  block, blocks = padded_layout(dim)
  padded = block * blocks
  local = dp.noise_multiplier * dp.clip / math.sqrt(min_clients)
  scale = choose_scale(local, dp.clip, bits, max_clients, padded)
  if scale <= 0:
    raise ValueError(f"bits={bits} are too few for {max_clients} clients: 2^(2b) must exceed n k^2 = "
                     f"{max_clients * k_stddevs()**2:.3g} (k = {k_stddevs():.2f} stddevs); use more bits")
  params = DdgaussParameters(dp.clip, dp.noise_multiplier, bits, dp.beta, int(dim), padded, max_clients,
                             min_clients, scale, local)
  if params.scaled_inflated_l2 + math.sqrt(padded) >= MAX_SCALED_NORM:
    raise ValueError(f"clip {dp.clip:g} at scale {scale:.3g} gives rounded updates too long to check exactly "
                     f"(scaled norm {params.scaled_inflated_l2:.3g}, at most 2^31); use a smaller clip or fewer bits")
  if params.inflation > MAX_INFLATION:
    raise ValueError(
        f"bits={bits} are too few for {max_clients} clients, noise multiplier {dp.noise_multiplier:g} and "
        f"{padded:,} coordinates: the scale {scale:.3g} makes rounding inflate the sensitivity by "
        f"{params.inflation - 1:.0%} (at most {MAX_INFLATION - 1:.0%}); use more bits")
  return params


# A vector longer than this is rotated in blocks of it: padding the whole vector to a power of two would
# nearly double the noise, the upload and the work for the reference model (2.3 M -> 4.2 M coordinates),
# while blocks of 2^17 pad it by under 2.6 % and still spread each block's mass over 131,072 coordinates.
MAX_ROTATION_BLOCK = 2**17
MAX_FACTOR_BITS = 6  # the Hadamard transform's Kronecker factors are at most 64 x 64


def padded_layout(dim: int) -> tuple[int, int]:
  """(block, blocks): the rotation's block (a power of two) and how many cover `dim` coordinates.

  Up to MAX_ROTATION_BLOCK coordinates, one block: the next power of two, as
  TFF's `DistributedDpSumFactory` pads; beyond, whole blocks of that size.
  """
  if dim < 1:
    raise ValueError(f"distributed DP needs at least one coordinate, got {dim}")
  block = min(1 << (int(dim) - 1).bit_length(), MAX_ROTATION_BLOCK)
  return block, -(-int(dim) // block)


def _factor_bits(log2_dim: int) -> list[int]:
  """log2 of near-equal Kronecker factors of H_d, each at most 2^MAX_FACTOR_BITS."""
  count = max(1, -(-log2_dim // MAX_FACTOR_BITS))
  base, extra = divmod(log2_dim, count)
  return [base + (1 if i < extra else 0) for i in range(count)]


def _hadamard_matrix(bits: int) -> np.ndarray:
  """The orthonormal Sylvester Hadamard matrix of order 2^bits."""
  h = np.ones((1, 1))
  for _ in range(bits):
    h = np.block([[h, h], [h, -h]])
  return h / math.sqrt(h.shape[0])


def walsh_hadamard(x: tf.Tensor) -> tf.Tensor:
  """The orthonormal Walsh-Hadamard transform of each row of x ([2^m] or [rows, 2^m]); its own inverse.

  The same transform as TFF's `hadamard.fast_walsh_hadamard_transform` (tests
  check it entry by entry), computed as H_d = H_a (x) H_b (x) ... with factors
  of at most 64: each step multiplies the last axis by a small dense factor
  and moves it to the front, so after every factor the order is the original
  one. Small matrix products run at the CPU's full width, 4x TFF's butterfly
  in float64 and 18x in float32 at d = 2^22 (measured on this machine).
  """
  dim = int(x.shape[-1])
  if dim & (dim - 1):
    raise ValueError(f"the Walsh-Hadamard transform needs 2^m entries, got {dim}")
  y = tf.reshape(x, [-1, dim])
  for bits in _factor_bits(dim.bit_length() - 1):
    factor = tf.constant(_hadamard_matrix(bits), x.dtype)
    y = tf.reshape(tf.transpose(tf.reshape(y, [-1, dim >> bits, 1 << bits]) @ factor, [0, 2, 1]), [-1, dim])
  return tf.reshape(y, tf.shape(x))


def sample_discrete_gaussian(sigma: float, size: int, seed: tf.Tensor) -> tf.Tensor:
  """`size` draws of N_Z(0, sigma^2) as int64, from the stateless `seed` (int64[2]). Graph code.

  Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
  Privacy", NeurIPS 2020, Algorithm 3: propose Y from the discrete Laplace
  of scale t = floor(sigma) + 1 (a difference of two geometric draws) and
  accept with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)); the
  accepted draws are N_Z(0, sigma^2). tensorflow_privacy's sampler
  (`discrete_gaussian_utils`) is the same algorithm on stateful RNGs, which
  the client's own seed cannot drive; here tfp's samplers take stateless
  seeds. Like it, it runs in floating point rather than exact arithmetic.
  """
  if sigma <= 0:
    return tf.zeros([size], tf.int64)
  t = float(math.floor(sigma) + 1)
  geometric = tfp.distributions.Geometric(probs=tf.constant(-math.expm1(-1.0 / t), tf.float64))
  seed32 = tf.cast(tf.math.floormod(seed, 2**31 - 1), tf.int32)

  def propose(i, count):
    seeds = [tf.random.experimental.stateless_fold_in(seed32, 3 * i + j) for j in range(3)]
    y = geometric.sample(count, seed=seeds[0]) - geometric.sample(count, seed=seeds[1])
    accept = tf.exp(-tf.square(tf.abs(y) - sigma**2 / t) / (2.0 * sigma**2))
    u = tf.random.stateless_uniform([count], seed=seeds[2], dtype=tf.float64)
    return tf.cast(tf.boolean_mask(y, u < accept), tf.int64)

  def body(i, accepted):
    missing = size - tf.shape(accepted)[0]
    count = tf.maximum(1000, tf.cast(1.5 * tf.cast(missing, tf.float64), tf.int32))
    return i + 1, tf.concat([accepted, propose(i, count)], axis=0)

  _, accepted = tf.while_loop(lambda i, a: tf.shape(a)[0] < size, body,
                              (tf.constant(0), tf.zeros([0], tf.int64)),
                              shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])))
  return accepted[:size]


class DiscreteGaussianEncoder(encoders_lib.Encoder):
  """The client's steps of the module docstring, and the server's inverse, for one value type.

  Args:
    value_type: the update's type (float leaves).
    params: `ddgauss_parameters` for its size.
    rotation_seed: the public rotation's seed (None: drawn from the OS once).
  """

  def __init__(self, value_type: Any, params: DdgaussParameters, rotation_seed: Optional[int] = None):
    self.value_type = tff.types.to_type(value_type)
    self.template = tff.types.structure_from_tensor_type_tree(lambda t: t, self.value_type)
    self.leaves = tf.nest.flatten(self.template)
    self.sizes = [int(np.prod(leaf.shape, dtype=np.int64)) for leaf in self.leaves]
    if sum(self.sizes) != params.dim:
      raise ValueError(f"parameters for {params.dim} coordinates, value of {sum(self.sizes)}")
    self.params = params
    self.modular_bits = params.bits
    seed = secrets.randbits(62) if rotation_seed is None else int(rotation_seed)
    self._rotation_seed = (seed >> 31, seed & (2**31 - 1))
    # The accountant's Delta_2 is the bound conditional rounding enforces, with no leeway: the rounded vector
    # is integer, so its squared norm is compared exactly, in int64, with floor(Delta_2^2).
    self._squared_bound = squared_integer_bound(params.scaled_inflated_l2)

  def encoded_type(self, value_type: Any) -> tff.TensorType:
    return tff.TensorType(np.int32, [self.params.padded_dim])

  def _rotate(self, flat: tf.Tensor) -> tf.Tensor:
    """The Walsh-Hadamard transform of each block of `flat` (its own inverse): an orthonormal map of R^d."""
    block = self.params.rotation_block
    return tf.reshape(walsh_hadamard(tf.reshape(flat, [-1, block])), [self.params.padded_dim])

  def _signs(self) -> tf.Tensor:
    u = tf.random.stateless_uniform([self.params.padded_dim], seed=tf.constant(self._rotation_seed, tf.int32))
    return tf.where(u < 0.5, tf.constant(-1.0, tf.float64), tf.constant(1.0, tf.float64))

  def client_encode(self, value: Any, seed: tf.Tensor) -> tf.Tensor:
    p = self.params
    flat = tf.concat([tf.reshape(tf.cast(x, tf.float32), [-1]) for x in tf.nest.flatten(value)], axis=0)
    flat = tf.where(tf.math.is_finite(flat), flat, tf.zeros_like(flat))
    flat = tf.pad(flat, [[0, p.padded_dim - p.dim]])
    # float32 is enough for the rotation (its error is below 1e-5 grid steps), and privacy does not rest on
    # it: the clip below bounds whatever vector the rotation gave.
    rotated = tf.cast(self._rotate(flat * tf.cast(self._signs(), tf.float32)), tf.float64)
    clipped = tf.clip_by_norm(rotated, p.l2_clip) * p.scale
    rounded = self._conditional_round(clipped, tf.random.experimental.stateless_fold_in(seed, _ROUND_STREAM))
    noise = sample_discrete_gaussian(p.scaled_local_stddev, p.padded_dim,
                                     tf.random.experimental.stateless_fold_in(seed, _NOISE_STREAM))
    half = 2 ** (p.bits - 1)
    wrapped = tf.math.floormod(rounded + noise + half, 2 * half) - half  # in [-2^(b-1), 2^(b-1))
    return tf.cast(wrapped, tf.int32)

  def _conditional_round(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Unbiased stochastic rounding of `x` to integers, redrawn while the norm exceeds the inflated bound."""
    floor = tf.floor(x)

    def draw(i):
      u = tf.random.stateless_uniform(tf.shape(x), seed=tf.random.experimental.stateless_fold_in(seed, i),
                                      dtype=tf.float64)
      return floor + tf.cast(u < x - floor, tf.float64)

    def draw_with_squared_norm(i):
      rounded = tf.cast(draw(i), tf.int64)
      return rounded, tf.reduce_sum(rounded * rounded)

    bound = tf.constant(self._squared_bound, tf.int64)

    def too_long(i, rounded, squared):
      del rounded
      return tf.logical_and(i < MAX_ROUNDING_TRIES, squared > bound)

    # Each draw's squared norm travels with it, so the check after the loop reads it instead of a pass over d.
    _, rounded, squared = tf.while_loop(too_long, lambda i, r, q: (i + 1, *draw_with_squared_norm(i + 1)),
                                        (tf.constant(0), *draw_with_squared_norm(0)))
    check = tf.debugging.assert_less_equal(squared, bound, message="conditional rounding failed")
    with tf.control_dependencies([check]):
      return tf.identity(rounded)

  def server_decode(self, total: tf.Tensor, clients: tf.Tensor) -> Any:
    del clients  # the sum needs no count; the mean is the composer's
    p = self.params
    unscaled = tf.cast(total, tf.float64) / p.scale
    flat = self._rotate(unscaled) * self._signs()  # float64: the sum's entries reach 2^(b-1)
    leaves, offset = [], 0
    for leaf, size in zip(self.leaves, self.sizes):
      leaves.append(tf.reshape(tf.cast(flat[offset:offset + size], leaf.dtype), leaf.shape))
      offset += size
    return tf.nest.pack_sequence_as(self.template, leaves)


def min_survivors(num_clients: int, secure: secure_config_lib.SecureSumConfig) -> int:
  """n - D: the fewest survivors the secure sum releases for a round of n (D: its dropout bound)."""
  return num_clients - secure.protocol_parameters(num_clients).max_dropouts


class DistributedDpFactory(interactive.InteractiveAggregationFactory):
  """The distributed discrete Gaussian over the masked sum (module docstring): an unweighted sum.

  As a model aggregator (`learning.algorithms.build_fed_avg`) it gives
  unweighted FedAvg: the composer divides the noisy sum by the clients
  counted (one client, one vote, as TFF's DP factories do).

  Args:
    dp: clip, noise multiplier and beta (`DpConfig`, mode "distributed").
    secure: the secure sum's settings (threat model, PRG); its bits must be
      0 or `bits`.
    num_clients: the most clients a round has (n).
    bits: b, the modulus 2^b of the sum.
    rounding_randomness: tests only (`masked_sum.reproducible_rounding`),
      which then fixes every client's rounding and noise too.
    rotation_seed: tests only; None draws the public rotation from the OS.
  """
  unweighted = True

  def __init__(self, dp: config_lib.DpConfig, secure: secure_config_lib.SecureSumConfig, num_clients: int,
               bits: int = config_lib.DEFAULT_DISTRIBUTED_BITS, *, rounding_randomness=None,
               rotation_seed: Optional[int] = None):
    self.dp, self.secure, self.num_clients, self.bits = dp, secure, int(num_clients), int(bits)
    self.min_clients = min_survivors(self.num_clients, secure)
    self._rounding_randomness, self._rotation_seed = rounding_randomness, rotation_seed
    ddgauss_parameters(dp, 1, self.num_clients, self.min_clients, self.bits)  # bad bits fail here, in one line

  def parameters(self, value_type: Any) -> DdgaussParameters:
    dim = sum(int(np.prod(t.shape, dtype=np.int64)) for t in tf.nest.flatten(
        tff.types.structure_from_tensor_type_tree(lambda t: t, tff.types.to_type(value_type))))
    return ddgauss_parameters(self.dp, dim, self.num_clients, self.min_clients, self.bits)

  def create(self, value_type: Any, weight_type: Optional[Any] = None) -> DistributedDpProcess:
    if weight_type is not None:
      raise ValueError("distributed DP is an unweighted sum (one client, one vote): create(value_type)")
    params = self.parameters(value_type)
    encoder = DiscreteGaussianEncoder(value_type, params, self._rotation_seed)
    secure = masked_sum.SecureSumFactory(dataclasses.replace(self.secure, bits=0), self.num_clients,
                                         encoders=[encoder], rounding_randomness=self._rounding_randomness)
    return DistributedDpProcess(secure.create(value_type), params)


class DistributedDpProcess(interactive.InteractiveAggregationProcess):
  """The masked sum with the distributed noise; refuses rounds with fewer survivors than the noise needs.

  Attributes: `secure` (the `masked_sum.MaskedSumProcess`), `params`
  (`DdgaussParameters`); the stages are the masked sum's.
  """
  is_weighted = False

  def __init__(self, secure: masked_sum.MaskedSumProcess, params: DdgaussParameters):
    self.secure, self.params = secure, params
    self.initialize, self.state_type = secure.initialize, secure.state_type
    self.client_stage, self.server_stage = secure.client_stage, secure.server_stage

  def start_round(self, num_clients: int, round_num: int, dropped: Sequence[int] = (),
                  attempt: int = 0) -> interactive.RoundPlan | interactive.Refused:
    survivors = num_clients - len(set(dropped))
    if survivors < self.params.min_clients:
      return interactive.Refused(round_num, f"{survivors} of {num_clients} clients would be summed, fewer than "
                                 f"the {self.params.min_clients} whose noise the privacy guarantee needs")
    return self.secure.start_round(num_clients, round_num, dropped, attempt)

  def client_materials(self, plan: interactive.RoundPlan, members: Optional[Sequence[int]] = None) -> list[Any]:
    return self.secure.client_materials(plan, members)

  def correction(self, plan: interactive.RoundPlan, clients: int) -> Any:
    return self.secure.correction(plan, clients)

  def release(self) -> None:
    self.secure.release()

  def measurements(self, plan: interactive.RoundPlan, server_measurements: Any) -> collections.OrderedDict:
    measured = self.secure.measurements(plan, server_measurements)
    p = self.params
    measured[MEASUREMENTS_GROUP] = collections.OrderedDict(
        clients=len(plan.survivors), min_clients=p.min_clients, scale=p.scale, bits=p.bits,
        local_stddev=p.local_stddev, scaled_local_stddev=p.scaled_local_stddev,
        scaled_inflated_l2=p.scaled_inflated_l2, padded_dim=p.padded_dim,
        noise_stddev_of_sum=p.local_stddev * math.sqrt(len(plan.survivors)))
    return measured
