"""DDGauss accounting: each formula against TFF, a hand computation or the Gaussian it tends to (dp_accounting)."""
import math
import subprocess
import sys

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from tff_research.privacy import accounting
from tff_research.privacy import ddgauss_accounting as dda

ORDERS = np.array(dda.ORDERS, dtype=np.float64)
BETA = math.exp(-0.5)  # the paper's and TFF's recommended conditional rounding bias


def _gaussian_rdp(z: float) -> np.ndarray:
  """The continuous Gaussian of multiplier z, no sampling, as dp_accounting accounts it."""
  return rdp.RdpAccountant(orders=list(dda.ORDERS)).compose(dp_accounting.GaussianDpEvent(z)).rdp


def _round(scale: float, clients: int, *, z: float = 1.0, l2_clip: float = 0.1, dim: int = 2**14,
           min_clients: int = 100, num_clients: int = 1154, clients_per_round: int = 115) -> dda.DdgaussRound:
  """A round as the aggregator runs it: local stddev z C / sqrt(n_min), `clients` survivors."""
  return dda.DdgaussRound(l2_clip=l2_clip, scale=scale, beta=BETA, dim=dim,
                          local_stddev=z * l2_clip / math.sqrt(min_clients), clients=clients,
                          num_clients=num_clients, clients_per_round=clients_per_round)


@pytest.mark.parametrize("clip,scale,beta,dim", [
    (1.0, 100.0, 0.0, 1024),         # unconditional rounding: c + sqrt(d)
    (0.1, 1000.0, BETA, 2**16),      # conditional, the second term smaller
    (1.0, 1.0, BETA, 4),
    (1.0, 1.0, 1e-9, 1),             # so small a bias that c + sqrt(d) is the smaller again
    (5.0, 2.0, 1e-3, 128),
])
def test_the_inflated_norm_is_tffs(clip, scale, beta, dim):
  from tensorflow_federated.python.aggregators import discretization  # pylint: disable=g-import-not-at-top
  theirs = float(discretization.inflated_l2_norm_bound(clip, 1.0 / scale, beta, dim).numpy())  # unscaled domain
  ours = dda.inflated_l2_norm(clip * scale, beta, dim) / scale
  assert ours == pytest.approx(theirs, rel=1e-5)
  assert ours > clip  # rounding only ever inflates the bound
  l1, l2 = dda.sensitivities(clip, scale, beta, dim)
  assert l2 == dda.inflated_l2_norm(clip * scale, beta, dim) and l1 == min(math.sqrt(dim) * l2, l2 * l2)


def test_proposition_14_by_hand():
  """m = 3 clients: tau = 10 (e^{-2 pi^2 sigma^2 / 2} + e^{-2 pi^2 sigma^2 2/3}), the sum running over k = 1, 2."""
  # sigma = 0.5, d = 4, Delta_2 = 3, Delta_1 = 6 = sqrt(d) Delta_2 (so the second and third terms coincide).
  tau = 10 * (math.exp(-math.pi**2 / 4) + math.exp(-math.pi**2 / 3))
  l2, l1 = 3 / (math.sqrt(3) * 0.5), 6 / (math.sqrt(3) * 0.5)
  for alpha in (2, 8):
    first = alpha * 9 / (2 * 3 * 0.25) + tau * 4
    second = alpha / 2 * (9 / (3 * 0.25) + 2 * l1 * tau + tau**2 * 4)
    third = alpha / 2 * (l2 + tau * 2) ** 2
    assert first < second == pytest.approx(third)  # tau > 1 here: the first term is the bound
    got = dda.ddgauss_rdp([alpha], l1_sensitivity=6, l2_sensitivity=3, local_stddev=0.5, clients=3, dim=4)
    assert got[0] == pytest.approx(first, abs=1e-12)
  # sigma = 1, d = 1024, Delta_2 = 3, Delta_1 = 5: a small tau over many coordinates, where the L1 term wins.
  tau = 10 * (math.exp(-math.pi**2) + math.exp(-4 * math.pi**2 / 3))
  l2, l1 = 3 / math.sqrt(3), 5 / math.sqrt(3)
  for alpha in (2, 8):
    first = alpha * 9 / (2 * 3) + tau * 1024
    second = alpha / 2 * (9 / 3 + 2 * l1 * tau + tau**2 * 1024)
    third = alpha / 2 * (l2 + tau * 32) ** 2
    assert second < min(first, third)
    got = dda.ddgauss_rdp([alpha], l1_sensitivity=5, l2_sensitivity=3, local_stddev=1, clients=3, dim=1024)
    assert got[0] == pytest.approx(second, abs=1e-12)
  # One client: no sum of discrete Gaussians, tau = 0, the discrete Gaussian's alpha Delta^2 / (2 sigma^2).
  one = dda.ddgauss_rdp(ORDERS, l1_sensitivity=6, l2_sensitivity=3, local_stddev=2, clients=1, dim=4)
  np.testing.assert_allclose(one, ORDERS * 9 / 8, rtol=1e-15)


def test_a_large_scale_tends_to_the_gaussian_from_above():
  """sigma and Delta_2 both grow with the scale: tau -> 0 and the rounding's inflation -> 0, so at n_min
  survivors the curve tends to alpha / (2 z^2), the continuous Gaussian's of the same multiplier z."""
  z, m = 0.8, 20
  gaussian = _gaussian_rdp(z)
  np.testing.assert_allclose(gaussian, ORDERS / (2 * z * z), rtol=1e-12)
  excess = []
  for scale in (1.0, 10.0, 100.0, 1e3, 1e4):
    curve = _round(scale, m, z=z, l2_clip=1.0, dim=2**12, min_clients=m).unsampled_rdp()
    assert np.all(curve >= gaussian * (1 - 1e-12))  # never more private than the Gaussian
    excess.append(float(np.max(curve / gaussian)))
  assert excess == sorted(excess, reverse=True) and excess[0] > 10  # tau dominates at scale 1 (sigma 0.22)
  assert excess[-1] < 1.01  # within 1 % at scale 1e4


@pytest.mark.parametrize("n,k,z,factor", [
    (1154, 115, 1.0, 1.001),     # measured 1.0000 (to 1e-12): Thm. 9's bounds are the ones that bind here
    (342477, 1000, 1.0, 1.001),  # measured 1.0000
    (1154, 115, 2.0, 1.10),      # measured 1.086: the Gaussian's own Thm. 27 bound is tighter at more noise
    (342477, 1000, 2.0, 1.02),   # measured 1.013
])
def test_subsampling_bounds_dp_accountings_gaussian(n, k, z, factor):
  """Theorem 9 (any mechanism) on the Gaussian curve vs dp_accounting's sampled Gaussian (Theorem 27 of the same
  paper, the Gaussian's own): above it at every order, and over 100 rounds its epsilon within `factor`."""
  accountant = rdp.RdpAccountant(orders=list(dda.ORDERS),
                                 neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  accountant.compose(dp_accounting.SampledWithoutReplacementDpEvent(n, k, dp_accounting.GaussianDpEvent(z)), 100)
  ours = dda.subsampled_rdp(dda.ORDERS, lambda alpha: alpha / (2 * z * z), k / n)
  assert np.all(ours >= accountant.rdp / 100 * (1 - 1e-9))
  ratio = dda.epsilon(100 * ours, 1e-5) / accountant.get_epsilon(1e-5)
  assert 1 - 1e-9 <= ratio <= factor
  # The curve's values at the orders bound it too (an order between 128 and 256 takes 256's): exact up to 128.
  stepped = dda.subsampled_rdp(dda.ORDERS, ORDERS / (2 * z * z), k / n)
  np.testing.assert_allclose(stepped[:-1], ours[:-1], rtol=1e-13)
  assert stepped[-1] >= ours[-1]


def test_subsampling_edge_cases():
  base = _round(2000.0, 100).unsampled_rdp()
  np.testing.assert_array_equal(dda.subsampled_rdp(dda.ORDERS, base, 1.0), base)  # gamma = 1: nothing to amplify
  assert not np.any(dda.subsampled_rdp(dda.ORDERS, base, 0.0))
  amplified = dda.subsampled_rdp(dda.ORDERS, base, 0.1)
  assert np.all(amplified <= base) and amplified[0] < base[0] / 10
  assert np.all(np.isinf(dda.subsampled_rdp(dda.ORDERS, np.full(ORDERS.shape, np.inf), 0.1)))  # no noise
  with pytest.raises(ValueError, match="integer orders"):
    dda.subsampled_rdp([1.5, 2, 3], lambda alpha: alpha, 0.1)


def test_epsilon_grows_with_rounds_and_falls_with_noise_and_survivors():
  """A typical round: C = 0.1, scale 2000 (sigma = 20 grid steps), d = 2^14, 100 to 115 of 115 sampled survive."""
  delta = 1e-5
  by_rounds = [dda.DdgaussAccountant().add(_round(2000.0, 100), rounds).epsilon(delta) for rounds in (1, 10, 100)]
  assert by_rounds[0] < by_rounds[1] < by_rounds[2]
  assert dda.DdgaussAccountant().epsilon(delta) == 0.0 and dda.epsilon([], delta) == 0.0
  by_noise = [dda.DdgaussAccountant().add(_round(2000.0, 100, z=z), 100).epsilon(delta) for z in (0.7, 1.0, 1.5)]
  assert by_noise[0] > by_noise[1] > by_noise[2]
  by_survivors = [dda.DdgaussAccountant().add(_round(2000.0, m), 100).epsilon(delta) for m in (100, 105, 115)]
  assert by_survivors[0] >= by_survivors[1] >= by_survivors[2]
  # Above the central Gaussian's at the same z, by about the rounding's inflation squared (Delta_2 = 1.053 C s).
  assert dda.inflated_l2_norm(0.1 * 2000.0, BETA, 2**14) / (0.1 * 2000.0) == pytest.approx(1.053, abs=1e-3)
  gaussian = accounting.epsilon(100, noise_multiplier=1.0, num_clients=1154, clients_per_round=115, delta=delta)
  assert gaussian < by_rounds[2] <= 1.053**2 * gaussian


def test_the_accountant_composes_as_the_rounds_do():
  rounds = [_round(2000.0, 100)] * 700 + [_round(2000.0, 110)] * 300  # 1000 rounds, two distinct curves
  accountant = dda.DdgaussAccountant()
  for round_ in rounds:
    accountant.add(round_)
  expected = 700 * rounds[0].rdp() + 300 * rounds[-1].rdp()
  np.testing.assert_allclose(accountant.rdp, expected, rtol=1e-12)
  assert accountant.rounds == 1000
  assert accountant.epsilon(1e-5) == pytest.approx(dda.epsilon(rounds, 1e-5), rel=1e-12)
  assert dda.epsilon(accountant.rdp, 1e-5) == accountant.epsilon(1e-5)
  assert dda.epsilon(accountant.rdp, 1e-5) == rdp.rdp_privacy_accountant.compute_epsilon(
      dda.ORDERS, accountant.rdp, 1e-5)[0]
  with pytest.raises(ValueError, match="survivors"):
    _round(2000.0, 116)  # more survivors than clients sampled


def test_a_target_epsilon_calibrates_the_noise_or_is_refused_in_one_line():
  """With the scale a fixed-bit sum allows (s ~ 1 / z), the calibrated z meets the target from just below,
  a little above the Gaussian's z for the same target (the rounding's inflation)."""
  setting = dict(l2_clip=0.1, beta=BETA, dim=2**12, min_clients=100, num_clients=1154, clients_per_round=115,
                 delta=1e-5)
  scale_fn = lambda z: 2**14 / (setting["l2_clip"] * z)
  z = dda.calibrate_noise_multiplier(8.0, rounds=100, scale_fn=scale_fn, **setting)

  def reached(noise: float) -> float:
    round_ = dda.DdgaussRound(l2_clip=0.1, scale=scale_fn(noise), beta=BETA, dim=2**12,
                              local_stddev=noise * 0.1 / math.sqrt(100), clients=100, num_clients=1154,
                              clients_per_round=115)
    return dda.DdgaussAccountant().add(round_, 100).epsilon(1e-5)

  assert 0.99 * 8.0 <= reached(z) <= 8.0 < reached(0.99 * z)
  # The Gaussian at that z meets the target too, but not 2 % below it: z is at most 2 % above the Gaussian's.
  gaussian = lambda noise: accounting.epsilon(100, noise_multiplier=noise, num_clients=1154, clients_per_round=115,
                                              delta=1e-5)
  assert gaussian(z) <= 8.0 < gaussian(z / 1.02)
  with pytest.raises(ValueError, match="cannot be met in 1000 rounds") as error:
    dda.calibrate_noise_multiplier(0.01, rounds=1000, scale_fn=scale_fn, **setting)
  assert "\n" not in str(error.value)


def test_importing_it_does_not_import_tensorflow(python_env, repo_root):
  probe = ("import sys; import tff_research.privacy.ddgauss_accounting; "
           "print(sorted(m for m in ('tensorflow', 'tensorflow_federated') if m in sys.modules))")
  done = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, env=python_env, capture_output=True,
                        text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "[]"


def test_the_tracker_counts_measured_survivors_and_the_fewest_where_none_were_recorded():
  template = _round(2000.0, 100)  # n_min = 100 of 115
  tracker = dda.DdgaussEpsilonTracker(template, 1e-5, 1.0, prior_clients={1: 115, 2: 110})
  # Round 4 arrives with its record; round 3 has none: it is counted at n_min, the larger epsilon.
  got = tracker(4, {"dp": {"clients": 112}})["privacy"]
  want = dda.epsilon([_round(2000.0, m) for m in (115, 110, 100, 112)], 1e-5)
  assert got["epsilon"] == pytest.approx(want, rel=1e-12) and got["survivors_counted"] == 112
  assert tracker(4)["privacy"]["epsilon"] == got["epsilon"]  # asked again: nothing added
  assert dda.epsilon([_round(2000.0, m) for m in (115, 110, 115, 112)], 1e-5) < want
  with pytest.raises(ValueError, match="accounted already"):
    tracker(3)
