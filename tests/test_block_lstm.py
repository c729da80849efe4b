"""The fused-kernel LSTM computes what Keras's masked LSTM computes, for trailing padding."""
import numpy as np
import pytest
import tensorflow as tf

from tff_research.models import nwp as nwp_models


def _models(seed=7, **overrides):
  config = dict(vocab_size=30, embedding_size=5, latent_size=12, num_layers=2, projection=False,
                kernel_initializer="he_normal")
  config.update(overrides)
  keras_model = nwp_models.build_nwp_model(nwp_models.ModelConfig(**config, lstm_implementation="keras"), seed=seed)
  block_model = nwp_models.build_nwp_model(nwp_models.ModelConfig(**config, lstm_implementation="block"), seed=seed)
  return keras_model, block_model


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 30, size=(4, 11)).astype(np.int32)
  tokens[1, 6:] = 0  # trailing padding, as next_char windows and padded word batches have
  tokens[3, 2:] = 0
  return tokens[:, :-1], tokens[:, 1:]


def _masked_loss(model, inputs, targets):
  logits = model(inputs, training=True)
  weights = tf.cast(targets != 0, tf.float32)
  per_token = tf.keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
  return tf.reduce_sum(per_token * weights) / tf.reduce_sum(weights)


def test_same_seed_same_weights_and_parameter_count():
  keras_model, block_model = _models()
  assert keras_model.count_params() == block_model.count_params()
  assert [w.shape for w in keras_model.weights] == [w.shape for w in block_model.weights]
  for a, b in zip(keras_model.get_weights(), block_model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_outputs_at_real_tokens_loss_and_gradients_equal_keras():
  keras_model, block_model = _models()
  inputs, targets = _batch()
  real = inputs != 0
  np.testing.assert_allclose(block_model(inputs).numpy()[real], keras_model(inputs).numpy()[real],
                             rtol=1e-5, atol=1e-6)
  grads = []
  for model in (keras_model, block_model):
    with tf.GradientTape() as tape:
      loss = _masked_loss(model, inputs, targets)
    grads.append((float(loss), [tf.convert_to_tensor(g).numpy()
                                for g in tape.gradient(loss, model.trainable_variables)]))
  assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
  for keras_grad, block_grad in zip(grads[0][1], grads[1][1]):
    assert np.abs(keras_grad).max() > 0
    np.testing.assert_allclose(block_grad, keras_grad, rtol=1e-4, atol=1e-7)


def test_block_runs_in_a_traced_function_with_unknown_batch_and_length():
  _, block_model = _models()

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2)
  def loss_and_grads(inputs, targets):
    with tf.GradientTape() as tape:
      loss = _masked_loss(block_model, inputs, targets)
    return loss, tape.gradient(loss, block_model.trainable_variables)

  inputs, targets = _batch()
  loss, grads = loss_and_grads(inputs, targets)
  assert np.isfinite(float(loss)) and all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
  loss_short, _ = loss_and_grads(inputs[:2, :4], targets[:2, :4])
  assert np.isfinite(float(loss_short))


def test_block_refuses_cifg():
  with pytest.raises(ValueError, match="LSTM cells only"):
    nwp_models.ModelConfig(vocab_size=10, cell="cifg", lstm_implementation="block")
  with pytest.raises(ValueError, match="unknown LSTM implementation"):
    nwp_models.ModelConfig(vocab_size=10, lstm_implementation="cudnn")
