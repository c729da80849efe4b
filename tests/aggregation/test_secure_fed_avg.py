"""FedAvg with secure aggregation tracks plain weighted FedAvg (tiny model, tiny synthetic data)."""
import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import SecureAggregationConfig
from tff_research.aggregation import SecureAggregationError
from tff_research.aggregation import build_secure_weighted_fed_avg

NUM_CLIENTS, NUM_CLASSES, FEATURES = 5, 3, 4
CENTERS = np.random.default_rng(0).normal(0, 1.5, [NUM_CLASSES, FEATURES]).astype(np.float32)


def _client_data(seed, num_examples):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, num_examples).astype(np.int32)
  x = (CENTERS[y] + rng.normal(0, 1, [num_examples, FEATURES])).astype(np.float32)
  return x, y


DATA = [_client_data(i, 20 + 6 * i) for i in range(NUM_CLIENTS)]
TEST_X, TEST_Y = _client_data(99, 600)


def _datasets():
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(8) for x, y in DATA]


def _model_fn():
  spec = _datasets()[0].element_spec
  keras_model = tf.keras.Sequential([tf.keras.layers.Dense(
      NUM_CLASSES, input_shape=(FEATURES,), kernel_initializer=tf.keras.initializers.GlorotUniform(seed=3))])
  return tff.learning.models.from_keras_model(
      keras_model, input_spec=spec,
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])


def _accuracy(weights):
  kernel, bias = weights.trainable
  return float(np.mean(np.argmax(TEST_X @ kernel + bias, axis=1) == TEST_Y))


def _optimizers():
  return tff.learning.optimizers.build_sgdm(0.1), tff.learning.optimizers.build_sgdm(1.0)


@pytest.fixture(scope="module")
def secure_process():
  return build_secure_weighted_fed_avg(
      _model_fn, *_optimizers(),
      # clip: num_examples (up to 44) x a first-round delta stays well inside it.
      SecureAggregationConfig(clip=100.0, num_clients=NUM_CLIENTS, seed=7))


def test_secure_fed_avg_matches_plain_fed_avg(secure_process):
  plain = tff.learning.algorithms.build_weighted_fed_avg(_model_fn, *_optimizers())
  plain_state = plain.initialize()
  state = secure_process.set_model_weights(secure_process.initialize(),
                                           plain.get_model_weights(plain_state))
  data = _datasets()
  for round_num in range(4):
    out = secure_process.next(state, data)
    state = out.state
    plain_out = plain.next(plain_state, data)
    plain_state = plain_out.state
    sa = out.metrics["secure_aggregation"]
    assert sa["clients"] == NUM_CLIENTS and sa["dropped"] == 0 and sa["clipped"] == 0
    assert sa["upload_bytes_per_client"] > 0 and sa["round"] == round_num
    assert out.metrics["client_work"]["train"]["num_examples"] == sum(len(y) for _, y in DATA)
  assert int(state.aggregator["round_num"]) == 4  # read through the handle (runtime.resident fetches it)
  secure_acc = _accuracy(secure_process.get_model_weights(state))
  plain_acc = _accuracy(plain.get_model_weights(plain_state))
  assert plain_acc > 0.5  # it learned something
  assert abs(secure_acc - plain_acc) <= 0.005  # within 0.5 accuracy points
  for a, b in zip(secure_process.get_model_weights(state).trainable,
                  plain.get_model_weights(plain_state).trainable):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_secure_fed_avg_with_dropouts_and_threshold():
  process = build_secure_weighted_fed_avg(
      _model_fn, *_optimizers(),
      SecureAggregationConfig(clip=20.0, num_clients=NUM_CLIENTS, dropout_rate=0.4, max_dropout=0.4,
                              threshold=3, seed=3))
  state = process.initialize()
  dropped_any, refused = False, 0
  for _ in range(4):
    try:
      out = process.next(state, _datasets())
    except SecureAggregationError:
      refused += 1
      continue  # too many dropped this round: nothing released, state unchanged
    sa = out.metrics["secure_aggregation"]
    assert sa["clients"] + sa["dropped"] == NUM_CLIENTS
    dropped_any |= sa["dropped"] > 0
    state = out.state
  assert dropped_any and refused < 4
  weights = process.get_model_weights(state).trainable
  assert all(np.all(np.isfinite(w)) for w in weights)


def test_a_refused_round_releases_nothing_and_leaves_the_state_unchanged():
  """Twelve clients on a SecAgg+ graph (k = 6, at most 3 dropouts): four dropouts are refused
  before any share is revealed; the state, model and round counter stay as they were."""
  datasets = [_datasets()[i % NUM_CLIENTS] for i in range(12)]
  process = build_secure_weighted_fed_avg(
      _model_fn, *_optimizers(), SecureAggregationConfig(clip=100.0, num_clients=12, max_dropout=0.25))
  assert (process.parameters.degree, process.parameters.max_dropouts) == (6, 3)
  state = process.initialize()
  before = process.get_model_weights(state).trainable
  with pytest.raises(SecureAggregationError, match="4 of 12 clients dropped, more than the 3"):
    process.next(state, datasets, dropped=[0, 1, 2, 3])
  for a, b in zip(process.get_model_weights(state).trainable, before):
    np.testing.assert_array_equal(a, b)
  out = process.next(state, datasets, dropped=[0, 1, 2])  # within the bound: released
  assert out.metrics["secure_aggregation"]["round"] == 0 and out.metrics["secure_aggregation"]["clients"] == 9
  assert int(out.state.aggregator["round_num"]) == 1 and out.metrics["secure_aggregation"]["cryptographic_prg"] == 1
