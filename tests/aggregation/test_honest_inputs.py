"""Attacks on what a released sum can give away: too few honest inputs, and dropouts the server chooses.

Threat: an honest-but-curious server colluding with up to C = ceil(gamma n)
clients, which unmasks whatever the protocol lets it and learns the sum of
every connected part of the honest survivors' masking graph (it removes the
corrupt clients' inputs and pairwise masks itself).

Claim 1 (`min_honest`, default 2): every released sum holds at least
min_honest honest inputs, whichever <= C clients are corrupt. Rule: a round
of n clients is built only if n - D - C >= min_honest (D = ceil(delta n)),
the complete graph's threshold is at least C + min_honest, the server
refuses more than D dropouts on every graph, and a process checks every
round size it may run when it is built.

Claim 2 (`ThreatModel(server_chosen_dropouts=True)`): the server may choose
which <= D clients drop, knowing the ring order, and the corrupt clients may
sit wherever helps it; the honest survivors' graph is still connected in
every released round, because k > C + D and H(k, n) is k-vertex-connected.
Without the option dropouts are assumed independent of the ring, and the
graph-aware search below does split accepted rounds at n = 200: the default
mode's bound does not cover a server that chooses.

The oracle is independent of the package: scipy's connected components on
the adjacency matrix, and counts of the corrupt clients among the survivors.
"""
import dataclasses
import itertools
import random

import numpy as np
import pytest
import scipy.sparse.csgraph
import tensorflow_federated as tff

from tests.aggregation.accepted import accepted_parameters
from tff_research.aggregation import config as config_lib
from tff_research.aggregation import driver as driver_lib
from tff_research.aggregation import quantization
from tff_research.aggregation.secagg import graph as graph_lib
from tff_research.aggregation.secagg import params
from tff_research.aggregation.secagg import protocol
from tff_research.learning import config as learning_config

THREATS = (params.ThreatModel(), params.ThreatModel(max_dropout=0.3, max_corrupt=0.0),
           params.ThreatModel(max_dropout=0.2, max_corrupt=0.1), params.ThreatModel(max_dropout=0.1, max_corrupt=0.3),
           params.ThreatModel(max_dropout=0.2, max_corrupt=0.2, min_honest=3))


def _modes(threat: params.ThreatModel) -> list[params.ThreatModel]:
  """The threat model as given (dropouts independent of the ring) and with server-chosen dropouts."""
  return [dataclasses.replace(threat, server_chosen_dropouts=chosen) for chosen in (False, True)]


class _Parts:
  """Connected parts of the subgraph a set of clients induces: scipy, not the package's own search."""

  def __init__(self, graph: graph_lib.Graph):
    n = len(graph)
    rows = [u for u in range(n) for _ in graph[u]]
    cols = [v for u in range(n) for v in graph[u]]
    self.adjacency = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    self._seen: dict[frozenset, int] = {}  # many (dropped, corrupt) pairs leave the same honest set

  def __call__(self, members) -> int:
    members = frozenset(members)
    if members not in self._seen:
      index = sorted(members)
      sub = self.adjacency[index][:, index]
      self._seen[members] = scipy.sparse.csgraph.connected_components(sub, directed=False)[0] if index else 0
    return self._seen[members]


def _released(graph, p, dropped) -> bool:
  survivors = [u for u in range(p.num_clients) if u not in dropped]
  try:
    protocol.check_release(graph, p, survivors, sorted(dropped))
    return True
  except protocol.SecureAggregationError:
    return False


def _check_release_contents(parts: _Parts, p, threat, dropped, corrupt_sets) -> int:
  """Asserts what a released round holds for every corrupt set given; returns how many were checked."""
  survivors = [u for u in range(p.num_clients) if u not in dropped]
  for corrupt in corrupt_sets:
    honest = [u for u in survivors if u not in corrupt]
    assert len(honest) >= threat.min_honest, (p, sorted(dropped), sorted(corrupt))
    if threat.server_chosen_dropouts:
      assert parts(honest) == 1, (p, sorted(dropped), sorted(corrupt))
  return len(corrupt_sets)


def test_every_pattern_to_10_clients_keeps_min_honest_and_chosen_dropouts_never_split_the_honest():
  """Exhaustive: every n <= 10, every accepted (k, t), every dropout pattern, every corrupt set of size <= C."""
  rng = random.Random(28)
  patterns = released = cases = sparse_released = refused_sizes = 0
  for n, base in itertools.product(range(2, 11), THREATS):
    for threat in _modes(base):
      accepted = accepted_parameters(n, threat)
      if not accepted:  # the size itself is refused: it cannot keep min_honest
        assert threat.honest_survivors(n) < threat.min_honest, (n, threat)
        _one_line_refusal(lambda n=n, threat=threat: params.choose_parameters(n, threat), "below min_honest")
        refused_sizes += 1
        continue
      corrupt_sets = [set(c) for r in range(accepted[0].max_corrupt + 1) for c in itertools.combinations(range(n), r)]
      for p in accepted:
        graph = graph_lib.harary_graph(graph_lib.random_order(n, rng.randrange(2**32)), p.degree)
        parts = _Parts(graph)
        for r in range(n + 1):
          for dropped in map(set, itertools.combinations(range(n), r)):
            patterns += 1
            if _released(graph, p, dropped):
              released += 1
              sparse_released += not p.complete
              cases += _check_release_contents(parts, p, threat, dropped, corrupt_sets)
  print(f"{patterns} dropout patterns, {released} released, {cases} (release, corrupt set) cases checked, "
        f"{sparse_released} releases on SecAgg+ graphs, {refused_sizes} (n, threat model) refused")
  assert patterns >= 100_000 and released >= 2_000 and cases >= 20_000 and sparse_released >= 500, (
      patterns, released, cases, sparse_released)
  assert refused_sizes >= 10  # n = 2, 3 at every threat model, and more at the larger fractions


def _random_dropouts(rng, n, p, corrupt, order):
  """A random pattern, or two runs of k/2 ring positions beside corrupt clients (the split of H(k, n))."""
  if rng.random() < 0.5:
    return set(rng.sample(range(n), rng.randrange(p.max_dropouts + 2)))
  position = {u: i for i, u in enumerate(order)}
  half, anchor = p.degree // 2, position[rng.choice(sorted(corrupt))] if corrupt else rng.randrange(n)
  second = anchor + 1 + half + rng.randrange(max(n - 2 * half - 1, 1))
  window = [order[(anchor + i) % n] for i in range(half)] + [order[(second + i) % n] for i in range(half)]
  return {u for u in window if u not in corrupt}


def test_random_rounds_to_200_clients():
  """Random sizes, threat models, (k, t), corrupt sets of size C and dropout patterns, up to n = 200."""
  rng = random.Random(704)
  patterns = released = 0
  while patterns < 4_000:
    n = rng.randrange(11, 201)
    threat = rng.choice(_modes(rng.choice(THREATS)))
    chosen = params.choose_parameters(n, threat)
    k = chosen.degree if chosen.complete else min(chosen.degree + 2 * rng.randrange(3), n - 1)
    p = params.choose_parameters(n, threat, neighbors=k)
    p = params.choose_parameters(n, threat, neighbors=k, threshold=rng.randint(p.min_threshold, p.max_threshold))
    order = graph_lib.random_order(n, rng.randrange(2**32))
    graph = graph_lib.harary_graph(order, p.degree)
    parts = _Parts(graph)
    for _ in range(20):
      corrupt = set(rng.sample(range(n), p.max_corrupt))
      dropped = _random_dropouts(rng, n, p, corrupt, order)
      patterns += 1
      if _released(graph, p, dropped):
        released += 1
        _check_release_contents(parts, p, threat, dropped, [corrupt])
  print(f"{patterns} random rounds, {released} released")
  assert released >= 1_000, released


def _window_attacks(n: int, k: int, corrupt: int, dropouts: int):
  """The server's best split attempts on H(k, n), in ring positions: (corrupt set, dropped set).

  A split needs two runs of k/2 removed positions (dropped or corrupt, the
  corrupt survivors keeping the survivors' graph connected). The first run
  starts at position 0 (the graph looks the same from every position), the
  second after a gap of g honest positions, every g up to k + 2 (the attacks
  that isolate a few clients) and every 5th beyond. The removal budget is
  C + D: where it is short of k, the runs are removed as far as it reaches,
  from their outer ends or alternately. The corrupt clients sit in the runs,
  first or spread, where they help most.
  """
  half = k // 2
  for start in [s for s in range(half + 1, n - half) if s - half <= k + 2 or s % 5 == 0]:
    window = list(range(half)) + list(range(start, start + half))
    for order in (window, window[0::2] + window[1::2]):
      removed = order[:corrupt + dropouts]
      for placed in (removed[:corrupt], removed[::2][:corrupt]):
        yield set(placed), set(removed) - set(placed)


def _weakest(n: int, threat: params.ThreatModel) -> list[params.SecAggParameters]:
  """The accepted sparse (k, t) whose graphs a split is most likely in: the two smallest k, both ends of t.

  H(k, n) is a subgraph of H(k + 2, n) on the same ring, so a removal that
  cannot split the smallest accepted k cannot split a larger one either.
  """
  out = []
  k = params.choose_parameters(n, threat).degree
  while len({q.degree for q in out}) < 2 and k < n - 1:
    try:
      p = params.choose_parameters(n, threat, neighbors=k)
      out.extend(params.choose_parameters(n, threat, neighbors=k, threshold=t)
                 for t in sorted({p.min_threshold, p.max_threshold}))
    except ValueError:
      pass
    k += 2
  return out


def _graph_aware_splits(n: int, threat: params.ThreatModel) -> tuple[int, int, int]:
  """(attempts, released, released with the honest survivors split) over the weakest accepted (k, t) at n."""
  attempts = released = splits = 0
  for p in _weakest(n, threat):
    graph = graph_lib.harary_graph(list(range(n)), p.degree)  # ring order = positions
    parts = _Parts(graph)
    for corrupt, dropped in _window_attacks(n, p.degree, p.max_corrupt, p.max_dropouts):
      attempts += 1
      if _released(graph, p, dropped):
        released += 1
        honest = [u for u in range(n) if u not in dropped and u not in corrupt]
        splits += parts(honest) > 1
  return attempts, released, splits


@pytest.mark.parametrize("n,threat", [(89, THREATS[0]), (120, THREATS[0]), (200, THREATS[0]), (200, THREATS[1]),
                                      (200, THREATS[2])])
def test_graph_aware_dropouts_split_nothing_when_the_server_may_choose_them(n, threat):
  """Server-chosen mode: no accepted round splits, although many release. The default mode at the
  same settings (it assumes dropouts independent of the ring) is split wherever corrupt survivors can
  bridge the cut (C > 0): the contrast the option exists for. With C = 0 the release check sees every cut."""
  attempts, released, splits = _graph_aware_splits(n, dataclasses.replace(threat, server_chosen_dropouts=True))
  print(f"n={n}, server-chosen dropouts: {attempts} attacks, {released} released, {splits} split")
  assert splits == 0 and released >= 100, (attempts, released, splits)
  attempts, released, splits = _graph_aware_splits(n, threat)
  print(f"n={n}, independent dropouts assumed: {attempts} attacks, {released} released, {splits} split")
  if threat.max_corrupt == 0:  # no corrupt survivor bridges the split: the release check sees it
    assert splits == 0, (attempts, released, splits)
  else:
    assert splits >= 10, (attempts, released, splits)


def _one_line_refusal(fn, match: str) -> str:
  with pytest.raises(ValueError, match=match) as error:
    fn()
  assert "\n" not in str(error.value)
  return str(error.value)


def test_the_reviews_configurations_are_refused_when_built():
  """n = 3 at the defaults; threshold 2 at n = 4, 5; delta 0.6, gamma 0.3 at n = 10: in one line, with the fix."""
  _one_line_refusal(lambda: params.choose_parameters(3),
                    r"C=1 corrupt clients leave 1 honest input\(s\).*smallest round that keeps 2 is n=4$")
  for n in (4, 5):
    _one_line_refusal(lambda n=n: params.choose_parameters(n, threshold=2),
                      rf"threshold t=2 is outside the safe range \[3, {n - 1}\] for n={n} clients with the complete")
    _one_line_refusal(lambda n=n: config_lib.SecureSumConfig(threshold=2).smallest_round(n), "t=2 is outside")
  wide = params.ThreatModel(max_dropout=0.6, max_corrupt=0.3)
  _one_line_refusal(lambda: params.choose_parameters(10, wide),
                    r"D=6 dropped and C=3 corrupt clients leave 1 .* smallest round that keeps 2 is n=20$")
  assert params.choose_parameters(20, wide).threshold == 8  # C + min_honest <= t <= n - D
  _one_line_refusal(lambda: params.choose_parameters(100, params.ThreatModel(max_dropout=0.5, max_corrupt=0.5)),
                    "no round size does")
  for bad in (1, 2.0, True):
    with pytest.raises(ValueError, match="min_honest must be an integer >= 2"):
      params.ThreatModel(min_honest=bad)
  # The flags reach the same checks: --clients_per_round=3 is refused before anything is built.
  _one_line_refusal(lambda: learning_config.ExperimentConfig(aggregator="secure", clients_per_round=3).validate(),
                    r"^--aggregator=secure: no parameters withstand .* smallest round that keeps 2 is n=4$")
  flags = learning_config.ExperimentConfig(aggregator="secure", clients_per_round=1000, secure_min_honest=3,
                                           secure_server_chosen_dropouts=True)
  flags.validate()
  chosen = flags.secure_sum_config()
  assert (chosen.min_honest, chosen.protocol_parameters(1000).degree) == (3, 152)


def test_the_complete_graph_enforces_the_dropout_cap_and_min_honest():
  """The review's release: t = 2 of 5 was accepted and 3 dropouts released two survivors (one corrupt)."""
  p = params.choose_parameters(5)
  assert p.complete and (p.min_threshold, p.max_dropouts, p.max_corrupt) == (3, 1, 1)
  graph = graph_lib.harary_graph(list(range(5)), p.degree)
  assert _released(graph, p, {4})
  for dropped, refusal in (({3, 4}, "2 of 5 clients dropped, more than the 1"), ({2, 3, 4}, "below the threshold")):
    with pytest.raises(protocol.SecureAggregationError, match=refusal):
      protocol.check_release(graph, p, sorted(set(range(5)) - dropped), sorted(dropped))
  # Parameters made by hand, as the review's n = 3 was accepted: the run-time check refuses on its own.
  old = params.SecAggParameters(3, 2, 2, max_dropouts=1, max_corrupt=1, min_threshold=2, max_threshold=2)
  with pytest.raises(protocol.SecureAggregationError, match="fewer than min_honest=2 honest inputs"):
    protocol.check_release(graph_lib.harary_graph([0, 1, 2], 2), old, [0, 1], [2])
  looser = params.choose_parameters(8, params.ThreatModel(max_dropout=0.5, max_corrupt=0.25))
  graph = graph_lib.harary_graph(list(range(8)), looser.degree)
  assert (looser.threshold, looser.max_dropouts, looser.max_corrupt) == (4, 4, 2)
  assert _released(graph, looser, {4, 5, 6, 7})  # 4 survivors, 2 of them honest at worst


def test_a_process_checks_every_round_size_it_may_run():
  """A given t valid at the built size but not below is refused when built; a too-small round at its start."""
  third = dict(max_dropout=1 / 3, neighbors=5)
  params.choose_parameters(6, config_lib.SecureSumConfig(**third).threat(), neighbors=5, threshold=4)  # fine at 6
  _one_line_refusal(lambda: config_lib.SecureSumConfig(threshold=4, **third).smallest_round(6),
                    r"t=4 is outside the safe range \[3, 3\] for n=5 clients.* rounds of 5 to 6")
  assert config_lib.SecureSumConfig(**third).smallest_round(6) == 5
  assert params.check_round_sizes(100, params.ThreatModel()) == 4
  # delta = gamma = 0.3: n - D - C is 2 at n = 6 and 8 but 1 at n = 7, so a process for 10 starts at 8
  assert params.check_round_sizes(10, params.ThreatModel(max_dropout=0.3, max_corrupt=0.3)) == 8
  cfg = config_lib.SecureSumConfig(clip=1.0, bits=32)
  quantizer = quantization.Quantizer(tff.TensorType(np.float32, [4]), 10, cfg)
  driver = driver_lib.ProtocolDriver(cfg, 10, quantizer)
  assert driver.start_round(4, round_num=0, dropped=[3]).survivors == [0, 1, 2]
  _one_line_refusal(lambda: driver.start_round(3, round_num=1),
                    "a round of 3 clients is below the 4 to 10 this secure sum accepts .* sample at least 4 clients")


def test_server_chosen_dropouts_choose_the_smallest_even_degree_above_c_plus_d():
  """k > C + D in that mode (Harary 1962: H(k, n) is k-connected), checked for a given k; the default mode unchanged."""
  for n in (50, 89, 100, 120, 200, 1000):
    for base in THREATS[:3]:
      independent, chosen = (params.choose_parameters(n, threat) for threat in _modes(base))
      removed = chosen.max_corrupt + chosen.max_dropouts
      assert chosen.complete or (chosen.degree > removed and chosen.degree % 2 == 0), (n, chosen)
      if not chosen.complete and chosen.degree > 2:  # and it is the smallest such
        with pytest.raises(ValueError):
          params.choose_parameters(n, _modes(base)[1], neighbors=chosen.degree - 2)
      assert independent.degree <= chosen.degree
  chosen = params.ThreatModel(server_chosen_dropouts=True)
  assert params.choose_parameters(1000, chosen).degree == 152  # C + D = 50 + 100
  _one_line_refusal(lambda: params.choose_parameters(200, chosen, neighbors=30),
                    r"k=30 is not above C \+ D = 30, which server-chosen dropouts need .* smallest safe degree is k=32")
  assert params.choose_parameters(200, params.ThreatModel(), neighbors=30).degree == 30
