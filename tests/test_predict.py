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
  assert predict.BASELINE_FILE == experiment.BASELINE_FILE


def test_a_model_below_the_unigram_baseline_says_so(run_dir, tmp_path, python_env, repo_root):
  with open(os.path.join(run_dir, predict.BASELINE_FILE), encoding="utf-8") as f:
    figures = json.load(f)
  assert figures["round"] == 2 and figures["eval_clients"] == 4
  below = figures["accuracy"] <= figures["unigram_accuracy"]
  assert (predict.below_baseline_note(run_dir) is not None) == below
  for accuracy, noted in ((0.0, True), (figures["unigram_accuracy"] + 0.01, False)):
    copy = tmp_path / f"acc{accuracy}"
    shutil.copytree(run_dir, copy)
    (copy / predict.BASELINE_FILE).write_text(json.dumps(dict(figures, accuracy=accuracy)))
    done = _cli(python_env, repo_root, str(copy), "my good")
    assert done.returncode == 0, done.stderr
    assert ("is at or below the unigram baseline" in done.stderr) == noted


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


def _greedy(predictor, prompt, tokens):
  """The most likely allowed token at each step: what sampling tends to as temperature -> 0, or at top-k 1."""
  vocab = predictor.vocab
  ids, words = predict.encode_prompt(vocab, prompt), []
  banned = {vocab.pad_id, vocab.bos_id, *vocab.oov_ids}
  for _ in range(tokens):
    probs = predictor._probabilities(ids)  # pylint: disable=protected-access
    next_id = next(int(i) for i in np.argsort(-probs, kind="stable") if int(i) not in banned)
    if next_id == vocab.eos_id:
      break
    ids.append(next_id)
    words.append(vocab.decode_id(next_id))
  return words


def test_generation_is_repeatable_with_a_seed_and_greedy_at_the_limits(run_dir):
  predictor = predict.load_predictor(run_dir)
  first = predictor.generate("my good", 12, seed=4)
  assert first == predictor.generate("my good", 12, seed=4)
  samples = {predictor.generate("my good", 12, temperature=2.0) for _ in range(5)}
  assert len(samples) > 1  # no seed: fresh randomness each call
  greedy = " ".join(_greedy(predictor, "my good", 12))
  assert predictor.generate("my good", 12, top_k=1, seed=1) == greedy
  assert predictor.generate("my good", 12, temperature=1e-4, seed=2) == greedy
  assert predictor.generate("my good", 12, top_p=1e-9, seed=3) == greedy
  words = first.split()
  assert 0 < len(words) <= 12 and set(words) <= set(predictor.vocab.words)  # never pad, OOV or BOS


def test_sampling_follows_the_reshaped_distribution():
  """Four tokens of probability .5, .3, .15, .05 (after pad, OOV, BOS, EOS): top-k, top-p and temperature."""
  from tff_research.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.Vocabulary(("a", "b", "c", "d"), 1)
  probs = np.zeros(vocab.size)
  for word, p in zip("abcd", (0.5, 0.3, 0.15, 0.05)):
    probs[vocab.word_id(word)] = p
  rng = np.random.default_rng(0)

  def frequencies(**kwargs):
    draws = [predict.sample_next_id(probs, rng, vocab, **kwargs) for _ in range(20000)]
    return {vocab.decode_id(i): draws.count(i) / len(draws) for i in set(draws)}

  plain = frequencies()
  assert set(plain) == set("abcd") and all(abs(plain[w] - p) < 0.015 for w, p in zip("abcd", (.5, .3, .15, .05)))
  top2 = frequencies(top_k=2)
  assert set(top2) == {"a", "b"} and abs(top2["a"] - 0.625) < 0.015
  nucleus = frequencies(top_p=0.75)  # .5 + .3 reaches .75: a and b only
  assert set(nucleus) == {"a", "b"}
  hot = frequencies(temperature=2.0)  # p^(1/2), renormalized: d rises from .05 to .12
  want_d = 0.05**0.5 / sum(p**0.5 for p in (0.5, 0.3, 0.15, 0.05))
  assert abs(hot["d"] - want_d) < 0.015


@pytest.mark.parametrize("flags,message", [
    (["--generate=5", "--temperature=0"], "--temperature must be positive, got 0.0"),
    (["--generate=5", "--top_p=1.5"], "--top_p must be in (0, 1], got 1.5"),
    (["--generate=5", "--sample_top_k=-1"], "--sample_top_k must be 0 (all) or positive, got -1"),
    (["--generate=-2"], "--generate must be positive, got -2"),
])
def test_bad_sampling_settings_are_one_line(run_dir, python_env, repo_root, flags, message):
  done = _cli(python_env, repo_root, run_dir, "my good", *flags)
  assert done.returncode == 2 and done.stderr.strip() == f"error: {message}"


def test_cli_generates_text(run_dir, python_env, repo_root):
  done = _cli(python_env, repo_root, run_dir, "my good", "--generate=8", "--seed=7", "--temperature=0.8")
  assert done.returncode == 0, done.stderr
  again = _cli(python_env, repo_root, run_dir, "my good", "--generate=8", "--seed=7", "--temperature=0.8")
  assert done.stdout == again.stdout and done.stdout.startswith("my good ")
  assert done.stdout.strip() == "my good " + predict.load_predictor(run_dir).generate("my good", 8, 0.8, seed=7)


def test_a_character_model_generates_characters(shakespeare_dir, tmp_path):
  from tff_research.papers import common  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(common.CHAR_SMOKE_BASE, data_dir=shakespeare_dir, output_dir=str(tmp_path),
                               experiment_name="char")
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None)
  predictor = predict.load_predictor(result.run.run_dir)
  text = predictor.generate("To be, or not to", 30, seed=0)
  # One character a token, joined as they are (no spaces put between them), from TFF's character vocabulary.
  assert predictor.vocab.tokenizer == "bytes" and 0 < len(text) <= 30 and set(text) <= set(predictor.vocab.words)
  assert text == predictor.generate("To be, or not to", 30, seed=0)
