"""SecAgg+ parameters from a threat model: the graph degree k and the Shamir threshold t.

Bell, Bonawitz, Gascón, Lepoint and Raykova, "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", CCS 2020 (eprint 2020/704),
replace SecAgg's complete graph by a sparse random graph of degree
k = O(log n). This module chooses k and t for one round of n clients under
a `ThreatModel`: at most a fraction delta of the clients drop out after
sharing their keys, at most a fraction gamma are corrupt and collude with
an honest-but-curious server, corruption is static (fixed before the
round's graph is drawn), security may fail with probability at most
2^-sigma and the round may fail to complete with probability at most
2^-eta. Counts are rounded up: C = ceil(gamma n) corrupt, D = ceil(delta n)
dropped (a 10 % bound among 8 clients still tolerates one dropout).

The graph is the Harary graph H(k, n) (k even: each client is linked to the
k/2 nearest clients on either side of a ring) over a uniformly random order
of the clients drawn afresh each round, the shape Google's federated-compute
uses (`secret_sharing_harary_graph`). Three conditions, each from the
analysis in Bell et al., evaluated exactly here (integer arithmetic):

1. Connectivity. If the honest survivors' subgraph falls apart, the server
   (with the corrupt clients' help) learns the sum of every part. Removing
   nodes splits H(k, n) only if two disjoint runs of k/2 consecutive ring
   positions are all removed. With B = C + D nodes removed and the order
   random, a union bound over the n (n - k - 1) / 2 pairs of runs gives
   P(split) <= n (n - k - 1) / 2 * C(B, k) / C(n, k).
2. Secrecy of each client's seeds. An honest client's corrupt neighbours are
   hypergeometric (n - 1 others, C corrupt, k drawn); fewer than t of them,
   for every client at once (union bound over n), keep both of its secrets
   out of the adversary's reach, since honest clients reveal at most one
   kind of share per peer (`protocol.ClientState`).
3. Correctness. Every secret needs t live holders: a dropped client's
   surviving neighbours are hypergeometric (n - 1 others, n - D surviving,
   k drawn); a surviving client also holds a share of its own, which makes
   up for the one fewer surviving other.

Conditions 1 and 2 get 2^-(sigma + 1) each, condition 3 gets 2^-eta. The
degree is the smallest even k for which t_min <= t_max, where t_min is the
smallest t meeting 2 (and t >= 2) and t_max the largest meeting 3; where no
k < n - 1 qualifies, the complete graph (SecAgg, Bonawitz et al. 2017) with
C < t <= n - D. The default t is a strict majority of the k + 1 holders,
moved into [t_min, t_max]: within the bound, a larger t leaves the most room
should more clients than C be corrupt. The server enforces at run time what
the bound assumed: at most D dropouts (sparse graphs), a connected survivors'
graph and t live holders per secret (`protocol.check_release`).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

DEFAULT_MAX_DROPOUT = 0.1
DEFAULT_MAX_CORRUPT = 0.05
DEFAULT_SECURITY_BITS = 40
DEFAULT_CORRECTNESS_BITS = 20


@dataclasses.dataclass(frozen=True)
class ThreatModel:
  """What a round's parameters must withstand (see module docstring)."""
  max_dropout: float = DEFAULT_MAX_DROPOUT    # delta: fraction of clients that may drop
  max_corrupt: float = DEFAULT_MAX_CORRUPT    # gamma: fraction colluding with the server
  security_bits: int = DEFAULT_SECURITY_BITS  # sigma: security fails w.p. <= 2^-sigma
  correctness_bits: int = DEFAULT_CORRECTNESS_BITS  # eta: a round fails w.p. <= 2^-eta

  def __post_init__(self):
    for name in ("max_dropout", "max_corrupt"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    for name in ("security_bits", "correctness_bits"):
      value = getattr(self, name)
      if not (isinstance(value, int) and 1 <= value <= 256):
        raise ValueError(f"{name} must be an integer in [1, 256], got {value}")

  def corrupt_clients(self, num_clients: int) -> int:
    return _fraction_of(self.max_corrupt, num_clients)

  def dropped_clients(self, num_clients: int) -> int:
    return _fraction_of(self.max_dropout, num_clients)

  def describe(self) -> str:
    return (f"max dropout {self.max_dropout:g}, max corrupt {self.max_corrupt:g}, "
            f"sigma {self.security_bits}, eta {self.correctness_bits}")


def _fraction_of(fraction: float, num_clients: int) -> int:
  # The 1e-9 keeps 0.1 * 10 at 1 despite its binary rounding.
  return math.ceil(fraction * num_clients - 1e-9)


@dataclasses.dataclass(frozen=True)
class SecAggParameters:
  """The parameters of one round of n clients."""
  num_clients: int
  degree: int        # neighbours per client; n - 1 is the complete graph
  threshold: int     # Shamir threshold t (shares needed to rebuild a secret)
  max_dropouts: int  # D: the most dropouts the bound allows (enforced on sparse graphs)
  max_corrupt: int   # C: the most corrupt clients the bound allows
  min_threshold: int
  max_threshold: int

  @property
  def complete(self) -> bool:
    return self.degree >= self.num_clients - 1

  @property
  def holders(self) -> int:
    """Share holders of each client: its neighbours and itself."""
    return self.degree + 1


def choose_parameters(num_clients: int, threat: ThreatModel = ThreatModel(),
                      neighbors: Optional[int] = None,
                      threshold: Optional[int] = None) -> SecAggParameters:
  """The degree and threshold for `num_clients` under `threat`, or the given ones, checked.

  Args:
    num_clients: n, the clients that share keys in the round (at least 2).
    threat: the bounds the parameters must withstand.
    neighbors: an expert's degree k, checked against the bound; None chooses
      the smallest safe one; any k >= n - 1 is the complete graph.
    threshold: an expert's t, checked against [t_min, t_max] for the degree;
      None chooses (module docstring).

  Returns:
    The round's `SecAggParameters`.

  Raises:
    ValueError: one line naming what is unsafe and the safe choice.
  """
  n = int(num_clients)
  if n < 2:
    raise ValueError(f"secure aggregation needs at least 2 clients, got {n}")
  degree = _smallest_safe_degree(n, threat) if neighbors is None else _checked_degree(n, int(neighbors), threat)
  low, high = _threshold_range(n, degree, threat)
  if threshold is None:
    majority = (degree + 1) // 2 + 1
    t = min(max(majority, low), high)
  else:
    t = int(threshold)
    if not low <= t <= high:
      raise ValueError(f"threshold t={t} is outside the safe range [{low}, {high}] for n={n} clients "
                       f"with {_graph_name(n, degree)} ({threat.describe()})")
  return SecAggParameters(n, degree, t, threat.dropped_clients(n), threat.corrupt_clients(n), low, high)


def _graph_name(n: int, degree: int) -> str:
  return "the complete graph" if degree >= n - 1 else f"k={degree} neighbours"


@functools.lru_cache(maxsize=256)
def _smallest_safe_degree(n: int, threat: ThreatModel) -> int:
  for k in range(2, n - 1, 2):
    if _degree_is_safe(n, k, threat):
      return k
  if _threshold_range_or_none(n, n - 1, threat) is None:
    raise ValueError(f"no parameters withstand these bounds at n={n} clients ({threat.describe()}): "
                     "even the complete graph needs fewer corrupt plus dropped clients")
  return n - 1


def _checked_degree(n: int, k: int, threat: ThreatModel) -> int:
  if k >= n - 1:
    _threshold_range(n, n - 1, threat)  # raises if even the complete graph cannot do it
    return n - 1
  if k < 2 or k % 2:
    raise ValueError(f"SecAgg+ degree k={k} must be even and at least 2 (the Harary graph H(k, n) "
                     f"links k/2 clients on each side), or >= n - 1 = {n - 1} for the complete graph")
  if not _degree_is_safe(n, k, threat):
    safest = _smallest_safe_degree(n, threat)
    safe = "the complete graph" if safest >= n - 1 else f"k={safest}"
    raise ValueError(f"SecAgg+ degree k={k} is below the Bell et al. bound for n={n} clients "
                     f"({threat.describe()}): the smallest safe degree is {safe}")
  return k


def _degree_is_safe(n: int, k: int, threat: ThreatModel) -> bool:
  removed = threat.corrupt_clients(n) + threat.dropped_clients(n)
  if not _split_probability_below(n, k, removed, threat.security_bits + 1):
    return False
  return _threshold_range_or_none(n, k, threat) is not None


def _split_probability_below(n: int, k: int, removed: int, bits: int) -> bool:
  """Whether n (n - k - 1) / 2 * C(removed, k) / C(n, k) < 2^-bits (condition 1)."""
  if k > removed or k >= n - 1:
    return True  # fewer removed nodes than a split needs
  pairs_twice = n * (n - k - 1)
  return pairs_twice * math.comb(removed, k) * 2**bits < 2 * math.comb(n, k)


def _threshold_range(n: int, degree: int, threat: ThreatModel) -> tuple[int, int]:
  found = _threshold_range_or_none(n, degree, threat)
  if found is None:
    raise ValueError(f"no threshold is both secure and correct for n={n} clients with "
                     f"{_graph_name(n, degree)} ({threat.describe()})")
  return found


@functools.lru_cache(maxsize=1024)
def _threshold_range_or_none(n: int, degree: int, threat: ThreatModel) -> Optional[tuple[int, int]]:
  corrupt, dropped = threat.corrupt_clients(n), threat.dropped_clients(n)
  if degree >= n - 1:  # every client holds a share: the counts are exact
    low, high = max(2, corrupt + 1), n - dropped
  else:
    low = _smallest_secure_threshold(n, degree, corrupt, threat.security_bits + 1)
    high = _largest_correct_threshold(n, degree, dropped, threat.correctness_bits)
  return (low, high) if low <= high else None


def _hypergeometric_counts(population: int, marked: int, drawn: int) -> list[int]:
  """C(marked, x) C(population - marked, drawn - x) for x = 0..drawn (over C(population, drawn))."""
  return [math.comb(marked, x) * math.comb(population - marked, drawn - x) for x in range(drawn + 1)]


def _smallest_secure_threshold(n: int, k: int, corrupt: int, bits: int) -> int:
  """Smallest t >= 2 with n P(corrupt neighbours >= t) <= 2^-bits (condition 2)."""
  counts = _hypergeometric_counts(n - 1, corrupt, k)
  total = math.comb(n - 1, k)
  tail = 0  # sum of counts[x] for x >= t, t going down from k + 1
  for t in range(k + 1, 1, -1):
    tail += counts[t - 1]
    if n * tail * 2**bits > total:  # t - 1 would be insecure, so t is the smallest
      return max(2, t)
  return 2


def _largest_correct_threshold(n: int, k: int, dropped: int, bits: int) -> int:
  """Largest t <= k with n P(surviving neighbours < t) <= 2^-bits (condition 3)."""
  counts = _hypergeometric_counts(n - 1, min(n - dropped, n - 1), k)
  total = math.comb(n - 1, k)
  below = 0  # sum of counts[x] for x < t
  for t in range(1, k + 1):
    below += counts[t - 1]
    if n * below * 2**bits > total:
      return t - 1
  return k
