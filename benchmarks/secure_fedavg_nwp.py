r"""Secure vs plain FedAvg on the demo NWP model: round time and accuracy, same seed.

  python -m benchmarks.secure_fedavg_nwp                    # demo config, 10 clients, 5 rounds
  python -m benchmarks.secure_fedavg_nwp --clients_per_round=100 --secure_neighbors=14

Runs the demo preset twice through the normal training path (`run_experiment`),
once with TFF's weighted mean and once with `--aggregator=secure`, from the
same seed, and prints the median steady round time of each (rounds 2..R), the
final federated test accuracy of each, and the secure sum's clipped count.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile

from tff_research.runtime import logs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--clients_per_round", type=int, default=10)
  parser.add_argument("--secure_neighbors", type=int, default=0)
  parser.add_argument("--secure_bits", type=int, default=32)
  parser.add_argument("--secure_clip", type=float, default=None)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  logs.configure_logging()
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as out, runtime.local_runtime():
    base = dataclasses.replace(PRESETS["demo"], rounds=args.rounds, eval_every=args.rounds,
                               clients_per_round=args.clients_per_round, data_dir=args.data_dir,
                               output_dir=out)
    if args.secure_clip is not None:
      base = dataclasses.replace(base, secure_clip=args.secure_clip)
    data = experiment.load_nwp_data(base, verbose=False)
    results = {}
    for name, changes in (("plain", {}), ("secure", dict(
        aggregator="secure", secure_neighbors=args.secure_neighbors, secure_bits=args.secure_bits))):
      config = dataclasses.replace(base, experiment_name=name, **changes)
      result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)
      times = [h["round_seconds"] for h in result.run.history]
      results[name] = (statistics.median(times[1:]) if len(times) > 1 else times[0],
                       result.run.final_eval["accuracy"], result.run.history,
                       result.run.final_eval["loss"])
  plain_t, plain_acc, _, plain_loss = results["plain"]
  secure_t, secure_acc, history, secure_loss = results["secure"]
  clipped = sum(h.get("secure/clipped", 0) for h in history)
  upload = history[-1].get("secure/upload_bytes_per_client", 0)
  print(f"clients/round={args.clients_per_round} rounds={args.rounds} neighbors={args.secure_neighbors or 'all'} "
        f"bits={args.secure_bits} clip={base.secure_clip}")
  print(f"plain:  median round {plain_t:.2f} s, final accuracy {plain_acc:.4f}, eval loss {plain_loss:.4f}")
  print(f"secure: median round {secure_t:.2f} s, final accuracy {secure_acc:.4f}, eval loss {secure_loss:.4f}, "
        f"clipped values {clipped:.0f}, upload {upload:,.0f} B/client")
  print(f"accuracy_difference_points={100 * (secure_acc - plain_acc):+.3f}")
  print(f"secure_round_time_ratio={secure_t / plain_t:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
