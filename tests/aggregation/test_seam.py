"""The interactive-aggregation seam: types, the one composer, secure FedSGD, encoders, the ideal functionality."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.aggregation.test_secure_fed_avg import NUM_CLIENTS
from tests.aggregation.test_secure_fed_avg import _datasets
from tests.aggregation.test_secure_fed_avg import _model_fn
from tests.aggregation.test_secure_fed_avg import _optimizers
from tff_research.aggregation import FixedPointMeanFactory
from tff_research.aggregation import SecureAggregationError
from tff_research.aggregation import SecureSumConfig
from tff_research.aggregation import SecureSumFactory
from tff_research.aggregation import build_secure_sum
from tff_research.aggregation import encoders
from tff_research.aggregation import interactive
from tff_research.aggregation.secagg import key_agreement
from tff_research.learning import algorithms
from tff_research.learning import composers

UPDATE_TYPE = [tff.TensorType(np.float32, [4, 3]), tff.TensorType(np.float32, [3])]


class _SameSeed:
  """Every client's rounding seed the same 16 bytes (injected: the ideal functionality's test seed)."""
  SEED = bytes(range(16))

  def bytes(self, n):
    assert n == len(self.SEED)
    return self.SEED


def test_the_stages_have_the_types_the_seam_states():
  process = SecureSumFactory(SecureSumConfig(clip=10.0), 8).create(UPDATE_TYPE, tff.TensorType(np.float32))
  client = process.client_stage.type_signature
  assert [t.placement for t in client.parameter] == [tff.SERVER, tff.CLIENTS, tff.CLIENTS, tff.CLIENTS]
  assert client.parameter[1].member == tff.types.to_type(UPDATE_TYPE)
  assert [t.placement for t in client.result] == [tff.SERVER, tff.SERVER]
  server = process.server_stage.type_signature
  assert server.parameter[1] == client.result[0] and server.parameter[2] == client.result[1]
  assert server.result.result.member == tff.types.to_type(UPDATE_TYPE)  # the mean has the update's type
  assert server.result.state == process.initialize.type_signature.result
  names = {name for name, _ in tff.structure.iter_elements(server.result.measurements.member)}
  assert names >= {"clipped", "weights_clipped", "quantization_error"}
  unweighted = SecureSumFactory(SecureSumConfig(clip=10.0), 8).create(UPDATE_TYPE)
  assert len(unweighted.client_stage.type_signature.parameter) == 3 and not unweighted.is_weighted
  assert interactive.is_interactive(process) and not interactive.is_interactive(tff.aggregators.MeanFactory())


def test_a_refused_round_is_a_value_and_the_composer_starts_it_over():
  process = SecureSumFactory(SecureSumConfig(clip=10.0, max_dropout=0.25), 12).create(
      UPDATE_TYPE, tff.TensorType(np.float32))
  refused = process.start_round(12, 3, dropped=[0, 1, 2, 3])
  assert isinstance(refused, interactive.Refused) and refused.round_num == 3 and "4 of 12" in refused.reason
  plan = process.start_round(12, 3, dropped=[0, 1, 2])
  assert isinstance(plan, interactive.RoundPlan) and plan.survivors == list(range(3, 12))
  assert isinstance(process.correction(plan, 8), interactive.Refused)  # the server counted one vector too few
  lines = []
  learning = algorithms.build_weighted_fed_avg(
      _model_fn, *_optimizers(), model_aggregator=SecureSumFactory(SecureSumConfig(clip=100.0), NUM_CLIENTS),
      max_attempts=3, log=lines.append)
  state = learning.initialize()
  with pytest.raises(SecureAggregationError, match="dropped, more than"):
    learning.next(state, _datasets(), dropped=[0, 1])  # every attempt: 2 of 5 drop, more than the 1 allowed
  assert len(lines) == 2 and all(line.startswith("round 0: ") and "retrying" in line for line in lines)
  assert int(learning.next(state, _datasets()).state.aggregator["round_num"]) == 1  # the state was unchanged


def test_the_composer_returns_tffs_own_process_for_a_tff_aggregator():
  plain = algorithms.build_weighted_fed_avg(_model_fn, *_optimizers(), model_aggregator=tff.aggregators.MeanFactory())
  assert isinstance(plain, tff.learning.templates.LearningProcess)
  ideal = algorithms.build_weighted_fed_avg(_model_fn, *_optimizers(),
                                            model_aggregator=FixedPointMeanFactory(SecureSumConfig(), NUM_CLIENTS))
  assert isinstance(ideal, tff.learning.templates.LearningProcess)
  with pytest.raises(ValueError, match="options of interactive aggregators only"):
    algorithms.build_weighted_fed_avg(_model_fn, *_optimizers(), model_aggregator=None, dropouts=None)
  secure = algorithms.build_weighted_fed_avg(_model_fn, *_optimizers(),
                                             model_aggregator=SecureSumFactory(SecureSumConfig(), NUM_CLIENTS))
  assert isinstance(secure, composers.InteractiveLearningProcess)
  # The same state structure as TFF's, the aggregator's state in its `aggregator` field.
  assert type(secure.initialize()) is type(plain.initialize())  # noqa: E721
  assert list(secure.initialize().aggregator) == [interactive.ROUND_NUM]


@pytest.mark.parametrize("bits", [16, 21, 32])  # packed 16-bit lanes, packed 21-bit lanes, one word a coordinate
def test_secure_fed_avg_equals_its_ideal_functionality_bit_for_bit(bits):
  """Same clients, rounding seeds and dropouts: the masks cancel exactly, so the models are equal bit for bit."""
  config = SecureSumConfig(clip=100.0, bits=bits, int_clip=64)
  secure = algorithms.build_weighted_fed_avg(
      _model_fn, *_optimizers(),
      model_aggregator=SecureSumFactory(config, NUM_CLIENTS, rounding_randomness=lambda r, a: _SameSeed()))
  ideal = algorithms.build_weighted_fed_avg(
      _model_fn, *_optimizers(), model_aggregator=FixedPointMeanFactory(
          config, NUM_CLIENTS, rounding_seed=key_agreement.seed_to_tf(_SameSeed.SEED)))
  secure_state, ideal_state = secure.initialize(), ideal.initialize()
  secure_state = secure.set_model_weights(secure_state, ideal.get_model_weights(ideal_state))
  for dropped in ([], [1]):  # a round with a dropout: the ideal functionality sums the survivors
    out = secure.next(secure_state, _datasets(), dropped=dropped)
    ideal_out = ideal.next(ideal_state, [d for u, d in enumerate(_datasets()) if u not in dropped])
    secure_state, ideal_state = out.state, ideal_out.state
    assert out.metrics["aggregator"]["secure"]["dropped"] == len(dropped)
    for key in ("clipped", "weights_clipped", "quantization_error"):
      assert out.metrics["aggregator"]["secure"][key] == float(ideal_out.metrics["aggregator"]["fixed_point"][key])
  for a, b in zip(secure.get_model_weights(secure_state).trainable, ideal.get_model_weights(ideal_state).trainable):
    np.testing.assert_array_equal(a, b)
  plain = tff.learning.algorithms.build_weighted_fed_avg(_model_fn, *_optimizers())
  assert any(not np.array_equal(a, b) for a, b in zip(  # and the quantization did round (it is not a no-op)
      ideal.get_model_weights(ideal_state).trainable,
      plain.get_model_weights(plain.next(plain.initialize(), _datasets()).state).trainable))


def test_secure_fed_sgd_tracks_plain_fed_sgd():
  server_optimizer = tff.learning.optimizers.build_sgdm(0.5)
  plain = tff.learning.algorithms.build_fed_sgd(_model_fn, server_optimizer_fn=server_optimizer)
  secure = algorithms.build_fed_sgd(_model_fn, server_optimizer,
                                    model_aggregator=SecureSumFactory(SecureSumConfig(clip=100.0), NUM_CLIENTS))
  plain_state = plain.initialize()
  state = secure.set_model_weights(secure.initialize(), plain.get_model_weights(plain_state))
  for _ in range(3):
    out = secure.next(state, _datasets())
    state, plain_state = out.state, plain.next(plain_state, _datasets()).state
    assert out.metrics["aggregator"]["secure"]["clients"] == NUM_CLIENTS
  moved = False
  for a, b, start in zip(secure.get_model_weights(state).trainable, plain.get_model_weights(plain_state).trainable,
                         plain.get_model_weights(plain.initialize()).trainable):
    np.testing.assert_allclose(a, b, atol=1e-4)
    moved |= not np.allclose(b, start, atol=1e-3)
  assert moved


class _Negate(encoders.Encoder):
  """A linear encoder that the server must undo: if it did not run on both sides, the sum's sign would be wrong."""

  def __init__(self):
    self.calls = []

  def client_encode(self, value, seed):
    self.calls.append("client")
    return tf.nest.map_structure(lambda x: -x, value)

  def server_decode(self, total, clients):
    self.calls.append("server")
    return tf.nest.map_structure(lambda x: -x, total)


class _Offset(encoders.Encoder):
  """Adds 1 at each client and removes `clients` at the server: the decode sees the count of summed values."""

  def client_encode(self, value, seed):
    return tf.nest.map_structure(lambda x: x + 1.0, value)

  def server_decode(self, total, clients):
    return tf.nest.map_structure(lambda x: x - tf.cast(clients, x.dtype), total)


def test_encoders_run_at_the_clients_before_masking_and_at_the_server_after_unmasking():
  negate = _Negate()
  value_type = tff.TensorType(np.float32, [6])
  ss = build_secure_sum(value_type, 4, SecureSumConfig(clip=8.0, bits=32), encoders=[negate, _Offset()])
  values = [np.linspace(-1, 1, 6).astype(np.float32) * (u + 1) for u in range(4)]
  result = ss(values, dropped=[2])
  np.testing.assert_allclose(result.value, sum(values[u] for u in (0, 1, 3)), atol=4 * ss.quantizer.step)
  assert negate.calls.count("client") >= 1 and negate.calls.count("server") >= 1
  rnd = ss.new_round(4, round_num=1)
  material = ss.client_materials(rnd, [0])[0]
  encoded = np.asarray(ss.computations.client_encode(values[0], material), np.int64)
  # What is quantized is the encoded value, -x + 1 (before any mask), not x.
  want = np.round((-values[0] + 1.0) * ss.quantizer.scale)
  np.testing.assert_allclose(np.where(encoded[:6] >= 2**31, encoded[:6] - 2**32, encoded[:6]), want, atol=1)
  ss.driver.release()
