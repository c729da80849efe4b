"""User-level DP: the noise that reaches the aggregate, the clipping bound, epsilon against dp_accounting itself."""
import dataclasses
import math
import os

import dp_accounting
import numpy as np
import pytest
import tensorflow_federated as tff
from dp_accounting import rdp

from tff_research.learning import experiment
from tff_research.learning import training_loop
from tff_research.learning.config import PRESETS
from tff_research.privacy import accounting
from tff_research.privacy import aggregators
from tff_research.privacy.config import DpConfig

DIM, CLIENTS = 256, 8


def _direct_epsilon(rounds, z, n, k, delta):
  """dp_accounting called directly, the way its own docs compose a sampled Gaussian."""
  accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  event = dp_accounting.SampledWithoutReplacementDpEvent(n, k, dp_accounting.GaussianDpEvent(z))
  return accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds)).get_epsilon(delta)


@pytest.mark.parametrize("rounds,z,n,k", [(1, 1.0, 1154, 10), (80, 0.7, 1154, 10), (300, 1.2, 1154, 115),
                                          (2000, 1.0, 342477, 1000)])
def test_epsilon_is_dp_accountings_for_the_sampling_the_loop_does(rounds, z, n, k):
  delta = 1.0 / n**1.1
  ours = accounting.epsilon(rounds, noise_multiplier=z, num_clients=n, clients_per_round=k, delta=delta)
  assert ours == pytest.approx(_direct_epsilon(rounds, z, n, k, delta), rel=1e-12)
  tracker = accounting.EpsilonTracker(z, n, k, delta)
  assert tracker(rounds)["privacy"]["epsilon"] == ours
  assert tracker.epsilon(max(rounds // 2, 1)) <= ours  # epsilon so far only grows


def test_the_published_figure_of_tffs_dp_tutorial():
  """TFF's tutorial "Differential Privacy in TFF" (federated_learning_with_differential_privacy.ipynb) samples
  each of 3,383 clients with probability 120 / 3,383 and states that noise multiplier 1.2 for 100 rounds
  "satisfies (2, 1e-5)-DP" (RDP accounting). The same event through our accounting: just below 2. The loop's
  own fixed-size sampling is a different event, accounted with the replace-one relation (larger here)."""
  poisson = accounting.epsilon(100, noise_multiplier=1.2, num_clients=3383, clients_per_round=120, delta=1e-5,
                               sampling="poisson")
  assert 1.95 < poisson < 2.0
  fixed = accounting.epsilon(100, noise_multiplier=1.2, num_clients=3383, clients_per_round=120, delta=1e-5)
  assert fixed == pytest.approx(_direct_epsilon(100, 1.2, 3383, 120, 1e-5)) and fixed > poisson


def test_a_target_epsilon_calibrates_the_noise_or_is_refused_in_one_line():
  n, k, rounds = 1154, 10, 100
  delta = 1.0 / n**1.1
  z = accounting.calibrate_noise_multiplier(8.0, rounds=rounds, num_clients=n, clients_per_round=k, delta=delta)
  reached = accounting.epsilon(rounds, noise_multiplier=z, num_clients=n, clients_per_round=k, delta=delta)
  assert 7.9 <= reached <= 8.0  # the smallest noise that meets it, not more
  assert accounting.epsilon(rounds, noise_multiplier=0.95 * z, num_clients=n, clients_per_round=k,
                            delta=delta) > 8.0
  with pytest.raises(ValueError, match="cannot be met in 1000 rounds") as error:
    accounting.calibrate_noise_multiplier(0.01, rounds=1000, num_clients=100, clients_per_round=90, delta=1e-3)
  assert "\n" not in str(error.value)


def _aggregate(process, state, values):
  output = process.next(state, values)
  return output.state, np.asarray(output.result, np.float64)


def test_the_calibrated_noise_reaches_the_aggregate():
  """Fixed inputs inside the clip, aggregated again and again: the mean's spread is z C / k, as calibrated."""
  z, clip = 1.3, 2.0
  factory = aggregators.build_dp_aggregator(DpConfig(mode="central", noise_multiplier=z, clip=clip), CLIENTS)
  process = factory.create(tff.TensorType(np.float32, [DIM]))
  rng = np.random.default_rng(0)
  values = [v / max(1.0, np.linalg.norm(v) / clip * 1.01) for v in rng.normal(0, 0.3, [CLIENTS, DIM])]
  values = [v.astype(np.float32) for v in values]
  state, draws = process.initialize(), []
  for _ in range(60):
    state, mean = _aggregate(process, state, values)
    draws.append(mean)
  noise = np.asarray(draws) - np.mean(values, axis=0, dtype=np.float64)
  want = z * clip / CLIENTS
  samples = noise.size  # 15,360: the sample variance is within 3 % of the true one with overwhelming probability
  assert np.var(noise) == pytest.approx(want**2, rel=6 * math.sqrt(2 / samples))
  assert abs(np.mean(noise)) < 6 * want / math.sqrt(samples)


def test_clipping_bounds_what_one_client_moves_the_mean():
  """Without noise: a client with an update of norm 1e6 moves the mean by C / k, the sensitivity the noise is for."""
  clip = 0.5
  factory = aggregators.build_dp_aggregator(DpConfig(mode="central", noise_multiplier=0.0, clip=clip), CLIENTS)
  process = factory.create(tff.TensorType(np.float32, [DIM]))
  base = [np.zeros(DIM, np.float32)] * CLIENTS
  huge = np.full(DIM, 1e6 / math.sqrt(DIM), np.float32)
  state = process.initialize()
  _, without = _aggregate(process, state, base)
  _, with_huge = _aggregate(process, state, [huge] + base[1:])
  assert np.linalg.norm(with_huge - without) == pytest.approx(clip / CLIENTS, rel=1e-5)


def test_adaptive_clipping_refuses_a_cohort_it_cannot_split_the_noise_for():
  config = DpConfig(mode="central", noise_multiplier=1.0, adaptive_clip=True)
  with pytest.raises(ValueError, match=r"needs more than 10 x the noise multiplier .* 10 clients") as error:
    aggregators.build_dp_aggregator(config, 10)
  assert "\n" not in str(error.value)
  aggregators.build_dp_aggregator(config, 11)  # above it: TFF's split is possible


@pytest.fixture(scope="module")
def smoke(shakespeare_dir, tmp_path_factory):
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir,
                               output_dir=str(tmp_path_factory.mktemp("runs")))
  return config, experiment.load_nwp_data(config, verbose=False)


def test_a_dp_run_records_epsilon_every_round_as_dp_accounting_gives_it(smoke):
  config, data = smoke
  config = dataclasses.replace(config, experiment_name="dp_central", rounds=3, dp="central",
                               dp_noise_multiplier=0.8, dp_clip=0.5)
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)
  rows = training_loop.read_metrics_csv(os.path.join(result.run.run_dir, "metrics.csv"))
  n = len(data.train_client_ids)
  delta = 1.0 / n**1.1
  assert [r["privacy/delta"] for r in rows] == [pytest.approx(delta)] * 3
  for row in rows:
    want = _direct_epsilon(int(row["round"]), 0.8, n, config.clients_per_round, delta)
    assert row["privacy/epsilon"] == pytest.approx(want, rel=1e-9)
  assert rows[0]["privacy/epsilon"] < rows[1]["privacy/epsilon"] < rows[2]["privacy/epsilon"]
  assert result.dp.noise_multiplier == 0.8 and result.dp.delta == pytest.approx(delta)


def test_target_epsilon_sets_the_noise_before_training(smoke):
  config, data = smoke
  config = dataclasses.replace(config, rounds=4, dp="central", target_epsilon=6.0)
  dp = experiment.resolve_dp(config, len(data.train_client_ids))
  reached = accounting.epsilon(4, noise_multiplier=dp.noise_multiplier, num_clients=len(data.train_client_ids),
                               clients_per_round=config.clients_per_round, delta=dp.delta)
  assert 5.9 <= reached <= 6.0
  with pytest.raises(ValueError, match="^--target_epsilon: target epsilon 0.001 cannot be met in 4 rounds of 1000"):
    experiment.resolve_dp(dataclasses.replace(config, target_epsilon=1e-3, clients_per_round=1000),
                          len(data.train_client_ids))


def _direct_tree_epsilon(rounds, z, per_epoch, delta):
  accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
  epochs, rest = divmod(rounds, per_epoch)
  if epochs:
    accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(z, per_epoch), epochs)
  if rest:
    accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(z, rest))
  return accountant.get_epsilon(delta)


@pytest.mark.parametrize("rounds,z,per_epoch",
                         [(1, 1.0, 100), (342 * 5, 1.0, 342), (400, 1.3, 342), (1600, 1.13, 1600)])
def test_ftrl_epsilon_is_dp_accountings_tree_with_a_restart_every_epoch(rounds, z, per_epoch):
  ours = accounting.tree_epsilon(rounds, noise_multiplier=z, rounds_per_epoch=per_epoch, delta=1e-6)
  assert ours == pytest.approx(_direct_tree_epsilon(rounds, z, per_epoch, 1e-6), rel=1e-12)


def test_ftrl_epsilon_meets_tensorflow_privacys_own_reference_for_one_tree():
  """tensorflow_privacy's test of its tree accountant (tree_aggregation_accountant_test, one tree of 1,600 steps,
  delta 1e-6) bounds epsilon by 19.74 at noise multiplier 1.13 and 2.04 at 8.83; five epochs of 342 rounds
  at z = 1 compose to rho = 22.5 (zCDP adds over the trees)."""
  assert accounting.tree_epsilon(1600, noise_multiplier=1.13, rounds_per_epoch=1600, delta=1e-6) < 19.74
  assert accounting.tree_epsilon(1600, noise_multiplier=8.83, rounds_per_epoch=1600, delta=1e-6) < 2.04
  assert accounting.tree_zcdp(5 * 342, noise_multiplier=1.0, rounds_per_epoch=342) == pytest.approx(22.5)


def test_shuffled_epochs_give_each_client_at_most_one_round_an_epoch():
  ids = [f"c{i}" for i in range(23)]
  per_epoch = training_loop.rounds_per_epoch(len(ids), 5)
  assert per_epoch == 4
  for epoch in range(3):
    rounds = [training_loop.sample_clients_in_epochs(ids, 5, 7, epoch * per_epoch + r + 1) for r in range(4)]
    seen = [c for chosen in rounds for c in chosen]
    assert all(len(chosen) == 5 for chosen in rounds) and len(set(seen)) == len(seen) == 20
  assert training_loop.sample_clients_in_epochs(ids, 5, 7, 1) == training_loop.sample_clients_in_epochs(ids, 5, 7, 1)
  assert training_loop.sample_clients_in_epochs(ids, 5, 7, 1) != training_loop.sample_clients_in_epochs(ids, 5, 7, 5)


def test_ftrl_noise_follows_the_binary_tree_and_restarts_every_epoch():
  """Zero inputs, the plain binary mechanism: the sum of the released means over t rounds of a tree carries
  popcount(t) nodes of noise (z C / k each); with a restart every 4 rounds, 8 rounds carry 2 nodes (not 1)."""
  z, clip, k, period, dim = 1.5, 1.0, 4, 4, 512
  config = DpConfig(mode="ftrl", noise_multiplier=z, clip=clip)
  value_type = tff.TensorType(np.float32, [dim])
  cumulative = {3: [], 4: [], 8: []}
  for seed in range(12):
    process = aggregators.TreeAggregationFactory(config, k, period, noise_seed=seed + 1,
                                                 use_efficient=False).create(value_type)
    state, total = process.initialize(), np.zeros(dim)
    for round_num in range(1, 9):
      state, mean = _aggregate(process, state, [np.zeros(dim, np.float32)] * k)
      total += mean
      if round_num in cumulative:
        cumulative[round_num].append(total.copy())
  node = (z * clip / k) ** 2
  tolerance = 6 * math.sqrt(2 / (12 * dim))
  for rounds, nodes in ((3, 2), (4, 1), (8, 2)):
    assert np.var(cumulative[rounds]) == pytest.approx(nodes * node, rel=tolerance), rounds


def test_ftrl_clips_each_client_and_needs_sgd_on_the_server():
  config = DpConfig(mode="ftrl", noise_multiplier=0.0, clip=0.5)
  process = aggregators.TreeAggregationFactory(config, CLIENTS, 10).create(tff.TensorType(np.float32, [DIM]))
  huge = np.full(DIM, 1e6 / math.sqrt(DIM), np.float32)
  _, mean = _aggregate(process, process.initialize(), [huge] + [np.zeros(DIM, np.float32)] * (CLIENTS - 1))
  assert np.linalg.norm(mean) == pytest.approx(0.5 / CLIENTS, rel=1e-5)
  with pytest.raises(ValueError, match="dp_adaptive_clip applies to --dp=central"):
    DpConfig(mode="ftrl", adaptive_clip=True)


def test_a_dp_ftrl_run_goes_through_shuffled_epochs_and_records_its_tree_accounting(smoke):
  config, data = smoke
  config = dataclasses.replace(config, experiment_name="dp_ftrl", rounds=3, dp="ftrl", dp_noise_multiplier=1.2,
                               dp_clip=0.5, server_optimizer="sgdm", server_learning_rate=0.5)
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)
  rows = training_loop.read_metrics_csv(os.path.join(result.run.run_dir, "metrics.csv"))
  per_epoch = len(data.train_client_ids) // config.clients_per_round
  assert experiment.loop_config(config).client_sampling == "shuffled_epochs"
  for row in rows:
    r = int(row["round"])
    assert row["privacy/epsilon"] == pytest.approx(_direct_tree_epsilon(r, 1.2, per_epoch, result.dp.delta))
    assert row["privacy/zcdp_rho"] == pytest.approx(
        accounting.tree_zcdp(r, noise_multiplier=1.2, rounds_per_epoch=per_epoch))
  assert result.privacy["epsilon"] == rows[-1]["privacy/epsilon"]
  calibrated = experiment.resolve_dp(dataclasses.replace(config, target_epsilon=10.0), len(data.train_client_ids))
  assert 9.9 <= accounting.tree_epsilon(3, noise_multiplier=calibrated.noise_multiplier, rounds_per_epoch=per_epoch,
                                        delta=calibrated.delta) <= 10.0


def test_the_adaptive_clip_tffs_factory_measures_is_recorded_every_round(smoke):
  """The aggregator's own measurement (TFF's `dp_query_metrics/clip`) reaches metrics.csv.

  Every update of the smoke model is far below a clip of 100, so each round
  the unclipped share is 1 and the geometric update (Andrew et al. 2021)
  moves the clip by exp(-clip_learning_rate x (share - target quantile)).
  TFF noises the unclipped count with stddev 0.05 x clients per round (its
  default), i.e. 0.05 on the share, so each log step may stray from
  -lr (1 - q) by lr x 0.05 per standard deviation: allow four (a false alarm about once in 5,000 runs).
  """
  config, data = smoke
  config = dataclasses.replace(config, experiment_name="dp_adaptive", rounds=3, dp="central", dp_clip=100.0,
                               dp_adaptive_clip=True, dp_noise_multiplier=0.01)
  experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)
  rows = training_loop.read_metrics_csv(os.path.join(config.run_dir, "metrics.csv"))
  clips = [row["dp_query_metrics/clip"] for row in rows]
  dp = config.dp_config()
  log_step = -dp.clip_learning_rate * (1.0 - dp.target_unclipped_quantile)
  tolerance = 4 * dp.clip_learning_rate * 0.05
  assert tolerance < abs(log_step) / 2  # still tells a moving clip from a fixed one
  assert len(clips) == 3
  for earlier, later in zip(clips, clips[1:]):
    assert math.log(later / earlier) == pytest.approx(log_step, abs=tolerance)
  first = math.log(clips[0] / 100.0)
  assert first == pytest.approx(log_step, abs=tolerance) or first == pytest.approx(0.0, abs=1e-6)
