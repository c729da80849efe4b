r"""Per-round cost of TFF's worker service on loopback vs the local runtime.

  python -m benchmarks.remote_workers --rounds=6

Same reference-preset rounds (same clients, same seed) three ways: the local runtime
(one owned worker), one remote worker started with `python -m
tff_research.runtime.worker`, and two remote workers behind TFF's mergeable
context. On one 2-core machine this measures overhead, not speed-up.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time

from tff_research.runtime import logs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  logs.configure_logging()
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top
  from tff_research.runtime import workers  # pylint: disable=g-import-not-at-top

  results = {}
  with tempfile.TemporaryDirectory() as out:
    base = dataclasses.replace(PRESETS["reference"], rounds=args.rounds, eval_every=args.rounds,
                               data_dir=args.data_dir, output_dir=out)
    data = experiment.load_nwp_data(base, verbose=False)
    for name, num_remote in (("local", 0), ("remote_1", 1), ("remote_2", 2)):
      servers = []
      try:
        if num_remote:
          ports = [workers.pick_free_port() for _ in range(num_remote)]
          servers = [subprocess.Popen([sys.executable, "-m", "tff_research.runtime.worker", f"--port={p}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
          runtime.use_remote_workers([f"127.0.0.1:{p}" for p in ports])
        else:
          runtime.use_local_runtime()
        start = time.perf_counter()
        result = experiment.run_experiment(dataclasses.replace(base, experiment_name=name), progress=False,
                                           plot=False, log=lambda _: None, data=data)
        total = time.perf_counter() - start
        times = [h["round_seconds"] for h in result.run.history]
        results[name] = (statistics.median(times[1:]), times[0], total, result.run.history[-1]["train/loss"])
      finally:
        runtime.shutdown()
        for server in servers:
          server.terminate()
          server.wait(timeout=30)
  for name, (steady, first, total, loss) in results.items():
    print(f"{name}: steady round median {steady:.2f} s, first round {first:.2f} s, "
          f"whole run {total:.1f} s, last train loss {loss:.6f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
