"""Renyi-DP accounting of the distributed discrete Gaussian (DDGauss) over our secure sum.

Each of the m clients that survive a round clips its update to L2 norm C,
scales it by s onto the integer grid, rounds it conditionally (bias beta) in
d coordinates (padded to a power of two) and adds discrete Gaussian noise
N_Z(0, sigma^2); the server sees only the sum. Below, sigma and the
sensitivities are in that scaled domain (grid step 1), except where a name
says unscaled (`DdgaussRound` takes C and the stddev before scaling).

One round, no sampling (Kairouz, Liu & Steinke, "The Distributed Discrete
Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML 2021,
arXiv:2102.06387): rounding inflates the norm (Theorem 1, Sec. 4.1:
`inflated_l2_norm`), which bounds the L2 sensitivity; integer vectors bound the
L1 one (`sensitivities`); the sum of m discrete Gaussians, nearly but not quite
a discrete Gaussian, has the RDP curve of Proposition 14 (`ddgauss_rdp`).

Sampling: the loop samples k of N clients uniformly without replacement
(`training_loop.sample_clients`), which amplifies any mechanism's RDP by Wang,
Balle & Kasiviswanathan, "Subsampled Renyi Differential Privacy and Analytical
Moments Accountant", AISTATS 2019, Theorem 9, for the replace-one relation
(`subsampled_rdp`). Rounds compose by adding RDP curves, and dp_accounting's
`compute_epsilon` converts them, as `accounting.epsilon` does for the Gaussian.

Sensitivity convention: one client's inflated bound Delta_2 is the L2
sensitivity, as `accounting.round_event` takes noise z C for a Gaussian of
multiplier z under replace-one; at a large scale the curve tends to that
Gaussian's (tests/test_ddgauss_accounting.py). Replacing a client can move the
sum by up to 2 Delta_2; doubling both sensitivities here would account for it.

Plain Python (numpy, scipy, dp_accounting): importing it does not import TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special

from tff_research.privacy.accounting import Z_MAX
from tff_research.privacy.accounting import Z_MIN

# Integer orders, as Theorem 9 of WBK19 needs; 256 catches the regime of many rounds at small epsilon.
ORDERS: tuple[int, ...] = (*range(2, 129), 256)
RdpCurve = Callable[[np.ndarray], np.ndarray]  # order(s) -> RDP epsilon(s) of a mechanism


def inflated_l2_norm(l2_clip_scaled: float, beta: float, dim: int) -> float:
  """The L2 norm bound after conditional stochastic rounding to the integer grid (KLS21 Thm. 1, Sec. 4.1).

  Args:
    l2_clip_scaled: c, the L2 norm bound before rounding, in grid steps (the clip times the scale).
    beta: the conditional rounding's bias in [0, 1); 0 is plain stochastic rounding.
    dim: d, the vector's (padded) dimension.

  Returns:
    min(c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2))), the first term alone for beta = 0.
  """
  if not (l2_clip_scaled >= 0 and 0 <= beta < 1 and dim >= 1):
    raise ValueError(f"inflated_l2_norm needs a norm >= 0, beta in [0, 1) and dim >= 1, got {l2_clip_scaled}, "
                     f"{beta}, {dim}")
  c, root_d = float(l2_clip_scaled), math.sqrt(dim)
  # Rounding moves every coordinate by less than one step, whatever is drawn.
  any_rounding = c + root_d
  if beta == 0:
    return any_rounding
  # Conditional rounding redraws until the norm is within this bound (met with probability >= 1 - beta).
  conditional = math.sqrt(c * c + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + root_d / 2))
  return min(any_rounding, conditional)


def sensitivities(l2_clip: float, scale: float, beta: float, dim: int) -> tuple[float, float]:
  """(Delta_1, Delta_2) of one client's rounded vector in the scaled domain, from its unscaled clip.

  Args:
    l2_clip: C, the L2 clip before scaling.
    scale: s, the factor that maps the update onto the integer grid.
    beta: the conditional rounding's bias (`inflated_l2_norm`).
    dim: d, the padded dimension.

  Returns:
    Delta_2 = `inflated_l2_norm(C s, beta, d)` and Delta_1 = min(sqrt(d) Delta_2, Delta_2^2), L1 before L2.
  """
  l2 = inflated_l2_norm(l2_clip * scale, beta, dim)
  # Cauchy-Schwarz gives sqrt(d); and the nonzero coordinates of an integer vector are >= 1 in size, so |v_i| <= v_i^2.
  return min(math.sqrt(dim) * l2, l2 * l2), l2


def ddgauss_rdp(orders: Sequence[float] | np.ndarray, *, l1_sensitivity: float, l2_sensitivity: float,
                local_stddev: float, clients: int, dim: int) -> np.ndarray:
  """RDP of one round: the sum of `clients` discrete Gaussians N_Z(0, sigma^2) on a query (KLS21 Prop. 14).

  With tau = 10 sum_{k=1}^{m-1} exp(-2 pi^2 sigma^2 k / (k+1)) (how far the sum of m discrete Gaussians is
  from one), l2 = Delta_2 / (sqrt(m) sigma) and l1 = Delta_1 / (sqrt(m) sigma), epsilon(alpha) is
  min(alpha l2^2 / 2 + tau d, alpha/2 (l2^2 + 2 l1 tau + tau^2 d), alpha/2 (l2 + tau sqrt(d))^2).

  Args:
    orders: RDP orders alpha > 1.
    l1_sensitivity: Delta_1 of the query (scaled domain).
    l2_sensitivity: Delta_2 of the query (scaled domain).
    local_stddev: sigma, each client's noise stddev in grid steps (scaled); 0 gives no privacy.
    clients: m, the clients whose noise reaches the sum.
    dim: d, the dimension the noise is added in.

  Returns:
    epsilon(alpha) at each order (inf everywhere for sigma = 0).
  """
  alpha = np.asarray(orders, dtype=np.float64)
  if np.any(alpha <= 1) or clients < 1 or dim < 1:
    raise ValueError(f"ddgauss_rdp needs orders > 1, clients >= 1 and dim >= 1, got orders down to "
                     f"{alpha.min(initial=np.inf)}, {clients} clients, dim {dim}")
  if local_stddev <= 0:
    return np.full(alpha.shape, np.inf)
  k = np.arange(1, clients, dtype=np.float64)
  tau = 10.0 * float(np.sum(np.exp(-2 * math.pi**2 * local_stddev**2 * k / (k + 1))))
  total_stddev = math.sqrt(clients) * local_stddev
  l2, l1 = l2_sensitivity / total_stddev, l1_sensitivity / total_stddev
  return np.minimum.reduce([alpha / 2 * l2**2 + tau * dim,
                            alpha / 2 * (l2**2 + 2 * l1 * tau + tau**2 * dim),
                            alpha / 2 * (l2 + tau * math.sqrt(dim))**2])


def _integer_orders(orders: Sequence[float] | np.ndarray) -> np.ndarray:
  values = np.asarray(orders, dtype=np.float64).reshape(-1)
  if values.size == 0 or np.any(values < 2) or np.any(values != np.floor(values)):
    raise ValueError(f"subsampled RDP needs integer orders >= 2 (Wang et al. 2019, Thm. 9), got {list(orders)}")
  return values.astype(np.int64)


def _base_at(js: np.ndarray, alphas: np.ndarray, base_rdp: RdpCurve | Sequence[float] | np.ndarray) -> np.ndarray:
  """The base curve at every integer j in `js`, from a function or from its values at `alphas`."""
  if callable(base_rdp):
    return np.broadcast_to(np.asarray(base_rdp(js.astype(np.float64)), dtype=np.float64), js.shape)
  values = np.asarray(base_rdp, dtype=np.float64).reshape(-1)
  if values.shape != alphas.shape:
    raise ValueError(f"base_rdp has {values.size} values for {alphas.size} orders")
  # A j between given orders takes the next larger order's value: Renyi divergence does not decrease with the
  # order (van Erven & Harremoes 2014, Thm. 3), so that is still a bound at j.
  by_order = np.argsort(alphas, kind="stable")
  return values[by_order][np.searchsorted(alphas[by_order], js, side="left")]


def _log_expm1(x: float) -> float:
  if x <= 0:
    return -math.inf
  return x + math.log1p(-math.exp(-x)) if x > 30 else math.log(math.expm1(x))


def subsampled_rdp(orders: Sequence[float] | np.ndarray, base_rdp: RdpCurve | Sequence[float] | np.ndarray,
                   sampling_ratio: float) -> np.ndarray:
  """RDP of a mechanism run on k of N records drawn uniformly without replacement (WBK19 Thm. 9), min the base.

  For integer alpha >= 2 and gamma = k / N, with no finite pure-DP bound assumed (eps(inf) = inf: the discrete
  Gaussian has none), eps'(alpha) <= 1/(alpha-1) log(1 + gamma^2 C(alpha,2) min{4 (e^eps(2) - 1), 2 e^eps(2)}
  + sum_{j=3}^{alpha} 2 gamma^j C(alpha,j) e^{(j-1) eps(j)}), summed in log space.

  Args:
    orders: integer RDP orders >= 2.
    base_rdp: the mechanism's RDP without sampling: a function of the order (called once on an array of all
      integers 2..max(orders)), or its values at `orders` (a j between two orders then takes the larger one's).
    sampling_ratio: gamma in [0, 1].

  Returns:
    eps'(alpha) at each order, at most the base curve's (the subsampled mechanism is no less private).
  """
  alphas = _integer_orders(orders)
  gamma = float(sampling_ratio)
  if not 0 <= gamma <= 1:
    raise ValueError(f"sampling ratio must be in [0, 1], got {sampling_ratio}")
  js = np.arange(2, alphas.max() + 1)
  eps_j = _base_at(js, alphas, base_rdp)
  base = eps_j[alphas - 2]
  if gamma == 1:
    return base.copy()
  if gamma == 0:
    return np.zeros(alphas.shape)
  with np.errstate(over="ignore", invalid="ignore"):
    # log of the j-th summand without its binomial: j = 2 has its own bound; j >= 3 all take min{2, inf} = 2.
    second = min(math.log(4) + _log_expm1(eps_j[0]), eps_j[0] + math.log(2))
    moments = js * math.log(gamma) + np.concatenate([[second], math.log(2) + (js[1:] - 1) * eps_j[1:]])
    a, j = alphas[:, None], js[None, :]
    log_binom = special.gammaln(a + 1) - special.gammaln(j + 1) - special.gammaln(np.maximum(a - j, 0) + 1)
    summands = np.where(j <= a, log_binom + moments[None, :], -np.inf)  # order alpha sums j = 2..alpha only
    log_sum = special.logsumexp(np.concatenate([np.zeros((alphas.size, 1)), summands], axis=1), axis=1)
  return np.minimum(log_sum / (alphas - 1), base)


@dataclasses.dataclass(frozen=True)
class DdgaussRound:
  """One round: k of N clients sampled, m of them survive and each adds its discrete Gaussian share.

  Attributes:
    l2_clip: C, the L2 clip of an update before scaling.
    scale: s, the factor onto the integer grid (1 / TFF's gamma).
    beta: the conditional rounding's bias, in [0, 1).
    dim: d, the dimension after padding.
    local_stddev: each client's noise stddev before scaling, z C / sqrt(n_min) for multiplier z and n_min
      survivors; the scaled sigma of Prop. 14 is local_stddev * scale.
    clients: m, the survivors whose noise reaches the sum.
    num_clients: N, the training clients the round samples from.
    clients_per_round: k, the clients it samples.
  """
  l2_clip: float
  scale: float
  beta: float
  dim: int
  local_stddev: float
  clients: int
  num_clients: int
  clients_per_round: int

  def __post_init__(self):
    if not (self.l2_clip > 0 and self.scale > 0 and self.local_stddev >= 0 and self.dim >= 1):
      raise ValueError(f"a DDGauss round needs l2_clip > 0, scale > 0, local_stddev >= 0 and dim >= 1, got {self}")
    if not 1 <= self.clients <= self.clients_per_round <= self.num_clients:
      raise ValueError(f"a DDGauss round needs 1 <= survivors ({self.clients}) <= clients per round "
                       f"({self.clients_per_round}) <= clients ({self.num_clients})")

  @property
  def sampling_ratio(self) -> float:
    return self.clients_per_round / self.num_clients

  def unsampled_rdp(self, orders: Sequence[float] | np.ndarray = ORDERS) -> np.ndarray:
    """Prop. 14's curve for this round's survivors, before the amplification by sampling."""
    l1, l2 = sensitivities(self.l2_clip, self.scale, self.beta, self.dim)
    return ddgauss_rdp(orders, l1_sensitivity=l1, l2_sensitivity=l2, local_stddev=self.local_stddev * self.scale,
                       clients=self.clients, dim=self.dim)

  def rdp(self, orders: Sequence[int] = ORDERS) -> np.ndarray:
    """The round's RDP at `orders` (integers >= 2), sampling included (`subsampled_rdp`)."""
    return _round_rdp(self, tuple(int(order) for order in _integer_orders(orders))).copy()


@functools.lru_cache(maxsize=4096)
def _round_rdp(round_: DdgaussRound, orders: tuple[int, ...]) -> np.ndarray:
  # A run repeats a handful of distinct rounds (survivor counts) many times: each curve is computed once.
  curve = subsampled_rdp(orders, round_.unsampled_rdp, round_.sampling_ratio)
  curve.setflags(write=False)  # shared by every caller of the cache
  return curve


def _to_epsilon(orders: Sequence[int], rdp: np.ndarray, delta: float) -> float:
  # dp_accounting's own conversion (Canonne et al. 2020, Prop. 12), the one `accounting.epsilon` gets too.
  eps, _ = rdp_privacy_accountant.compute_epsilon(list(orders), list(rdp), delta)
  return float(eps)


class DdgaussAccountant:
  """The RDP of a run so far, a round at a time; each distinct `DdgaussRound`'s curve is computed once."""

  def __init__(self, orders: Sequence[int] = ORDERS):
    self._orders = tuple(int(order) for order in _integer_orders(orders))
    self._rdp = np.zeros(len(self._orders))
    self._rounds = 0

  def add(self, round_: DdgaussRound, count: int = 1) -> DdgaussAccountant:
    """Composes `count` rounds like `round_` (RDP adds up); returns self."""
    if count < 0:
      raise ValueError(f"round count must be >= 0, got {count}")
    if count:  # 0 x inf would be nan
      self._rdp += count * _round_rdp(round_, self._orders)
      self._rounds += count
    return self

  @property
  def rdp(self) -> np.ndarray:
    return self._rdp.copy()

  @property
  def orders(self) -> tuple[int, ...]:
    return self._orders

  @property
  def rounds(self) -> int:
    return self._rounds

  def epsilon(self, delta: float) -> float:
    """(epsilon, delta)-DP of the rounds added so far (0 for none)."""
    return _to_epsilon(self._orders, self._rdp, delta)


def epsilon(rounds: Sequence[DdgaussRound] | Sequence[float] | np.ndarray, delta: float,
            orders: Sequence[int] = ORDERS) -> float:
  """(epsilon, delta)-DP of a run: its rounds composed, or an RDP total already composed at `orders`.

  Args:
    rounds: the `DdgaussRound`s run (one each), or their summed RDP at `orders`.
    delta: the target delta.
    orders: the RDP orders (integers >= 2).

  Returns:
    epsilon by dp_accounting's RDP conversion (0 for no rounds, inf where a round had no noise).
  """
  items = rounds if isinstance(rounds, np.ndarray) else list(rounds)
  if len(items) and all(isinstance(item, DdgaussRound) for item in items):
    accountant = DdgaussAccountant(orders)
    for round_ in items:
      accountant.add(round_)
    return accountant.epsilon(delta)
  if not len(items):
    return 0.0
  total = np.asarray(items, dtype=np.float64)
  if total.shape != (len(orders),):
    raise ValueError(f"an RDP total needs one value per order ({len(orders)}), got shape {total.shape}")
  return _to_epsilon(orders, total, delta)


def calibrate_noise_multiplier(target_epsilon: float, *, rounds: int, l2_clip: float,
                               scale_fn: Callable[[float], float], beta: float, dim: int, min_clients: int,
                               num_clients: int, clients_per_round: int, delta: float,
                               rel_tol: float = 1e-4) -> float:
  """The smallest noise multiplier z whose DDGauss epsilon after `rounds` rounds is at most `target_epsilon`.

  Each client adds local stddev z C / sqrt(min_clients) and every round is counted at min_clients survivors,
  the fewest a round releases (more survivors add noise). The scale is `scale_fn(z)`: at a fixed bit width it
  shrinks as the noise grows. Bisection on [Z_MIN, Z_MAX] assumes epsilon falls as z grows; the z returned has
  been checked to meet the target either way.

  Args:
    target_epsilon: the epsilon to reach.
    rounds: the rounds of the run.
    l2_clip: C, unscaled.
    scale_fn: z -> the scale s used at that noise multiplier.
    beta: the conditional rounding's bias.
    dim: d, padded.
    min_clients: n_min, the fewest survivors a round releases.
    num_clients: N, the training clients.
    clients_per_round: k, the clients sampled each round.
    delta: the target delta.
    rel_tol: the bisection stops once its bracket is this narrow relative to z.

  Returns:
    z, to within rel_tol (Z_MIN where even Z_MIN meets the target).

  Raises:
    ValueError: one line, where even Z_MAX does not reach it.
  """
  def reached(z: float) -> float:
    round_ = DdgaussRound(l2_clip=l2_clip, scale=float(scale_fn(z)), beta=beta, dim=dim,
                          local_stddev=z * l2_clip / math.sqrt(min_clients), clients=min_clients,
                          num_clients=num_clients, clients_per_round=clients_per_round)
    return DdgaussAccountant().add(round_, int(rounds)).epsilon(delta)

  at_max = reached(Z_MAX)
  if at_max > target_epsilon:
    raise ValueError(f"target epsilon {target_epsilon:g} cannot be met in {rounds} rounds of {clients_per_round} "
                     f"of {num_clients} clients at delta {delta:.3g}: even noise multiplier {Z_MAX:g} gives "
                     f"{at_max:.3g} (fewer rounds or clients per round, or a larger target)")
  if reached(Z_MIN) <= target_epsilon:
    return Z_MIN
  low, high = Z_MIN, Z_MAX  # low misses the target, high meets it
  while high - low > rel_tol * high:
    middle = (low + high) / 2
    if reached(middle) <= target_epsilon:
      high = middle
    else:
      low = middle
  return high


class DdgaussEpsilonTracker:
  """Epsilon after each round of a distributed-DP run, as the loop's `round_metrics` (`privacy/epsilon`).

  Each round is counted with the survivors the secure sum actually summed
  (the round record's `dp/clients`, which `distributed.DistributedDpProcess`
  measures); a round with no count (e.g. one recorded before a resume and
  missing from `prior_clients`) is counted at the fewest a round releases,
  which only overstates epsilon.

  Args:
    template: a round at the fewest survivors (`clients` = n_min); each round
      counted is it with its own survivors.
    delta: the target delta.
    noise_multiplier: z, reported beside epsilon.
    prior_clients: round -> survivors, for rounds run before a resume.
  """
  GROUP = "dp"  # the record's group with the survivors, `distributed.MEASUREMENTS_GROUP`

  def __init__(self, template: DdgaussRound, delta: float, noise_multiplier: float,
               prior_clients: Optional[Mapping[int, int]] = None):
    self.template, self.delta, self.noise_multiplier = template, float(delta), float(noise_multiplier)
    self._prior = dict(prior_clients or {})
    self._accountant = DdgaussAccountant()
    self._survivors: dict[int, int] = {}

  def _add(self, round_num: int, clients: int) -> None:
    self._accountant.add(dataclasses.replace(self.template, clients=int(clients)))
    self._survivors[round_num] = int(clients)

  def __call__(self, round_num: int, record: Optional[Mapping[str, Any]] = None) -> dict[str, dict[str, float]]:
    """The privacy group after `round_num` rounds; `record` (this round's, if given) says its survivors."""
    if round_num < self._accountant.rounds:
      raise ValueError(f"round {round_num} was accounted already ({self._accountant.rounds} rounds so far)")
    measured = (record or {}).get(self.GROUP, {}).get("clients")
    for r in range(self._accountant.rounds + 1, round_num + 1):
      clients = measured if r == round_num and measured is not None else self._prior.get(r, self.template.clients)
      self._add(r, clients)
    return {"privacy": {"epsilon": self._accountant.epsilon(self.delta), "delta": self.delta,
                        "noise_multiplier": self.noise_multiplier,
                        "survivors_counted": float(self._survivors.get(round_num, self.template.clients))}}
