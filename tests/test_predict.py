"""Next-word suggestions from a finished run: the Python API and the command line."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tff_research import predict
from tff_research.learning import checkpoints
from tff_research.learning import experiment
from tff_research.learning.config import PRESETS


@pytest.fixture(scope="module")
def run_dir(shakespeare_dir, tmp_path_factory) -> str:
  """A finished smoke run (2 rounds, tiny model)."""
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir,
                               output_dir=str(tmp_path_factory.mktemp("runs")), experiment_name="predict")
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None)
  return result.run.run_dir


def _cli(python_env, repo_root, *args):
  return subprocess.run([sys.executable, "-m", "tff_research.predict", *args], cwd=repo_root,
                        env=python_env, capture_output=True, text=True, timeout=300, check=False)


def test_top_k_returns_likely_words_in_order(run_dir):
  predictor = predict.load_predictor(run_dir)
  suggestions = predictor.top_k("my good", 3)
  assert len(suggestions) == 3
  words, probs = zip(*suggestions)
  assert list(probs) == sorted(probs, reverse=True)
  assert all(0.0 < p <= 1.0 for p in probs)
  assert set(words) <= set(predictor.vocab.words)


def test_special_tokens_only_when_asked_and_probabilities_sum_to_one(run_dir):
  predictor = predict.load_predictor(run_dir)
  vocab = predictor.vocab
  everything = predictor.top_k("my good", vocab.size, include_special=True)
  assert len(everything) == vocab.size
  assert sum(p for _, p in everything) == pytest.approx(1.0, abs=1e-5)
  assert {"<pad>", "<oov>", "<bos>", "<eos>"} <= {w for w, _ in everything}
  words_only = predictor.top_k("my good", vocab.size)
  assert len(words_only) == len(vocab.words)


def test_prompt_is_encoded_without_eos_and_cut_to_the_training_window(run_dir):
  vocab = predict.load_predictor(run_dir).vocab
  assert predict.encode_prompt(vocab, "my good") == [vocab.bos_id, vocab.word_id("my"), vocab.word_id("good")]
  assert len(predict.encode_prompt(vocab, "the " * 50, max_length=20)) == 20
  with pytest.raises(predict.PredictError, match="empty"):
    predict.encode_prompt(vocab, "   ")


def test_reads_the_files_the_experiment_writes():
  assert predict.VOCAB_FILE == experiment.VOCAB_FILE
  assert predict.WEIGHTS_FILE == checkpoints.FINAL_WEIGHTS_FILE


def test_an_unfinished_run_suggests_from_its_latest_checkpoint_and_says_so(run_dir, tmp_path, python_env,
                                                                          repo_root):
  """Without the final weights: the checkpoint of round 2 holds the same model (it is the state after round 2)."""
  final = predict.load_predictor(run_dir)
  assert final.checkpoint_round is None
  partial = tmp_path / "partial"
  shutil.copytree(run_dir, partial)
  os.remove(partial / predict.WEIGHTS_FILE)
  latest = predict.load_predictor(str(partial))
  assert latest.checkpoint_round == 2
  for ours, theirs in zip(latest.model.weights, final.model.weights):
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
  assert latest.top_k("my good", 3) == final.top_k("my good", 3)
  done = _cli(python_env, repo_root, str(partial), "my good")
  assert done.returncode == 0, done.stderr
  assert "note: the run has not finished (2 of 2 rounds): suggestions from its checkpoint of round 2" in done.stderr
  shutil.rmtree(partial / "checkpoints")  # nothing trained yet: no weights anywhere
  with pytest.raises(predict.PredictError, match="has not finished a round yet: no model_weights.npz and no "):
    predict.load_predictor(str(partial))


def test_run_with_other_settings_is_refused(run_dir, tmp_path):
  other = tmp_path / "other"
  shutil.copytree(run_dir, other)
  hparams = json.loads((other / predict.HPARAMS_FILE).read_text())
  (other / predict.HPARAMS_FILE).write_text(json.dumps(dict(hparams, latent_size=hparams["latent_size"] + 1)))
  with pytest.raises(predict.PredictError, match="does not fit"):
    predict.load_predictor(str(other))


def test_cli_prints_suggestions(run_dir, python_env, repo_root):
  proc = _cli(python_env, repo_root, run_dir, "my good", "--top_k=3")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 3
  probs = [float(line.split()[-1]) for line in lines]
  assert probs == sorted(probs, reverse=True) and all(0.0 < p <= 1.0 for p in probs)
  expected = predict.load_predictor(run_dir).top_k("my good", 3)
  assert [line.split()[0] for line in lines] == [w for w, _ in expected]
  np.testing.assert_allclose(probs, [p for _, p in expected], atol=1e-4)


@pytest.mark.parametrize("args", [("{missing}", "to be"), ("{run}", "  ")], ids=["missing_dir", "empty_prompt"])
def test_cli_bad_input_is_one_error_line(args, run_dir, python_env, repo_root, tmp_path):
  args = [a.format(missing=str(tmp_path / "nope"), run=run_dir) for a in args]
  proc = _cli(python_env, repo_root, *args)
  assert proc.returncode == 2
  assert proc.stdout == ""
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
