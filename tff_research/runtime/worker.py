"""`python -m tff_research.runtime.worker --port=N`: serve TFF's executor service.

A thin wrapper over the `worker_binary` in the TFF wheel, for running workers
on other machines (see docs/distributed.md). It forwards the binary's flags and
stops the worker when this process ends.
"""
from __future__ import annotations

import argparse
import signal
import sys

from tff_research.runtime import workers


def build_parser() -> argparse.ArgumentParser:
  """The command line's flags (deploy/kubernetes/workers.yaml passes them; a test checks it)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--port", type=int, required=True, help="port to serve on (all addresses)")
  parser.add_argument("--max_concurrent_computation_calls", type=int, default=-1)
  parser.add_argument("--grpc_max_message_length_megabytes", type=int, default=None)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not 0 < args.port < 65536:
    parser.error(f"--port must be in 1..65535, got {args.port}")
  worker = workers.ManagedWorker(
      port=args.port,
      max_concurrent_computation_calls=args.max_concurrent_computation_calls,
      grpc_max_message_length_megabytes=args.grpc_max_message_length_megabytes,
  )
  print(f"TFF worker serving on port {args.port} (pid {worker.pid}); Ctrl-C to stop.", flush=True)
  try:
    worker.process.wait()
  except KeyboardInterrupt:
    pass
  finally:
    worker.stop()
  return 0


if __name__ == "__main__":
  signal.signal(signal.SIGINT, signal.default_int_handler)
  sys.exit(main())
