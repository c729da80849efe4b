r"""Bytes a training round sends to each of two worker hosts, and its time, over real (virtual) links.

  sudo .venv/bin/python -m benchmarks.remote_bytes [--clients_per_round=10]

The driver and two workers run in network namespaces of their own, joined by
veth pairs (tests/netns_hosts.py; needs root). The reference preset runs 1
and then 3 rounds on both workers; each worker's veth byte counters are
read around each run, so (3-round bytes - 1-round bytes) / 2 is a steady
round's traffic, start-up and the final evaluation cancelling out. Both ways
of feeding clients run, one after the other: datasets built on the driver
and sent with each round, and datasets built on the workers from
`--worker_data_dir` (a round sends each client's file name and window
order; `data.worker_data`).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile

from tests.netns_hosts import PORT
from tests.netns_hosts import Hosts


def _run_rounds(hosts: Hosts, rounds: int, clients: int, out: str,
                extra: list[str]) -> tuple[list[int], list[int], list[float]]:
  """Trains `rounds` reference rounds from the driver's namespace; returns bytes in, bytes out, round seconds."""
  before = [(hosts.received_bytes(i), hosts.sent_bytes(i)) for i in range(len(hosts.workers))]
  command = ["ip", "netns", "exec", hosts.driver, sys.executable, "-m", "experiments.train_nwp", "--preset=reference",
             f"--rounds={rounds}", f"--eval_every={rounds}", f"--clients_per_round={clients}",
             f"--workers={','.join(hosts.addresses())}", f"--output_dir={out}", "--noplot", "--noprogress", *extra]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(done.stderr.strip().splitlines()[-1])
  received = [hosts.received_bytes(i) - b[0] for i, b in enumerate(before)]
  sent = [hosts.sent_bytes(i) - b[1] for i, b in enumerate(before)]
  with open(os.path.join(out, "reference", "metrics.csv")) as f:
    seconds = [float(row["round_seconds"]) for row in csv.DictReader(f)]
  return received, sent, seconds


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clients_per_round", type=int, default=10)
  args = parser.parse_args(argv)
  hosts = Hosts()
  try:
    hosts.create()
  except OSError as e:
    print(f"error: network namespaces cannot be made here ({e})", file=sys.stderr)
    return 2
  workers = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tff_research.runtime.worker",
                               f"--port={PORT}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for ns in hosts.workers]
  results = {}
  try:
    with tempfile.TemporaryDirectory() as data_dir:
      for mode, extra in (("datasets sent by the driver", []),
                          ("datasets built on the workers", [f"--worker_data_dir={data_dir}"])):
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as three:
          in_1, out_1, _ = _run_rounds(hosts, 1, args.clients_per_round, one, extra)
          in_3, out_3, seconds = _run_rounds(hosts, 3, args.clients_per_round, three, extra)
        results[mode] = ([(a - b) / 2 for a, b in zip(in_3, in_1)], [(a - b) / 2 for a, b in zip(out_3, out_1)],
                         seconds)
  finally:
    for worker in workers:
      worker.terminate()
    for worker in workers:
      worker.wait(timeout=30)
    hosts.remove()
  print(f"reference preset, {args.clients_per_round} clients a round over 2 worker hosts (veth):")
  for mode, (received, sent, seconds) in results.items():
    print(f"  {mode}:")
    for i in range(len(hosts.workers)):
      print(f"    worker {i + 1}: {received[i] / 1e6:.3f} MB received and {sent[i] / 1e6:.3f} MB sent a steady round")
    print(f"    rounds 2-3 median {statistics.median(seconds[1:]):.2f} s (round 1 {seconds[0]:.2f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
