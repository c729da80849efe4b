"""Your own Keras model (`--keras_model`, `run_experiment(keras_model=...)`): trained, aggregated, checkpointed,
evaluated and predicted from like the package's own, and refused in one line where it does not fit."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tff_research import predict
from tff_research.learning import experiment
from tff_research.learning import training_loop
from tff_research.learning.config import PRESETS
from tff_research.models import custom


def build_gru(vocab_size: int) -> tf.keras.Model:
  """A GRU language model, as a researcher would write one (no Input layer: built on its first call)."""
  return tf.keras.Sequential([tf.keras.layers.Embedding(vocab_size, 8), tf.keras.layers.GRU(12, return_sequences=True),
                              tf.keras.layers.Dense(vocab_size)])


def build_attention(vocab_size: int) -> tf.keras.Model:
  """A one-layer causal self-attention model (a tiny Transformer block) in the functional API."""
  ids = tf.keras.Input([None], dtype=tf.int32)
  x = tf.keras.layers.Embedding(vocab_size, 16)(ids)
  attended = tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x, use_causal_mask=True)
  x = tf.keras.layers.LayerNormalization()(x + attended)
  return tf.keras.Model(ids, tf.keras.layers.Dense(vocab_size)(x))


def build_pooled(vocab_size: int) -> tf.keras.Model:
  """Wrong for the task: one logit vector per sequence, not per token."""
  return tf.keras.Sequential([tf.keras.layers.Embedding(vocab_size, 4), tf.keras.layers.GlobalAveragePooling1D(),
                              tf.keras.layers.Dense(vocab_size)])


@pytest.fixture(scope="module")
def smoke(shakespeare_dir, tmp_path_factory):
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir,
                               output_dir=str(tmp_path_factory.mktemp("runs")))
  return config, experiment.load_nwp_data(config, verbose=False)


@pytest.mark.parametrize("builder", [build_gru, build_attention], ids=["gru", "attention"])
def test_your_model_trains_resumes_and_predicts(smoke, builder):
  config, data = smoke
  config = dataclasses.replace(config, experiment_name=f"own_{builder.__name__}", rounds=2)
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data,
                                     keras_model=builder)
  rows = training_loop.read_metrics_csv(os.path.join(result.run.run_dir, "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2] and all(np.isfinite(r["train/loss"]) for r in rows)
  reference = builder(data.vocab.size)
  reference(np.zeros([1, config.sequence_length], np.int32))
  assert [w.shape for w in result.run.model_weights.trainable] == [tuple(w.shape) for w in reference.trainable_weights]
  initial = experiment.build_model_fn(config, data, builder).initial_weights()  # seeded: the same twice
  again = experiment.build_model_fn(config, data, builder).initial_weights()
  assert all(np.array_equal(a, b) for a, b in zip(initial.trainable, again.trainable))
  assert any(not np.array_equal(a, b) for a, b in zip(initial.trainable, result.run.model_weights.trainable))
  resumed = experiment.run_experiment(dataclasses.replace(config, rounds=3), progress=False, plot=False,
                                      log=lambda _: None, data=data, keras_model=builder)
  assert resumed.run.resumed_from == 2 and resumed.run.rounds_completed == 3
  predictor = predict.load_predictor(resumed.run.run_dir, keras_model=builder)
  for ours, final in zip(predictor.model.trainable_weights, resumed.run.model_weights.trainable):
    np.testing.assert_array_equal(ours.numpy(), final)
  assert len(predictor.top_k("my good", 3)) == 3 and predictor.generate("my good", 4, seed=0)


def test_your_model_under_the_secure_sum(smoke):
  config, data = smoke
  config = dataclasses.replace(config, experiment_name="own_secure", rounds=2, aggregator="secure",
                               clients_per_round=4)
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data,
                                     keras_model=build_gru)
  rows = training_loop.read_metrics_csv(os.path.join(result.run.run_dir, "metrics.csv"))
  assert all(r["secure/clients"] == 4 for r in rows)


def test_a_model_that_does_not_fit_is_one_line(smoke):
  config, data = smoke
  with pytest.raises(ValueError, match=r"build_pooled's model gives logits of shape \(1, \d+\) for \[1, 20\] ids; "
                     r"the task needs \(1, 20, \d+\)"):
    experiment.build_model_fn(config, data, build_pooled)
  with pytest.raises(ValueError, match="returned int, not a tf.keras.Model"):
    custom.build_checked(lambda vocab_size: 3, 10, 5, "three")
  with pytest.raises(ValueError, match=r"failed: ZeroDivisionError"):
    custom.build_checked(lambda vocab_size: 1 / 0, 10, 5, "broken")
  with pytest.raises(ValueError, match="must be 'package.module:function', got 'nope'"):
    dataclasses.replace(config, keras_model="nope").validate()
  with pytest.raises(ValueError, match="cannot import no_such_module"):
    dataclasses.replace(config, keras_model="no_such_module:build").validate()
  with pytest.raises(ValueError, match="tests.test_custom_model has no function missing"):
    dataclasses.replace(config, keras_model="tests.test_custom_model:missing").validate()


def test_keras_model_from_the_command_line_and_predict(python_env, repo_root, shakespeare_dir, tmp_path):
  spec = "tests.test_custom_model:build_gru"
  done = subprocess.run([sys.executable, "-m", "experiments.train_nwp", "--preset=smoke",
                         f"--data_dir={shakespeare_dir}", f"--output_dir={tmp_path}", "--experiment_name=own",
                         f"--keras_model={spec}", "--noprogress"],
                        cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "Final test accuracy" in done.stdout
  suggested = subprocess.run([sys.executable, "-m", "tff_research.predict", str(tmp_path / "own"), "my good"],
                             cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=300, check=False)
  assert suggested.returncode == 0, suggested.stderr
  assert len(suggested.stdout.strip().splitlines()) == 5
  bad = subprocess.run([sys.executable, "-m", "experiments.train_nwp", "--preset=smoke", f"--output_dir={tmp_path}",
                        "--keras_model=tests.test_custom_model:missing"],
                       cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=120, check=False)
  assert bad.returncode == 2 and bad.stderr.strip() == (
      "error: --keras_model: tests.test_custom_model has no function missing")
