"""Held-out users and a validation split: clients training never sees, and a test that tuning never reads."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import test_stackoverflow
from tff_research.data import datasets
from tff_research.data import federated_text
from tff_research.data import nwp
from tff_research.data import splits
from tff_research.data import stackoverflow
from tff_research.learning import experiment
from tff_research.learning import training_loop
from tff_research.learning.config import PRESETS


def _private(i: int) -> str:
  """A word that only client i writes (letters only: the word tokenizer drops digits)."""
  return "private" + "".join(chr(97 + int(d)) for d in f"{i:02d}")


def _corpus(clients=20):
  train = {f"user{i:02d}": ["common words of a user here", f"{_private(i)} token again"] for i in range(clients)}
  test = {f"user{i:02d}": ["later common words"] for i in range(0, clients, 2)}
  return federated_text.FederatedText("toy", train, test)


def test_held_out_users_leave_training_the_test_split_and_the_vocabulary():
  corpus = splits.hold_out_users(_corpus(), 0.25)
  assert len(corpus.heldout) == 5
  assert not set(corpus.heldout) & (set(corpus.train) | set(corpus.test))
  for client in corpus.heldout:  # all of its texts, train part first
    original = _corpus()
    assert corpus.heldout[client] == original.train[client] + original.test.get(client, [])
  data = nwp.build_nwp_data(corpus, vocab_size=1000)
  vocabulary = set(data.vocab.words)
  for client in corpus.heldout:  # a word only a held-out client wrote is out of vocabulary
    assert _private(int(client[4:])) not in vocabulary
  for client in corpus.train:
    assert _private(int(client[4:])) in vocabulary
  assert sorted(data.heldout) == sorted(corpus.heldout) and data.client_ids("heldout") == sorted(corpus.heldout)
  assert "5 of 20 clients held out whole from training" in corpus.split_note
  assert "5 held-out clients" in corpus.summary()


def test_the_choice_depends_on_the_ids_only():
  forward = splits.hold_out_users(_corpus(), 0.3)
  shuffled = _corpus()
  shuffled.train = dict(reversed(list(shuffled.train.items())))
  assert sorted(splits.hold_out_users(shuffled, 0.3).heldout) == sorted(forward.heldout)
  assert sorted(splits.hold_out_users(_corpus(), 0.0).train) == sorted(_corpus().train)  # 0: nothing moves
  # A larger share holds out a superset: growing the held-out set never returns a user to training.
  assert set(forward.heldout) <= set(splits.hold_out_users(_corpus(), 0.6).heldout)


@pytest.mark.parametrize("share, message", [
    (1.0, "heldout_clients must be in [0, 1), the share of clients it takes; got 1.0"),
    (-0.1, "heldout_clients must be in [0, 1), the share of clients it takes; got -0.1"),
])
def test_bad_shares_are_one_line(share, message):
  with pytest.raises(ValueError) as error:
    splits.hold_out_users(_corpus(), share)
  assert str(error.value) == message


def test_one_train_client_cannot_be_held_out():
  corpus = federated_text.FederatedText("one", {"a": ["x y z"]}, {})
  with pytest.raises(federated_text.DataError, match="leaves no train client"):
    splits.hold_out_users(corpus, 0.5)


def test_validation_takes_a_share_of_the_test_clients():
  data = nwp.build_nwp_data(_corpus(), vocab_size=100)
  test_before = set(data.test)
  data.split_validation(0.4)
  assert len(data.validation) == 4 and not set(data.validation) & set(data.test)
  assert set(data.validation) | set(data.test) == test_before
  again = nwp.build_nwp_data(_corpus(), vocab_size=100)
  again.split_validation(0.4)
  assert sorted(again.validation) == sorted(data.validation)
  with pytest.raises(ValueError, match="already has a validation split"):
    data.split_validation(0.4)


def test_stackoverflow_held_out_users_are_tffs_heldout_split(tmp_path):
  test_stackoverflow.write_sqlite(os.path.join(tmp_path, stackoverflow.SQLITE_NAME),
                                  test_stackoverflow._fixture_texts())  # pylint: disable=protected-access
  corpus = datasets.load_federated_text("stackoverflow", str(tmp_path), verbose=False, heldout_clients=0.1)
  assert list(corpus.heldout) == ["00010"] and "00010" not in corpus.train
  assert not datasets.load_federated_text("stackoverflow", str(tmp_path), verbose=False).heldout
  with pytest.raises(ValueError) as error:
    datasets.load_federated_text("stackoverflow", str(tmp_path), verbose=False, heldout_clients=0.3)
  assert str(error.value) == ("heldout_clients on stackoverflow is TFF's heldout split, a tenth of the users: "
                              "use 0.1 (or 0 for none); got 0.3")


@pytest.fixture(scope="module")
def held_out_run(shakespeare_dir, tmp_path_factory):
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir, rounds=3, eval_every=1,
                               heldout_clients=0.2, validation_fraction=0.5,
                               output_dir=str(tmp_path_factory.mktemp("runs")), experiment_name="heldout")
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None)
  return config, result


def test_held_out_clients_are_never_sampled_and_each_set_is_named_in_metrics_csv(held_out_run):
  config, result = held_out_run
  data = result.data
  assert data.heldout and not set(data.heldout) & set(data.train)
  sampled = {c for r in range(1, config.rounds + 1)
             for c in training_loop.sample_clients(data.train_client_ids, config.clients_per_round, config.seed, r)}
  assert not sampled & set(data.heldout)
  rows = training_loop.read_metrics_csv(os.path.join(config.run_dir, "metrics.csv"))
  with_set = {group: [int(r["round"]) for r in rows if f"{group}/accuracy" in r]
              for group in ("validation", "eval", "heldout")}
  # Tuning reads validation every round; test and the held-out users only at the end.
  assert with_set == {"validation": [1, 2, 3], "eval": [3], "heldout": [3]}
  assert set(result.run.final_evaluations) == {"eval", "validation", "heldout"}
  assert result.run.final_evaluations["eval"] == result.run.final_eval
  assert result.run.evaluated_client_ids["heldout"] and (
      set(result.run.evaluated_client_ids["heldout"]) <= set(data.heldout))
  assert not set(result.run.evaluated_client_ids["validation"]) & set(result.run.evaluated_client_ids["eval"])
  for group in ("eval", "validation", "heldout"):
    assert 0.0 <= result.run.final_evaluations[group]["accuracy"] <= 1.0


def test_a_finished_rerun_reports_every_set_from_metrics_csv(held_out_run):
  config, result = held_out_run
  again = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None)
  assert again.run.resumed_from == config.rounds
  for group, metrics in result.run.final_evaluations.items():
    assert again.run.final_evaluations[group] == pytest.approx(metrics, rel=1e-6)


def test_held_out_accuracy_equals_an_evaluation_of_the_final_weights_on_those_clients(held_out_run):
  config, result = held_out_run
  from tff_research.learning import evaluation  # pylint: disable=g-import-not-at-top
  model_fn = experiment.build_model_fn(config, result.data)
  process = evaluation.build_evaluation_process(model_fn)
  ids = result.run.evaluated_client_ids["heldout"]
  spec = nwp.ClientSpec(1, config.eval_batch_size, None, shuffle=False)
  _, metrics = evaluation.evaluate(process, process.initialize(), result.run.model_weights,
                                   result.data.client_datasets(ids, spec, split="heldout"))
  assert metrics["accuracy"] == pytest.approx(result.run.final_evaluations["heldout"]["accuracy"], abs=1e-6)
  assert np.isfinite(metrics["loss"])


@pytest.mark.parametrize("flag, line", [
    ("--heldout_clients=1", "error: --heldout_clients must be in [0, 1), the share of clients it takes; got 1.0"),
    ("--validation_fraction=-0.5",
     "error: --validation_fraction must be in [0, 1), the share of clients it takes; got -0.5"),
])
def test_bad_shares_on_the_command_line_exit_2_with_one_line(python_env, repo_root, tmp_path, flag, line):
  done = subprocess.run([sys.executable, "-m", "experiments.train_nwp", "--preset=smoke", f"--output_dir={tmp_path}",
                         flag], cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 2 and done.stderr.strip().splitlines() == [line]
