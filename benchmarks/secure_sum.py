"""`python -m benchmarks.secure_sum [--quick]`: masked vs plain federated sum, and a FedAvg round.

Times, per call, on TFF's local runtime (one worker owned by this process):
  keys    stages 0-1 in Python (X25519 key pairs, Shamir shares, AES-GCM)
  masked  seed material and masks (AES-CTR in Python, or Philox in the worker) and
          the Federated Core masked sum (clients quantize + mask, server sums)
  unmask  share reconstruction in Python + the Federated Core unmask/decode
  plain   `tff.federated_sum` of the same float32 values
for n clients, d values per client, the full graph (SecAgg) and the SecAgg+
graph of the degree the Bell et al. bound gives at n (`aggregation.secagg.params`,
default threat model), at clip 1, `--bits` (0, the default: the package's
choice for each n, `quantization.choose_bits`) and `--prg` (aes-ctr by default). Then one
FedAvg round (tiny dense model) with secure vs plain aggregation. Full preset: n in {10, 50, 100},
d in {1e4, 1e6}; `--quick`: n in {10, 50}, d = 1e4. Heavy in full: n=100,
d=1e6 moves 400 MB per call.
"""
from __future__ import annotations

import argparse
import collections
import functools
import statistics
import time

from tff_research import runtime


def _median_time(fn, repeats: int) -> tuple[float, object]:
  fn()  # warm-up (tracing, first-call setup)
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out



def _time_secure_sum(ss, n: int, values, repeats: int):
  """Median time of one secure-sum round (keys, masked sum, unmasking), with each stage's times."""
  survivors = list(range(n))
  timing = collections.defaultdict(list)

  def run_once():
    t0 = time.perf_counter()
    rnd = ss.new_round(n, round_num=0)
    t1 = time.perf_counter()
    out = ss.masked_round_sum(rnd, values, survivors)  # mask expansion counts here
    t2 = time.perf_counter()
    res = ss.unmask_round_sum(rnd, out, survivors, [])
    t3 = time.perf_counter()
    timing["keys"].append(t1 - t0)
    timing["masked"].append(t2 - t1)
    timing["unmask"].append(t3 - t2)
    return res, rnd

  total_s, result = _median_time(run_once, repeats)
  return total_s, result, timing

def bench_sum(ns, ds, repeats: int, bits: int = 0, prg: str = "aes-ctr") -> list[dict]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation import SecureSumConfig  # pylint: disable=g-import-not-at-top
  from tff_research.aggregation import build_secure_sum  # pylint: disable=g-import-not-at-top

  rows = []
  for d in ds:
    value_type = tff.TensorType(np.float32, [d])

    @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
    def plain_sum(values):
      return tff.federated_sum(values)

    for n in ns:
      rng = np.random.default_rng(0)
      distinct = [rng.uniform(-1, 1, d).astype(np.float32) for _ in range(min(n, 4))]
      values = [distinct[i % len(distinct)] for i in range(n)]
      plain_s, _ = _median_time(functools.partial(plain_sum, values), repeats)
      for label, k in (("full", n - 1), ("bound", None)):
        ss = build_secure_sum(value_type, n, SecureSumConfig(clip=1.0, bits=bits, neighbors=k, prg=prg))
        total_s, (res, rnd), timing = _time_secure_sum(ss, n, values, repeats)
        err = float(np.max(np.abs(res["value"] - np.sum(np.asarray(values, np.float64), axis=0))))
        rows.append(dict(
            n=n, d=d, graph=f"{label} k={rnd.degree}", k=rnd.degree, bits=ss.quantizer.bits,
            keys=statistics.median(timing["keys"][1:]), masked=statistics.median(timing["masked"][1:]),
            unmask=statistics.median(timing["unmask"][1:]), total=total_s, plain=plain_s,
            ratio=total_s / plain_s, max_err=err,
            upload=ss.quantizer.upload_bytes() + rnd.protocol_upload_bytes()))
        print(_fmt_row(rows[-1]), flush=True)
  return rows


_HEADER = (f"{'n':>4} {'d':>8} {'graph':>12} {'bits':>4} {'keys s':>7} {'masked s':>8} {'unmask s':>8} "
           f"{'total s':>8} {'plain s':>8} {'ratio':>6} {'max|err|':>9} {'upload B/client':>15}")


def _fmt_row(r: dict) -> str:
  return (f"{r['n']:>4} {r['d']:>8} {r['graph']:>12} {r['bits']:>4} {r['keys']:>7.3f} {r['masked']:>8.3f} "
          f"{r['unmask']:>8.3f} {r['total']:>8.3f} {r['plain']:>8.3f} {r['ratio']:>6.2f} "
          f"{r['max_err']:>9.2e} {r['upload']:>15,}")


def bench_fed_avg(num_clients: int, repeats: int, features: int = 64, classes: int = 10,
                  prg: str = "aes-ctr") -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation import SecureSumConfig  # pylint: disable=g-import-not-at-top
  from tff_research.aggregation import SecureSumFactory  # pylint: disable=g-import-not-at-top
  from tff_research.learning import algorithms  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  data = []
  for _ in range(num_clients):
    y = rng.integers(0, classes, 64).astype(np.int32)
    x = rng.normal(0, 1, [64, features]).astype(np.float32)
    data.append(tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(16))
  spec = data[0].element_spec

  def model_fn():
    model = tf.keras.Sequential([tf.keras.layers.Dense(32, activation="relu", input_shape=(features,)),
                                 tf.keras.layers.Dense(classes)])
    return tff.learning.models.from_keras_model(
        model, input_spec=spec, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))

  opts = (tff.learning.optimizers.build_sgdm(0.05), tff.learning.optimizers.build_sgdm(1.0))
  plain = tff.learning.algorithms.build_weighted_fed_avg(model_fn, *opts)
  secure = algorithms.build_weighted_fed_avg(
      model_fn, *opts, model_aggregator=SecureSumFactory(SecureSumConfig(clip=16.0, prg=prg), num_clients))
  result = {}
  for name, process in (("plain", plain), ("secure", secure)):
    state = process.initialize()
    holder = {"state": state}

    def step(process=process, holder=holder):
      out = process.next(holder["state"], data)
      holder["state"] = out.state
      return out

    result[name], out = _median_time(step, repeats)
    if name == "secure":
      result["upload"] = out.metrics["aggregator"]["secure"]["upload_bytes_per_client"]
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="n in {10, 50}, d = 1e4 only")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--bits", type=int, default=0, help="0 = the package's choice per n (quantization.choose_bits)")
  parser.add_argument("--prg", default="aes-ctr", choices=("aes-ctr", "philox"), help="mask PRG")
  args = parser.parse_args(argv)
  runtime.configure_logging()
  ns, ds = ((10, 50), (10_000,)) if args.quick else ((10, 50, 100), (10_000, 1_000_000))
  repeats = args.repeats or (2 if args.quick else 3)
  with runtime.local_runtime():
    print(f"Secure (pairwise-masked, bits={args.bits or 'chosen per n'}, {args.prg} masks) vs plain "
          "federated sum; median seconds per call")
    print(_HEADER, flush=True)
    bench_sum(ns, ds, repeats, args.bits, args.prg)
    clients = 10
    fa = bench_fed_avg(clients, repeats, prg=args.prg)
    print(f"\nFedAvg round, {clients} clients x 64 examples, dense 64-32-10: "
          f"plain {fa['plain']:.3f} s, secure {fa['secure']:.3f} s "
          f"(x{fa['secure'] / fa['plain']:.2f}), secure upload {fa['upload']:,} B/client")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
