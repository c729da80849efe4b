r"""How large is num_examples x model delta per coordinate? The range a secure-sum clip must cover.

  python -m benchmarks.update_range                              # reference preset, 10 clients, 20 rounds
  python -m benchmarks.update_range --clients_per_round=100 --rounds=5

Trains the preset with plain FedAvg and, each round, runs the same clients'
local training from the current global model once more in a Federated Core
computation that returns, per client, the largest |num_examples x delta| and
how many coordinates exceed each threshold. What `--secure_clip` clips is
exactly this quantity (`aggregation.secure_fed_avg` masks weight x update),
so the counts above a threshold are what that clip would clip.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from tff_research.runtime import logs

THRESHOLDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="reference")
  parser.add_argument("--rounds", type=int, default=20)
  parser.add_argument("--clients_per_round", type=int, default=10)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  logs.configure_logging()
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import optimizers  # pylint: disable=g-import-not-at-top
  from tff_research.learning import process  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top

  if args.preset not in PRESETS:
    parser.error(f"unknown --preset {args.preset!r}; choose from {sorted(PRESETS)}")
  config = dataclasses.replace(PRESETS[args.preset], rounds=args.rounds, clients_per_round=args.clients_per_round,
                               data_dir=args.data_dir, aggregator="plain")
  config.validate()
  with runtime.local_runtime():
    data = experiment.load_nwp_data(config, verbose=False)
    loop = config.loop_config()
    model_fn = experiment.build_model_fn(config, data)
    training = process.build_training_process(model_fn, config.algorithm_config())
    client_work = tff.learning.templates.build_model_delta_client_work(
        model_fn, optimizers.build_optimizer(config.algorithm_config().client_optimizer,
                                             optimizers.CLIENT_OPTIMIZERS),
        client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
        loop_implementation=process.loop_implementation(config.algorithm_config().loop))
    weights_type = client_work.next.type_signature.parameter[1].member
    update_type = weights_type.trainable

    @tff.tensorflow.computation(update_type, np.float32)
    def update_stats(update, weight):
      magnitude = tf.concat([tf.reshape(tf.abs(u), [-1]) for u in tf.nest.flatten(update)], 0) * weight
      above = [tf.reduce_sum(tf.cast(magnitude > t, tf.float32)) for t in THRESHOLDS]
      return tf.stack([tf.reduce_max(magnitude), tf.cast(tf.size(magnitude), tf.float32), weight] + above)

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                               client_work.next.type_signature.parameter[2])
    def measure(weights, datasets):
      out = client_work.next(client_work.initialize(), tff.federated_broadcast(weights), datasets)
      return tff.federated_map(update_stats, (out.result.update, out.result.update_weight))

    state = training.initialize()
    largest = 0.0
    totals = np.zeros(len(THRESHOLDS))
    for round_num in range(1, args.rounds + 1):
      ids = training_loop.sample_clients(data.train_client_ids, config.clients_per_round, config.seed, round_num)
      datasets = data.client_datasets(ids, loop.client_spec, "train", config.seed, round_num)
      stats = np.array(measure(training.get_model_weights(state), datasets))
      largest = max(largest, float(stats[:, 0].max()))
      totals += stats[:, 3:].sum(axis=0)
      print(f"round {round_num}: max |w x delta| per client median {np.median(stats[:, 0]):.3f}, "
            f"max {stats[:, 0].max():.3f}; weights {stats[:, 2].min():.0f}-{stats[:, 2].max():.0f}; above "
            + ", ".join(f"{t:g}: {c:.0f}" for t, c in zip(THRESHOLDS, stats[:, 3:].sum(axis=0)))
            + f" of {stats[:, 1].sum():,.0f} values", flush=True)
      state = training.next(state, datasets).state
  print(f"over {args.rounds} rounds x {config.clients_per_round} clients: largest |num_examples x delta| = "
        f"{largest:.3f}; above " + ", ".join(f"{t:g}: {c:.0f}" for t, c in zip(THRESHOLDS, totals)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
