r"""`python -m benchmarks.mask_prg`: what one client's masks cost with each candidate PRG.

A client's mask is the sum of k + 1 PRG streams as long as its masked vector.
For a vector of `--words` 64-bit words (default 579 K: the reference model at 16
bits) this times, median of `--repeats`:

  aes-ctr (python)      AES-128-CTR keystream from OpenSSL (`cryptography`, AES-NI),
                        one stream, plus the numpy add into the mask
  chacha20 (python)     the same with ChaCha20 (RFC 8439) from OpenSSL
  philox (worker)       TF's Philox-4x32-10 inside TFF's worker, one stream
                        (`--streams` of them in one computation, per stream)
  chacha20 (worker)     ChaCha20 written in TF uint32 ARX ops inside the worker,
                        plain and under `tf.function(jit_compile=True)` (XLA)
  handoff inline        one mask vector sent to the worker as a CLIENTS-placed tensor
  handoff memory file   the same through a memory file (`runtime.handoff`)

The worker rows subtract the time of an empty computation of the same
shape, so they are the work itself.
"""
from __future__ import annotations

import argparse
import os
import sys

from benchmarks import pairing
from tff_research.runtime import logs


def _python_rows(words, repeats):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.ciphers import Cipher  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.ciphers import algorithms  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation.secagg import streams  # pylint: disable=g-import-not-at-top
  acc = np.zeros(words, np.uint64)
  seeds = [(os.urandom(16), 1)]
  rows = {"aes-ctr (python)": pairing.median_seconds(lambda: streams.add_signed_streams(acc, seeds), repeats)}
  key, nonce, zeros = os.urandom(32), os.urandom(16), bytes(8 * words)

  def chacha():
    stream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(zeros)
    np.add(acc, np.frombuffer(stream, np.uint64), out=acc)

  rows["chacha20 (python)"] = pairing.median_seconds(chacha, repeats)
  return rows


def _rotl(x, r):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.bitwise.bitwise_or(tf.bitwise.left_shift(x, tf.constant(r, tf.uint32)),
                               tf.bitwise.right_shift(x, tf.constant(32 - r, tf.uint32)))


def _quarter_round(s, a, b, c, d):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for x, y, z, r in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
    s[x] = s[x] + s[y]
    s[z] = _rotl(tf.bitwise.bitwise_xor(s[z], s[x]), r)


def chacha20_tf(key_words, num_blocks):
  """ChaCha20 (RFC 8439, nonce 0) keystream as uint32, vectorized over blocks. Graph code."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  constants = (0x61707865, 0x3320646e, 0x79622d32, 0x6b206574)
  fill = lambda value: tf.fill([num_blocks], value)  # pylint: disable=unnecessary-lambda-assignment
  init = ([fill(tf.constant(c, tf.uint32)) for c in constants] + [fill(key_words[i]) for i in range(8)]
          + [tf.cast(tf.range(num_blocks), tf.uint32)] + [fill(tf.constant(0, tf.uint32))] * 3)
  s = list(init)
  for _ in range(10):
    for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                       (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
      _quarter_round(s, a, b, c, d)
  return tf.reshape(tf.stack([x + y for x, y in zip(s, init)], axis=1), [-1])


def _worker_rows(words, streams, repeats):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation import prg  # pylint: disable=g-import-not-at-top
  seeds_type = tff.TensorType(np.int64, [streams, 2])
  blocks = 2 * words // 16
  jit_chacha = tf.function(lambda k: chacha20_tf(k, blocks), jit_compile=True)

  def timed(body):
    comp = tff.tensorflow.computation(body, seeds_type)
    seeds = np.arange(2 * streams, dtype=np.int64).reshape([streams, 2])
    return pairing.median_seconds(lambda: comp(seeds), repeats)

  def over_streams(stream_fn):
    def body(seeds):
      total = tf.zeros([words], tf.uint64)
      for i in range(streams):
        total += stream_fn(seeds[i])
      return total[:2]
    return body

  empty = timed(lambda seeds: tf.cast(seeds[0], tf.uint64))
  to_u64 = lambda k: tf.bitcast(tf.reshape(k, [-1, 2]), tf.uint64)  # pylint: disable=unnecessary-lambda-assignment
  key = lambda seed: tf.tile(tf.reshape(tf.bitcast(seed, tf.uint32), [-1]), [2])  # pylint: disable=unnecessary-lambda-assignment
  candidates = {
      "philox (worker)": lambda seed: prg.philox_words(seed, words, tf.uint64),
      "chacha20 (worker)": lambda seed: to_u64(chacha20_tf(key(seed), blocks)),
      "chacha20 (worker, XLA)": lambda seed: to_u64(jit_chacha(key(seed))),
  }
  return {name: (timed(over_streams(fn)) - empty) / streams for name, fn in candidates.items()}


def _handoff_rows(words, clients, repeats):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.runtime import handoff  # pylint: disable=g-import-not-at-top
  vec = tff.TensorType(np.uint64, [words])
  inline = tff.federated_computation(
      lambda x: tff.federated_map(tff.tensorflow.computation(lambda v: v[:2], vec), x),
      tff.FederatedType(vec, tff.CLIENTS))
  by_file = tff.federated_computation(
      lambda p: tff.federated_map(tff.tensorflow.computation(
          lambda path: handoff.read_tensor(path, tf.uint64, words)[:2], tff.TensorType(np.str_)), p),
      tff.FederatedType(np.str_, tff.CLIENTS))
  masks = [np.random.default_rng(i).integers(0, 2**63, words, dtype=np.uint64) for i in range(clients)]

  def through_files():
    files = [handoff.MemoryFile(words, np.uint64) for _ in masks]
    for f, m in zip(files, masks):
      np.copyto(f.array, m)
    by_file([f.path for f in files])
    for f in files:
      f.close()

  return {"handoff inline (per client)": pairing.median_seconds(lambda: inline(masks), repeats) / clients,
          "handoff memory file (per client)": pairing.median_seconds(through_files, repeats) / clients}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--words", type=int, default=579 * 1024, help="64-bit words per mask")
  parser.add_argument("--streams", type=int, default=8, help="streams per worker computation")
  parser.add_argument("--clients", type=int, default=10, help="clients per handoff call")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  logs.configure_logging()
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  rows = _python_rows(args.words, args.repeats)
  with runtime.local_runtime():
    rows.update(_worker_rows(args.words, args.streams, args.repeats))
    rows.update(_handoff_rows(args.words, args.clients, args.repeats))
  print(f"one stream of {args.words:,} 64-bit words ({8 * args.words / 1e6:.1f} MB), median of {args.repeats}")
  for name, seconds in rows.items():
    print(f"{name:34s} {1e3 * seconds:8.2f} ms  {1e9 * seconds / (2 * args.words):6.2f} ns per 32-bit word")
  return 0


if __name__ == "__main__":
  sys.exit(main())
