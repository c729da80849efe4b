r"""Client datasets sent by the driver vs built on the worker (data/worker_data.py): round time and bytes.

  python -m benchmarks.worker_data --rounds=9                       # reference preset, 10 clients
  python -m benchmarks.worker_data --rounds=5 --clients_per_round=100

Builds the reference preset's training process twice from the same seed, one
taking datasets and one taking each client's file name and window order
(the files exported to a temporary directory first), and runs them side by
side on the same sampled clients, the order alternating by round. Prints
each side's median steady round, their paired ratio (built / sent), the
driver's CPU seconds to make a round's client inputs, the serialized size
of those inputs as TFF sends them (`value_serialization.serialize_value` of
the CLIENTS-placed argument), and whether the two final models are equal
bit for bit.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks import pairing
from tff_research.runtime import logs


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--clients_per_round", type=int, default=10)
  parser.add_argument("--data_dir", default=None)
  return parser.parse_args(argv)


def _serialized_bytes(process, inputs) -> int:
  """The bytes of a round's client argument as TFF serializes it for a worker."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executors import value_serialization  # pylint: disable=g-import-not-at-top
  member = process.next.type_signature.parameter[1].member
  proto, _ = value_serialization.serialize_value(inputs, tff.FederatedType(member, tff.CLIENTS))
  return proto.ByteSize()


def _side_by_side(base, data, client_data):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after logs.configure_logging)

  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  loop = experiment.loop_config(base)
  model_fn = experiment.build_model_fn(base, data)
  sources = {"sent": data, "built": client_data}
  processes = {name: experiment.build_training_process(base, model_fn, keep_state_on_worker=False,
                                                       client_data=None if name == "sent" else client_data)
               for name in sources}
  states = {name: p.initialize() for name, p in processes.items()}
  timing = {key: {name: [] for name in sources} for key in ("wall", "inputs_cpu", "bytes", "first")}
  for round_num in range(1, base.rounds + 1):
    ids = training_loop.sample_clients(data.train_client_ids, base.clients_per_round, base.seed, round_num)
    order = list(sources) if round_num % 2 else list(reversed(sources))
    for name in order:
      start_cpu = time.process_time()
      inputs = sources[name].client_datasets(ids, loop.client_spec, "train", base.seed, round_num)
      timing["inputs_cpu"][name].append(time.process_time() - start_cpu)
      if round_num == 1:
        timing["bytes"][name].append(_serialized_bytes(processes[name], inputs))
      start = time.perf_counter()
      states[name] = processes[name].next(states[name], inputs).state
      timing["wall"][name].append(time.perf_counter() - start)
      timing["first"][name].append(name == order[0])
  weights = {name: [np.asarray(w) for w in tf.nest.flatten(p.get_model_weights(states[name]).trainable)]
             for name, p in processes.items()}
  equal = all(np.array_equal(a, b) for a, b in zip(weights["sent"], weights["built"]))
  return timing, equal


def main(argv=None) -> int:
  args = _parse(argv)
  logs.configure_logging()
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.data import worker_data  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top
  base = dataclasses.replace(PRESETS["reference"], rounds=args.rounds, clients_per_round=args.clients_per_round,
                             data_dir=args.data_dir)
  with runtime.local_runtime(), tempfile.TemporaryDirectory() as files:
    data = experiment.load_nwp_data(base, verbose=False)
    client_data = worker_data.WorkerData(data, files)
    start = time.perf_counter()
    written, total = client_data.export()
    export_s = time.perf_counter() - start
    timing, equal = _side_by_side(base, data, client_data)
  wall = timing["wall"]
  print(f"reference preset, {args.clients_per_round} clients a round, {args.rounds} rounds; export of "
        f"{written} of {total} client files {export_s:.1f} s")
  for name in wall:
    print(f"{name}: median steady round {statistics.median(pairing.steady(wall[name])):.3f} s, client inputs "
          f"{timing['bytes'][name][0]:,} B serialized a round, driver CPU for them "
          f"{1e3 * statistics.median(timing['inputs_cpu'][name]):.1f} ms")
  print(f"final trainable weights equal bit for bit: {equal}")
  print("\n".join(pairing.paired_summary("worker_data_round_time_ratio", wall["built"], wall["sent"],
                                         went_first=timing["first"]["built"])))
  return 0


if __name__ == "__main__":
  sys.exit(main())
