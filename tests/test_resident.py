"""State kept on the TFF worker between rounds computes exactly what the plain calls compute."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import masked_sum
from tff_research.learning import evaluation
from tff_research.learning import experiment
from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import training_loop
from tff_research.learning.config import PRESETS
from tff_research.metrics import nwp_metrics
from tff_research.runtime import context
from tff_research.runtime import resident


@pytest.fixture(scope="module")
def smoke(shakespeare_dir):
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir)
  return config, experiment.load_nwp_data(config, verbose=False)


def _flat(structure):
  return [np.asarray(x) for x in tf.nest.flatten(structure)]


def _train(config, data, keep_state_on_worker: bool, rounds: int = 3):
  model_fn = model_fn_lib.build_model_fn(experiment.model_config(config, data.vocab.size), data.element_spec,
                                    data.vocab.special_ids, seed=0)
  # Secure: both runs must round alike to compare bit for bit, so the clients'
  # rounding randomness is injected (a real run draws it from each client's CSPRNG).
  rounding = masked_sum.reproducible_rounding(0) if config.aggregator == "secure" else None
  training = experiment.build_training_process(config, model_fn, keep_state_on_worker=keep_state_on_worker,
                                               rounding_randomness=rounding)
  state, metrics = training.initialize(), []
  for r in range(1, rounds + 1):
    ids = training_loop.sample_clients(data.train_client_ids, config.clients_per_round, 0, r)
    output = training.next(state, data.client_datasets(ids, experiment.loop_config(config).client_spec, "train", 0, r))
    state = output.state
    metrics.append(evaluation.train_metrics(output.metrics))
  return training, state, metrics


@pytest.mark.parametrize("aggregator,server_optimizer", [("plain", "adam"), ("secure", "sgd")])
def test_state_on_the_worker_equals_the_round_trip_bit_for_bit(smoke, aggregator, server_optimizer):
  config, data = smoke
  config = dataclasses.replace(config, aggregator=aggregator, server_optimizer=server_optimizer,
                               server_learning_rate=0.01 if server_optimizer == "adam" else 1.0,
                               clients_per_round=4)  # the fewest secure FedAvg accepts (min_honest = 2)
  assert context.single_worker_stub() is not None  # the session fixture's worker: the resident path runs
  kept_process, kept, kept_metrics = _train(config, data, keep_state_on_worker=True)
  sent_process, sent, sent_metrics = _train(config, data, keep_state_on_worker=False)
  assert isinstance(kept, resident.Resident) and kept.is_remote
  assert not isinstance(sent, resident.Resident)
  assert kept_metrics == sent_metrics
  full_kept, full_sent = _flat(resident.fetch(kept)), _flat(sent)
  assert len(full_kept) == len(full_sent) > 8  # model plus optimizer slots / round counter
  for a, b in zip(full_kept, full_sent):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(_flat(kept_process.get_model_weights(kept).trainable),
                  _flat(sent_process.get_model_weights(sent).trainable)):
    np.testing.assert_array_equal(a, b)


def test_call_keeps_only_the_named_results_and_accepts_handles():
  @tff.tensorflow.computation(np.float32, np.float32)
  def add_and_scale(x, y):
    return {"total": x + y, "scaled": 10.0 * x}

  @tff.federated_computation(tff.FederatedType(np.float32, tff.SERVER), tff.FederatedType(np.float32, tff.SERVER))
  def step(x, y):
    return tff.federated_map(add_and_scale, tff.federated_zip((x, y)))

  @tff.federated_computation(tff.FederatedType(tff.StructType([("total", np.float32), ("scaled", np.float32)]),
                                               tff.SERVER))
  def split(value):
    return {"total": value.total, "scaled": value.scaled}

  @tff.federated_computation(tff.FederatedType(np.float32, tff.SERVER))
  def double(x):
    return tff.federated_map(tff.tensorflow.computation(lambda v: 2.0 * v, np.float32), x)

  kept = resident.call(step, np.float32(1.5), np.float32(2.0))
  assert float(kept["total"]) == 3.5 and float(kept["scaled"]) == 15.0
  parts = resident.call(split, kept, keep=("total",), meta={"total": {"note": "x"}})
  assert isinstance(parts["total"], resident.Resident) and parts["total"].is_remote
  assert parts["total"].meta == {"note": "x"}
  assert float(parts["scaled"]) == 15.0
  assert float(resident.call(double, parts["total"])) == 7.0  # a handle as the argument
  assert float(resident.fetch(parts["total"])) == 3.5
  assert resident.fetch(7) == 7
  # Chained calls re-send a handle every MAX_CHAIN calls: the worker keeps a
  # bounded history (TFF's executor holds each computed value's inputs).
  @tff.federated_computation(tff.FederatedType(np.float32, tff.SERVER))
  def plus_one(x):
    return {"total": tff.federated_map(tff.tensorflow.computation(lambda v: v + 1.0, np.float32), x),
            "other": x}

  value, chains = parts["total"], []
  for _ in range(3 * resident.MAX_CHAIN):
    value = resident.call(plus_one, value, keep=("total",))["total"]
    chains.append(value._chain)  # pylint: disable=protected-access
  assert max(chains) == resident.MAX_CHAIN and chains.count(1) >= 2  # re-sent, history restarted
  assert float(resident.fetch(value)) == 3.5 + 3 * resident.MAX_CHAIN
  # Two calls a round, the first with chain_step=0: one step a round, as above.
  chains = []
  for _ in range(3 * resident.MAX_CHAIN):
    first = resident.call(plus_one, value, keep=("total",), chain_step=0)["total"]
    # (a handle MAX_CHAIN steps from its upload is re-sent: 0)
    assert first._chain == value._chain % resident.MAX_CHAIN  # pylint: disable=protected-access
    value = resident.call(plus_one, first, keep=("total",))["total"]
    chains.append(value._chain)  # pylint: disable=protected-access
  assert max(chains) == resident.MAX_CHAIN and chains.count(1) >= 2
  assert float(resident.fetch(value)) == 3.5 + 9 * resident.MAX_CHAIN
  with pytest.raises(KeyError, match="nope"):
    resident.call(split, kept, keep=("nope",))


def test_loss_and_metrics_share_one_softmax_and_report_the_same_values():
  """The loss, token_loss and perplexity read one cross-entropy op; the values equal independent ones."""
  rng = np.random.default_rng(0)
  y = tf.constant(rng.integers(0, 30, size=(4, 6)), tf.int32)
  logits = tf.constant(rng.normal(size=(4, 6, 30)), tf.float32)
  special = (0, 1, 2, 3)
  loss_fn = nwp_metrics.MaskedSparseCategoricalCrossentropy(0)

  def make_step():
    metrics = nwp_metrics.build_nwp_metrics(special, 0)

    def step(y_true, y_pred):
      loss = loss_fn(y_true, y_pred)
      for metric in metrics:
        metric.update_state(y_true, y_pred)
      return [loss] + [metric.result() for metric in metrics]
    return step

  graph_fn = tf.function(make_step())
  graph = graph_fn.get_concrete_function(y, logits).graph
  graph_def = graph.as_graph_def()  # top level and nested functions alike
  ops = [n.op for n in graph_def.node] + [n.op for f in graph_def.library.function for n in f.node_def]
  assert ops.count("SparseSoftmaxCrossEntropyWithLogits") == 1
  assert ops.count("ArgMax") == 1
  graph_values = [float(v) for v in graph_fn(y, logits)]
  eager_values = [float(v) for v in make_step()(y, logits)]  # eager: every metric computes its own
  np.testing.assert_allclose(graph_values, eager_values, rtol=1e-6)
  assert graph_values[0] == pytest.approx(np.log(graph_values[5]), rel=1e-5)  # loss = log perplexity


def test_tff_internals_are_found_and_another_version_fails_in_one_line(monkeypatch):
  from tff_research.runtime import tff_internals  # pylint: disable=g-import-not-at-top
  assert tff_internals.tff_version() == tff_internals.SUPPORTED_TFF
  for piece in (tff_internals.async_utils, tff_internals.type_conversions, tff_internals.executors_errors,
                tff_internals.structure_utils):
    piece()
  assert tff_internals.worker_binary_path().endswith("worker_binary")
  monkeypatch.setattr(tff_internals, "tff_version", lambda: "0.99.0")
  expected = "TFF 0.99.0 is installed; tff_research relies on TFF 0.87.0"
  with pytest.raises(tff_internals.TffInternalsError, match=expected):
    tff_internals.structure_utils()
