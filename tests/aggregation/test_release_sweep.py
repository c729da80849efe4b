"""Attacks on the release decision: every dropout pattern we can think of, against an independent oracle.

Threat: an honest-but-curious server that unmasks whatever the protocol lets
it, and would learn the sum of every connected part of the survivors'
masking graph. Claim: an aggregate is released only when the survivors'
subgraph is connected, every secret to rebuild has t live holders, no more
than the D dropouts the parameters assumed dropped (on every graph) and the
survivors leave min_honest honest inputs even if C of them are corrupt;
otherwise SecureAggregationError and nothing revealed.

`test_release_decision_sweep` runs the decision itself (`protocol.check_release`,
which the server runs before it asks for any share and every client runs again
before it answers) on at least 10,000 patterns: every pattern for n <= 8 and,
for larger n up to 100, random and adversarial ones (two runs of k/2
consecutive clients of the ring, the cut that splits H(k, n)) for every (k, t)
the parameter check accepts (every t up to n = 8, then the ends and the default).
`test_protocol_sweep` runs the real protocol
(keys, shares, requests, reconstruction, AES-CTR masks) on a sample of those
patterns and checks what a release contains.
"""
import itertools
import random

import numpy as np
import pytest
import scipy.sparse.csgraph

from tests.aggregation.accepted import accepted_parameters
from tff_research.aggregation.secagg import graph as graph_lib
from tff_research.aggregation.secagg import params
from tff_research.aggregation.secagg import protocol
from tff_research.aggregation.secagg import streams

THREATS = (params.ThreatModel(), params.ThreatModel(max_dropout=0.3, max_corrupt=0.0),
           params.ThreatModel(max_dropout=0.2, max_corrupt=0.1), params.ThreatModel(max_dropout=0.5, max_corrupt=0.0))


class _Oracle:
  """What may be released, computed independently of the package (scipy's connected components)."""

  def __init__(self, graph, p):
    self.p = p
    n = p.num_clients
    self.adjacency = np.zeros((n, n))
    for u in range(n):
      self.adjacency[u, graph[u]] = 1.0

  def __call__(self, survivors):
    """(release?, connected?) for these survivors."""
    p = self.p
    alive = np.zeros(p.num_clients, bool)
    alive[list(survivors)] = True
    live = np.flatnonzero(alive)
    parts, _ = scipy.sparse.csgraph.connected_components(self.adjacency[np.ix_(live, live)], directed=False)
    holders = self.adjacency @ alive.astype(float) + alive  # live neighbours (+ self)
    needs_holders = alive | (holders > 0)
    enough = bool(np.all(holders[needs_holders] >= p.threshold))
    within = p.num_clients - len(live) <= p.max_dropouts
    honest = len(live) - p.max_corrupt >= p.min_honest  # even if every corrupt client survived
    return parts == 1 and enough and within and honest and len(live) >= p.threshold, parts == 1


def _adversarial(order, k, rng):
  """Two runs of k/2 consecutive ring positions (the cut that splits H(k, n)), sometimes with more."""
  n, half = len(order), max(k // 2, 1)
  first = rng.randrange(n)
  second = (first + half + 1 + rng.randrange(max(n - 2 * half - 1, 1))) % n
  dropped = {order[(first + i) % n] for i in range(half)} | {order[(second + i) % n] for i in range(half)}
  if rng.random() < 0.3:
    dropped |= set(rng.sample(range(n), rng.randrange(3)))
  return dropped


def _patterns(n, p, order, rng, count):
  if n <= 8:
    yield from (set(c) for r in range(n + 1) for c in itertools.combinations(range(n), r))
    return
  for _ in range(count):
    kind = rng.random()
    if kind < 0.4:
      yield set(rng.sample(range(n), rng.randrange(p.max_dropouts + 2)))
    elif kind < 0.5:
      yield set(rng.sample(range(n), rng.randrange(n)))
    else:
      yield _adversarial(order, p.degree, rng)


def _decide(graph, p, survivors, dropped):
  try:
    protocol.check_release(graph, p, survivors, dropped)
    return True
  except protocol.SecureAggregationError:
    return False


def test_release_decision_sweep():
  rng = random.Random(2020)
  checked = released = split_refused = 0
  for n in (5, 6, 7, 8, 9, 10, 12, 16, 20, 30, 50, 100):
    for threat in THREATS:
      accepted = accepted_parameters(n, threat, every_t=n <= 8)
      for p in accepted:
        order = graph_lib.random_order(n, rng.randrange(2**32))
        g = graph_lib.harary_graph(order, p.degree)
        oracle = _Oracle(g, p)
        for dropped in _patterns(n, p, order, rng, count=8):
          survivors = [u for u in range(n) if u not in dropped]
          may_release, connected = oracle(survivors)
          decided = _decide(g, p, survivors, sorted(dropped))
          assert decided == may_release, (n, p, sorted(dropped))
          assert not decided or connected  # released => the survivors' graph is connected
          checked += 1
          released += decided
          split_refused += not connected and survivors != []
  print(f"{checked} patterns: {released} released, {split_refused} split and refused")
  assert checked >= 10_000 and released >= 1_000 and split_refused >= 500, (checked, released, split_refused)


def _released_sum(rnd, inputs, survivors, dropped):
  """What the server gets from a release, computed as it would: masked vectors of the
  survivors (AES-CTR masks, mod 2^32) summed, minus the rebuilt masks."""
  masked = [streams.add_signed_streams(inputs[u].copy(), seeds)
            for u, seeds in zip(survivors, rnd.mask_seeds(survivors))]
  total = np.sum(masked, axis=0, dtype=np.uint32)
  return streams.add_signed_streams(np.zeros_like(total), rnd.unmask(survivors, dropped)), total


def test_protocol_sweep():
  """The real protocol: refused patterns reveal nothing; released ones give exactly the survivors' sum."""
  rng = random.Random(704)
  dim = 8
  released = refused = 0
  for n, threat in [(5, THREATS[0]), (8, THREATS[1]), (12, THREATS[2]), (20, THREATS[3]), (40, THREATS[1]),
                    (100, THREATS[1])]:
    accepted = accepted_parameters(n, threat, every_t=False)
    # the smallest and the largest safe k at both ends of t, the default, and a few between
    sparse = [p for p in accepted if not p.complete or n < 40]  # a complete graph at n = 100 is slow to set up
    for p in sparse[:2] + sparse[-2:] + rng.sample(sparse, min(3, len(sparse))) + [
        params.choose_parameters(n, threat)]:
      rnd = protocol.SecAggRound(p, round_num=0, order_seed=rng.randrange(2**32))
      inputs = [np.random.default_rng(u).integers(0, 2**32, dim, dtype=np.uint32) for u in range(n)]
      for dropped in _patterns(n, p, rnd.order, rng, count=5 if n < 100 else 3):
        if n <= 8 and rng.random() < 0.8:
          continue  # a sample of the exhaustive patterns: the decision sweep covers them all
        survivors = [u for u in range(n) if u not in dropped]
        may_release, connected = _Oracle(rnd.graph, p)(survivors)
        if not may_release:
          with pytest.raises(protocol.SecureAggregationError):
            rnd.unmask(survivors, sorted(dropped))
          assert all(not c._revealed for c in rnd._clients)  # pylint: disable=protected-access
          refused += 1
          continue
        assert connected
        correction, total = _released_sum(rnd, inputs, survivors, sorted(dropped))
        np.testing.assert_array_equal(total - correction, np.sum([inputs[u] for u in survivors], axis=0,
                                                                   dtype=np.uint32))
        released += 1
        rnd = protocol.SecAggRound(p, round_num=0, order_seed=rng.randrange(2**32))  # shares were spent
  print(f"{released} released, {refused} refused")
  assert released >= 50 and refused >= 50, (released, refused)


def test_a_split_that_the_bound_allows_is_refused_and_reveals_nothing():
  """n = 100, up to 30 dropouts, no corruption: k = 24 < 30, so 24 adversarial dropouts
  (two runs of 12 ring positions) split the ring while staying within the bound."""
  p = params.choose_parameters(100, params.ThreatModel(max_dropout=0.3, max_corrupt=0.0))
  assert p.degree < p.max_dropouts
  rnd = protocol.SecAggRound(p, round_num=0, order_seed=3)
  half = p.degree // 2
  dropped = sorted(rnd.order[i] for i in list(range(half)) + list(range(50, 50 + half)))
  survivors = [u for u in range(100) if u not in dropped]
  assert len(graph_lib.components(rnd.graph, survivors)) == 2
  with pytest.raises(protocol.SecureAggregationError, match="split into 2 parts"):
    rnd.unmask(survivors, dropped)
  assert all(not c._revealed for c in rnd._clients)  # pylint: disable=protected-access
