"""The driver of tests/test_several_hosts.py, run inside the test's own network namespace.

`python -m tests.netns_driver OUT.npz DATA_DIR RUN[;RUN...] [WORKER_DATA_DIR]`, each
RUN `aggregator[+data]@host:port[,host:port]`: trains 3 smoke rounds per RUN on
those workers and saves each run's final trainable weights and train losses;
`+data` builds the client datasets on the workers from WORKER_DATA_DIR (their
path; the driver writes nothing there, `data.worker_data`). The
secure runs inject the clients' rounding randomness so that runs can be
compared bit for bit (a real run draws it from each client's CSPRNG).
"""
import dataclasses
import sys

import numpy as np
import tensorflow as tf

from tff_research import runtime
from tff_research.aggregation import masked_sum
from tff_research.data import worker_data
from tff_research.learning import evaluation
from tff_research.learning import experiment
from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import training_loop
from tff_research.learning.config import PRESETS

ROUNDS = 3


def train(config, data, addresses, client_data=None):
  runtime.use_remote_workers(addresses)
  model_fn = model_fn_lib.build_model_fn(experiment.model_config(config, data.vocab.size), data.element_spec,
                                         data.vocab.special_ids, seed=0)
  rounding = masked_sum.reproducible_rounding(0) if config.aggregator == "secure" else None
  process = experiment.build_training_process(config, model_fn, rounding_randomness=rounding, client_data=client_data)
  source = client_data or data
  state, losses = process.initialize(), []
  spec = experiment.loop_config(config).client_spec
  for round_num in range(1, ROUNDS + 1):
    ids = training_loop.sample_clients(data.train_client_ids, config.clients_per_round, 0, round_num)
    output = process.next(state, source.client_datasets(ids, spec, "train", 0, round_num))
    state = output.state
    losses.append(evaluation.train_metrics(output.metrics)["loss"])
  weights = [np.asarray(w) for w in tf.nest.flatten(process.get_model_weights(state).trainable)]
  return weights, np.asarray(losses)


def main(out_path: str, data_dir: str, runs: str, worker_data_dir: str = "") -> None:
  base = dataclasses.replace(PRESETS["smoke"], data_dir=data_dir, clients_per_round=6)
  data = experiment.load_nwp_data(base, verbose=False)
  results = {}
  for run in runs.split(";"):
    aggregator, _, workers = run.partition("@")
    aggregator, on_workers, _ = aggregator.partition("+")
    client_data = worker_data.WorkerData(data, worker_data_dir) if on_workers else None
    weights, losses = train(dataclasses.replace(base, aggregator=aggregator), data, workers.split(","), client_data)
    key = f"{aggregator}{'_data' if on_workers else ''}_{len(workers.split(','))}"
    results[f"{key}_losses"] = losses
    results.update({f"{key}_w{i:02d}": w for i, w in enumerate(weights)})
  runtime.shutdown()
  np.savez(out_path, **results)


if __name__ == "__main__":
  main(*sys.argv[1:])
