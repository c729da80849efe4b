"""The masking graph of a round: who masks with, and secret-shares to, whom.

SecAgg (Bonawitz et al. 2017) uses the complete graph. SecAgg+ (Bell et al.
2020) uses a sparse graph of even degree k: here the Harary graph H(k, n),
the ring of the clients in which each is linked to the k/2 nearest on either
side (the k-regular graph with the most connectivity), laid over a random
order of the clients (the ring). The order is drawn from the OS CSPRNG every
round, so nobody can know a future round's graph when corrupt clients are
chosen (the assumption behind the bound in `params`); tests may fix
`order_seed`. The server knows the order: it routes the round's messages.
So the bound also assumes that who drops does not depend on the order;
`params.ThreatModel(server_chosen_dropouts=True)` drops that assumption
(k > C + D: H(k, n) is k-vertex-connected, and no C + D removals split it).

`components(graph, survivors)` splits the survivors into the connected parts
of the subgraph they induce: the server learns the sum of every part it
unmasks, so a release needs exactly one (`protocol.check_release`).
"""
from __future__ import annotations

import random
from typing import Iterable, Optional, Sequence

import numpy as np

Graph = list[list[int]]  # sorted neighbour lists, one per client


def random_order(num_clients: int, order_seed: Optional[int] = None) -> list[int]:
  """A uniformly random order of the clients: from the OS CSPRNG, or fixed by `order_seed`."""
  if order_seed is None:
    order = list(range(num_clients))
    random.SystemRandom().shuffle(order)
    return order
  return [int(u) for u in np.random.default_rng(order_seed).permutation(num_clients)]


def harary_graph(order: Sequence[int], degree: int) -> Graph:
  """H(degree, n) on the ring `order` (a permutation of the n clients); complete when degree >= n - 1.

  Args:
    order: the clients in ring order (`random_order`).
    degree: k, even and at least 2 below n - 1 (`params.choose_parameters` checks it).

  Returns:
    Sorted neighbour lists, one per client.
  """
  n = len(order)
  if n < 2:
    raise ValueError("a masking graph needs at least 2 clients")
  if degree >= n - 1:
    return [[v for v in range(n) if v != u] for u in range(n)]
  if degree < 2 or degree % 2:
    raise ValueError(f"the Harary graph H(k, n) needs an even k >= 2, got k={degree}")
  neighbours: list[set[int]] = [set() for _ in range(n)]
  for position, u in enumerate(order):
    for offset in range(1, degree // 2 + 1):
      v = order[(position + offset) % n]
      neighbours[u].add(v)
      neighbours[v].add(u)
  return [sorted(s) for s in neighbours]


def components(graph: Graph, members: Iterable[int]) -> list[list[int]]:
  """The connected components of the subgraph `members` induce, each sorted, largest first."""
  remaining = set(members)
  parts = []
  while remaining:
    start = remaining.pop()
    part, frontier = [start], [start]
    while frontier:
      u = frontier.pop()
      for v in graph[u]:
        if v in remaining:
          remaining.remove(v)
          part.append(v)
          frontier.append(v)
    parts.append(sorted(part))
  return sorted(parts, key=lambda p: (-len(p), p))
