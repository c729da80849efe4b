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

Honest inputs per release. A sum that holds a single honest input gives it
away: the server subtracts what its corrupt clients sent. So every release
must hold at least `min_honest` (default 2) honest inputs even when C of the
survivors are corrupt. The server refuses more than D dropouts on every
graph (`protocol.check_release`), so a round of n clients is accepted only
if n - D - C >= min_honest, and on the complete graph, where a release
needs just t live clients, only with t >= C + min_honest as well. Both are
checked here, when the parameters are built; a round size that cannot meet
them is refused with the smallest one that can (`smallest_round`), and a
process that may see rounds of several sizes checks them all
(`check_round_sizes`).

Dropouts are assumed independent of the masking graph (the default). The
bound on condition 1 below, like Bell et al.'s analysis and the one in
federated-compute's parameter finder, is over a uniformly random ring order
that the C + D removed clients do not depend on. The server knows the order
(it routes the round's messages), so a server that chooses who drops, by
withholding their messages, can remove the two runs of k/2 ring positions
beside corrupt clients; the corrupt survivors keep the survivors' graph
connected, so the release check cannot see that the honest ones are split.
`ThreatModel(server_chosen_dropouts=True)` covers that server: it requires
k > C + D. The Harary graph H(k, n) is k-vertex-connected (Harary, "The
maximum connectivity of a graph", PNAS 48, 1962), so no set of C + D
removed clients, however chosen, splits the honest survivors; the degree is
the smallest even k > C + D with a valid threshold, or the complete graph.
It costs per client about k / k_default as much key agreement, sharing and
mask expansion (`benchmarks/server_chosen_dropouts.py`).

An active server. `ThreatModel(active_server=True)` is a server that may
deviate from the protocol (`consistency`: signed keys and Bonawitz et al.'s
consistency check). It needs server_chosen_dropouts, since such a server
picks who drops by withholding messages, and adds one condition: a client
reveals shares only on q signatures on its own survivor list, 2q > n + C
(`consistency_quorum`), so the n - D clients that may survive must reach
q; a round size that cannot is refused with the smallest one that can. k
and t are chosen as without it.

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
C + min_honest <= t <= n - D. The default t is a strict majority of the k + 1 holders,
moved into [t_min, t_max]: within the bound, a larger t leaves the most room
should more clients than C be corrupt. The server enforces at run time what
the bound assumed: at most D dropouts, at least min_honest survivors beyond C,
a connected survivors' graph and t live holders per secret
(`protocol.check_release`).
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
DEFAULT_MIN_HONEST = 2


@dataclasses.dataclass(frozen=True)
class ThreatModel:
  """What a round's parameters must withstand (see module docstring)."""
  max_dropout: float = DEFAULT_MAX_DROPOUT    # delta: fraction of clients that may drop
  max_corrupt: float = DEFAULT_MAX_CORRUPT    # gamma: fraction colluding with the server
  security_bits: int = DEFAULT_SECURITY_BITS  # sigma: security fails w.p. <= 2^-sigma
  correctness_bits: int = DEFAULT_CORRECTNESS_BITS  # eta: a round fails w.p. <= 2^-eta
  min_honest: int = DEFAULT_MIN_HONEST  # honest inputs every release holds, whoever is corrupt
  server_chosen_dropouts: bool = False  # the server may pick who drops, knowing the ring: k > C + D
  active_server: bool = False  # the server may deviate: signed keys + consistency check (`consistency`)

  def __post_init__(self):
    for name in ("max_dropout", "max_corrupt"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    for name in ("security_bits", "correctness_bits"):
      value = getattr(self, name)
      if not (isinstance(value, int) and 1 <= value <= 256):
        raise ValueError(f"{name} must be an integer in [1, 256], got {value}")
    if not (isinstance(self.min_honest, int) and not isinstance(self.min_honest, bool) and self.min_honest >= 2):
      raise ValueError(f"min_honest must be an integer >= 2 (a sum with one honest input reveals it), "
                       f"got {self.min_honest}")
    if not isinstance(self.server_chosen_dropouts, bool):
      raise ValueError(f"server_chosen_dropouts must be True or False, got {self.server_chosen_dropouts!r}")
    if not isinstance(self.active_server, bool):
      raise ValueError(f"active_server must be True or False, got {self.active_server!r}")
    if self.active_server and not self.server_chosen_dropouts:
      raise ValueError("active_server=True needs server_chosen_dropouts=True: a server that deviates from the "
                       "protocol chooses who drops by withholding their messages")

  def corrupt_clients(self, num_clients: int) -> int:
    return _fraction_of(self.max_corrupt, num_clients)

  def dropped_clients(self, num_clients: int) -> int:
    return _fraction_of(self.max_dropout, num_clients)

  def honest_survivors(self, num_clients: int) -> int:
    """The fewest honest inputs a release of `num_clients` can hold: n - D - C."""
    return num_clients - self.dropped_clients(num_clients) - self.corrupt_clients(num_clients)

  def describe(self) -> str:
    chosen = ", server-chosen dropouts" if self.server_chosen_dropouts else ""
    chosen += ", active server" if self.active_server else ""
    return (f"max dropout {self.max_dropout:g}, max corrupt {self.max_corrupt:g}, "
            f"min honest {self.min_honest}, sigma {self.security_bits}, eta {self.correctness_bits}{chosen}")


def _fraction_of(fraction: float, num_clients: int) -> int:
  # The 1e-9 keeps 0.1 * 10 at 1 despite its binary rounding.
  return math.ceil(fraction * num_clients - 1e-9)


@dataclasses.dataclass(frozen=True)
class SecAggParameters:
  """The parameters of one round of n clients."""
  num_clients: int
  degree: int        # neighbours per client; n - 1 is the complete graph
  threshold: int     # Shamir threshold t (shares needed to rebuild a secret)
  max_dropouts: int  # D: the most dropouts the bound allows (enforced on every graph)
  max_corrupt: int   # C: the most corrupt clients the bound allows
  min_threshold: int
  max_threshold: int
  min_honest: int = DEFAULT_MIN_HONEST  # a release needs >= C + min_honest survivors

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
  _check_honest_inputs(n, threat)
  _check_consistency_quorum(n, threat)
  degree = _smallest_safe_degree(n, threat) if neighbors is None else _checked_degree(n, int(neighbors), threat)
  low, high = _threshold_range(n, degree, threat)
  if threshold is None:
    majority = (degree + 1) // 2 + 1
    t = min(max(majority, low), high)
  else:
    t = int(threshold)
    if not low <= t <= high:
      why = (f"; t >= C + min_honest keeps {threat.min_honest} honest inputs in a release, t <= n - D lets "
             "a round with D dropouts complete" if degree >= n - 1 else "")
      raise ValueError(f"threshold t={t} is outside the safe range [{low}, {high}] for n={n} clients "
                       f"with {_graph_name(n, degree)} ({threat.describe()}){why}")
  return SecAggParameters(n, degree, t, threat.dropped_clients(n), threat.corrupt_clients(n), low, high,
                          threat.min_honest)


def _check_honest_inputs(n: int, threat: ThreatModel) -> None:
  """Raises ValueError (one line, naming the smallest round that works) unless n - D - C >= min_honest."""
  honest = threat.honest_survivors(n)
  if honest >= threat.min_honest:
    return
  smallest = smallest_round(threat)
  fix = (f"the smallest round that keeps {threat.min_honest} is n={smallest}" if smallest is not None
         else "no round size does: max_dropout + max_corrupt must stay well below 1")
  raise ValueError(f"no parameters withstand these bounds at n={n} clients ({threat.describe()}): "
                   f"D={threat.dropped_clients(n)} dropped and C={threat.corrupt_clients(n)} corrupt clients "
                   f"leave {max(honest, 0)} honest input(s) in a release, below min_honest={threat.min_honest}; "
                   f"{fix}")


@functools.lru_cache(maxsize=64)
def smallest_round(threat: ThreatModel) -> Optional[int]:
  """The smallest n >= 2 whose releases keep min_honest honest inputs (n - D - C >= min_honest).

  Args:
    threat: the bounds (delta, gamma, min_honest).

  Returns:
    That n, or None where max_dropout + max_corrupt leave no n.
  """
  spare = 1.0 - threat.max_dropout - threat.max_corrupt
  if spare <= 0:
    return None
  # D + C < (delta + gamma) n + 2, so n - D - C > spare n - 2: every n past
  # `last` qualifies, and the search ends there.
  last = min(math.ceil((threat.min_honest + 2) / spare) + 1, 10**7)
  return next((n for n in range(2, last + 1) if threat.honest_survivors(n) >= threat.min_honest), None)


def check_round_sizes(max_clients: int, threat: ThreatModel = ThreatModel(), neighbors: Optional[int] = None,
                      threshold: Optional[int] = None) -> int:
  """Checks every round size a process built for up to `max_clients` clients may run; returns the smallest.

  A given k or t valid at `max_clients` can be unsafe at a smaller round (t
  above n - D, or k below the bound), so each size is checked when the
  process is built, not when such a round starts. The sizes are those from
  the smallest n0 such that every size n0..max_clients keeps min_honest
  (the rounding of D and C can make n - D - C dip by one as n grows).

  Args:
    max_clients: the most clients a round may have.
    threat: the bounds the parameters must withstand.
    neighbors: an expert's k, or None (chosen per size).
    threshold: an expert's t, or None (chosen per size).

  Returns:
    n0, the smallest round the process accepts.

  Raises:
    ValueError: one line naming the first size that fails and why.
  """
  n_max = int(max_clients)
  choose_parameters(n_max, threat, neighbors, threshold)  # the built size first: its error names the fix
  smallest = n_max
  while (smallest > 2 and threat.honest_survivors(smallest - 1) >= threat.min_honest
         and _quorum_fits(smallest - 1, threat)):  # and, with an active server, q signers survive
    smallest -= 1
  if neighbors is None and threshold is None:
    return smallest  # chosen parameters exist wherever min_honest holds (the complete graph at worst)
  for n in range(n_max - 1, smallest - 1, -1):
    try:
      choose_parameters(n, threat, neighbors, threshold)
    except ValueError as e:
      raise ValueError(f"{e}, and a process built for up to {n_max} clients runs rounds of {smallest} to "
                       f"{n_max}: leave the threshold and neighbours unset to have them chosen per round, "
                       "or build for fewer clients") from None
  return smallest


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
    removed = threat.corrupt_clients(n) + threat.dropped_clients(n)
    below = (f"not above C + D = {removed}, which server-chosen dropouts need (H(k, n) is k-connected)"
             if threat.server_chosen_dropouts and k <= removed else "below the Bell et al. bound")
    raise ValueError(f"SecAgg+ degree k={k} is {below} for n={n} clients "
                     f"({threat.describe()}): the smallest safe degree is {safe}")
  return k


def _degree_is_safe(n: int, k: int, threat: ThreatModel) -> bool:
  removed = threat.corrupt_clients(n) + threat.dropped_clients(n)
  if threat.server_chosen_dropouts and k <= removed:
    return False  # H(k, n) is only k-connected: k well-placed removals split it
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
    # A release needs t live clients; t >= C + min_honest keeps min_honest
    # honest inputs in it by itself (and t > C keeps secrets from C clients).
    low, high = corrupt + threat.min_honest, n - dropped
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


def consistency_quorum(num_clients: int, corrupt: int) -> int:
  """The signatures on one survivor list a client needs before it reveals a share (active server).

  An honest client signs one list per round, a corrupt one any. Two lists
  with q valid signatures from distinct clients each would need disjoint
  honest signers, 2 (q - C) <= n - C of them; 2q > n + C rules that out, so
  every honest client that reveals holds the same list (`consistency`). The
  check is the consistency round of Bonawitz et al. (CCS 2017); the quorum is
  derived here from the counting above and applies to the whole round on any graph.

  Args:
    num_clients: n, the round's clients.
    corrupt: C, the most of them that may be corrupt.

  Returns:
    q = floor((n + C) / 2) + 1.
  """
  return (int(num_clients) + int(corrupt)) // 2 + 1


def _quorum_fits(n: int, threat: ThreatModel) -> bool:
  """Whether the n - D clients that may survive can reach the quorum (always, without an active server)."""
  return not threat.active_server or consistency_quorum(n, threat.corrupt_clients(n)) <= n - threat.dropped_clients(n)


def _check_consistency_quorum(n: int, threat: ThreatModel) -> None:
  """With `active_server`: raises ValueError (one line) unless the n - D survivors can reach the quorum."""
  if _quorum_fits(n, threat):
    return
  spare = 1.0 - 2 * threat.max_dropout - threat.max_corrupt
  # n - D - q > n spare / 2 - 2.5, so every n from 5 / spare on fits: the search ends there.
  last = min(math.ceil(5 / spare) + 1, 10**7) if spare > 0 else n
  smallest = next((m for m in range(n + 1, last + 1) if _quorum_fits(m, threat)), None)
  fix = (f"the smallest round that works is n={smallest}" if smallest is not None
         else "no round size does: 2 max_dropout + max_corrupt must stay below 1")
  corrupt, dropped = threat.corrupt_clients(n), threat.dropped_clients(n)
  raise ValueError(f"the active-server option needs q={consistency_quorum(n, corrupt)} signatures on one survivor "
                   f"list (2q > n + C = {n + corrupt}), but with D={dropped} dropouts only {n - dropped} of n={n} "
                   f"clients may survive to sign ({threat.describe()}); {fix}")
