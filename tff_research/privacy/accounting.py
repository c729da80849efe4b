"""Epsilon of a run, by `dp_accounting` (Google's differential privacy library), for the sampling the loop does.

The training loop samples `clients_per_round` of the N training clients
uniformly without replacement each round (`training_loop.sample_clients`),
so a round is `SampledWithoutReplacementDpEvent(N, k, GaussianDpEvent(z))`,
accounted in Renyi DP with the replace-one neighbouring relation (the one
`dp_accounting` supports for that event; its PLD accountant takes only
Poisson sampling), composed over the rounds run. Adaptive clipping spends
part of the same noise on the clipped count, and TFF splits it so that the
mechanism as a whole has noise multiplier z (Andrew et al. 2021, Thm. 1;
`differential_privacy.adaptive_clip_noise_params`): the event is the same.

DP-FTRL (`--dp=ftrl`) samples no clients at random: the loop goes through
the clients in shuffled epochs, each at most once an epoch, and the tree of
noise restarts every epoch, so each epoch is dp_accounting's
`SingleEpochTreeAggregationDpEvent(z, rounds in it)` (one participation per
tree, Kairouz et al. 2021, App. D) with the replace-special relation,
composed over the epochs (`tree_epsilon`); `tree_zcdp` gives rho-zCDP, as
Gboard reports it (Xu et al. 2023), from tensorflow_privacy's tree accountant.

`sampling="poisson"` accounts for a loop that keeps each client with
probability k / N instead (TFF's DP tutorial does; ours does not): the
`PoissonSampledDpEvent` with the add-or-remove relation, which is what its
published "(2, 1e-5)-DP" figure uses (`tests/test_privacy.py`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import dp_accounting
from dp_accounting import rdp

_REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE
SAMPLINGS = ("fixed", "poisson")  # fixed: k of N without replacement (training_loop.sample_clients)
# calibrate_noise_multiplier searches z in [0, Z_MAX]; beyond, a run's
# updates would be noise (z = 50 at 10 clients: noise 5 x the clip on the mean).
Z_MAX = 50.0
Z_MIN = 0.01  # the search's lower end: a target met even there gets Z_MIN


def round_event(noise_multiplier: float, num_clients: int, clients_per_round: int,
                sampling: str = "fixed") -> dp_accounting.DpEvent:
  """One round: k of N clients sampled (module docstring), their clipped sum plus Gaussian noise."""
  gaussian = dp_accounting.GaussianDpEvent(float(noise_multiplier))
  if sampling == "poisson":
    return dp_accounting.PoissonSampledDpEvent(clients_per_round / num_clients, gaussian)
  if sampling != "fixed":
    raise ValueError(f"sampling {sampling!r} is not one of: {', '.join(SAMPLINGS)}")
  return dp_accounting.SampledWithoutReplacementDpEvent(int(num_clients), int(clients_per_round), gaussian)


def _accountant(sampling: str) -> rdp.RdpAccountant:
  relation = _REPLACE_ONE if sampling == "fixed" else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  return rdp.RdpAccountant(neighboring_relation=relation)


def epsilon(rounds: int, *, noise_multiplier: float, num_clients: int, clients_per_round: int,
            delta: float, sampling: str = "fixed") -> float:
  """(epsilon, delta)-DP after `rounds` rounds (inf for noise multiplier 0, 0 for no rounds)."""
  if rounds <= 0:
    return 0.0
  if noise_multiplier <= 0:
    return float("inf")
  accountant = _accountant(sampling)
  accountant.compose(round_event(noise_multiplier, num_clients, clients_per_round, sampling), int(rounds))
  return float(accountant.get_epsilon(delta))


def tree_event(rounds: int, *, noise_multiplier: float, rounds_per_epoch: int) -> dp_accounting.DpEvent:
  """DP-FTRL's first `rounds` rounds: one tree per epoch of `rounds_per_epoch`, the last one partial.

  A client takes part once in each epoch's tree, so the epochs compose
  (`SelfComposedDpEvent`); one `SingleEpochTreeAggregationDpEvent` with
  several step counts would mean once across all of them.
  """
  epochs, rest = divmod(int(rounds), int(rounds_per_epoch))
  events = []
  if epochs:
    events.append(dp_accounting.SelfComposedDpEvent(
        dp_accounting.SingleEpochTreeAggregationDpEvent(float(noise_multiplier), int(rounds_per_epoch)), epochs))
  if rest:
    events.append(dp_accounting.SingleEpochTreeAggregationDpEvent(float(noise_multiplier), rest))
  return dp_accounting.ComposedDpEvent(events)


def tree_epsilon(rounds: int, *, noise_multiplier: float, rounds_per_epoch: int, delta: float) -> float:
  """(epsilon, delta) of DP-FTRL after `rounds` rounds (module docstring)."""
  if rounds <= 0:
    return 0.0
  if noise_multiplier <= 0:
    return float("inf")
  accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
  accountant.compose(tree_event(rounds, noise_multiplier=noise_multiplier, rounds_per_epoch=rounds_per_epoch))
  return float(accountant.get_epsilon(delta))


def tree_zcdp(rounds: int, *, noise_multiplier: float, rounds_per_epoch: int) -> float:
  """rho of rho-zCDP after `rounds` rounds of DP-FTRL: each epoch's tree, one participation, composed (rho adds)."""
  from tensorflow_privacy.privacy.analysis import tree_aggregation_accountant  # pylint: disable=g-import-not-at-top
  epochs, rest = divmod(int(rounds), int(rounds_per_epoch))
  rho = 0.0
  for steps, count in ((int(rounds_per_epoch), epochs), (rest, 1 if rest else 0)):
    if count:
      rho += count * float(tree_aggregation_accountant.compute_zcdp_single_tree(
          noise_multiplier, total_steps=steps, max_participation=1, min_separation=0))
  return rho


def calibrate_noise_multiplier(target_epsilon: float, *, rounds: int, num_clients: int, clients_per_round: int,
                               delta: float, rounds_per_epoch: int = 0) -> float:
  """The smallest noise multiplier whose epsilon after `rounds` rounds is at most `target_epsilon`.

  `rounds_per_epoch` > 0: DP-FTRL's trees (`tree_epsilon`); else DP-FedAvg's sampled Gaussian.

  Raises:
    ValueError: one line, where even Z_MAX does not reach it.
  """
  def reached(z: float) -> float:
    if rounds_per_epoch:
      return tree_epsilon(rounds, noise_multiplier=z, rounds_per_epoch=rounds_per_epoch, delta=delta)
    return epsilon(rounds, noise_multiplier=z, num_clients=num_clients, clients_per_round=clients_per_round,
                   delta=delta)

  def event(z: float) -> dp_accounting.DpEvent:
    if rounds_per_epoch:
      return tree_event(rounds, noise_multiplier=z, rounds_per_epoch=rounds_per_epoch)
    return dp_accounting.SelfComposedDpEvent(round_event(z, num_clients, clients_per_round), int(rounds))

  relation = dp_accounting.NeighboringRelation.REPLACE_SPECIAL if rounds_per_epoch else _REPLACE_ONE
  if reached(Z_MAX) > target_epsilon:
    raise ValueError(f"target epsilon {target_epsilon:g} cannot be met in {rounds} rounds of {clients_per_round} "
                     f"of {num_clients} clients at delta {delta:.3g}: even noise multiplier {Z_MAX:g} gives "
                     f"{reached(Z_MAX):.3g} (fewer rounds or clients per round, or a larger target)")
  if reached(Z_MIN) <= target_epsilon:
    return Z_MIN
  return float(dp_accounting.calibrate_dp_mechanism(
      lambda: rdp.RdpAccountant(neighboring_relation=relation), event, float(target_epsilon), float(delta),
      dp_accounting.ExplicitBracketInterval(Z_MIN, Z_MAX)))


@dataclasses.dataclass(frozen=True)
class EpsilonTracker:
  """Epsilon after each round of a run, as the loop's `round_metrics` (`privacy/epsilon` in metrics.csv).

  `rounds_per_epoch` > 0: DP-FTRL's trees (`tree_epsilon`, and rho-zCDP as
  `privacy/zcdp_rho`); else the sampled Gaussian of DP-FedAvg.
  """
  noise_multiplier: float
  num_clients: int
  clients_per_round: int
  delta: float
  rounds_per_epoch: int = 0

  def epsilon(self, rounds: int) -> float:
    if self.rounds_per_epoch:
      return _cached_tree_epsilon(rounds, self.noise_multiplier, self.rounds_per_epoch, self.delta)
    return _cached_epsilon(rounds, self.noise_multiplier, self.num_clients, self.clients_per_round, self.delta)

  def __call__(self, round_num: int, record: Any = None) -> dict[str, dict[str, float]]:
    del record  # every round of DP-FedAvg and DP-FTRL is accounted alike
    measured = {"epsilon": self.epsilon(round_num), "delta": self.delta, "noise_multiplier": self.noise_multiplier}
    if self.rounds_per_epoch:
      measured["zcdp_rho"] = tree_zcdp(round_num, noise_multiplier=self.noise_multiplier,
                                       rounds_per_epoch=self.rounds_per_epoch)
    return {"privacy": measured}


@functools.lru_cache(maxsize=4096)
def _cached_tree_epsilon(rounds: int, noise_multiplier: float, rounds_per_epoch: int, delta: float) -> float:
  return tree_epsilon(rounds, noise_multiplier=noise_multiplier, rounds_per_epoch=rounds_per_epoch, delta=delta)


@functools.lru_cache(maxsize=4096)
def _cached_epsilon(rounds: int, noise_multiplier: float, num_clients: int, clients_per_round: int,
                    delta: float) -> float:
  return epsilon(rounds, noise_multiplier=noise_multiplier, num_clients=num_clients,
                 clients_per_round=clients_per_round, delta=delta)
