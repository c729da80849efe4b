"""The federated training loop: outputs, resume, determinism, every algorithm."""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tff_research.learning import experiment
from tff_research.learning import training_loop
from tff_research.learning.config import PRESETS


@pytest.fixture(scope="module")
def smoke(shakespeare_dir, tmp_path_factory):
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir,
                               output_dir=str(tmp_path_factory.mktemp("runs")))
  return config, experiment.load_nwp_data(config, verbose=False)


def _run(config, data, **changes):
  config = dataclasses.replace(config, **changes)
  return experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)


def _weights(result):
  return [np.asarray(w) for w in tf.nest.flatten(result.run.model_weights.trainable)]


def test_run_writes_metrics_hparams_tensorboard_checkpoints_and_plot(smoke):
  config, data = smoke
  config = dataclasses.replace(config, experiment_name="outputs")
  result = experiment.run_experiment(config, progress=False, plot=True, log=lambda _: None, data=data)
  run_dir = result.run.run_dir
  rows = training_loop.read_metrics_csv(os.path.join(run_dir, "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2]
  for column in ("train/loss", "train/accuracy", "eval/accuracy", "eval/recall_at_3", "eval/perplexity"):
    assert all(np.isfinite(r[column]) for r in rows), column
  assert json.load(open(os.path.join(run_dir, "hparams.json")))["rounds"] == 2
  assert any(f.startswith("events") for f in os.listdir(os.path.join(run_dir, "tensorboard")))
  assert "round_2" in os.listdir(os.path.join(run_dir, "checkpoints"))
  assert os.path.getsize(result.plot_path) > 1000
  assert 0.0 <= result.unigram_accuracy < 1.0


def test_rerun_resumes_and_matches_an_uninterrupted_run(smoke):
  config, data = smoke
  first = _run(config, data, experiment_name="resumed", rounds=2)
  assert first.run.resumed_from == 0
  resumed = _run(config, data, experiment_name="resumed", rounds=4)
  assert resumed.run.resumed_from == 2
  assert [h["round"] for h in resumed.run.history] == [3, 4]
  rows = training_loop.read_metrics_csv(os.path.join(resumed.run.run_dir, "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2, 3, 4]
  straight = _run(config, data, experiment_name="straight", rounds=4)
  for a, b in zip(_weights(resumed), _weights(straight)):
    np.testing.assert_array_equal(a, b)
  straight_rows = training_loop.read_metrics_csv(os.path.join(straight.run.run_dir, "metrics.csv"))
  assert [r["train/loss"] for r in straight_rows] == [r["train/loss"] for r in rows]


def test_metrics_csv_has_one_column_order_whatever_the_evaluation_schedule(smoke):
  """Evaluating every round or only at the end: TFF's manager would put eval/ columns where they first came."""
  import csv  # pylint: disable=g-import-not-at-top
  config, data = smoke
  headers = []
  for name, every in (("every_round", 1), ("at_the_end", 3)):
    result = _run(config, data, experiment_name=name, rounds=3, eval_every=every)
    with open(os.path.join(result.run.run_dir, "metrics.csv"), encoding="utf-8", newline="") as f:
      headers.append(next(csv.reader(f)))
  assert headers[0] == headers[1]
  assert headers[0][0] == "round" and headers[0][1:] == sorted(headers[0][1:])
  assert "eval/accuracy" in headers[0] and "train/loss" in headers[0]


def test_completed_run_is_not_trained_again(smoke):
  config, data = smoke
  _run(config, data, experiment_name="complete", rounds=1)
  again = _run(config, data, experiment_name="complete", rounds=1)
  assert again.run.history == [] and again.run.resumed_from == 1
  assert "accuracy" in again.run.final_eval


def test_rerun_with_other_settings_is_refused(smoke):
  config, data = smoke
  _run(config, data, experiment_name="settings", rounds=1)
  with pytest.raises(training_loop.RunConfigError, match="client_learning_rate"):
    _run(config, data, experiment_name="settings", rounds=1, client_learning_rate=0.1)


@pytest.mark.parametrize("algorithm,server_optimizer,lr", [
    ("fedavg", "sgdm", 1.0), ("fedavg", "adagrad", 0.03), ("fedavg", "adam", 0.01),
    ("fedavg", "yogi", 0.01), ("fedsgd", "sgd", 1.0)])
def test_each_algorithm_trains(smoke, algorithm, server_optimizer, lr):
  config, data = smoke
  result = _run(config, data, experiment_name=f"{algorithm}_{server_optimizer}", rounds=1,
                algorithm=algorithm, server_optimizer=server_optimizer, server_learning_rate=lr)
  assert np.isfinite(result.run.history[0]["train/loss"])
  assert np.isfinite(result.run.final_eval["loss"])


def test_too_many_clients_per_round_is_a_clear_error(smoke):
  config, data = smoke
  with pytest.raises(ValueError, match="larger than the .* train clients"):
    _run(config, data, experiment_name="too_many", clients_per_round=100000)


def test_client_sampling_is_uniform_without_replacement_and_seeded():
  ids = [f"c{i}" for i in range(50)]
  a = training_loop.sample_clients(ids, 10, seed=1, round_num=3)
  assert len(set(a)) == 10 and a == training_loop.sample_clients(ids, 10, seed=1, round_num=3)
  assert a != training_loop.sample_clients(ids, 10, seed=1, round_num=4)


def test_secure_aggregation_run_records_its_costs(smoke):
  config, data = smoke
  # 4 clients (the fewest that keep 2 honest inputs with one corrupt and one dropped), up to one of
  # them dropping: the complete graph with t = 3.
  result = _run(config, data, experiment_name="secure", rounds=2, aggregator="secure",
                secure_clip=50.0, dropout_rate=0.25, secure_max_dropout=0.25, clients_per_round=4)
  rows = training_loop.read_metrics_csv(os.path.join(result.run.run_dir, "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2]
  for row in rows:
    assert row["secure/upload_bytes_per_client"] > 0
    assert row["secure/clients"] + row["secure/dropped"] == 4
    assert row["secure/clipped"] >= 0
    assert (row["secure/neighbors"], row["secure/threshold"], row["secure/cryptographic_prg"]) == (3, 3, 1)
    assert np.isfinite(row["train/loss"])


@pytest.mark.parametrize("bits", [32, 0])
def test_secure_aggregation_matches_plain_fedavg_without_dropouts(smoke, bits):
  """32 bits: the same weights up to float noise; bits=0 (16 bits here: 4 clients, clip 50,
  up to 8 examples): within the quantization bound, each client's rounding error on
  num_examples x delta < one step a round, over at least one example per client (server SGD lr 1)."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation import quantization  # pylint: disable=g-import-not-at-top
  config, data = smoke
  config = dataclasses.replace(config, clients_per_round=4)  # the fewest secure FedAvg accepts (min_honest = 2)
  plain = _run(config, data, experiment_name="plain_ref", rounds=2)
  secure_config = dataclasses.replace(config, rounds=2, aggregator="secure", secure_clip=50.0, secure_bits=bits)
  secure = _run(secure_config, data, experiment_name=f"secure_ref_{bits}")
  assert all(r["secure/clipped"] == 0 for r in secure.run.history)
  assert [r["secure/bits"] for r in secure.run.history] == [bits or 16] * 2
  sum_config = secure_config.secure_sum_config()
  quantizer = quantization.Quantizer([tff.TensorType(np.float32, [1]), tff.TensorType(np.int32, [1])],
                                     config.clients_per_round, sum_config)
  assert quantizer.bits == (bits or 16)
  atol = 1e-4 if bits == 32 else 2 * quantizer.step + 1e-4
  for a, b in zip(_weights(plain), _weights(secure)):
    np.testing.assert_allclose(a, b, atol=atol)


def test_checkpoint_left_half_written_by_a_kill_is_ignored(smoke, tmp_path):
  """A kill mid-write leaves only `.partial/`, never a `round_N` that fails to load."""
  import asyncio  # pylint: disable=g-import-not-at-top

  from tff_research.learning import checkpoints  # pylint: disable=g-import-not-at-top
  manager = checkpoints.AtomicFileProgramStateManager(str(tmp_path), keep_total=3)
  state = {"weights": np.arange(4, dtype=np.float32), "round": np.int32(1)}
  asyncio.run(manager.save(state, 1))
  junk = tmp_path / checkpoints.PARTIAL_DIR / "round_2"
  junk.mkdir(parents=True)
  (junk / "saved_model.pb").write_bytes(b"truncated")
  loaded, version = asyncio.run(manager.load_latest(state))
  assert version == 1
  np.testing.assert_array_equal(loaded["weights"], state["weights"])
  state2 = {"weights": np.ones(4, np.float32), "round": np.int32(2)}
  asyncio.run(manager.save(state2, 2))  # replaces the stale partial write
  loaded, version = asyncio.run(manager.load_latest(state2))
  assert version == 2 and float(loaded["weights"][0]) == 1.0
  assert sorted(os.listdir(tmp_path / checkpoints.PARTIAL_DIR)) == []


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_initial_weights_from_python_equal_the_in_graph_initializers(cell):
  """The speed-up that skips initializers inside TFF computations starts from the same weights, bit for bit."""
  from tff_research.learning import model_fn as model_fn_lib  # pylint: disable=g-import-not-at-top
  from tff_research.learning import process  # pylint: disable=g-import-not-at-top
  from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top
  spec = (tf.TensorSpec([None, 5], tf.int32),) * 2
  model_config = nwp_models.ModelConfig(50, 8, 16, 1, cell)
  bias = np.linspace(-3.0, 0.0, 50).astype(np.float32)
  weights = []
  for in_graph in (True, False):
    model_fn = model_fn_lib.build_model_fn(model_config, spec, (0, 1), seed=3, output_bias=bias,
                                      initialize_in_graph=in_graph)
    training = process.build_training_process(model_fn, process.AlgorithmConfig())
    weights.append(training.get_model_weights(training.initialize()))
  assert len(weights[0].trainable) == len(weights[1].trainable) == 8
  for a, b in zip(weights[0].trainable, weights[1].trainable):
    np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(weights[1].trainable[2])).sum() > 0  # the recurrent kernel is not zeros


@pytest.mark.parametrize("algorithm", ["fedavg", "fedsgd"])
def test_iterator_and_reduce_client_loops_compute_the_same_round(smoke, algorithm):
  from tff_research.learning import evaluation  # pylint: disable=g-import-not-at-top
  from tff_research.learning import model_fn as model_fn_lib  # pylint: disable=g-import-not-at-top
  from tff_research.learning import process  # pylint: disable=g-import-not-at-top
  config, data = smoke
  config = dataclasses.replace(config, algorithm=algorithm)
  model_fn = model_fn_lib.build_model_fn(experiment.model_config(config, data.vocab.size), data.element_spec,
                                    data.vocab.special_ids, seed=0)
  loop = experiment.loop_config(config)
  ids = training_loop.sample_clients(data.train_client_ids, 3, 0, 1)
  datasets = data.client_datasets(ids, loop.client_spec, "train", 0, 1)
  results = []
  for name in ("iterator", "reduce"):
    algorithm_config = dataclasses.replace(experiment.algorithm_config(config), loop=name)
    training = process.build_training_process(model_fn, algorithm_config)
    output = training.next(training.initialize(), datasets)
    results.append((training.get_model_weights(output.state), evaluation.train_metrics(output.metrics)))
  for a, b in zip(results[0][0].trainable, results[1][0].trainable):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert results[0][1]["num_examples"] == results[1][1]["num_examples"] > 0


def test_secure_run_records_quantization_error_and_clipped_weights_and_warns_once(smoke):
  """8 bits at clip 50 (scale 1/2: steps of 2 on num_examples x delta) moves the mean far more
  than the warning level: metrics.csv has the figure every round, the log one warning line."""
  from tff_research.aggregation import masked_sum  # pylint: disable=g-import-not-at-top
  config, data = smoke
  lines = []
  config = dataclasses.replace(config, experiment_name="secure_coarse", rounds=2, aggregator="secure",
                               clients_per_round=4, secure_clip=50.0, secure_bits=8)
  result = experiment.run_experiment(config, progress=False, plot=False, log=lines.append, data=data)
  rows = training_loop.read_metrics_csv(os.path.join(result.run.run_dir, "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2]
  assert all(r["secure/quantization_error"] > masked_sum.QUANTIZATION_WARNING_LEVEL for r in rows)
  assert all(r["secure/weights_clipped"] == 0 and r["secure/clipping_error"] >= 0 for r in rows)
  warnings = [line for line in lines if line.startswith("warning:")]
  assert len(warnings) == 1 and warnings[0].startswith("warning: round 1: quantization moved the secure mean")


def test_the_loop_takes_its_state_and_release_managers_as_arguments(smoke, tmp_path):
  """The loop writes through the managers it is given (tff.program's), not to files it picks itself."""
  import asyncio  # pylint: disable=g-import-not-at-top

  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.learning import checkpoints  # pylint: disable=g-import-not-at-top
  from tff_research.learning import evaluation  # pylint: disable=g-import-not-at-top
  config, data = smoke
  config = dataclasses.replace(config, rounds=2)
  model_fn = experiment.build_model_fn(config, data)
  training = experiment.build_training_process(config, model_fn)
  releases = tff.program.MemoryReleaseManager()
  states = checkpoints.AtomicFileProgramStateManager(str(tmp_path / "elsewhere"), keep_total=5)
  run_dir = str(tmp_path / "run")
  files = training_loop.RunFiles(run_dir, states=states, releases=[releases])
  result = training_loop.run_federated_training(
      training, evaluation.build_evaluation_process(model_fn), data, experiment.loop_config(config), run_dir,
      progress=False, log=lambda _: None, files=files)
  assert result.rounds_completed == 2
  released = releases.values()
  assert sorted(released) == [1, 2] and "train" in released[1] and "eval" in released[2]
  assert not os.path.exists(os.path.join(run_dir, "metrics.csv"))  # nothing but the given managers
  assert not os.path.exists(os.path.join(run_dir, "checkpoints"))
  _, version = asyncio.run(states.load_latest(training.initialize()))
  assert version == 2


@pytest.mark.parametrize("server_optimizer", ["sgdm", "adagrad", "adam", "yogi"])
def test_secure_fed_avg_takes_every_server_optimizer(smoke, server_optimizer):
  """The secure sum is the model aggregator; the server optimizer is TFF's finalizer, whichever it is."""
  config, data = smoke
  result = _run(config, data, experiment_name=f"secure_{server_optimizer}", rounds=1, aggregator="secure",
                clients_per_round=4, server_optimizer=server_optimizer, server_learning_rate=0.05)
  (row,) = result.run.history
  assert row["secure/clients"] == 4 and row["secure/clipped"] == 0
  weights = result.run.model_weights.trainable
  assert all(np.all(np.isfinite(w)) for w in weights)
