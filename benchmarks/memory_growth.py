r"""Do long runs grow? Peak RSS of Python and of the TFF worker over many rounds of the reference preset.

  python -m benchmarks.memory_growth --rounds=50

Trains the reference preset through the normal training loop (checkpoints, metrics,
evaluation included) and samples RSS every 0.2 s. Prints the peak of each
process over the first and the last `--window` rounds (10 by default: one
evaluation in each, as that preset evaluates every 10 rounds), and the growth;
the last line is `memory_growth_percent=<x>` (the larger of the two).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile

from tff_research.runtime import logs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=50)
  parser.add_argument("--window", type=int, default=10,
                      help="rounds at each end compared; the preset evaluates every 10 rounds, so with "
                           "10 each window holds one evaluation")
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  logs.configure_logging()
  from benchmarks.round_overhead import PeakRss  # pylint: disable=g-import-not-at-top
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top

  peaks: dict[int, tuple[int, int]] = {}
  sampler = {"rss": None}

  def log(line: str) -> None:
    if line.startswith("round "):
      round_num = int(line.split()[1].split("/")[0])
      rss = sampler["rss"]
      peaks[round_num] = (rss.python_peak, rss.worker_peak)
      rss.stop()
      sampler["rss"] = PeakRss()

  with tempfile.TemporaryDirectory() as out, runtime.local_runtime():
    config = dataclasses.replace(PRESETS["reference"], rounds=args.rounds, output_dir=out,
                                 data_dir=args.data_dir, experiment_name="memory")
    data = experiment.load_nwp_data(config, verbose=False)
    sampler["rss"] = PeakRss()
    experiment.run_experiment(config, progress=False, plot=False, log=log, data=data)
    sampler["rss"].stop()

  blocks = sorted(peaks)
  for start in range(0, len(blocks), 10):
    block = [peaks[r] for r in blocks[start:start + 10]]
    print(f"rounds {blocks[start]}-{blocks[min(start + 9, len(blocks) - 1)]}: peak python "
          f"{max(p[0] for p in block) / 2**30:.2f} GB, worker {max(p[1] for p in block) / 2**30:.2f} GB")
  w = args.window
  first = [peaks[r] for r in sorted(peaks)[:w]]
  last = [peaks[r] for r in sorted(peaks)[-w:]]
  growth = []
  for i, name in enumerate(("python", "worker")):
    a, b = max(p[i] for p in first), max(p[i] for p in last)
    growth.append(100.0 * (b - a) / max(a, 1))
    print(f"{name}: peak {a / 2**30:.2f} GB over rounds 1-{w}, {b / 2**30:.2f} GB over the last {w} "
          f"({growth[-1]:+.1f}%)")
  print(f"memory_growth_percent={max(growth):.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
