"""Client data built on the workers (data/worker_data.py): same training, and rounds that send names, not windows."""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tff_research.aggregation import masked_sum
from tff_research.data import nwp
from tff_research.data import worker_data
from tff_research.learning import evaluation
from tff_research.learning import experiment
from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import training_loop
from tff_research.learning.config import PRESETS


@pytest.fixture(scope="module")
def smoke(shakespeare_dir):
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir, clients_per_round=4, rounds=2,
                               eval_every=1)
  return config, experiment.load_nwp_data(config, verbose=False)


def _run(config, data, run_dir: str, client_data=None):
  """The training loop (rounds, evaluations, checkpoints) on `client_data`'s inputs, or on datasets."""
  model_fn = model_fn_lib.build_model_fn(experiment.model_config(config, data.vocab.size), data.element_spec,
                                         data.vocab.special_ids, seed=0)
  # The secure runs inject the clients' rounding randomness to compare bit for bit.
  rounding = masked_sum.reproducible_rounding(0) if config.aggregator == "secure" else None
  training = experiment.build_training_process(config, model_fn, rounding_randomness=rounding,
                                               client_data=client_data)
  computation = client_data.dataset_computation(config.eval_batch_size) if client_data else None
  evaluating = evaluation.build_evaluation_process(model_fn, dataset_computation=computation)
  return training_loop.run_federated_training(training, evaluating, data, experiment.loop_config(config), run_dir,
                                              progress=False, log=lambda _: None, client_data=client_data)


@pytest.mark.parametrize("aggregator,algorithm", [("plain", "fedsgd"), ("secure", "fedavg")])
def test_datasets_built_on_the_worker_train_the_same_weights_bit_for_bit(smoke, tmp_path, aggregator, algorithm):
  config, data = smoke
  config = dataclasses.replace(config, aggregator=aggregator, algorithm=algorithm, client_epochs=2)
  client_data = worker_data.WorkerData(data, str(tmp_path / "worker"))
  written, total = client_data.export()
  assert written == total == sum(len(data.client_ids(s)) for s in nwp.SPLITS)
  assert sum(len(files) for _, _, files in os.walk(client_data.data_dir)) == total
  sent = _run(config, data, str(tmp_path / "sent"))
  built = _run(config, data, str(tmp_path / "built"), client_data)
  for a, b in zip(tf.nest.flatten(sent.model_weights.trainable), tf.nest.flatten(built.model_weights.trainable)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert built.history == [dict(h, **{"round_seconds": b["round_seconds"]}) for h, b in
                           zip(sent.history, built.history)]
  assert built.final_eval == sent.final_eval and 0 < built.final_eval["loss"]


def test_a_round_sends_each_client_a_file_name_and_an_order_not_its_windows(smoke, tmp_path):
  config, data = smoke
  client_data = worker_data.WorkerData(data, str(tmp_path))
  spec = experiment.loop_config(config).client_spec
  ids = data.train_client_ids[:3]
  inputs = client_data.client_datasets(ids, spec, "train", seed=0, round_num=1)
  for client, sent in zip(ids, inputs):
    assert sorted(sent) == ["key", "order"] and len(sent["key"]) == 40
    np.testing.assert_array_equal(sent["order"], data.row_order(client, spec, "train", 0, 1))
  # The computation reads the named file on the worker into the batches the driver would have built.
  client_data.export()
  built = client_data.dataset_computation(spec.batch_size)(inputs[0])
  expected = data.client_dataset(ids[0], spec, "train", 0, 1)
  for (x, y), (ex, ey) in zip(built, expected, strict=True):
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
  training = experiment.build_training_process(
      config, model_fn_lib.build_model_fn(experiment.model_config(config, data.vocab.size), data.element_spec,
                                          data.vocab.special_ids, seed=0), client_data=client_data,
      keep_state_on_worker=False)  # TFF's own process, whose `next` shows its type
  assert str(training.next.type_signature.parameter[1]) == "{<key=str,order=int32[?]>}@CLIENTS"


def test_files_are_named_by_their_content_and_exported_once(smoke, tmp_path):
  config, data = smoke
  first = worker_data.WorkerData(data, str(tmp_path))
  assert first.export()[0] > 0
  assert first.export()[0] == 0  # a rerun writes nothing
  other = experiment.load_nwp_data(dataclasses.replace(config, vocab_size=150), verbose=False)
  second = worker_data.WorkerData(other, str(tmp_path))
  client = data.train_client_ids[0]
  spec = nwp.ClientSpec()
  key = lambda d: d.client_datasets([client], spec)[0]["key"]  # noqa: E731
  assert key(first) != key(second)  # another vocabulary: other windows, other names
  assert second.export()[0] == second.export()[1]  # none of the first data's files is taken for it


def test_a_worker_without_the_files_stops_in_one_line_and_keeps_the_last_checkpoint(smoke, tmp_path):
  config, data = smoke
  client_data = worker_data.WorkerData(data, str(tmp_path / "worker"))
  client_data.export()
  run_dir = str(tmp_path / "run")
  _run(dataclasses.replace(config, rounds=1), data, run_dir, client_data)
  shutil.rmtree(client_data.data_dir)  # the worker's directory loses its data (another host's)
  os.makedirs(client_data.data_dir)
  with pytest.raises(worker_data.WorkerDataError) as raised:
    _run(config, data, run_dir, client_data)
  line = str(raised.value)
  assert "\n" not in line and line.startswith("a worker has no ") and client_data.data_dir in line
  assert "--export_worker_data_only" in line
  rows = training_loop.read_metrics_csv(os.path.join(run_dir, "metrics.csv"))
  assert [r["round"] for r in rows] == [1]
  saved = os.listdir(os.path.join(run_dir, "checkpoints"))
  assert [name for name in saved if name.startswith("round_")] == ["round_1"]


def test_the_directory_is_required(smoke):
  _, data = smoke
  with pytest.raises(ValueError, match="--worker_data_dir is empty"):
    worker_data.WorkerData(data, "")


def test_a_secure_round_streamed_in_groups_with_data_on_the_worker_trains_the_same_weights(smoke, tmp_path):
  """The secure client round in 2 groups (learning.client_groups), its client round composed with the
  dataset computation: the same weights bit for bit as one call a round with datasets sent."""
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  config, data = smoke
  config = dataclasses.replace(config, aggregator="secure")
  client_data = worker_data.WorkerData(data, str(tmp_path / "worker"))
  client_data.export()
  sent = _run(config, data, str(tmp_path / "sent"))
  try:
    runtime.use_local_runtime(num_subrounds=2)
    built = _run(config, data, str(tmp_path / "built"), client_data)
  finally:
    runtime.use_local_runtime()  # the rest of the suite runs on one call a round again
  for a, b in zip(tf.nest.flatten(sent.model_weights.trainable), tf.nest.flatten(built.model_weights.trainable)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert [h["secure/clients"] for h in built.history] == [config.clients_per_round] * config.rounds
