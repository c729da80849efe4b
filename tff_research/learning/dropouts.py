"""The simulated network of a run with an interactive aggregator: who drops, and when.

Plain Python (no TensorFlow): `learning.config` builds it while checking flags.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DropoutSimulation:
  """The simulated network: each sampled client drops with probability `rate`, after the setup.

  Dropouts model the network, not a secret: they draw from (`seed`, round,
  attempt), so a round started over draws new dropouts and a resumed run
  draws the ones an uninterrupted run would.
  """
  rate: float = 0.0
  seed: int = 0

  def __post_init__(self):
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.rate}")

  def dropped(self, num_clients: int, round_num: int, attempt: int) -> list[int]:
    network = np.random.default_rng([self.seed, round_num, attempt])
    return [u for u in range(num_clients) if network.random() < self.rate]
