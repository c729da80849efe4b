"""A secure round streamed in groups of clients (client_groups): the one call's result, one group's masks at a time."""
import numpy as np
import pytest

from tests.aggregation.test_secure_fed_avg import _datasets
from tests.aggregation.test_secure_fed_avg import _model_fn
from tests.aggregation.test_secure_fed_avg import _optimizers
from tests.aggregation.test_secure_fed_avg import build_secure_weighted_fed_avg
from tff_research import runtime
from tff_research.aggregation import masked_sum
from tff_research.learning import client_groups


def test_groups_keep_the_order_and_differ_in_size_by_at_most_one():
  assert client_groups.split([0, 2, 3, 4, 6, 7, 9], 3) == [[0, 2, 3], [4, 6], [7, 9]]
  assert client_groups.split([5, 6], 4) == [[5], [6]]  # never an empty group
  assert client_groups.split(range(10), 1) == [list(range(10))]
  for n in range(1, 30):
    for k in range(1, 8):
      groups = client_groups.split(range(n), k)
      assert sum(groups, []) == list(range(n))
      assert len({len(g) for g in groups}) <= 2 and max(map(len, groups)) - min(map(len, groups)) <= 1


def test_groups_for_workers_are_whole_waves_then_the_last_member_alone():
  assert client_groups.split_for_workers(range(9), 3, 2) == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
  assert client_groups.split_for_workers(range(6), 1, 2) == [[0, 1, 2], [3, 4], [5]]
  assert client_groups.split_for_workers(range(2), 4, 2) == [[0, 1]]  # no more members than workers: one call
  assert client_groups.split_for_workers(range(5), 4, 1) == [[0, 1, 2, 3, 4]]
  for n in range(1, 30):
    for workers in (2, 3):
      groups = client_groups.split_for_workers(range(n), 4, workers)
      assert sum(groups, []) == list(range(n)) and all(groups)
      assert len(groups) == 1 or len(groups[-1]) == 1


def _recorded(process):
  """The process, recording for each group asked for: its members and how many mask files were open before."""
  aggregator, asked = process.aggregator, []
  materials = aggregator.client_materials

  def client_materials(plan, members=None):
    asked.append((list(plan.survivors if members is None else members), len(aggregator.masks._open)))  # pylint: disable=protected-access
    return materials(plan, members)

  aggregator.client_materials = client_materials
  return process, asked


def _train(num_subrounds, dropped, num_workers=1):
  runtime.use_local_runtime(num_subrounds=num_subrounds, num_workers=num_workers)
  process, asked = _recorded(build_secure_weighted_fed_avg(
      _model_fn, *_optimizers(), clip=100.0, bits=16, int_clip=64,
      rounding_randomness=masked_sum.reproducible_rounding(3)))
  state, outputs = process.initialize(), []
  for round_dropped in dropped:
    outputs.append(process.next(state, _datasets(), dropped=round_dropped))
    state = outputs[-1].state
  return [np.asarray(w) for w in process.get_model_weights(state).trainable], outputs, asked


@pytest.fixture(scope="module")
def one_call_and_streamed():
  dropped = [[], [1], [4]]
  try:
    runs = {k: _train(k, dropped) for k in (1, 2, 3)}
  finally:
    runtime.use_local_runtime()  # the rest of the suite runs on one call a round again
  return runs


def test_a_streamed_round_is_the_one_calls_round_bit_for_bit(one_call_and_streamed):
  weights, outputs, _ = one_call_and_streamed[1]
  for k in (2, 3):
    streamed_weights, streamed_outputs, _ = one_call_and_streamed[k]
    for a, b in zip(weights, streamed_weights):
      np.testing.assert_array_equal(a, b)  # integer sums mod 2^w: exact whatever the grouping
    for one, streamed in zip(outputs, streamed_outputs):
      secure, streamed_secure = one.metrics["aggregator"]["secure"], streamed.metrics["aggregator"]["secure"]
      assert streamed_secure == secure  # counts, clipped values, dropouts
      train, streamed_train = one.metrics["client_work"]["train"], streamed.metrics["client_work"]["train"]
      assert streamed_train["num_examples"] == train["num_examples"]
      np.testing.assert_allclose(streamed_train["loss"], train["loss"], rtol=1e-6)  # floats merged in another order


def test_each_group_asks_for_its_own_masks_after_the_last_groups_are_freed(one_call_and_streamed):
  _, _, asked = one_call_and_streamed[1]
  assert [members for members, _ in asked] == [[0, 1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 2, 3]]
  _, _, asked = one_call_and_streamed[3]
  assert [members for members, _ in asked] == [[0, 1], [2, 3], [4], [0, 2], [3], [4], [0, 1], [2], [3]]
  assert all(open_before == 0 for _, open_before in asked)  # one group's masks exist at a time


@pytest.fixture(scope="module")
def on_two_workers():
  dropped = [[], [1], [4]]
  try:
    runs = {k: _train(k, dropped, num_workers=2) for k in (2, 3)}
  finally:
    runtime.use_local_runtime()
  return runs


def test_a_round_on_two_workers_is_the_one_calls_round_bit_for_bit(one_call_and_streamed, on_two_workers):
  weights, outputs, _ = one_call_and_streamed[1]
  for k in (2, 3):
    worker_weights, worker_outputs, _ = on_two_workers[k]
    for a, b in zip(weights, worker_weights):
      np.testing.assert_array_equal(a, b)
    for one, other in zip(outputs, worker_outputs):
      assert other.metrics["aggregator"]["secure"] == one.metrics["aggregator"]["secure"]
      np.testing.assert_allclose(other.metrics["client_work"]["train"]["loss"],
                                 one.metrics["client_work"]["train"]["loss"], rtol=1e-6)


def test_on_two_workers_one_waves_masks_exist_at_a_time(on_two_workers):
  _, _, asked = on_two_workers[2]
  assert [members for members, _ in asked] == [[0, 1], [2, 3], [4], [0, 2], [3], [4], [0, 1], [2], [3]]
  # One mask file per member: the second group of a wave finds the first's open; none is open before the last member.
  assert [open_before for _, open_before in asked] == [0, 2, 0] * 3
  _, _, asked = on_two_workers[3]
  assert [members for members, _ in asked] == [[0], [1], [2], [3], [4], [0], [2], [3], [4], [0], [1], [2], [3]]
  assert [open_before for _, open_before in asked] == [0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0]
