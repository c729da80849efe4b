r"""How large is num_examples x model delta per coordinate? The range a secure-sum clip must cover.

  python -m benchmarks.update_range                              # reference preset, 10 clients, 20 rounds
  python -m benchmarks.update_range --clients_per_round=100 --rounds=5

Trains the preset with plain FedAvg and, each round, runs the same clients'
local training from the current global model once more in a Federated Core
computation that returns, per client, the largest |num_examples x delta| and
how many coordinates exceed each threshold. What `--secure_clip` clips is
exactly this quantity (`aggregation.masked_sum` masks weight x update),
so the counts above a threshold are what that clip would clip.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from tff_research.runtime import logs

if TYPE_CHECKING:  # type hints only: these modules import TensorFlow
  import numpy as np

  from tff_research.data import nwp
  from tff_research.learning import model_fn as model_fn_lib
  from tff_research.learning import process
  from tff_research.learning import training_loop
  from tff_research.learning.config import ExperimentConfig

THRESHOLDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def _parse(argv: Optional[Sequence[str]]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
  """The command line's flags, and the parser (to report an unknown preset once the presets are imported)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="reference")
  parser.add_argument("--rounds", type=int, default=20)
  parser.add_argument("--clients_per_round", type=int, default=10)
  parser.add_argument("--data_dir", default=None)
  return parser, parser.parse_args(argv)


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ExperimentConfig:
  """The preset with the flags' rounds, clients and data folder, aggregated plainly; exits on an unknown preset."""
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top

  if args.preset not in PRESETS:
    parser.error(f"unknown --preset {args.preset!r}; choose from {sorted(PRESETS)}")
  config = dataclasses.replace(PRESETS[args.preset], rounds=args.rounds, clients_per_round=args.clients_per_round,
                               data_dir=args.data_dir, aggregator="plain")
  config.validate()
  return config


def _build_processes(model_fn: model_fn_lib.ModelFn,
                     algorithm: process.AlgorithmConfig) -> tuple[Any, Callable[..., Any]]:
  """The plain FedAvg process, and a computation of each client's update statistics from given weights."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.learning import optimizers  # pylint: disable=g-import-not-at-top
  from tff_research.learning import process  # pylint: disable=g-import-not-at-top

  training = process.build_training_process(model_fn, algorithm)
  # FedAvg's client work on its own, so that each client's update can be inspected before it is summed.
  client_work = tff.learning.templates.build_model_delta_client_work(
      model_fn, optimizers.build_optimizer(algorithm.client_optimizer, optimizers.CLIENT_OPTIMIZERS),
      client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
      loop_implementation=process.loop_implementation(algorithm.loop))
  weights_type = client_work.next.type_signature.parameter[1].member
  update_type = weights_type.trainable

  @tff.tensorflow.computation(update_type, np.float32)
  def update_stats(update, weight):
    # Weighted, as the secure sum masks (and clips) weight x update.
    magnitude = tf.concat([tf.reshape(tf.abs(u), [-1]) for u in tf.nest.flatten(update)], 0) * weight
    above = [tf.reduce_sum(tf.cast(magnitude > t, tf.float32)) for t in THRESHOLDS]
    return tf.stack([tf.reduce_max(magnitude), tf.cast(tf.size(magnitude), tf.float32), weight] + above)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             client_work.next.type_signature.parameter[2])
  def measure(weights, datasets):
    out = client_work.next(client_work.initialize(), tff.federated_broadcast(weights), datasets)
    return tff.federated_map(update_stats, (out.result.update, out.result.update_weight))

  return training, measure


def _measure_rounds(config: ExperimentConfig, data: nwp.NWPData, loop: training_loop.LoopConfig, rounds: int,
                    training: Any, measure: Callable[..., Any]) -> tuple[float, np.ndarray]:
  """Trains `rounds` rounds, printing each round's update range; returns the largest and the counts above."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top

  state = training.initialize()
  largest = 0.0
  totals = np.zeros(len(THRESHOLDS))
  for round_num in range(1, rounds + 1):
    ids = training_loop.sample_clients(data.train_client_ids, config.clients_per_round, config.seed, round_num)
    datasets = data.client_datasets(ids, loop.client_spec, "train", config.seed, round_num)
    # Measured from the global model before this round's update, on the clients it then trains.
    stats = np.array(measure(training.get_model_weights(state), datasets))
    largest = max(largest, float(stats[:, 0].max()))
    totals += stats[:, 3:].sum(axis=0)
    print(f"round {round_num}: max |w x delta| per client median {np.median(stats[:, 0]):.3f}, "
          f"max {stats[:, 0].max():.3f}; weights {stats[:, 2].min():.0f}-{stats[:, 2].max():.0f}; above "
          + ", ".join(f"{t:g}: {c:.0f}" for t, c in zip(THRESHOLDS, stats[:, 3:].sum(axis=0)))
          + f" of {stats[:, 1].sum():,.0f} values", flush=True)
    state = training.next(state, datasets).state
  return largest, totals


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Trains the preset with plain FedAvg and prints, round by round and overall, the range of weight x delta."""
  parser, args = _parse(argv)
  logs.configure_logging()

  # Imported only now: they import TensorFlow, whose logging must be configured first.
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top

  config = _config(parser, args)
  with runtime.local_runtime():
    data = experiment.load_nwp_data(config, verbose=False)
    loop = experiment.loop_config(config)
    model_fn = experiment.build_model_fn(config, data)
    training, measure = _build_processes(model_fn, experiment.algorithm_config(config))
    largest, totals = _measure_rounds(config, data, loop, args.rounds, training, measure)
  print(f"over {args.rounds} rounds x {config.clients_per_round} clients: largest |num_examples x delta| = "
        f"{largest:.3f}; above " + ", ".join(f"{t:g}: {c:.0f}" for t, c in zip(THRESHOLDS, totals)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
