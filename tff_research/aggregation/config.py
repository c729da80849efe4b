"""The settings of a secure sum: quantization, threat model, masking graph and PRG.

The one place they are named, given their defaults and checked: a bad value
fails where the config is made, in one line, not when a round runs. The
command line's `--secure_<name>` flags are these fields (`learning.config`).
Pure Python: importing it does not import TensorFlow.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from tff_research.aggregation.secagg import params as params_lib

# The mask PRGs `prg.build_mask_prg` knows: AES-128-CTR (cryptographic) and
# Philox (fast, not cryptographic: benchmarks only).
PRGS = ("aes-ctr", "philox")
DEFAULT_PRG = "aes-ctr"


@dataclasses.dataclass(frozen=True)
class SecureSumConfig:
  """Parameters of a secure sum (the overflow rule: `quantization`).

  In a weighted sum (FedAvg's mean) the float leaves are weight x value, so
  `clip` bounds num_examples x model delta per coordinate, and `int_clip` is
  the most a client's weight counts.
  """
  clip: float = 100.0            # c: float leaves are clipped to [-c, c]
  bits: int = 0                  # b: arithmetic mod 2^b, b <= 32; 0 = choose (`quantization.choose_bits`)
  scale: Optional[float] = None  # s: fixed-point scale; None = largest power of 2 that fits
  int_clip: int = 2**16          # integer leaves (and weights) are clipped to [-int_clip, int_clip]
  neighbors: Optional[int] = None  # k; None = the smallest the bound allows (`params`)
  threshold: Optional[int] = None  # t; None = chosen within the bound (`params`)
  max_dropout: float = params_lib.DEFAULT_MAX_DROPOUT  # delta of the threat model
  max_corrupt: float = params_lib.DEFAULT_MAX_CORRUPT  # gamma of the threat model
  min_honest: int = params_lib.DEFAULT_MIN_HONEST  # honest inputs every release must hold (threat model)
  server_chosen_dropouts: bool = False  # threat model: the server may pick who drops (then k > C + D)
  active_server: bool = False  # the server may deviate: signed keys, consistency check (`consistency`)
  prg: str = DEFAULT_PRG   # mask PRG: "aes-ctr" (cryptographic) or "philox" (fast, not)
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
    if self.prg not in PRGS:
      raise ValueError(f"unknown mask PRG {self.prg!r}; choose one of: {', '.join(PRGS)}")
    self.threat()  # checks max_dropout, max_corrupt, min_honest and server_chosen_dropouts

  def threat(self) -> params_lib.ThreatModel:
    return params_lib.ThreatModel(max_dropout=self.max_dropout, max_corrupt=self.max_corrupt,
                                  min_honest=self.min_honest,
                                  # a server that deviates also picks who drops, by withholding messages
                                  server_chosen_dropouts=self.server_chosen_dropouts or self.active_server,
                                  active_server=self.active_server)

  def protocol_parameters(self, num_clients: int) -> params_lib.SecAggParameters:
    """k and t for a round of `num_clients` (raises ValueError if the given ones are unsafe)."""
    return params_lib.choose_parameters(num_clients, self.threat(), self.neighbors, self.threshold)

  def smallest_round(self, max_clients: int) -> int:
    """Checks k and t at every round size up to `max_clients`; returns the smallest accepted.

    Raises ValueError (one line) where some size a process built for
    `max_clients` may run has no safe parameters (`params.check_round_sizes`).
    """
    return params_lib.check_round_sizes(max_clients, self.threat(), self.neighbors, self.threshold)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)
