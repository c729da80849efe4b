r"""Secure vs plain FedAvg on the demo NWP model: round time and accuracy, same seed.

  python -m benchmarks.secure_fedavg_nwp                    # demo config, 10 clients, 5 rounds
  python -m benchmarks.secure_fedavg_nwp --clients_per_round=100 --secure_neighbors=14 --rounds=5

Builds the demo preset's training process twice from the same seed, once
with TFF's weighted mean and once with `--aggregator=secure`, and runs them
side by side on the same sampled clients: round r of one, then round r of the
other, which one goes first alternating from round to round, so that a slow
spell of the machine hits both alike (give an odd --rounds: an even number of
steady rounds lets each go first equally often). Prints the median steady round (rounds
2..R) of each, the median over those rounds of secure / plain for the same
round (`secure_round_time_ratio`, the last line), the final federated test
accuracy and loss of each model, the secure sum's clipped count, and the
worker's CPU seconds per steady round for each (the secure sum's work is CPU
work: `secure_extra_worker_cpu_s` is what it adds to a round).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

from benchmarks import pairing
from tff_research.runtime import logs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--clients_per_round", type=int, default=10)
  parser.add_argument("--secure_neighbors", type=int, default=0)
  parser.add_argument("--secure_bits", type=int, default=0, help="0 = the package's choice (masked_sum.choose_bits)")
  parser.add_argument("--secure_clip", type=float, default=None)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  logs.configure_logging()
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.runtime import workers  # pylint: disable=g-import-not-at-top
  from tff_research.data import nwp  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment, process, training_loop  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top

  base = dataclasses.replace(PRESETS["demo"], rounds=args.rounds, clients_per_round=args.clients_per_round,
                             data_dir=args.data_dir)
  if args.secure_clip is not None:
    base = dataclasses.replace(base, secure_clip=args.secure_clip)
  configs = {"plain": base, "secure": dataclasses.replace(
      base, aggregator="secure", secure_neighbors=args.secure_neighbors, secure_bits=args.secure_bits)}
  for config in configs.values():
    config.validate()
  with runtime.local_runtime():
    data = experiment.load_nwp_data(base, verbose=False)
    loop = base.loop_config()
    model_fn = experiment.build_model_fn(base, data)
    processes = {name: process.build_training_process(model_fn, config.algorithm_config())
                 for name, config in configs.items()}
    states = {name: p.initialize() for name, p in processes.items()}
    times: dict[str, list[float]] = {name: [] for name in processes}
    secure_first: list[bool] = []
    cpu: dict[str, list[float]] = {name: [] for name in processes}
    clipped = 0.0
    upload = 0.0
    bits = 0
    for round_num in range(1, args.rounds + 1):
      ids = training_loop.sample_clients(data.train_client_ids, base.clients_per_round, base.seed, round_num)
      datasets = data.client_datasets(ids, loop.client_spec, "train", base.seed, round_num)
      order = ("plain", "secure") if round_num % 2 else ("secure", "plain")
      secure_first.append(order[0] == "secure")
      for name in order:
        start, start_cpu = time.perf_counter(), workers.worker_cpu_seconds()
        output = processes[name].next(states[name], datasets)
        states[name] = output.state
        times[name].append(time.perf_counter() - start)
        cpu[name].append(workers.worker_cpu_seconds() - start_cpu)
        if name == "secure":
          secure = process.secure_aggregation_metrics(output.metrics)
          clipped += secure.get("clipped", 0.0)
          upload = secure.get("upload_bytes_per_client", 0.0)
          bits = int(secure.get("bits", 0))
    eval_ids = training_loop.eval_client_ids(data, loop)
    eval_datasets = data.client_datasets(eval_ids, nwp.ClientSpec(1, loop.eval_batch_size, None, shuffle=False),
                                         split="test")
    evaluation = process.build_evaluation_process(model_fn)
    final = {}
    for name, p in processes.items():
      _, final[name] = process.evaluate(evaluation, evaluation.initialize(), p.get_model_weights(states[name]),
                                        eval_datasets)

  median = {name: statistics.median(pairing.steady(t)) for name, t in times.items()}
  print(f"clients/round={args.clients_per_round} rounds={args.rounds} neighbors={args.secure_neighbors or 'all'} "
        f"bits={bits} clip={base.secure_clip}")
  for name in ("plain", "secure"):
    print(f"{name}: median round {median[name]:.2f} s, final accuracy {final[name]['accuracy']:.4f}, "
          f"eval loss {final[name]['loss']:.4f}")
  print(f"secure: clipped values {clipped:.0f}, upload {upload:,.0f} B/client")
  for name in ("plain", "secure"):
    print(f"{name}_round_seconds=" + ",".join(f"{t:.2f}" for t in times[name]))
  for name in ("plain", "secure"):
    print(f"{name}_worker_cpu_s=" + ",".join(f"{t:.2f}" for t in cpu[name]))
  cpu_median = {name: statistics.median(pairing.steady(c)) for name, c in cpu.items()}
  print(f"worker_cpu_s_per_round plain={cpu_median['plain']:.2f} secure={cpu_median['secure']:.2f} "
        f"secure_extra_worker_cpu_s={statistics.median(pairing.steady([s - p for s, p in zip(cpu['secure'], cpu['plain'])])):.2f}")
  print(f"accuracy_difference_points={100 * (final['secure']['accuracy'] - final['plain']['accuracy']):+.3f}")
  print("\n".join(pairing.paired_summary("secure_round_time_ratio", times["secure"], times["plain"],
                                         went_first=secure_first)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
