"""TFF's differentially private aggregators for a `DpConfig` (central DP: noise added at the server)."""
from __future__ import annotations

import secrets

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp
from tensorflow_privacy.privacy.dp_query import restart_query

from tff_research.privacy import config as config_lib

# The tree's noise seed: the server's own CSPRNG, 63 bits (TFF's default is
# the clock in microseconds, which anyone who knows roughly when a round ran
# can search, and then remove the noise from the released models).
_SEED_BITS = 63


class TreeAggregationFactory(tff.aggregators.UnweightedAggregationFactory):
  """DP-FTRL's mean: TFF's tree of Gaussian noise over the rounds, restarted every epoch.

  TFF's `DifferentiallyPrivateFactory.tree_aggregation` builds one tree for
  the whole run; the accounting here (`accounting.tree_epsilon`) is for one
  participation per tree, so the tree restarts every `rounds_per_epoch`
  rounds, when the loop starts a new shuffled epoch (tensorflow_privacy's
  `RestartQuery`). Each round's mean is the residual of the noisy prefix
  sums (`TreeResidualSumQuery`, Honaker's efficient tree) over clients_per_round.

  Args:
    config: the clip and noise multiplier.
    clients_per_round: the mean's denominator.
    rounds_per_epoch: rounds between restarts.
    noise_seed: tests only; None draws it from the OS CSPRNG.
    use_efficient: Honaker's estimator of the prefix sums (lower variance,
      the same privacy); False: the plain binary mechanism, whose prefix sum
      after t rounds of a tree carries popcount(t) nodes' noise (tests).
  """

  def __init__(self, config: config_lib.DpConfig, clients_per_round: int, rounds_per_epoch: int,
               noise_seed: int | None = None, use_efficient: bool = True):
    self._config, self._clients, self._period = config, int(clients_per_round), int(rounds_per_epoch)
    self._seed = secrets.randbits(_SEED_BITS) if noise_seed is None else int(noise_seed)
    self._use_efficient = bool(use_efficient)

  def create(self, value_type) -> tff.templates.AggregationProcess:
    specs = tff.types.structure_from_tensor_type_tree(lambda t: tf.TensorSpec(t.shape, t.dtype), value_type)
    query = tfp.TreeResidualSumQuery.build_l2_gaussian_query(
        self._config.clip, self._config.noise_multiplier, specs, noise_seed=self._seed,
        use_efficient=self._use_efficient)
    query = tfp.RestartQuery(query, restart_query.PeriodicRoundRestartIndicator(period=self._period))
    query = tfp.NormalizedQuery(query, denominator=float(self._clients))
    return tff.aggregators.DifferentiallyPrivateFactory(query).create(value_type)


def build_dp_aggregator(config: config_lib.DpConfig, clients_per_round: int,
                        rounds_per_epoch: int = 0) -> tff.aggregators.UnweightedAggregationFactory:
  """The unweighted DP mean of `config` for rounds of `clients_per_round` clients.

  Fixed clip: `DifferentiallyPrivateFactory.gaussian_fixed`; adaptive:
  `.gaussian_adaptive` (Andrew et al. 2021). Both clip each client's update
  to L2 norm C, add N(0, (z C)^2) to the sum at the server and divide by
  the clients per round; unweighted, so one client moves the mean by at most
  C / clients_per_round before the noise.

  `--dp=ftrl`: `TreeAggregationFactory`, restarted every `rounds_per_epoch` rounds.

  Raises:
    ValueError: one line, for a config without DP or a cohort too small for
      adaptive clipping (`DpConfig.check_cohort`).
  """
  if config.mode == "ftrl":
    return TreeAggregationFactory(config, clients_per_round, rounds_per_epoch)
  if config.mode != "central":
    raise ValueError(f"build_dp_aggregator builds DP aggregators, not {config.mode!r}")
  config.check_cohort(clients_per_round)
  factory = tff.aggregators.DifferentiallyPrivateFactory
  if config.adaptive_clip:
    return factory.gaussian_adaptive(
        noise_multiplier=config.noise_multiplier, clients_per_round=float(clients_per_round),
        initial_l2_norm_clip=config.clip, target_unclipped_quantile=config.target_unclipped_quantile,
        learning_rate=config.clip_learning_rate)
  return factory.gaussian_fixed(noise_multiplier=config.noise_multiplier, clients_per_round=float(clients_per_round),
                                clip=config.clip)
