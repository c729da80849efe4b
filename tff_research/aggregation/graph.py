"""The SecAgg+ neighbour graph (Bell et al. 2020): k neighbours instead of n - 1.

Each client masks with, and secret-shares to, only its neighbours. We use a
Harary graph H(k, n) (the k-regular circulant graph with maximal connectivity)
laid over a random permutation of the clients drawn from a public per-round
seed, so a fixed client pair is rarely neighbours twice. With k = O(log n) the
per-client cost drops from O(n) to O(log n) key agreements, shares and PRG
expansions. `k=None` or `k >= n - 1` is the complete graph (original SecAgg).
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def effective_degree(num_clients: int, k: Optional[int]) -> int:
  """Degree actually used: n - 1 for the full graph; odd k with odd n rounds up."""
  n = num_clients
  if k is None or k >= n - 1:
    return n - 1
  if k < 1:
    raise ValueError(f"neighbours k must be >= 1, got {k}")
  if k % 2 == 1 and n % 2 == 1:
    return min(k + 1, n - 1)
  return k


def harary_neighbours(num_clients: int, k: Optional[int], round_seed: int) -> list[list[int]]:
  """Sorted neighbour lists of H(k, n) over a seeded random order of the clients."""
  n = num_clients
  if n < 2:
    raise ValueError("secure aggregation needs at least 2 clients")
  degree = effective_degree(n, k)
  if degree == n - 1:
    return [[j for j in range(n) if j != i] for i in range(n)]
  order = np.random.default_rng(round_seed).permutation(n)
  pos_to_client = [int(c) for c in order]
  adj: list[set[int]] = [set() for _ in range(n)]
  offsets = list(range(1, degree // 2 + 1))
  if degree % 2 == 1:  # n even here: add the "diameter" edges
    offsets.append(n // 2)
  for p in range(n):
    for o in offsets:
      a, b = pos_to_client[p], pos_to_client[(p + o) % n]
      adj[a].add(b)
      adj[b].add(a)
  return [sorted(s) for s in adj]
