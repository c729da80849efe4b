r"""`python -m benchmarks.active_server`: what the active-server option costs per round.

For each round size (`--clients`, default 10 and 100) and the default threat
model, with and without `active_server` (which also turns on the
server-chosen-dropouts bound, k > C + D), this prints:

  k, t, q            the degree and threshold each mode chooses, and the
                     consistency check's quorum q = floor((n + C) / 2) + 1
  round (s)          the Python protocol of one round in this process, all n
                     clients and the server: stages 0-1 and the unmasking with
                     D dropouts, median of `--repeats` (no mask expansion: that
                     part does not change unless k does)
  per client (ms)    what the option adds to one client's work in a
                     deployment: 2 Ed25519 signatures (advert, survivor list),
                     k advert verifications and q list-signature
                     verifications, timed here one by one
  bytes up/down      what the option adds to one client's upload (two
                     signatures) and download (the n signed adverts, n
                     signatures on the list)

The simulation memoizes verification on the exact bytes (`consistency`), so
its round time pays each signature once, not once per client; the
per-client column is without that.
"""
from __future__ import annotations

import argparse

from benchmarks import pairing


def _per_signature(repeats: int) -> tuple[float, float]:
  """Seconds per Ed25519 signature and per (uncached) verification of a survivor-list message."""
  from tff_research.aggregation.secagg import consistency  # pylint: disable=g-import-not-at-top
  identity = consistency.Identity.generate()
  message = consistency.survivors_message(0, bytes(32), 1000, range(900))
  signature = identity.sign(message)
  verify = consistency._verified.__wrapped__  # pylint: disable=protected-access
  sign_s = pairing.median_seconds(lambda: [identity.sign(message) for _ in range(100)], repeats) / 100
  verify_s = pairing.median_seconds(
      lambda: [verify(identity.verify_key, message, signature) for _ in range(100)], repeats) / 100
  return sign_s, verify_s


def _round_time(n: int, active: bool, repeats: int) -> tuple[object, float, int, int]:
  """(parameters, median seconds of one round, bytes the option adds to a client's upload and download)."""
  from tff_research.aggregation.secagg import consistency  # pylint: disable=g-import-not-at-top
  from tff_research.aggregation.secagg import params  # pylint: disable=g-import-not-at-top
  from tff_research.aggregation.secagg import protocol  # pylint: disable=g-import-not-at-top
  threat = params.ThreatModel(server_chosen_dropouts=active, active_server=active)
  p = params.choose_parameters(n, threat)
  enrolled = consistency.enroll(n)
  dropped = list(range(p.max_dropouts))
  survivors = [u for u in range(n) if u not in dropped]

  def one_round():
    rnd = (consistency.ActiveSecAggRound(p, 0, *enrolled) if active else protocol.SecAggRound(p, 0))
    rnd.unmask(survivors, dropped)
    return rnd

  rnd = one_round()
  extra = ((rnd.protocol_upload_bytes() - protocol.SecAggRound.protocol_upload_bytes(rnd),
            rnd.protocol_download_bytes()) if active else (0, 0))
  return p, pairing.median_seconds(one_round, repeats), *extra


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  from tff_research.aggregation.secagg import params  # pylint: disable=g-import-not-at-top
  sign_s, verify_s = _per_signature(args.repeats)
  print(f"Ed25519: sign {1e6 * sign_s:.1f} us, verify {1e6 * verify_s:.1f} us (one survivor-list message)")
  print(f"{'n':>6} {'mode':>8} {'k':>4} {'t':>4} {'q':>4} {'round (s)':>10} {'per client (ms)':>16} "
        f"{'bytes up/down':>14}")
  for n in args.clients:
    for active in (False, True):
      p, seconds, up, down = _round_time(n, active, args.repeats)
      q = params.consistency_quorum(n, p.max_corrupt) if active else 0
      client_ms = 1e3 * (2 * sign_s + (p.degree + q) * verify_s) if active else 0.0
      print(f"{n:>6} {'active' if active else 'hbc':>8} {p.degree:>4} {p.threshold:>4} {q or '-':>4} "
            f"{seconds:>10.3f} {client_ms:>16.2f} {f'+{up}/+{down}':>14}")


if __name__ == "__main__":
  main()
