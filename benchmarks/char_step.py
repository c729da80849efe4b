r"""One SGD step of TFF's Shakespeare character model: Keras's LSTM vs the fused-kernel one.

  python -m benchmarks.char_step                    # batch 4 and 10, one thread
  python -m benchmarks.char_step --threads=2 --steps=40

In one process, side by side: the char model (`models.nwp.char_model_config`,
embedding 8, 2 x LSTM 256, 90 classes) built twice from the same seed, once
with `lstm_implementation="keras"` and once with "block", each trained by a
`tf.function` step with an input signature on the same windows of 80 (+1)
characters with trailing padding. Steps alternate between the two sides so
that a slow spell hits both. Prints the median step time of each and their
ratio, and the largest gradient difference on the first batch. One thread is
what each of the worker's two concurrent client computations gets here
(`runtime.workers.worker_environment`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def _train_step(model, tf):
  optimizer = tf.keras.optimizers.SGD(1.0)

  def loss_fn(inputs, targets):
    logits = model(inputs, training=True)
    weights = tf.cast(targets != 0, tf.float32)
    per_token = tf.keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return tf.reduce_sum(per_token * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

  @tf.function(input_signature=[tf.TensorSpec([None, 80], tf.int32)] * 2)
  def step(inputs, targets):
    with tf.GradientTape() as tape:
      loss = loss_fn(inputs, targets)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  @tf.function(input_signature=[tf.TensorSpec([None, 80], tf.int32)] * 2)
  def gradients(inputs, targets):
    with tf.GradientTape() as tape:
      loss = loss_fn(inputs, targets)
    return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

  return step, gradients


def _windows(batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  tokens = rng.integers(1, 87, size=(batch_size, 81)).astype(np.int32)
  tokens[-1, 50:] = 0  # a client's last window is right-padded
  return tokens[:, :-1], tokens[:, 1:]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_sizes", default="4,10")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--threads", type=int, default=1)
  args = parser.parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top

  sides = {}
  for implementation in ("keras", "block"):
    config = nwp_models.ModelConfig(**{**nwp_models.char_model_config().__dict__,
                                       "lstm_implementation": implementation})
    model = nwp_models.build_nwp_model(config, seed=1)
    sides[implementation] = (model, *_train_step(model, tf))
  rng = np.random.default_rng(0)
  first = _windows(4, rng)
  keras_grads, block_grads = (sides[name][2](*first) for name in ("keras", "block"))
  print(f"params={sides['keras'][0].count_params()} max_gradient_difference="
        f"{max(float(np.abs(a - b).max()) for a, b in zip(keras_grads, block_grads)):.2e}")
  for batch_size in (int(b) for b in args.batch_sizes.split(",")):
    batch = _windows(batch_size, rng)
    times = {name: [] for name in sides}
    for name in sides:
      for _ in range(3):  # tracing and first allocations
        sides[name][1](*batch).numpy()
    for step in range(args.steps):
      for name in (("keras", "block") if step % 2 == 0 else ("block", "keras")):
        start = time.perf_counter()
        sides[name][1](*batch).numpy()
        times[name].append(time.perf_counter() - start)
    keras_ms, block_ms = (1000 * statistics.median(times[name]) for name in ("keras", "block"))
    print(f"batch={batch_size} threads={args.threads} keras_ms={keras_ms:.1f} block_ms={block_ms:.1f} "
          f"speedup={keras_ms / block_ms:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
