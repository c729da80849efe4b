"""The Federated Core secure sum: exactness, the server's view, fresh keys, dropouts, overflow, bad configs."""
import itertools

import numpy as np
import pytest
import scipy.stats
import tensorflow_federated as tff

from tff_research.aggregation import SecureAggregationError
from tff_research.aggregation import SecureSumConfig
from tff_research.aggregation import build_secure_sum
from tff_research.aggregation import prg
from tff_research.aggregation.secagg import streams

# Model-weight-like nested structure: a list of float arrays of different shapes + an int leaf.
VALUE_TYPE = [tff.TensorType(np.float32, [5, 3]), tff.TensorType(np.float32, [3]),
              tff.TensorType(np.float32, [2, 2, 2]), tff.TensorType(np.int32, [4])]
N = 5
D_VIEW = 4096


def _values(rng, n, clip=1.0):
  return [[rng.uniform(-1.3 * clip, 1.3 * clip, t.shape).astype(np.float32) for t in VALUE_TYPE[:3]]
          + [rng.integers(-1000, 1000, [4]).astype(np.int32)] for _ in range(n)]


def _clipped_sum(values, ids, clip=1.0):
  out = [np.sum([np.clip(values[u][i].astype(np.float64), -clip, clip) for u in ids], axis=0)
         for i in range(3)]
  return out + [np.sum([values[u][3] for u in ids], axis=0)]


@pytest.fixture(scope="module")
def secure_sum():
  # Up to 2 dropouts of 5 (the cap D holds on the complete graph too): t = 3 = C + min_honest = n - D.
  return build_secure_sum(VALUE_TYPE, N, SecureSumConfig(clip=1.0, bits=32, threshold=3, max_dropout=0.4))


def _check(result, values, ids, quantizer):
  expected = _clipped_sum(values, ids)
  for got, want in zip(result.value[:3], expected[:3]):
    assert got.shape == want.shape
    # each client's stochastic rounding error is < 1/s; float32 output rounding on top
    bound = len(ids) * quantizer.step + 1e-6 * np.abs(want).max() + 1e-7
    np.testing.assert_allclose(got, want, rtol=0, atol=bound)
  np.testing.assert_array_equal(result.value[3], expected[3])  # integers: exact


def test_integer_sum_exact_and_float_within_quantization_bound(secure_sum):
  rng = np.random.default_rng(0)
  values = _values(rng, N)
  result = secure_sum(values, round_num=0)
  assert result.clients == N and result.dropped == 0 and result.prg == "aes-ctr"
  _check(result, values, range(N), secure_sum.quantizer)
  # The unmasked modular sum equals the plain sum of the quantized integer vectors, bit for bit.
  rnd = secure_sum.new_round(N, round_num=1)
  material = secure_sum.client_materials(rnd, range(N))
  encoded = [np.asarray(secure_sum.computations.client_encode(v, m), np.uint64) for v, m in zip(values, material)]
  plain = np.sum(encoded, axis=0) % 2**32
  masked_total = np.asarray(secure_sum.computations.masked_sum(values, material)["masked_sum"], np.uint64)
  secure_sum.masks.release()
  assert not np.array_equal(masked_total, plain)  # masks are on in the sum...
  # ...and removing the rebuilt self masks, each expanded here with AES-128-CTR, leaves exactly the plain sum.
  correction = np.zeros_like(plain)
  for seed, sign in rnd.unmask(list(range(N)), []):
    assert sign == 1  # no dropouts: only self masks are left
    correction = (correction + streams.expand(seed, secure_sum.quantizer.dim, np.uint32)) % 2**32
  np.testing.assert_array_equal((masked_total + 2**32 - correction) % 2**32, plain)


def test_every_philox_seed_bit_changes_the_stream():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  stream = lambda seed: prg.philox_words(tf.constant(seed, tf.int64), 64).numpy()  # pylint: disable=unnecessary-lambda-assignment
  base = stream(np.zeros(2, np.int64))
  for word in range(2):
    for bit in range(64):
      seed = np.zeros(2, np.uint64)
      seed[word] = np.uint64(1) << np.uint64(bit)
      assert not np.array_equal(stream(seed.view(np.int64)), base), (word, bit)


def _uniform_over_ring(v, bits, x=None):
  """chi-square on the top, the low (and for 64-bit words the middle) 8 bits,
  and |corr(input, view)|: True if all pass."""
  v = np.asarray(v, np.uint64)
  if bits < 64 and v.max() >= 2**bits:
    return False
  byte_shifts = (bits - 8, 0) + ((28,) if bits == 64 else ())
  for bins in ((v >> np.uint64(shift)) & np.uint64(255) for shift in byte_shifts):
    if scipy.stats.chisquare(np.bincount(bins.astype(np.int64), minlength=256)).pvalue < 1e-6:
      return False
  if x is not None and np.std(x) > 0:
    if abs(np.corrcoef(x, v.astype(np.float64))[0, 1]) > 6 / np.sqrt(len(v)):
      return False
  return True


@pytest.mark.parametrize("bits,mask_prg", [(32, "aes-ctr"), (21, "aes-ctr"), (16, "aes-ctr"), (8, "aes-ctr"),
                                           (32, "philox"), (16, "philox")])
def test_server_view_uniform_and_input_independent(bits, mask_prg):
  ss = build_secure_sum(tff.TensorType(np.float32, [D_VIEW]), 4,
                        SecureSumConfig(clip=1.0, bits=bits, threshold=3, prg=mask_prg))
  q = ss.quantizer
  ring = 64 if q.lanes > 1 else bits  # b <= 21: lanes packed into 64-bit words, masked mod 2^64
  assert q.lanes == {32: 1, 21: 3, 16: 4, 8: 8}[bits]
  words = D_VIEW // q.lanes  # words holding only input coordinates
  if q.lanes16:  # word j holds x[4j:4j+4], x[4j+3] in its top 16 bits
    lane0 = lambda x: x[3::4]  # pylint: disable=unnecessary-lambda-assignment
  else:  # lane 0 (the low bits) holds x[:q.words]
    lane0 = lambda x: x[:words]  # pylint: disable=unnecessary-lambda-assignment
  inputs = {"zeros": np.zeros(D_VIEW, np.float32), "plus_c": np.ones(D_VIEW, np.float32),
            "ramp": np.linspace(-1, 1, D_VIEW, dtype=np.float32)}
  for name, x in inputs.items():
    rnd = ss.new_round(4, round_num=0)
    material = ss.client_materials(rnd, range(4))
    views = ss.computations.server_view([x] * 4, material)  # CLIENTS-placed masked vectors as the server gets them
    assert len(views) == 4
    for view in views:
      assert len(view) == q.dim
      assert _uniform_over_ring(view[:words], ring, lane0(x)), f"masked {name} not uniform (bits={bits})"
    # The same tests reject what the server would see with masking switched off.
    raw = ss.computations.client_encode(x, material[0])
    assert not _uniform_over_ring(raw[:words], ring, lane0(x)), \
        f"unmasked {name} passed the uniformity test"
    # and the standalone client computation gives what the federated one delivered
    np.testing.assert_array_equal(ss.computations.client_mask(x, material[0]), views[0])
    ss.masks.release()


@pytest.mark.parametrize("bits,mask_prg", [(32, "aes-ctr"), (21, "aes-ctr"), (16, "aes-ctr"), (10, "aes-ctr"),
                                           (8, "aes-ctr"), (21, "philox"), (16, "philox")])
def test_packed_lanes_exact_with_dropouts(bits, mask_prg):
  """b <= 21 packs 64 // b coordinates per masked 64-bit word: the same sums, fewer mask bits."""
  n, d = 6, 101  # odd sizes: a partly filled last word
  value_type = [tff.TensorType(np.float32, [d]), tff.TensorType(np.int32, [3])]
  ss = build_secure_sum(value_type, n, SecureSumConfig(clip=1.0, bits=bits, int_clip=5,
                                                       max_dropout=0.34, prg=mask_prg))
  q = ss.quantizer
  if bits <= 21:
    assert q.lanes == 64 // bits and q.lanes16 == (bits == 16)
    # 16-bit lanes are a bitcast of consecutive coordinates; other lanes are aligned slices
    assert q.words == (-(-(d + 3 + 1) // 4) if q.lanes16 else 16 * -(-(d + 3 + 1) // (16 * q.lanes))) == q.dim
    assert q.upload_bytes() == 8 * q.words
  rng = np.random.default_rng(7)
  values = [[rng.uniform(-1.5, 1.5, d).astype(np.float32), rng.integers(-7, 8, 3).astype(np.int32)]
            for _ in range(n)]
  for dropped in ([], [1], [0, 5]):
    result = ss(values, round_num=len(dropped), dropped=dropped)
    ids = [u for u in range(n) if u not in dropped]
    want = np.sum([np.clip(values[u][0].astype(np.float64), -1, 1) for u in ids], axis=0)
    np.testing.assert_allclose(result.value[0], want, rtol=0, atol=len(ids) * q.step + 1e-6)
    np.testing.assert_array_equal(result.value[1], np.sum([np.clip(values[u][1], -5, 5) for u in ids], axis=0))
    expected_clipped = sum(min(q.count_cap, int(np.sum(np.abs(values[u][0]) > 1) + np.sum(np.abs(values[u][1]) > 5)))
                           for u in ids)  # each client's counter saturates at count_cap (21 at b = 8)
    assert result.clipped == expected_clipped


def test_fresh_keys_every_round_even_at_the_same_round_number(secure_sum):
  """Keys and seeds come from the OS, not from the round number: a repeated round masks anew."""
  values = _values(np.random.default_rng(1), N)
  seen = []
  for round_num in (0, 0, 1):
    rnd = secure_sum.new_round(N, round_num)
    seen.append(np.asarray(secure_sum.computations.server_view(values, secure_sum.client_materials(rnd, range(N)))[0]))
    secure_sum.masks.release()
  for a, b in itertools.combinations(seen, 2):
    assert np.mean(a == b) < 0.01


def test_dropouts_up_to_n_minus_t_recovered_exactly(secure_sum):
  values = _values(np.random.default_rng(2), N)
  t = 3
  for d in range(0, N - t + 1):
    for dropped in list(itertools.combinations(range(N), d))[:3]:
      result = secure_sum(values, round_num=10 + d, dropped=dropped)
      survivors = [u for u in range(N) if u not in dropped]
      assert result.clients == len(survivors) and result.dropped == d
      _check(result, values, survivors, secure_sum.quantizer)


def test_too_many_dropouts_raise_and_release_nothing(secure_sum):
  values = _values(np.random.default_rng(3), N)
  with pytest.raises(SecureAggregationError, match="threshold"):
    secure_sum(values, round_num=0, dropped=[0, 1, 2])


def test_secagg_plus_graph_with_dropouts():
  n = 12
  ss = build_secure_sum(VALUE_TYPE, n, SecureSumConfig(clip=1.0, max_dropout=0.25))
  assert (ss.parameters.degree, ss.parameters.max_dropouts) == (6, 3)  # the Bell et al. bound at n = 12
  values = _values(np.random.default_rng(4), n)
  result = ss(values, round_num=0, dropped=[2, 6, 9])
  assert result.neighbors == 6
  _check(result, values, [u for u in range(n) if u not in (2, 6, 9)], ss.quantizer)
  # one dropout more than the bound assumed: refused, whatever the graph
  with pytest.raises(SecureAggregationError, match="more than the 3"):
    ss(values, round_num=1, dropped=[0, 1, 2, 3])


def test_bad_configurations_fail_at_build_time_in_one_line():
  value_type = tff.TensorType(np.float32, [3])
  for bad, message in [(dict(scale=float("nan")), "scale must be"), (dict(clip=float("nan")), "clip must be"),
                       (dict(clip=float("inf")), "clip must be"), (dict(clip=0.0), "clip must be"),
                       (dict(bits=1), "bits must be"), (dict(prg="md5"), "unknown mask PRG"),
                       (dict(max_dropout=1.5), "max_dropout"), (dict(threshold=0), "threshold must be")]:
    with pytest.raises(ValueError, match=message) as error:
      SecureSumConfig(**bad)
    assert "\n" not in str(error.value)
  for n, bad, message in [(8, dict(neighbors=2), "smallest safe degree is k=4"),
                          (5, dict(threshold=6), "outside the safe range"),
                          (100, dict(threshold=3), r"outside the safe range \[6, 8\]")]:
    with pytest.raises(ValueError, match=message) as error:
      build_secure_sum(value_type, n, SecureSumConfig(clip=1.0, **bad))
    assert "\n" not in str(error.value)


def test_more_vectors_than_the_overflow_bound_are_refused_in_python(secure_sum):
  """The count check happens before the unmask computation, as one SecureAggregationError."""
  values = _values(np.random.default_rng(5), N)
  rnd = secure_sum.new_round(N, round_num=0)
  masked = secure_sum.masked_round_sum(rnd, values, list(range(N)))
  with pytest.raises(SecureAggregationError, match="counted 5 masked vectors, expected 4"):
    secure_sum.unmask_round_sum(rnd, masked, list(range(N - 1)), [N - 1])


def test_overflow_raises_at_build_time():
  with pytest.raises(ValueError, match="overflow"):
    build_secure_sum(VALUE_TYPE, 100, SecureSumConfig(clip=1.0, bits=16, scale=1000.0))
  with pytest.raises(ValueError, match="too few"):
    build_secure_sum(tff.TensorType(np.float32, [3]), 2**15, SecureSumConfig(clip=1.0, bits=16))
  with pytest.raises(ValueError, match="overflow"):
    build_secure_sum(tff.TensorType(np.int32, [3]), 10, SecureSumConfig(bits=16, int_clip=2**13))
  # bits just enough: fine
  build_secure_sum(tff.TensorType(np.float32, [3]), 10, SecureSumConfig(clip=1.0, bits=16, scale=3000.0))


def test_out_of_range_values_clipped_and_counted():
  ss = build_secure_sum(tff.TensorType(np.float32, [6]), 4, SecureSumConfig(clip=2.0))  # 4: the fewest (min_honest)
  x = np.array([-5, -2, 0, 1.5, 3, np.inf], np.float32)  # 3 out of range (inf counts)
  result = ss([x, x, x, x])
  assert result.clipped == 12
  np.testing.assert_allclose(result.value, 4 * np.array([-2, -2, 0, 1.5, 2, 0]), atol=4 * ss.quantizer.step)


def _coordinates(ss, x, material) -> np.ndarray:
  """The quantized integers q a client encodes x to (before masks), one per coordinate."""
  q = ss.quantizer
  encoded = np.asarray(ss.computations.client_encode(x, material))
  if q.lanes16:
    return encoded.view(np.uint16)[:q.payload_dim].astype(np.int64) - q.offset
  assert q.lanes == 1
  return encoded.astype(np.uint32)[:q.payload_dim].view(np.int32).astype(np.int64)


@pytest.mark.parametrize("dtype,scale,bits", [(np.float32, 2.0**10, 32), (np.float64, 2.0**10, 32),
                                              (np.float32, 1000.0, 32), (np.float32, 2.0**10, 16)])
def test_stochastic_rounding_unbiased_both_signs_and_clip_at_c(dtype, scale, bits):
  """float32 leaves at a power-of-two scale are quantized in 4-byte arithmetic
  (in int32 fixed point at b <= 16), the rest in float64: the same rules for all."""
  d = 20000
  clip = 0.1  # not a float32: float32 leaves clip at the largest float32 <= 0.1
  ss = build_secure_sum(tff.TensorType(dtype, [d]), 4, SecureSumConfig(clip=clip, scale=scale, bits=bits))
  q = ss.quantizer
  material = ss.client_materials(ss.new_round(4, 0), [0])[0]
  for frac in (0.25, 0.75):
    for sign in (1, -1):
      x = np.full(d, sign * (3 + frac) / q.scale, dtype)  # 3.25 or 3.75 steps, either sign
      coords = _coordinates(ss, x, material)[:d]
      assert set(np.unique(coords)) == {sign * 3, sign * 4}
      # E[q] = x * s: the mean is within 5 standard errors of 3 + frac
      assert abs(np.mean(np.abs(coords)) - (3 + frac)) < 5 * np.sqrt(frac * (1 - frac) / d)
  tiny = np.full(d, -1e-30, dtype)  # far below a step: rounds to 0 (or -1 with negligible odds)
  assert np.all(_coordinates(ss, tiny, material)[:d] == 0)
  edge = np.array([clip, -clip, 0.2, np.nan] + [0.0] * (d - 4), dtype)
  words = _coordinates(ss, edge, material)
  counter = int(words[q.payload_dim - 1])
  assert counter == (2 if dtype == np.float64 else 4)  # 0.2, NaN; float32(+-0.1) lie beyond 0.1
  fast = dtype == np.float32 and q._scale_is_power_of_two  # pylint: disable=protected-access
  assert fast == (dtype == np.float32 and scale == 2.0**10)
  top = int(np.floor((q.clip32 if fast else clip) * q.scale))
  assert abs(int(words[0])) in (top, top + 1)
  assert int(words[3]) == 0  # NaN -> 0


def test_multiplier_folds_into_the_scale_bit_for_bit():
  """encode(x, multiplier=m) is encode(m * x) (what secure FedAvg's weighting relies on),
  including clipped and non-finite values, on the float32, float64 and integer paths."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation import quantization  # pylint: disable=g-import-not-at-top
  value_type = [tff.TensorType(np.float32, [997]), tff.TensorType(np.float64, [13]), tff.TensorType(np.int32, [3])]
  rng = np.random.default_rng(11)
  x32 = rng.uniform(-1, 1, 997).astype(np.float32)
  x32[:3] = [np.nan, np.inf, 0.9]  # 0.9 * 3 is beyond the clip
  x64 = rng.uniform(-1, 1, 13)
  ints = np.array([5, -7, 9], np.int32)
  seed = tf.constant([3, 4], tf.int64)
  for bits in (32, 21, 16):
    q = quantization.Quantizer(value_type, 5, SecureSumConfig(clip=2.0, bits=bits, int_clip=2**10))
    for m in (1.0, 3.0, 37.0):
      folded = q.encode([x32, x64, ints], seed, multiplier=tf.constant(m, tf.float32)).numpy()
      first = q.encode([x32 * np.float32(m), x64 * m, ints], seed).numpy()
      np.testing.assert_array_equal(folded, first)
      if bits == 32:  # the clipped counter (last payload coordinate) saw the weighted values
        want = int(np.sum(~(np.abs(x32 * np.float32(m)) <= q.clip32)) + np.sum(np.abs(x64 * m) > 2.0))
        assert int(folded[q.payload_dim - 1]) == want and (m == 1.0 or want > 2)


def test_bits_zero_chooses_the_fewest_mask_bits_that_hold_the_sum_finely_enough():
  from tff_research.aggregation import quantization  # pylint: disable=g-import-not-at-top
  choose = quantization.choose_bits
  # AUTO_MIN_LEVELS = 2^13 (16 bits at 4,096 levels moved the demo's mean 3.9 %: quantization.py)
  assert choose(10, clip=16.0, int_clip=64) == 21         # 16 bits: scale 128, 4,096 levels; 21: 131,072
  assert choose(100, clip=16.0, int_clip=64) == 21        # 16 bits: 512 levels; 21 bits: scale 512, 16,384
  assert choose(4, clip=16.0, int_clip=64) == 16          # a few clients: scale 256, 8,192 levels
  assert choose(100, clip=100.0, int_clip=64) == 21       # 16 bits: scale 2, 400 levels; 21 bits: scale 64
  assert choose(10, clip=1.0, int_clip=2**16) == 21       # 10 * 2^16 overflows 16 bits, not 21
  assert choose(100, clip=1.0, int_clip=2**16) == 32      # the weights would overflow 21 bits
  assert choose(1000, clip=100.0, int_clip=64) == 32      # 21 bits: scale 8, 1,600 levels per client
  assert choose(10000, clip=100.0, int_clip=64) == 32     # scale 1: 200 levels per client, too coarse
  assert choose(100, clip=1.0, int_clip=0, has_int=False, scale=2.0**14) == 32  # this scale overflows 21 bits
  q = quantization.Quantizer(VALUE_TYPE, 100, SecureSumConfig(clip=16.0, bits=0, int_clip=64))
  assert (q.bits, q.lanes, q.lanes16, q.scale) == (21, 3, False, 512.0)
  q = quantization.Quantizer(VALUE_TYPE, 4, SecureSumConfig(clip=16.0, bits=0, int_clip=64))
  assert (q.bits, q.lanes, q.lanes16, q.scale) == (16, 4, True, 256.0)
  q = quantization.Quantizer(VALUE_TYPE, 100, SecureSumConfig(clip=100.0, bits=0, int_clip=64))
  assert (q.bits, q.lanes, q.scale) == (21, 3, 64.0)
  assert quantization.Quantizer(VALUE_TYPE, 100, SecureSumConfig(clip=1.0, bits=0)).bits == 32
  with pytest.raises(ValueError, match="bits must be"):
    quantization.Quantizer(VALUE_TYPE, 5, SecureSumConfig(bits=1))
