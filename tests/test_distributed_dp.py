"""Distributed DP under our secure sum: the noise, the clip, the exactness apart from the noise, dropouts,
the server's view, and TFF's own DistributedDpSumFactory as the reference."""
import collections
import dataclasses
import math
import os

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_federated as tff

from tests.aggregation.test_secure_sum import _uniform_over_ring
from tff_research.aggregation import SecureSumConfig
from tff_research.aggregation import interactive
from tff_research.aggregation import reproducible_rounding
from tff_research.aggregation import secure_sum
from tff_research.privacy import ddgauss_accounting
from tff_research.privacy import distributed
from tff_research.privacy.config import DpConfig

CLIP = 1.0
VALUE_TYPE = collections.OrderedDict(kernel=tff.TensorType(np.float32, [6, 3]), bias=tff.TensorType(np.float32, [5]))


def _dp(z, clip=CLIP, **kwargs):
  return DpConfig(mode="distributed", noise_multiplier=z, clip=clip, **kwargs)


def _values(rng, n, scale=1.0):
  return [collections.OrderedDict(kernel=(scale * rng.normal(size=(6, 3))).astype(np.float32),
                                  bias=(scale * rng.normal(size=5)).astype(np.float32)) for _ in range(n)]


def _flat(value):
  return np.concatenate([np.asarray(value["kernel"], np.float64).ravel(), np.asarray(value["bias"], np.float64)])


def _clipped_sum(values, clip):
  total = 0.0
  for v in values:
    x = _flat(v)
    total = total + x * min(1.0, clip / np.linalg.norm(x))
  return total


def _sum(process, values, round_num=0, dropped=()):
  out = interactive.run_round(process, process.initialize(), values, round_num, dropped)
  assert not isinstance(out, interactive.Refused), out
  return _flat(out.result), out.measurements


@pytest.mark.parametrize("beta", [0.0, math.exp(-0.5)])
def test_with_the_noise_off_the_sum_is_the_clipped_sum_up_to_rounding(beta):
  rng = np.random.default_rng(0)
  values = _values(rng, 6, scale=0.5)  # norms about 2.4: every one is clipped
  process = distributed.DistributedDpFactory(_dp(0.0, beta=beta), SecureSumConfig(), 6, bits=16).create(VALUE_TYPE)
  total, measured = _sum(process, values)
  p = process.params
  # Each client rounds each rotated coordinate by less than one grid step 1/s.
  assert np.linalg.norm(total - _clipped_sum(values, CLIP)) <= math.sqrt(6 * p.padded_dim) / p.scale
  assert measured["dp"]["clients"] == 6 and measured["secure"]["bits"] == 16


def test_one_huge_update_moves_the_sum_by_at_most_the_clip():
  values = [collections.OrderedDict(kernel=np.zeros((6, 3), np.float32), bias=np.zeros(5, np.float32))
            for _ in range(5)]
  values[2] = collections.OrderedDict(kernel=np.full((6, 3), 1e6, np.float32), bias=np.full(5, -1e6, np.float32))
  process = distributed.DistributedDpFactory(_dp(0.0), SecureSumConfig(), 5, bits=16).create(VALUE_TYPE)
  total, _ = _sum(process, values)
  p = process.params
  # The rounding-inflated clip, up to the float64 error of the server's rotation back.
  assert np.linalg.norm(total) <= p.scaled_inflated_l2 / p.scale * (1 + 1e-12)
  assert np.linalg.norm(total) == pytest.approx(CLIP, rel=1e-3)


def test_conditional_rounding_keeps_every_update_within_the_accounted_sensitivity_exactly():
  """The accountant's Delta_2 with no leeway: each rounded update's squared norm, in integers, is at most
  floor(Delta_2^2), over many rounding draws of one huge update (most first draws are too long)."""
  params = distributed.DistributedDpFactory(_dp(0.0), SecureSumConfig(), 5, bits=16).parameters(VALUE_TYPE)
  encoder = distributed.DiscreteGaussianEncoder(VALUE_TYPE, params, rotation_seed=3)
  huge = collections.OrderedDict(kernel=np.full((6, 3), 1e6, np.float32), bias=np.full(5, -1e6, np.float32))
  bound = distributed.squared_integer_bound(params.scaled_inflated_l2)
  assert bound <= params.scaled_inflated_l2**2 < bound + 1
  squared = []
  for i in range(200):
    rounded = encoder.client_encode(huge, tf.constant([i, 11], tf.int64)).numpy().astype(np.int64)
    squared.append(int(rounded @ rounded))
  assert max(squared) <= bound
  assert max(squared) > (params.l2_clip * params.scale) ** 2  # rounding lengthens: the bound was tested


def test_an_update_too_long_to_check_exactly_is_refused_in_one_line():
  with pytest.raises(ValueError, match="too long to check exactly"):
    distributed.DistributedDpFactory(_dp(0.0, clip=1e4), SecureSumConfig(), 4, bits=32).parameters(
        tff.TensorType(np.float32, [2**16]))


@pytest.mark.parametrize("dropped", [(), (3,)])
def test_the_noise_that_reaches_the_sum_is_the_survivors_calibrated_share(dropped):
  """All-zero inputs: the sum is the noise alone. Each client's share is z C / sqrt(n_min) (n_min = 4 of 5
  at max_dropout 0.1), so 5 survivors carry 5/4 of the central variance (z C)^2, and 4 exactly it."""
  value_type = tff.TensorType(np.float32, [1000])
  z, n = 0.8, 5
  factory = distributed.DistributedDpFactory(_dp(z), SecureSumConfig(), n, bits=20)
  process = factory.create(value_type)
  assert process.params.min_clients == 4
  zeros = [np.zeros(1000, np.float32)] * n
  draws = np.concatenate([np.asarray(interactive.run_round(process, process.initialize(), zeros, r, dropped).result)
                          for r in range(6)])
  survivors = n - len(dropped)
  expected = survivors * (z * CLIP) ** 2 / 4
  # 6,000 draws: the sample variance has a relative stddev of sqrt(2 / 6000) = 1.8 %.
  assert np.var(draws) == pytest.approx(expected, rel=0.08)
  assert abs(np.mean(draws)) < 5 * math.sqrt(expected / draws.size)
  assert scipy.stats.normaltest(draws).pvalue > 1e-6  # a sum of discrete Gaussians, unscaled: near-normal


def test_a_round_with_fewer_survivors_than_the_noise_needs_is_refused():
  process = distributed.DistributedDpFactory(_dp(1.0), SecureSumConfig(max_dropout=0.25), 8).create(VALUE_TYPE)
  assert process.params.min_clients == 6
  refused = process.start_round(8, 0, dropped=[0, 1, 2])
  assert isinstance(refused, interactive.Refused) and "fewer than the 6" in refused.reason
  assert isinstance(process.start_round(8, 0, dropped=[0, 1]), interactive.RoundPlan)


def test_the_clients_noise_is_their_own_unless_a_test_injects_it():
  value_type = tff.TensorType(np.float32, [64])
  zeros = [np.zeros(64, np.float32)] * 4
  fresh = distributed.DistributedDpFactory(_dp(1.0), SecureSumConfig(), 4, rotation_seed=7).create(value_type)
  a, b = (np.asarray(interactive.run_round(fresh, fresh.initialize(), zeros, 0).result) for _ in range(2))
  assert not np.array_equal(a, b)  # the same round twice: new noise (each client's CSPRNG)
  injected = [distributed.DistributedDpFactory(_dp(1.0), SecureSumConfig(), 4, rotation_seed=7,
                                               rounding_randomness=reproducible_rounding(3)).create(value_type)
              for _ in range(2)]
  c, d = (np.asarray(interactive.run_round(p, p.initialize(), zeros, 0).result) for p in injected)
  np.testing.assert_array_equal(c, d)


def test_the_server_sees_uniform_words_under_distributed_dp():
  """The masked vectors as they enter the server's sum: uniform over Z_{2^b} and independent of the input."""
  value_type = tff.TensorType(np.float32, [4096])
  process = distributed.DistributedDpFactory(_dp(1.0), SecureSumConfig(threshold=3), 4, bits=20).create(value_type)
  views = secure_sum.build_sum_computations(process.secure)
  plan = process.start_round(4, 0)
  x = np.linspace(-1, 1, 4096).astype(np.float32)
  try:
    masked = views.server_view([x] * 4, process.client_materials(plan))
  finally:
    process.release()
  for vector in masked:
    assert _uniform_over_ring(np.asarray(vector)[:4096], 20, x.astype(np.float64))


def test_bits_too_few_are_refused_in_one_line():
  with pytest.raises(ValueError, match="bits=4 are too few for 100 clients") as error:
    distributed.DistributedDpFactory(_dp(1.0), SecureSumConfig(), 100, bits=4)
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match="rounding inflate the sensitivity") as error:
    distributed.DistributedDpFactory(_dp(1.0, clip=1.0), SecureSumConfig(), 100, bits=10).create(
        tff.TensorType(np.float32, [100_000]))
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match="unweighted"):
    distributed.DistributedDpFactory(_dp(1.0), SecureSumConfig(), 10).create(VALUE_TYPE, tff.TensorType(np.float32))


_BETA_WARNING = "ignore:The selected beta"  # TFF warns that beta > 0 means conditional rounding (what we compare)


def _tff_reference(z, n, bits, value_type, rounds_of_values):
  """TFF's DistributedDpSumFactory (the distributed discrete Gaussian, Hadamard rotation) in TFF's test
  context, where its secure sum is a plain sum: each round's decoded sum, and the last round's measurements."""
  from tensorflow_federated.python.aggregators import distributed_dp  # pylint: disable=g-import-not-at-top

  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  with runtime.tff_test_context():  # its worker is killed by pid when the block ends
    process = distributed_dp.DistributedDpSumFactory(
        noise_multiplier=z, expected_clients_per_round=n, bits=bits, l2_clip=CLIP, beta=math.exp(-0.5),
        mechanism="distributed_dgauss", rotation_type="hd").create(tff.types.to_type(value_type))
    state, sums = process.initialize(), []
    for values in rounds_of_values:
      out = process.next(state, values)
      state = out.state
      sums.append(out.result)
  return sums, out.measurements


@pytest.mark.filterwarnings(_BETA_WARNING)
def test_tffs_distributed_dp_sum_is_the_reference_parameters_and_noise():
  """The same inputs through TFF's DistributedDpSumFactory and ours (max_dropout 0, so both calibrate for
  all n clients): the same scale, inflated sensitivity and local noise; the sums' noise variances agree
  within sampling error (F-test) and both equal (z C)^2.

  Both sides wrap: the scale leaves k = 3.89 stddevs of room, so each of the 6 x 1,024 rotated coordinates
  of a side wraps with probability 7.3e-5 (0.45 wraps a side expected), and a wrap, spread back over its
  block by the rotation, adds about 1 % to that side's sample variance. Beside the ratio's own spread
  (sqrt(2/6000 + 2/6000) = 2.6 % in log terms) that widens it by a few per cent, so the F bounds are
  taken at 1e-6 a side (false failures about 1e-5 a run): still a 13 % mismatch of the noise fails."""
  value_type = tff.TensorType(np.float32, [1000])
  z, n, rounds = 0.8, 5, 6
  zeros = [np.zeros(1000, np.float32)] * n
  theirs, measured = _tff_reference(z, n, 20, value_type, [zeros] * rounds)
  process = distributed.DistributedDpFactory(_dp(z), SecureSumConfig(max_dropout=0.0), n, bits=20).create(value_type)
  p = process.params
  assert p.scale == pytest.approx(float(measured["scale_factor"]), rel=1e-5)
  assert p.scaled_local_stddev == pytest.approx(float(measured["scaled_local_stddev"]), rel=1e-5)
  assert p.scaled_inflated_l2 + 1e-5 * p.scale == pytest.approx(float(measured["scaled_inflated_l2"]), rel=1e-5)
  ours = np.concatenate([np.asarray(interactive.run_round(process, process.initialize(), zeros, r).result)
                         for r in range(rounds)])
  theirs = np.concatenate([np.asarray(t) for t in theirs])
  ratio = np.var(ours) / np.var(theirs)
  f = scipy.stats.f(ours.size - 1, theirs.size - 1)
  assert f.ppf(1e-6) < ratio < f.ppf(1 - 1e-6)
  assert np.var(ours) == pytest.approx((z * CLIP) ** 2, rel=0.08)


@pytest.mark.filterwarnings(_BETA_WARNING)
def test_with_the_noise_off_tffs_sum_and_ours_agree_up_to_rounding():
  rng = np.random.default_rng(5)
  values = _values(rng, 4, scale=0.5)
  theirs, measured = _tff_reference(0.0, 4, 16, VALUE_TYPE, [values])
  process = distributed.DistributedDpFactory(_dp(0.0), SecureSumConfig(max_dropout=0.0), 4, bits=16).create(
      VALUE_TYPE)
  ours, _ = _sum(process, values)
  p, exact = process.params, _clipped_sum(values, CLIP)
  step = math.sqrt(4 * p.padded_dim) / p.scale  # the L2 bound of 4 clients' rounding errors
  theirs_flat = _flat(collections.OrderedDict(kernel=theirs[0]["kernel"], bias=theirs[0]["bias"]))
  assert np.linalg.norm(ours - exact) <= step and np.linalg.norm(theirs_flat - exact) <= step
  assert p.scale == pytest.approx(float(measured["scale_factor"]), rel=1e-5)


@pytest.fixture(scope="module")
def smoke(shakespeare_dir, tmp_path_factory):
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir,
                               output_dir=str(tmp_path_factory.mktemp("runs")))
  return config, experiment.load_nwp_data(config, verbose=False)


def _direct_epsilon(rows, params, num_train_clients, delta):
  """dp_accounting's conversion of the rounds' Prop. 14 curves, sampled, each at the survivors metrics.csv has."""
  accountant = ddgauss_accounting.DdgaussAccountant()
  template = params.accounted_round(num_train_clients)
  for row in rows:
    accountant.add(dataclasses.replace(template, clients=int(row["dp/clients"])))
  return accountant.epsilon(delta)


def test_a_distributed_dp_run_accounts_each_round_with_its_survivors_and_resumes(smoke):
  """10 clients a round, each dropping with probability 0.1 (n_min = 9): rounds of 10 and of 9 survivors,
  each counted as it ran; a resumed run reads the earlier rounds' survivors back from metrics.csv."""
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  config, data = smoke
  config = dataclasses.replace(config, experiment_name="dp_distributed", rounds=4, clients_per_round=10,
                               aggregator="secure", dropout_rate=0.1, dp="distributed", dp_noise_multiplier=0.7,
                               dp_clip=0.5, eval_every=4, seed=3)
  first = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)
  resumed = experiment.run_experiment(dataclasses.replace(config, rounds=6), progress=False, plot=False,
                                      log=lambda _: None, data=data)
  rows = training_loop.read_metrics_csv(os.path.join(first.run.run_dir, "metrics.csv"))
  assert [int(r["round"]) for r in rows] == list(range(1, 7))
  survivors = [int(r["dp/clients"]) for r in rows]
  assert set(survivors) <= {9, 10} and all(r["dp/min_clients"] == 9 for r in rows)
  assert all(r["secure/clients"] == s for r, s in zip(rows, survivors))
  n = len(data.train_client_ids)
  params = experiment.distributed_parameters(config, resumed.dp, experiment.build_model_fn(config, data))
  for i, row in enumerate(rows):
    assert row["privacy/epsilon"] == pytest.approx(_direct_epsilon(rows[:i + 1], params, n, resumed.dp.delta),
                                                   rel=1e-12)
    assert row["privacy/survivors_counted"] == survivors[i]
  assert rows[0]["privacy/epsilon"] < rows[-1]["privacy/epsilon"]
  assert resumed.privacy["epsilon"] == pytest.approx(rows[-1]["privacy/epsilon"], rel=1e-12)
  assert first.privacy["epsilon"] == pytest.approx(rows[3]["privacy/epsilon"], rel=1e-12)
  assert math.isfinite(rows[-1]["eval/accuracy"]) and rows[0]["dp/scale"] == params.scale


def test_target_epsilon_calibrates_the_distributed_noise(smoke):
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  config, data = smoke
  config = dataclasses.replace(config, rounds=50, clients_per_round=10, aggregator="secure", dp="distributed",
                               target_epsilon=8.0)
  model_fn = experiment.build_model_fn(config, data)
  dp = experiment.resolve_dp(config, len(data.train_client_ids), model_fn)
  params = experiment.distributed_parameters(config, dp, model_fn)
  reached = ddgauss_accounting.DdgaussAccountant().add(
      params.accounted_round(len(data.train_client_ids)), 50).epsilon(dp.delta)
  assert 0.99 * 8.0 <= reached <= 8.0
  with pytest.raises(ValueError, match="^--dp=distributed: bits=6 are too few for 10 clients"):
    experiment.resolve_dp(dataclasses.replace(config, secure_bits=6), len(data.train_client_ids), model_fn)


@pytest.mark.parametrize("log2_dim", [0, 1, 6, 7, 13, 19])
def test_the_rotation_is_tffs_walsh_hadamard_transform_and_its_own_inverse(log2_dim):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.aggregators import hadamard  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(log2_dim).normal(size=2**log2_dim)
  theirs = hadamard.fast_walsh_hadamard_transform(tf.constant(x[None, :]))[0].numpy()
  ours = distributed.walsh_hadamard(tf.constant(x)).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
  np.testing.assert_allclose(distributed.walsh_hadamard(tf.constant(ours)).numpy(), x, rtol=0, atol=1e-12)
  single = distributed.walsh_hadamard(tf.constant(x, tf.float32)).numpy()  # the clients' precision
  np.testing.assert_allclose(single, theirs, rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match="needs 2\\^m entries, got 3"):
    distributed.walsh_hadamard(tf.constant(x[:1].repeat(3)))


def test_a_long_update_is_rotated_in_blocks_and_comes_back_exact_apart_from_rounding():
  """300,000 coordinates: 3 blocks of 2^17 (393,216, not the 524,288 of one power of two); with the noise off
  the sum is the clipped sum up to rounding, so the blocks' rotation is undone coordinate by coordinate."""
  assert distributed.padded_layout(300_000) == (2**17, 3) and distributed.padded_layout(23) == (32, 1)
  assert distributed.padded_layout(2**17) == (2**17, 1) and distributed.padded_layout(1) == (1, 1)
  value_type = tff.TensorType(np.float32, [300_000])
  process = distributed.DistributedDpFactory(_dp(0.0), SecureSumConfig(), 4, bits=24).create(value_type)
  assert process.params.padded_dim == 3 * 2**17
  rng = np.random.default_rng(5)
  values = [(rng.normal(size=300_000) * 1e-3).astype(np.float32) for _ in range(4)]  # norms about 0.55 < C
  out = interactive.run_round(process, process.initialize(), values, 0)
  p = process.params
  error = np.asarray(out.result, np.float64) - np.sum(np.asarray(values, np.float64), axis=0)
  assert np.linalg.norm(error) <= math.sqrt(4 * p.padded_dim) / p.scale
  # Rotated back, each coordinate carries the four clients' rounding noise, stddev at most 1 grid step: 7 is 7 sigma.
  assert np.max(np.abs(error)) < 7 / p.scale


@pytest.mark.parametrize("num_workers", [1, 2])
def test_a_distributed_dp_round_streamed_in_groups_sums_every_survivor(smoke, num_workers):
  """The unweighted secure round (noise under the masks) in 3 groups a round (learning.client_groups); on
  two workers in waves of one group each, then the last survivor alone."""
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  config, data = smoke
  config = dataclasses.replace(config, experiment_name=f"dp_distributed_streamed{num_workers}", rounds=2,
                               clients_per_round=10, aggregator="secure", dp="distributed",
                               dp_noise_multiplier=0.7, dp_clip=0.5, eval_every=2, seed=3)
  try:
    runtime.use_local_runtime(num_subrounds=3, num_workers=num_workers)
    result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)
  finally:
    runtime.use_local_runtime()  # the rest of the suite runs on one call a round again
  assert [(r["secure/clients"], r["dp/clients"]) for r in result.run.history] == [(10, 10)] * 2
  assert math.isfinite(result.run.final_eval["accuracy"]) and result.privacy["epsilon"] > 0
