"""The next-character task against TFF 0.87's own Shakespeare character baseline, and McMahan et al.'s line split."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_models
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_research.data import federated_text
from tff_research.data import next_char
from tff_research.data import nwp
from tff_research.learning import experiment
from tff_research.learning.config import PRESETS
from tff_research.learning.config import ExperimentConfig
from tff_research.models import nwp as nwp_models
from tff_research.papers import adaptive_optimizers_char
from tff_research.papers import common
from tff_research.papers import fedavg_vs_fedsgd_char


@pytest.fixture(scope="module")
def corpus():
  return next_char.mcmahan_shakespeare()


def test_ids_are_tffs(corpus):
  vocab = next_char.char_vocabulary()
  pad, oov, bos, eos = char_prediction_preprocessing.get_special_tokens()
  assert (vocab.pad_id, vocab.oov_ids, vocab.bos_id, vocab.eos_id) == (pad, (oov,), bos, eos)
  assert vocab.size == 90 and len(next_char.CHAR_VOCAB) == 86


@pytest.mark.parametrize("client_id", ["hamlet/HAMLET", "the-tempest/BOATSWAIN"])
def test_batches_equal_tffs_preprocessing(corpus, client_id):
  """Same client, same batches: TFF's `create_preprocess_fn` (unshuffled) and ours."""
  texts = corpus.train[client_id]
  texts = texts + ["Caf\u00e9 \u2014 fa\u00e7ade"]  # non-ASCII: several OOV bytes each, in both
  spec = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=4, shuffle_buffer_size=1)
  preprocess = char_prediction_preprocessing.create_preprocess_fn(spec, sequence_length=80)
  theirs = list(preprocess(tf.data.Dataset.from_tensor_slices({"snippets": texts})).as_numpy_iterator())
  data = next_char.build_char_data(federated_text.FederatedText("one", {client_id: texts}, {}), 80)
  ours = list(data.client_dataset(client_id, nwp.ClientSpec(1, 4, None, shuffle=False)).as_numpy_iterator())
  assert len(ours) == len(theirs) > 1
  for (x, y), (tx, ty) in zip(ours, theirs):
    np.testing.assert_array_equal(x, tx)
    np.testing.assert_array_equal(y, ty)
  assert next_char.char_vocabulary().oov_ids[0] in np.concatenate([x.ravel() for x, _ in ours])


def test_model_matches_tffs():
  theirs = char_prediction_models.create_recurrent_model(vocab_size=90, sequence_length=80)
  ours = nwp_models.build_nwp_model(experiment.model_config(PRESETS["shakespeare_char"], 90), seed=0)
  assert ours.count_params() == theirs.count_params() == 820_522
  assert [w.shape for w in ours.trainable_weights] == [w.shape for w in theirs.trainable_weights]


def test_mcmahan_split(corpus):
  """Roles with >= 2 texts; the last 20 %, rounded up, test (McMahan et al.: 1,146 clients)."""
  assert 1_100 <= len(corpus.train) <= 1_200
  assert set(corpus.train) == set(corpus.test)
  for client_id, train in corpus.train.items():
    n = len(train) + len(corpus.test[client_id])
    assert len(corpus.test[client_id]) == max(1, int(np.ceil(0.2 * n)))
  data = next_char.build_char_data(corpus)
  assert data.accuracy_excluded_ids == (0,)
  # Always predicting the most frequent character (a space) is right about one time in six.
  assert data.vocab.decode_id(nwp.most_frequent_token(data)) == " "
  assert 0.1 < nwp.unigram_baseline_accuracy(data) < 0.25


@pytest.fixture(scope="module")
def line_data():
  return next_char.build_char_data(next_char.mcmahan_shakespeare("line"))


def test_line_split_matches_mcmahan_et_als_figures(line_data):
  """The line unit against McMahan et al. 2017 (Section 3 and Table 2's u column).

  Tolerances, relative to the paper's figures: clients within 1 % (theirs
  1,146: another edition of the plays names some roles differently),
  train and test characters within 5 % (3,564,579 / 870,014), and u within
  5 % for each Table 2 setting (E, B) = (1, 10), (5, 10), (1, 50): 7.4, 37.1,
  1.5. u is the paper's u = E n / (K B), the expected local updates per
  client per round, with n the train examples of all K clients; our
  examples are the train windows (one window per line of up to 79 bytes).
  Measured: 1,154 clients, 3,423,800 / 866,242 characters, u = 7.57, 37.85,
  1.51.
  """
  paper = fedavg_vs_fedsgd_char.PAPER
  figures = next_char.split_figures(line_data)
  assert figures["clients"] == pytest.approx(paper["clients"], rel=0.01)
  assert figures["train_characters"] == pytest.approx(paper["train_characters"], rel=0.05)
  assert figures["test_characters"] == pytest.approx(paper["test_characters"], rel=0.05)
  for epochs, batch_size in fedavg_vs_fedsgd_char.TABLE2_SETTINGS:
    u = next_char.updates_per_round(line_data, epochs, batch_size)
    assert u == pytest.approx(paper["updates_per_round"][f"E={epochs}, B={batch_size}"], rel=0.05)
  assert fedavg_vs_fedsgd_char.data_config("paper").shakespeare_unit == "line"


def test_line_unit_splits_each_role_s_lines_and_counts_bytes(corpus):
  """Same roles as the speech unit; each line is one text; the last 20 % of a role's lines test."""
  lines = next_char.mcmahan_shakespeare("line")
  assert set(lines.train) == set(corpus.train)
  role = "hamlet/HAMLET"
  all_lines = lines.train[role] + lines.test[role]
  assert " ".join(all_lines) == " ".join(corpus.train[role] + corpus.test[role])
  assert len(lines.test[role]) == int(np.ceil(0.2 * len(all_lines)))
  assert max(len(t) for t in all_lines) < min(200, max(len(t) for t in corpus.train[role]))
  data = next_char.build_char_data(lines)
  figures = next_char.split_figures(data)
  assert (figures["train_characters"], figures["test_characters"]) == next_char.character_counts(lines)


def test_speeches_stay_the_default_where_they_were():
  """The Python default, the flag's default, TFF's character preset and Reddi et al.'s experiment."""
  import inspect  # pylint: disable=g-import-not-at-top
  assert inspect.signature(next_char.mcmahan_shakespeare).parameters["unit"].default == "speech"
  assert ExperimentConfig().shakespeare_unit == "speech"
  assert PRESETS["shakespeare_char"].shakespeare_unit == "speech"
  assert {r.config.shakespeare_unit for r in adaptive_optimizers_char.plan("paper")} == {"speech"}
  assert not hasattr(adaptive_optimizers_char, "data_config")  # the runner loads its task's base: speeches
  assert common.base_config("paper", "next_char").shakespeare_unit == "speech"
  assert {r.config.shakespeare_unit for r in fedavg_vs_fedsgd_char.plan("paper", 1154)} == {"line"}


@pytest.mark.parametrize("overrides, message", [
    ({"task": "next_char", "shakespeare_unit": "verse"}, "--shakespeare_unit='verse' is not one of: speech, line"),
    ({"task": "next_char"}, "--vocab_size applies to --task=next_word: --task=next_char has its own fixed "
     "vocabulary (TFF's characters)"),  # the smoke preset's vocab_size=200 would be ignored silently
    ({"shakespeare_unit": "line"}, "--shakespeare_unit applies to --task=next_char with --dataset=shakespeare"),
])
def test_a_bad_unit_is_one_line(overrides, message):
  with pytest.raises(ValueError) as error:
    dataclasses.replace(PRESETS["smoke"], **overrides).validate()
  assert str(error.value) == message
  with pytest.raises(ValueError, match="unit='verse' is not one of: speech, line"):
    next_char.mcmahan_shakespeare("verse")


def test_a_bad_unit_on_the_command_line_exits_2_with_one_line(python_env, repo_root):
  proc = subprocess.run([sys.executable, "-m", "experiments.train_nwp", "--preset=shakespeare_char",
                         "--shakespeare_unit=verse"], cwd=repo_root, env=python_env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines() == ["error: --shakespeare_unit='verse' is not one of: speech, line"]
