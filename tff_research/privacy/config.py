"""The settings of user-level differential privacy, named once, with their defaults and checks.

The command line's `--dp` and `--dp_<name>` flags are these fields
(`learning.config`). Plain Python: importing it does not import TensorFlow.
"""
from __future__ import annotations

import dataclasses
import math

# "central": DP-FedAvg (McMahan et al. 2018): each client's update clipped
# to L2 norm `clip`, Gaussian noise of stddev noise_multiplier x clip added to
# the sum by the server (TFF's DifferentiallyPrivateFactory), unweighted mean.
# "ftrl": DP-FTRL (Kairouz et al. 2021), what Gboard ships (Xu et al. 2023):
# the same clipping, with the noise of a binary tree over the rounds (each
# round's mean gets the residual of the noisy prefix sums), clients in
# shuffled epochs (each at most once an epoch) and the tree restarted every
# epoch, so no sampling is assumed; server SGD (with momentum: DP-FTRLM).
# "distributed": the same clipping and sampling as "central", but each
# client adds its share of discrete Gaussian noise before the secure sum
# masks its update (`distributed`, Kairouz, Liu and Steinke 2021), so the
# server never holds a noiseless sum; needs --aggregator=secure.
MODES = ("none", "central", "ftrl", "distributed")
MECHANISMS = ("ddgauss",)  # distributed mechanisms built: the distributed discrete Gaussian
DEFAULT_DISTRIBUTED_BITS = 20  # b of the modular sum where --secure_bits is 0
DEFAULT_BETA = math.exp(-0.5)  # conditional rounding's bias (the paper's and TFF's recommendation)
FTRL_SERVER_OPTIMIZERS = ("sgd", "sgdm")


@dataclasses.dataclass(frozen=True)
class DpConfig:
  """User-level DP of a run (module docstring). Every value is checked here, in one line."""
  mode: str = "none"
  noise_multiplier: float = 1.0   # z: the noise's stddev over the clip (0 = clipping only, no privacy)
  clip: float = 0.1               # C: L2 clip of a client's update (the initial clip if adaptive)
  adaptive_clip: bool = False     # quantile-tracking clip (Andrew et al. 2021), at target_unclipped_quantile
  target_unclipped_quantile: float = 0.5
  clip_learning_rate: float = 0.2  # of the adaptive clip's geometric update
  delta: float = 0.0              # 0: 1 / (train clients)^1.1
  target_epsilon: float = 0.0     # > 0: the noise multiplier that reaches it after the run's rounds
  mechanism: str = "ddgauss"      # --dp=distributed: the noise the clients add
  beta: float = DEFAULT_BETA      # --dp=distributed: conditional rounding's bias, in [0, 1)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"dp mode {self.mode!r} is not one of: {', '.join(MODES)}")
    for name in ("noise_multiplier", "clip", "clip_learning_rate", "delta", "target_epsilon"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"dp_{name} must be a finite number >= 0, got {value}")
    if not self.clip > 0:
      raise ValueError(f"dp_clip must be > 0, got {self.clip}")
    if not 0.0 < self.target_unclipped_quantile < 1.0:
      raise ValueError(f"dp_target_unclipped_quantile must be in (0, 1), got {self.target_unclipped_quantile}")
    if not self.delta < 1.0:
      raise ValueError(f"dp_delta must be below 1, got {self.delta}")
    if self.mechanism not in MECHANISMS:
      raise ValueError(f"dp mechanism {self.mechanism!r} is not one of: {', '.join(MECHANISMS)}")
    if not (isinstance(self.beta, (int, float)) and 0.0 <= self.beta < 1.0):
      raise ValueError(f"dp_beta must be in [0, 1), got {self.beta}")
    if self.mode == "distributed" and self.adaptive_clip:
      raise ValueError("dp_adaptive_clip applies to --dp=central (the distributed noise is calibrated for a "
                       "fixed clip)")
    if self.mode == "ftrl" and self.adaptive_clip:
      raise ValueError("dp_adaptive_clip applies to --dp=central (TFF's adaptive tree restarts on its own "
                       "schedule, not once an epoch as the accounting here needs)")

  @property
  def enabled(self) -> bool:
    return self.mode != "none"

  def resolved_delta(self, num_train_clients: int) -> float:
    """delta as given, or 1 / N^1.1 for N training clients (below 1/N, as user-level DP needs)."""
    return self.delta or 1.0 / float(num_train_clients) ** 1.1

  def check_cohort(self, clients_per_round: int) -> None:
    """Raises ValueError (one line) where TFF's adaptive clipping cannot split the noise for this cohort.

    TFF's adaptive clip spends part of the noise on the count of clipped
    clients (stddev 0.05 x clients per round) and needs noise_multiplier <
    2 x that stddev (`differential_privacy.adaptive_clip_noise_params`).
    """
    if self.enabled and self.adaptive_clip and self.noise_multiplier >= 0.1 * clients_per_round:
      raise ValueError(f"adaptive clipping needs more than 10 x the noise multiplier in clients per round: "
                       f"{clients_per_round} clients at noise multiplier {self.noise_multiplier:g} (use "
                       f"--clients_per_round > {10 * self.noise_multiplier:g}, or a fixed clip)")
