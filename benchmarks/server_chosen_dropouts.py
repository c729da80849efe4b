r"""`python -m benchmarks.server_chosen_dropouts`: what the server-chosen-dropouts threat model costs a client.

By default the secure sum assumes dropouts independent of the masking graph
and takes the smallest degree k Bell et al.'s bound allows. With
`ThreatModel(server_chosen_dropouts=True)` the server may choose who drops,
and k must exceed C + D (H(k, n) is k-connected), so every client does more
work. For each n in `--clients` (default 100 and 1,000), both modes side by
side in one process, at the default threat fractions unless
`--max_dropout` / `--max_corrupt` say otherwise:

  k, t      the degree and threshold each mode chooses (`params.choose_parameters`)
  setup     stages 0-1 of one `protocol.SecAggRound`: X25519 keys, Shamir shares
            of two secrets to k + 1 holders, AES-GCM
  unmask    stage 3 with no dropouts: every client's release check and reveal,
            the server's reconstruction of the n self-mask seeds
  /client   (setup + unmask) / n: all n clients and the server run here, so this is
            a client's share of the whole round's protocol work
  mask      one client's mask: k + 1 AES-128-CTR streams of `--words` 64-bit words
            (default 579 K, the reference model at 16 bits, as `benchmarks.mask_prg`)
            summed into one vector (`streams.add_signed_streams`)

Medians over `--repeats` (masks) and `--round_repeats` (protocol rounds).
Paired: every repeat runs both modes, the order alternating, so a load that
drifts touches both alike. Prints a table and writes it as JSON to `--out`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

MODES = ("independent", "server-chosen")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
  except OSError:
    return platform.processor()


def _parameters(n: int, max_dropout: float, max_corrupt: float) -> dict[str, Any]:
  """Each mode's SecAggParameters at n."""
  from tff_research.aggregation.secagg import params  # pylint: disable=g-import-not-at-top
  return {mode: params.choose_parameters(n, params.ThreatModel(max_dropout=max_dropout, max_corrupt=max_corrupt,
                                                               server_chosen_dropouts=mode == MODES[1]))
          for mode in MODES}


def _time_round(p) -> tuple[float, float]:
  """Seconds of one round's stages 0-1 and of its stage 3 with every client surviving."""
  from tff_research.aggregation.secagg import protocol  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  rnd = protocol.SecAggRound(p, round_num=0)
  keyed = time.perf_counter()
  rnd.unmask(list(range(p.num_clients)), [])
  return keyed - start, time.perf_counter() - keyed


def _time_mask(p, words: int) -> float:
  """Seconds for one client's mask: its k + 1 streams (fresh seeds: the same AES work as real ones)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation.secagg import streams  # pylint: disable=g-import-not-at-top
  seeds = [(os.urandom(16), 1 if i % 2 else -1) for i in range(p.degree + 1)]
  acc = np.zeros(words, np.uint64)
  start = time.perf_counter()
  streams.add_signed_streams(acc, seeds)
  return time.perf_counter() - start


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
  """Both modes at n, paired repeat by repeat; medians and the parameters."""
  chosen = _parameters(n, args.max_dropout, args.max_corrupt)
  samples: dict[str, dict[str, list[float]]] = {m: {"setup": [], "unmask": [], "mask": []} for m in MODES}
  for r in range(max(args.repeats, args.round_repeats)):
    for mode in (MODES if r % 2 == 0 else MODES[::-1]):
      if r < args.round_repeats:
        setup, unmask = _time_round(chosen[mode])
        samples[mode]["setup"].append(setup)
        samples[mode]["unmask"].append(unmask)
      if r < args.repeats:
        samples[mode]["mask"].append(_time_mask(chosen[mode], args.words))
  out = {"n": n}
  for mode in MODES:
    p, s = chosen[mode], {name: statistics.median(v) for name, v in samples[mode].items()}
    out[mode] = {"degree": p.degree, "threshold": p.threshold, "max_corrupt": p.max_corrupt,
                 "max_dropouts": p.max_dropouts, "setup_s": s["setup"], "unmask_s": s["unmask"],
                 "protocol_per_client_s": (s["setup"] + s["unmask"]) / n, "mask_s": s["mask"],
                 "samples": samples[mode]}
  return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
  lines = [f"{'n':>5} {'mode':>13} {'C':>3} {'D':>4} {'k':>4} {'t':>4} {'setup s':>9} {'unmask s':>9} "
           f"{'/client ms':>10} {'mask ms':>8}"]
  for row in rows:
    for mode in MODES:
      m = row[mode]
      lines.append(f"{row['n']:>5} {mode:>13} {m['max_corrupt']:>3} {m['max_dropouts']:>4} {m['degree']:>4} "
                   f"{m['threshold']:>4} {m['setup_s']:>9.2f} {m['unmask_s']:>9.2f} "
                   f"{1e3 * m['protocol_per_client_s']:>10.2f} {1e3 * m['mask_s']:>8.1f}")
    a, b = row[MODES[0]], row[MODES[1]]
    lines.append(f"{row['n']:>5} {'ratio':>13} {'':>3} {'':>4} {b['degree'] / a['degree']:>4.1f} {'':>4} "
                 f"{b['setup_s'] / a['setup_s']:>9.2f} {b['unmask_s'] / a['unmask_s']:>9.2f} "
                 f"{b['protocol_per_client_s'] / a['protocol_per_client_s']:>10.2f} {b['mask_s'] / a['mask_s']:>8.2f}")
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clients", default="100,1000", help="comma-separated round sizes n")
  parser.add_argument("--max_dropout", type=float, default=0.1, help="delta")
  parser.add_argument("--max_corrupt", type=float, default=0.05, help="gamma")
  parser.add_argument("--words", type=int, default=579 * 1024, help="64-bit words per mask")
  parser.add_argument("--repeats", type=int, default=5, help="mask timings per mode")
  parser.add_argument("--round_repeats", type=int, default=2, help="protocol rounds per mode")
  parser.add_argument("--out", default=os.path.join("results", "benchmarks", "server_chosen_dropouts.json"))
  args = parser.parse_args(argv)
  rows = [measure(int(n), args) for n in args.clients.split(",")]
  header = (f"{datetime.date.today().isoformat()}, {_cpu_model()}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f}; masks of {args.words:,} 64-bit words; median of {args.repeats} (masks), "
            f"{args.round_repeats} (rounds)")
  print(header)
  print("\n".join(_table(rows)))
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump({"header": header, "args": vars(args), "rows": rows}, f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
