"""FedAvg with the secure sum as its model aggregator tracks plain weighted FedAvg (tiny model, tiny synthetic data)."""
import collections
import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import SecureAggregationError
from tff_research.aggregation import SecureSumConfig
from tff_research.aggregation import SecureSumFactory
from tff_research.aggregation import build_secure_sum
from tff_research.aggregation import masked_sum
from tff_research.aggregation import prg
from tff_research.aggregation import quantization
from tff_research.aggregation.secagg import streams
from tff_research.learning import algorithms
from tff_research.learning import experiment
from tff_research.learning.config import ExperimentConfig
from tff_research.learning.dropouts import DropoutSimulation
from tff_research.runtime import handoff

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


def build_secure_weighted_fed_avg(model_fn, client_optimizer, server_optimizer, num_clients=NUM_CLIENTS,
                                  dropout_rate=0.0, seed=7, rounding_randomness=None, **config):
  """FedAvg whose model aggregator is the secure sum for up to `num_clients` clients a round."""
  factory = SecureSumFactory(SecureSumConfig(**config), num_clients, rounding_randomness=rounding_randomness)
  return algorithms.build_weighted_fed_avg(model_fn, client_optimizer, server_optimizer, model_aggregator=factory,
                                           dropouts=DropoutSimulation(dropout_rate, seed))


def _secure(out):
  return out.metrics["aggregator"]["secure"]


@pytest.fixture(scope="module")
def secure_process():
  # clip: num_examples (up to 44) x a first-round delta stays well inside it.
  return build_secure_weighted_fed_avg(_model_fn, *_optimizers(), clip=100.0)


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
    sa = _secure(out)
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
      clip=20.0, dropout_rate=0.4, max_dropout=0.4, threshold=3, seed=3)
  state = process.initialize()
  dropped_any, refused = False, 0
  for _ in range(4):
    try:
      out = process.next(state, _datasets())
    except SecureAggregationError:
      refused += 1
      continue  # too many dropped this round: nothing released, state unchanged
    sa = _secure(out)
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
      _model_fn, *_optimizers(), num_clients=12, clip=100.0, max_dropout=0.25)
  assert (process.aggregator.parameters.degree, process.aggregator.parameters.max_dropouts) == (6, 3)
  state = process.initialize()
  before = process.get_model_weights(state).trainable
  with pytest.raises(SecureAggregationError, match="4 of 12 clients dropped, more than the 3"):
    process.next(state, datasets, dropped=[0, 1, 2, 3])
  for a, b in zip(process.get_model_weights(state).trainable, before):
    np.testing.assert_array_equal(a, b)
  out = process.next(state, datasets, dropped=[0, 1, 2])  # within the bound: released
  assert _secure(out)["round"] == 0 and _secure(out)["clients"] == 9
  assert int(out.state.aggregator["round_num"]) == 1 and _secure(out)["cryptographic_prg"] == 1


def _recording_rounds(process):
  """Keeps every round's protocol state: the test sees what no single party would."""
  rounds, start = [], process.aggregator.driver.start_round

  def start_round(*args, **kwargs):
    rounds.append(start(*args, **kwargs))
    return rounds[-1]

  process.aggregator.driver.start_round = start_round
  return rounds


def _server_derivable_seeds(config_seed, secure_round, n):
  """16-byte values the server can compute: the old derivation of rounding seeds from
  (config seed, round, attempt), with and without the dropout draws before them, for
  nearby rounds and attempts, the test-only reproducible stream, and functions of the
  public keys and the graph's order."""
  candidates = set()
  for seed in (config_seed, 0):
    for round_num in range(4):
      for attempt in range(4):
        for dropout_draws in (n, 0):
          rng = np.random.default_rng([seed, round_num, attempt])
          rng.random(dropout_draws)
          candidates.update(rng.bytes(16) for _ in range(n))
        rng = masked_sum.reproducible_rounding(seed)(round_num, attempt)
        candidates.update(rng.bytes(16) for _ in range(n))
        order = np.random.default_rng([seed, round_num, attempt, *secure_round.protocol.order])
        candidates.update(order.bytes(16) for _ in range(n))
  public_keys = secure_round.protocol._server.public_keys  # pylint: disable=protected-access
  for keys in public_keys.values():
    for key in keys:
      candidates.update({key[:16], key[16:], hashlib.sha256(key).digest()[:16]})
  return candidates


def test_the_server_cannot_recompute_any_clients_rounding():
  """Rounding seeds come from each client's CSPRNG: nothing the server knows (config and its
  seed, round, attempt, public keys, graph order) re-derives any of them as the old code did,
  two runs of one config round with different seeds, and both still track plain FedAvg."""
  config = dict(clip=100.0, seed=7)
  plain = tff.learning.algorithms.build_weighted_fed_avg(_model_fn, *_optimizers())
  plain_state = plain.initialize()
  for _ in range(2):
    plain_state = plain.next(plain_state, _datasets()).state
  all_seeds, finals = [], []
  for _ in range(2):  # the same config twice
    process = build_secure_weighted_fed_avg(_model_fn, *_optimizers(), **config)
    rounds = _recording_rounds(process)
    state = process.set_model_weights(process.initialize(), plain.get_model_weights(plain.initialize()))
    for _ in range(2):
      state = process.next(state, _datasets()).state
    for secure_round in rounds:
      seeds = secure_round.protocol.rounding_seeds()
      assert len(seeds) == NUM_CLIENTS
      assert not set(seeds) & _server_derivable_seeds(config["seed"], secure_round, NUM_CLIENTS)
      all_seeds += seeds
    finals.append(process.get_model_weights(state).trainable)
  assert len(set(all_seeds)) == len(all_seeds) == 2 * 2 * NUM_CLIENTS  # every client-round its own seed
  assert any(not np.array_equal(a, b) for a, b in zip(*finals))  # the two runs rounded differently
  for final in finals:  # and each is plain FedAvg up to the rounding
    for a, b in zip(final, plain.get_model_weights(plain_state).trainable):
      np.testing.assert_allclose(a, b, atol=1e-4)


def test_injected_rounding_randomness_makes_runs_bit_for_bit_equal():
  """Tests that compare runs bit for bit inject the randomness; a real run never does."""
  finals = []
  for _ in range(2):
    process = build_secure_weighted_fed_avg(_model_fn, *_optimizers(), clip=100.0, bits=16, int_clip=64,
                                            rounding_randomness=masked_sum.reproducible_rounding(3))
    state = process.next(process.initialize(), _datasets()).state
    finals.append(process.get_model_weights(state).trainable)
  for a, b in zip(*finals):
    np.testing.assert_array_equal(a, b)


INT_CLIP = 30  # the clients hold 20, 26, 32, 38, 44 examples: three clipped, 136 counted instead of 160


@pytest.fixture(scope="module")
def clipped_weights_process():
  return build_secure_weighted_fed_avg(
      _model_fn, *_optimizers(), clip=100.0, bits=32, int_clip=INT_CLIP)


def test_weights_above_int_clip_weigh_the_update_as_they_count_in_the_mean(clipped_weights_process):
  """The weight that multiplies a client's update is the clipped one in the denominator:
  the mean is sum(min(n_u, 30) delta_u) / 136, not sum(n_u delta_u) / 136 (17.6 % too large)."""
  plain = tff.learning.algorithms.build_weighted_fed_avg(_model_fn, *_optimizers())
  start = plain.initialize()
  w0 = plain.get_model_weights(start).trainable
  # Each client's update alone (server SGD at lr 1: new weights = w0 - update).
  updates = [[a - b for a, b in zip(w0, plain.get_model_weights(plain.next(start, [data]).state).trainable)]
             for data in _datasets()]
  counts = [len(y) for _, y in DATA]
  weights = [min(c, INT_CLIP) for c in counts]
  assert (sum(counts), sum(weights)) == (160, 136)
  want = [w - sum(c * u[i] for c, u in zip(weights, updates)) / sum(weights) for i, w in enumerate(w0)]
  unclipped = [w - sum(c * u[i] for c, u in zip(counts, updates)) / sum(weights) for i, w in enumerate(w0)]
  process = clipped_weights_process
  out = process.next(process.set_model_weights(process.initialize(), plain.get_model_weights(start)), _datasets())
  sa = _secure(out)
  assert (sa["weights_clipped"], sa["clipped"]) == (3, 0)
  # Each client's rounding error is below one step of w * delta: the mean's below n steps / 136.
  atol = NUM_CLIENTS * process.aggregator.quantizer.step / sum(weights) + 1e-6
  for got, expected, old in zip(process.get_model_weights(out.state).trainable, want, unclipped):
    np.testing.assert_allclose(got, expected, atol=atol)
    assert np.max(np.abs(old - expected)) > 100 * atol  # the old weighting is far outside that


def test_counts_of_2_31_and_more_clip_to_int_clip_and_never_flip_the_update(clipped_weights_process):
  counts = np.array([0, 3, 29.6, 30, 31, 2.0**31, 2.0**32 + 5, 1e12, 3e38, np.nan, -4], np.float32)
  w, clipped = masked_sum.client_weight(tf.constant(counts), INT_CLIP)
  assert w.dtype == tf.int32
  assert w.numpy().tolist() == [0, 3, 30, 30, 30, 30, 30, 30, 30, 0, 0]
  assert clipped.numpy().tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1]
  # What a client with 2^31 examples encodes (the masking computation's value and multiplier), decoded.
  q = clipped_weights_process.aggregator.quantizer
  update = [np.full([FEATURES, NUM_CLASSES], 0.01, np.float32), np.full([NUM_CLASSES], -0.02, np.float32)]
  value, multiplier = masked_sum.client_value(update, tf.constant(2.0**31, tf.float32), q.int_clip)
  encoded = q.encode(value, tf.constant([5, 6], tf.int64), multiplier=multiplier)
  no_masks = prg.PhiloxMasks(q.dim, q.word_dtype)
  decoded, _ = q.unmask_and_decode(encoded, no_masks.server_material([]), no_masks, tf.constant(1))
  assert (int(decoded["weight"]), int(decoded["weights_clipped"])) == (INT_CLIP, 1)
  for got, u in zip(decoded["weighted_update"], update):
    np.testing.assert_allclose(got, INT_CLIP * u, atol=q.step)  # 30 x the update, its sign kept


@pytest.mark.parametrize("bits", [16, 21, 32])
def test_the_quantization_error_estimate_matches_the_true_error_of_the_sum(bits):
  """The server's figure, from the released sum and two securely summed scalars per client,
  against the true error (which needs the clients' values): rounding alone, then with clipping."""
  n, d = 8, 20000
  q = quantization.Quantizer([tff.TensorType(np.float32, [d]), tff.TensorType(np.int32, [2])], n,
                             SecureSumConfig(clip=1.0, bits=bits, int_clip=8), track_error=True)
  no_masks = prg.PhiloxMasks(q.dim, q.word_dtype)
  rng = np.random.default_rng(bits)
  for clipping in (False, True):
    xs = [rng.normal(0, 0.02, d).astype(np.float32) for _ in range(n)]
    if clipping:  # three clients beyond the clip on 50 coordinates each, all upwards
      for x in xs[:3]:
        x[:50] = 1.5
    total = tf.add_n([q.encode([x, np.array([1, 2], np.int32)], tf.constant([u, bits], tf.int64))
                      for u, x in enumerate(xs)])
    value, _, error = q.checked_unmask_decode_and_error(total, no_masks.server_material([]), no_masks,
                                                        tf.constant(n))
    released = np.asarray(value[0], np.float64)
    exact = np.sum([np.clip(x, -1, 1) for x in xs], axis=0, dtype=np.float64)
    unclipped = np.sum(xs, axis=0, dtype=np.float64)
    true_total = np.linalg.norm(released - unclipped) / np.linalg.norm(released)
    true_clipping = np.linalg.norm(exact - unclipped) / np.linalg.norm(released)
    estimate = float(error["quantization_error"])
    if clipping:  # every clipped value moved the same way: the bound sum_u ||c_u|| is the error itself
      np.testing.assert_allclose(float(error["clipping_error"]), true_clipping, rtol=1e-3)
      assert true_total <= estimate <= true_total * 1.05 + 1e-9
    else:
      assert float(error["clipping_error"]) == 0.0
      assert 0.8 * true_total <= estimate <= 1.25 * true_total, (estimate, true_total)


def test_each_round_reports_its_quantization_error_and_warns_when_it_moved_the_mean(secure_process):
  fine = _secure(secure_process.next(secure_process.initialize(), _datasets()))
  coarse_process = build_secure_weighted_fed_avg(  # 16 bits at clip 16,000: steps of 4 on num_examples x delta
      _model_fn, *_optimizers(), clip=16000.0, bits=16, int_clip=64)
  assert coarse_process.aggregator.quantizer.scale == 0.25
  coarse = _secure(coarse_process.next(coarse_process.initialize(), _datasets()))
  level = masked_sum.QUANTIZATION_WARNING_LEVEL
  assert 0 < fine["quantization_error"] < level / 100 and coarse["quantization_error"] > level
  assert fine["clipping_error"] == coarse["clipping_error"] == 0.0
  assert masked_sum.quantization_warning({"secure": fine}, 1) is None
  line = masked_sum.quantization_warning({"secure": coarse}, 3)
  assert line.startswith("warning: round 3: quantization moved the secure mean update by ") and "\n" not in line
  assert masked_sum.quantization_warning({"train": {}}, 1) is None  # plain FedAvg rounds: nothing to say


def test_absurd_clip_scale_bits_or_client_counts_are_refused_in_one_line(secure_process):
  for bad, message in [
      (dict(clip=1e300), "beyond the largest float32"),
      (dict(scale=1e-300), "fewer than MIN_LEVELS_PER_CLIENT = 16"),
      (dict(clip=1.0, bits=6, int_clip=1), "leave 8 fixed-point levels per client")]:
    with pytest.raises(ValueError, match=message) as error:  # when the factory is made, before any value type
      SecureSumFactory(SecureSumConfig(**bad), 4)
    assert "\n" not in str(error.value)
  for bad in (dict(clip=1e300), dict(clip=1.0, scale=1e-300)):  # the secure sum alone, at build time
    with pytest.raises(ValueError, match="float32|MIN_LEVELS_PER_CLIENT") as error:
      build_secure_sum(tff.TensorType(np.float32, [3]), 4, SecureSumConfig(**bad))
    assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match="--aggregator=secure: clip 1e[+]300 is beyond") as error:
    experiment.build_model_aggregator(ExperimentConfig(aggregator="secure", secure_clip=1e300))
  assert "\n" not in str(error.value)
  # A server computation called directly with more clients than the overflow bound: one line, before TFF runs
  # (these placeholders would fail differently inside TFF).
  with pytest.raises(ValueError, match="6 clients summed, but the overflow bound was built for at most 5") as error:
    secure_process.aggregator.server_stage(None, None, NUM_CLIENTS + 1, None)
  assert "\n" not in str(error.value)
  ss = build_secure_sum(tff.TensorType(np.float32, [3]), 4, SecureSumConfig(clip=1.0))
  for comp in (ss.computations.unmask, ss.computations.server_unmask):
    with pytest.raises(ValueError, match="5 clients summed") as error:
      comp(np.zeros(ss.quantizer.dim, ss.quantizer.word_np_dtype), 5, None)
    assert "\n" not in str(error.value)


def test_each_mask_file_has_its_own_unguessable_path_removed_after_use(secure_process):
  if not handoff.available():
    pytest.skip("memory files need Linux and workers on this machine")
  masks = prg.AesCtrMasks(64, tf.uint64, use_memory_files=True)
  seen = set()
  for _ in range(3):  # rounds: the memory files' fd numbers come back, their paths must not
    seeds = [(os.urandom(16), 1), (os.urandom(16), -1)]
    materials = [masks.client_material(seeds, os.urandom(16)) for _ in range(3)] + [masks.server_material(seeds)]
    paths = [m["mask"] for m in materials]
    want = streams.add_signed_streams(np.zeros(64, np.uint64), seeds)
    for path in paths:
      name = os.path.basename(path)
      assert len(name) == 32 and int(name, 16) >= 0  # 128 random bits, hex
      assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0  # a directory only this user opens
      np.testing.assert_array_equal(np.fromfile(path, np.uint64), want)
    assert len(set(paths)) == len(paths) and not seen & set(paths)
    seen |= set(paths)
    masks.release()
    assert not any(os.path.lexists(p) for p in paths)  # removed once read
  assert secure_process.aggregator.masks.use_memory_files
  before = set(os.listdir(handoff.link_directory()))  # (materials other tests still hold)
  secure_process.next(secure_process.initialize(), _datasets())  # a whole round leaves no path behind
  assert set(os.listdir(handoff.link_directory())) <= before
