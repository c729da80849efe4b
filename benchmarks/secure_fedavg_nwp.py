r"""Secure vs plain FedAvg on the reference NWP model (preset "reference"): round time and accuracy, same seed.

  python -m benchmarks.secure_fedavg_nwp --rounds=21                       # 10 clients, AES-CTR and Philox masks
  python -m benchmarks.secure_fedavg_nwp --clients_per_round=100 --rounds=21
  python -m benchmarks.secure_fedavg_nwp --clients_per_round=1000 --clients_per_subround=50 --rounds=2 \
      --secure_prg=aes-ctr
  python -m benchmarks.secure_fedavg_nwp --clients_per_round=200 --clients_per_subround=25 --num_workers=2 \
      --secure_prg=aes-ctr --rounds=3
  python -m benchmarks.secure_fedavg_nwp --secure_prg=philox --secure_neighbors=14
  python -m benchmarks.secure_fedavg_nwp --secure_prg= --dp=central,ftrl --rounds=21   # DP against plain
  python -m benchmarks.secure_fedavg_nwp --secure_prg=aes-ctr --dp=distributed --rounds=21  # against secure

Builds the reference preset's training process once with TFF's weighted mean and
once per mask PRG in `--secure_prg` with `--aggregator=secure` (the degree and
threshold the Bell et al. bound gives for the round's clients unless
`--secure_neighbors` says otherwise), from the same seed, and runs them side
by side on the same sampled clients: round r of each, in an order that
changes from round to round (every order of the processes in turn), so that
a slow spell of the machine hits all alike.
Prints, per secure process, the median steady round (rounds 2..R), the
median over those rounds of secure / plain for the same round
(`secure_round_time_ratio[<prg>]`), the final federated test accuracy and
loss, the clipped count, and the worker's CPU seconds per steady round
(`extra_worker_cpu_s`: the masks' share of it is zero for AES-CTR,
expanded in Python, so the Python process's CPU is printed too), and the
peak RSS of this process and of the workers (summed) during each process's
rounds (sampled every 0.2 s: `peak_rss_gb`).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
import time

from benchmarks import pairing
from benchmarks.round_overhead import PeakRss
from tff_research.runtime import logs


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--clients_per_round", type=int, default=10)
  parser.add_argument("--secure_neighbors", type=int, default=0, help="0 = the Bell et al. bound's k")
  parser.add_argument("--secure_bits", type=int, default=0, help="0 = the package's choice (quantization.choose_bits)")
  parser.add_argument("--secure_prg", default="aes-ctr,philox", help="comma-separated mask PRGs to compare")
  parser.add_argument("--secure_clip", type=float, default=None)
  parser.add_argument("--dp", default="", help="comma-separated --dp modes to compare too (central, ftrl against "
                      "plain; distributed against the AES-CTR secure sum, which --secure_prg must include)")
  parser.add_argument("--clients_per_subround", type=int, default=0,
                      help="stream each round's clients through the worker in groups of at most this many "
                           "(0: all at once); bounds the worker's memory at large rounds")
  parser.add_argument("--num_workers", type=int, default=1,
                      help="local workers behind TFF's mergeable context (the secure round: waves of one group each)")
  parser.add_argument("--data_dir", default=None)
  return parser.parse_args(argv)


def _configs(args):
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top
  base = dataclasses.replace(PRESETS["reference"], rounds=args.rounds, clients_per_round=args.clients_per_round,
                             data_dir=args.data_dir)
  if args.secure_clip is not None:
    base = dataclasses.replace(base, secure_clip=args.secure_clip)
  configs = {"plain": base}
  for prg in filter(None, args.secure_prg.split(",")):
    configs[prg] = dataclasses.replace(base, aggregator="secure", secure_neighbors=args.secure_neighbors,
                                       secure_bits=args.secure_bits, secure_prg=prg)
  for mode in filter(None, args.dp.split(",")):
    # Server SGD at lr 1 for DP-FTRL (FTRL's server step); the clip is the update norms' median here.
    changes = dict(server_optimizer="sgd", server_learning_rate=1.0) if mode == "ftrl" else {}
    if mode == "distributed":  # the noise under the masks: the same secure sum, mod 2^20 after the encoder
      changes = dict(aggregator="secure", secure_neighbors=args.secure_neighbors, secure_bits=0, secure_prg="aes-ctr")
    configs[f"dp-{mode}"] = dataclasses.replace(base, dp=mode, dp_noise_multiplier=1.0, dp_clip=1.0, **changes)
  for config in configs.values():
    config.validate()
  return base, configs


def _train_side_by_side(base, configs, data):
  """Round r of every process on round r's clients, the order changing by round; returns the timings."""
  from tff_research.learning import evaluation  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  from tff_research.runtime import workers  # pylint: disable=g-import-not-at-top
  loop = experiment.loop_config(base)
  model_fn = experiment.build_model_fn(base, data)
  clients = len(data.train_client_ids)
  processes = {name: experiment.build_training_process(c, model_fn, dp=experiment.resolve_dp(c, clients, model_fn),
                                                       num_train_clients=clients)
               for name, c in configs.items()}
  states = {name: p.initialize() for name, p in processes.items()}
  names = list(processes)
  orders = list(itertools.permutations(names))  # every pair in either order equally often
  timing = {key: {name: [] for name in names} for key in ("wall", "worker_cpu", "python_cpu", "position",
                                                           "python_rss", "worker_rss")}
  secure = {name: {} for name in names}
  for round_num in range(1, base.rounds + 1):
    ids = training_loop.sample_clients(data.train_client_ids, base.clients_per_round, base.seed, round_num)
    datasets = data.client_datasets(ids, loop.client_spec, "train", base.seed, round_num)
    for position, name in enumerate(orders[round_num % len(orders)]):
      rss = PeakRss()
      start, start_cpu, start_py = time.perf_counter(), workers.worker_cpu_seconds(), time.process_time()
      output = processes[name].next(states[name], datasets)
      states[name] = output.state
      rss.stop()
      timing["python_rss"][name].append(rss.python_peak)
      timing["worker_rss"][name].append(rss.worker_peak)
      timing["wall"][name].append(time.perf_counter() - start)
      timing["worker_cpu"][name].append(workers.worker_cpu_seconds() - start_cpu)
      timing["python_cpu"][name].append(time.process_time() - start_py)
      timing["position"][name].append(position)
      groups = evaluation.aggregator_metrics(output.metrics)
      metrics = groups.get("secure", {})
      secure[name].update({f"dp_{k}": v for k, v in groups.get("dp", {}).items()})
      secure[name]["clipped"] = secure[name].get("clipped", 0.0) + metrics.get("clipped", 0.0)
      secure[name].update({k: metrics[k] for k in ("upload_bytes_per_client", "bits", "neighbors", "threshold")
                           if k in metrics})
  return processes, states, timing, secure, model_fn


def _evaluate(base, data, processes, states, model_fn):
  from tff_research.data import nwp  # pylint: disable=g-import-not-at-top
  from tff_research.learning import evaluation  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  loop = experiment.loop_config(base)
  eval_ids = training_loop.eval_client_ids(data, loop)
  eval_datasets = data.client_datasets(eval_ids, nwp.ClientSpec(1, loop.eval_batch_size, None, shuffle=False),
                                       split="test")
  evaluation_process = evaluation.build_evaluation_process(model_fn)
  return {name: evaluation.evaluate(evaluation_process, evaluation_process.initialize(),
                                    p.get_model_weights(states[name]), eval_datasets)[1]
          for name, p in processes.items()}


def _report(args, base, timing, secure, final):
  wall, names = timing["wall"], list(timing["wall"])
  print(f"clients/round={args.clients_per_round} rounds={args.rounds} clip={base.secure_clip}")
  for name in names:
    extra = ""
    if name != "plain" and "neighbors" in secure[name]:
      s = secure[name]
      extra = (f", k={s['neighbors']:.0f} t={s['threshold']:.0f} bits={s['bits']:.0f}, clipped {s['clipped']:.0f}, "
               f"upload {s['upload_bytes_per_client']:,.0f} B/client")
    print(f"{name}: median round {statistics.median(pairing.steady(wall[name])):.2f} s, final accuracy "
          f"{final[name]['accuracy']:.4f}, eval loss {final[name]['loss']:.4f}{extra}")
    print(f"{name}: peak_rss_gb python {max(timing['python_rss'][name]) / 1e9:.2f}, "
          f"worker {max(timing['worker_rss'][name]) / 1e9:.2f}")
  for key in ("wall", "worker_cpu", "python_cpu"):
    for name in names:
      print(f"{name}_{key}_s=" + ",".join(f"{t:.2f}" for t in timing[key][name]))
  for name in names[1:]:
    # Distributed DP's cost is the encoder's: against the same secure sum without it.
    ref = "aes-ctr" if name == "dp-distributed" else "plain"
    cpu = {key: statistics.median(pairing.steady([s - p for s, p in zip(timing[key][name], timing[key][ref])]))
           for key in ("worker_cpu", "python_cpu")}
    print(f"[{name} vs {ref}] extra_worker_cpu_s={cpu['worker_cpu']:.2f} "
          f"extra_python_cpu_s={cpu['python_cpu']:.2f} "
          f"accuracy_difference_points={100 * (final[name]['accuracy'] - final[ref]['accuracy']):+.3f}")
    if "dp_scale" in secure[name]:
      s = secure[name]
      print(f"[{name}] scale {s['dp_scale']:.4g}, bits {s['dp_bits']:.0f}, padded dim {s['dp_padded_dim']:,.0f}, "
            f"survivors {s['dp_clients']:.0f} of n_min {s['dp_min_clients']:.0f}")
    first = [s < p for s, p in zip(timing["position"][name], timing["position"][ref])]
    label = "dp_round_time_ratio" if name.startswith("dp-") else "secure_round_time_ratio"
    print("\n".join(pairing.paired_summary(f"{label}[{name}]", wall[name], wall[ref], went_first=first)))


def main(argv=None) -> int:
  args = _parse(argv)
  logs.configure_logging()
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  base, configs = _configs(args)
  with runtime.local_runtime(num_workers=args.num_workers,
                             num_subrounds=runtime.context.subrounds_for(args.clients_per_round,
                                                                         args.clients_per_subround)):
    data = experiment.load_nwp_data(base, verbose=False)
    processes, states, timing, secure, model_fn = _train_side_by_side(base, configs, data)
    final = _evaluate(base, data, processes, states, model_fn)
  _report(args, base, timing, secure, final)
  return 0


if __name__ == "__main__":
  sys.exit(main())
