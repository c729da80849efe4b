"""Keras NWP model (LSTM / CIFG) and the NWP metrics."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tff_research.metrics import nwp_metrics
from tff_research.models import nwp as nwp_models


def test_model_maps_ids_to_logits_over_the_vocabulary():
  model = nwp_models.build_nwp_model(nwp_models.ModelConfig(vocab_size=50, embedding_size=8, latent_size=12))
  logits = model(np.ones([3, 7], np.int32))
  assert logits.shape == (3, 7, 50)


def test_cifg_has_three_quarters_of_the_lstm_recurrent_weights():
  def recurrent_params(cell):
    model = nwp_models.build_nwp_model(
        nwp_models.ModelConfig(vocab_size=30, embedding_size=8, latent_size=16, cell=cell))
    layer = model.get_layer(f"{cell}_0")
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
  assert recurrent_params("cifg") * 4 == recurrent_params("lstm") * 3


def test_seeded_models_start_identical():
  config = nwp_models.ModelConfig(vocab_size=20, embedding_size=4, latent_size=8, cell="cifg")
  a = nwp_models.build_nwp_model(config, seed=3).get_weights()
  b = nwp_models.build_nwp_model(config, seed=3).get_weights()
  assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_model_config_rejects_bad_values():
  with pytest.raises(ValueError, match="latent_size must be positive"):
    nwp_models.ModelConfig(vocab_size=10, latent_size=0)
  with pytest.raises(ValueError, match="unknown cell 'gru'"):
    nwp_models.ModelConfig(vocab_size=10, cell="gru")


def _logits_predicting(ids, vocab_size):
  return tf.one_hot(ids, vocab_size) * 10.0


SPECIAL = (0, 5, 6, 7)  # pad, oov, bos, eos in a vocabulary of size 8


def test_accuracy_without_special_tokens_ignores_pad_oov_bos_eos():
  y_true = tf.constant([[1, 2, 5, 7, 0]])
  y_pred = _logits_predicting([[1, 3, 5, 7, 0]], 8)  # right on 1, wrong on 2, right on specials
  metric = nwp_metrics.MaskedCategoricalAccuracy(SPECIAL)
  metric.update_state(y_true, y_pred)
  assert float(metric.result()) == pytest.approx(0.5)
  with_special = nwp_metrics.MaskedCategoricalAccuracy([0])
  with_special.update_state(y_true, y_pred)
  assert float(with_special.result()) == pytest.approx(3 / 4)


def test_recall_at_3_counts_target_among_top_three():
  y_true = tf.constant([[1, 2]])
  logits = tf.constant([[[0, 5, 4, 3, 2, 0, 0, 0], [0, 5, 4, 3, 2, 0, 0, 1]]], tf.float32)
  metric = nwp_metrics.MaskedCategoricalAccuracy(SPECIAL, top_k=3)
  metric.update_state(y_true, logits)
  assert float(metric.result()) == pytest.approx(1.0)
  top1 = nwp_metrics.MaskedCategoricalAccuracy(SPECIAL, top_k=1)
  top1.update_state(y_true, logits)
  assert float(top1.result()) == pytest.approx(0.5)


def test_perplexity_is_exp_of_masked_mean_cross_entropy():
  y_true = tf.constant([[1, 2, 0]])
  logits = tf.random.stateless_normal([1, 3, 8], seed=[1, 2])
  loss = nwp_metrics.MaskedCrossEntropy()
  ppl = nwp_metrics.MaskedCrossEntropy(perplexity=True)
  loss.update_state(y_true, logits)
  ppl.update_state(y_true, logits)
  per_token = tf.keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)[0, :2]
  assert float(loss.result()) == pytest.approx(float(tf.reduce_mean(per_token)), rel=1e-5)
  assert float(ppl.result()) == pytest.approx(math.exp(float(loss.result())), rel=1e-5)
  training_loss = nwp_metrics.MaskedSparseCategoricalCrossentropy()(y_true, logits)
  assert float(training_loss) == pytest.approx(float(loss.result()), rel=1e-5)


def test_metrics_pool_counts_across_clients():
  """Sum-then-finalize: the pooled accuracy, not the mean of client accuracies."""
  a, b = nwp_metrics.MaskedCategoricalAccuracy(SPECIAL), nwp_metrics.MaskedCategoricalAccuracy(SPECIAL)
  a.update_state(tf.constant([[1]]), _logits_predicting([[1]], 8))
  b.update_state(tf.constant([[1, 2, 3]]), _logits_predicting([[2, 3, 4]], 8))
  pooled = (a.correct + b.correct) / (a.total + b.total)
  assert float(pooled) == pytest.approx(0.25)


def test_training_loss_is_a_scalar_mean_over_tokens_despite_the_embedding_mask():
  model = nwp_models.build_nwp_model(nwp_models.ModelConfig(vocab_size=20, embedding_size=4, latent_size=8))
  x = tf.constant([[3, 4, 0, 0], [5, 6, 7, 0]])
  logits = model(x)
  assert getattr(logits, "_keras_mask", None) is None
  loss = nwp_metrics.MaskedSparseCategoricalCrossentropy()(x, logits)
  assert loss.shape == ()
