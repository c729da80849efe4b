"""Shamir, key agreement, the masking graph, the AES-CTR PRG and the protocol's clients (pure Python, fast)."""
import itertools
import random

import numpy as np
import pytest

from tff_research.aggregation.secagg import graph
from tff_research.aggregation.secagg import key_agreement as ka
from tff_research.aggregation.secagg import params
from tff_research.aggregation.secagg import protocol
from tff_research.aggregation.secagg import shamir
from tff_research.aggregation.secagg import streams  # pylint: disable=g-import-not-at-top


def test_shamir_any_t_of_n_reconstructs_fewer_do_not():
  secret = random.getrandbits(256)
  shares = shamir.split(secret, [1, 2, 3, 4, 5, 6], threshold=4)
  for subset in itertools.combinations(shares.items(), 4):
    assert shamir.reconstruct(dict(subset), 4) == secret
  three = dict(list(shares.items())[:3])
  with pytest.raises(shamir.NotEnoughSharesError):
    shamir.reconstruct(three, 4)
  # t-1 shares interpolated as if t were smaller give an unrelated value.
  assert shamir.reconstruct(three, 3) != secret


def test_key_agreement_symmetric_and_bound_to_round_pair_purpose():
  a, b, c = ka.KeyPair.generate(), ka.KeyPair.generate(), ka.KeyPair.generate()
  k_ab = a.agree(b.public_bytes, 3, 0, 1, b"mask")
  assert k_ab == b.agree(a.public_bytes, 3, 1, 0, b"mask") and len(k_ab) == 16
  assert k_ab != a.agree(b.public_bytes, 4, 0, 1, b"mask")
  assert k_ab != a.agree(b.public_bytes, 3, 0, 2, b"mask")
  assert k_ab != a.agree(b.public_bytes, 3, 0, 1, b"enc")
  assert k_ab != a.agree(c.public_bytes, 3, 0, 1, b"mask")
  restored = ka.KeyPair.from_private_bytes(a.private_bytes)
  assert restored.agree(b.public_bytes, 3, 0, 1, b"mask") == k_ab


def test_seed_to_tf_keeps_all_128_bits():
  seed = bytes(range(16))
  words = ka.seed_to_tf(seed)
  assert words.dtype == np.int64 and words.shape == (2,)
  assert words.view(np.uint64).astype(">u8").tobytes() == seed


# NIST SP 800-38A, Appendix F.5.1 (CTR-AES128.Encrypt): key, initial counter block,
# four plaintext blocks and their ciphertext.
_NIST_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
_NIST_COUNTER = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
_NIST_PLAINTEXT = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
                                "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
_NIST_CIPHERTEXT = bytes.fromhex("874d6191b620e3261bef6864990db6ce" "9806f66b7970fdff8617187bb9fffdff"
                                 "5ae4df3edbd5d35e5b4f09020db03eab" "1e031dda2fbe03d1792170a0f3009cee")


def test_aes_ctr_keystream_matches_nist_sp800_38a_f51():
  stream = streams.aes_ctr_keystream(_NIST_KEY, 64, _NIST_COUNTER)
  assert bytes(p ^ s for p, s in zip(_NIST_PLAINTEXT, stream)) == _NIST_CIPHERTEXT
  # F.5.1's first output block, AES_K(f0f1...ff), on its own
  assert stream[:16].hex() == "ec8cdf7398607cb0f2d21675ea9ea1e4"


def test_mask_stream_is_the_aes_ctr_keystream_from_counter_zero_as_little_endian_words():
  seed = bytes(range(16))
  raw = streams.aes_ctr_keystream(seed, 8 * 37)
  np.testing.assert_array_equal(streams.expand(seed, 37, np.uint64), np.frombuffer(raw, "<u8"))
  np.testing.assert_array_equal(streams.expand(seed, 74, np.uint32), np.frombuffer(raw, "<u4"))
  # streams of different lengths are prefixes of one another (counter mode)
  np.testing.assert_array_equal(streams.expand(seed, 5, np.uint32), streams.expand(seed, 74, np.uint32)[:5])


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_signed_streams_add_and_subtract_mod_2_to_the_w(dtype):
  seeds = [ka.fresh_seed() for _ in range(4)]
  signs = [1, -1, 1, 0]
  acc = np.arange(1001, dtype=dtype)
  got = streams.add_signed_streams(acc.copy(), list(zip(seeds, signs)))
  want = acc.copy()
  for seed, sign in zip(seeds, signs):  # numpy's unsigned arithmetic wraps mod 2^w
    want = want + sign * streams.expand(seed, 1001, dtype) if sign >= 0 else want - streams.expand(seed, 1001, dtype)
  np.testing.assert_array_equal(got, want)
  # a pair's two signed streams cancel exactly
  np.testing.assert_array_equal(streams.add_signed_streams(acc.copy(), [(seeds[0], 1), (seeds[0], -1)]), acc)


@pytest.mark.parametrize("n,k,expected", [(10, 4, 4), (10, 2, 2), (11, 6, 6), (7, None, 6), (7, 9, 6)])
def test_harary_graph_regular_symmetric(n, k, expected):
  degree = n - 1 if k is None else k
  nbrs = graph.harary_graph(graph.random_order(n, order_seed=5), degree)
  for u, ns in enumerate(nbrs):
    assert len(ns) == expected and u not in ns
    for v in ns:
      assert u in nbrs[v]
  assert graph.harary_graph(graph.random_order(n, 6), degree) != nbrs or expected == n - 1


def test_harary_graph_order_is_fresh_from_the_os_each_round():
  drawn = {tuple(graph.random_order(40)) for _ in range(5)}
  assert len(drawn) == 5 and all(sorted(order) == list(range(40)) for order in drawn)
  with pytest.raises(ValueError, match="even"):
    graph.harary_graph(list(range(10)), 3)


def test_components_of_the_survivors_subgraph():
  order = graph.random_order(8, order_seed=0)
  ring = graph.harary_graph(order, 2)
  survivors = set(range(8)) - {order[2], order[5]}
  parts = graph.components(ring, survivors)
  assert sorted(map(len, parts)) == [2, 4] and set().union(*parts) == survivors


def test_parameters_follow_the_bound_and_refuse_unsafe_overrides():
  chosen = {n: params.choose_parameters(n) for n in (5, 8, 10, 100, 1000)}
  assert [(p.degree, p.threshold) for p in chosen.values()] == [(4, 3), (4, 3), (4, 3), (16, 8), (36, 19)]
  assert chosen[5].complete and not chosen[10].complete
  assert (chosen[100].max_dropouts, chosen[100].max_corrupt) == (10, 5)
  # The review's case: n = 8, k = 2 splits the survivors with two dropouts.
  with pytest.raises(ValueError, match=r"k=2 is below the Bell et al. bound .* smallest safe degree is k=4"):
    params.choose_parameters(8, neighbors=2)
  with pytest.raises(ValueError, match=r"smallest safe degree is k=16"):
    params.choose_parameters(100, neighbors=14)
  with pytest.raises(ValueError, match="must be even"):
    params.choose_parameters(10, neighbors=3)
  with pytest.raises(ValueError, match=r"t=3 is outside the safe range \[6, 8\]"):
    params.choose_parameters(100, threshold=3)
  with pytest.raises(ValueError, match="outside the safe range"):
    params.choose_parameters(5, threshold=5)  # one dropout would leave 4 holders
  assert params.choose_parameters(10, neighbors=9).complete  # k >= n - 1: SecAgg's complete graph
  with pytest.raises(ValueError, match="no parameters withstand"):
    params.choose_parameters(2)  # one corrupt client learns the other's input from any sum
  for bad in (dict(max_dropout=float("nan")), dict(max_corrupt=1.0), dict(security_bits=0)):
    with pytest.raises(ValueError):
      params.ThreatModel(**bad)


def _log2_split_bound(n, k, removed):
  from math import comb  # pylint: disable=g-import-not-at-top
  from math import log2  # pylint: disable=g-import-not-at-top
  if k > removed:
    return float("-inf")
  return log2(n * (n - k - 1) / 2) + log2(comb(removed, k)) - log2(comb(n, k))


@pytest.mark.parametrize("n,gamma,delta", [(20, 0.05, 0.1), (100, 0.05, 0.1), (100, 0.1, 0.1), (300, 0.0, 0.3)])
def test_chosen_degree_is_the_smallest_meeting_the_bound(n, gamma, delta):
  """Independent check with scipy's hypergeometric: k meets all three conditions, k - 2 does not."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  threat = params.ThreatModel(max_dropout=delta, max_corrupt=gamma)
  p = params.choose_parameters(n, threat)
  corrupt, dropped = threat.corrupt_clients(n), threat.dropped_clients(n)

  def meets(k):
    if _log2_split_bound(n, k, corrupt + dropped) >= -41:
      return False
    secure = [t for t in range(2, k + 2) if n * scipy.stats.hypergeom(n - 1, corrupt, k).sf(t - 1) <= 2.0**-41]
    correct = [t for t in range(1, k + 1)
               if n * scipy.stats.hypergeom(n - 1, min(n - dropped, n - 1), k).cdf(t - 1) <= 2.0**-20]
    return bool(secure and correct and min(secure) <= max(correct))

  assert not p.complete and meets(p.degree)
  assert p.degree == 2 or not meets(p.degree - 2)
  assert p.min_threshold <= p.threshold <= p.max_threshold


def _round(n=10, threat=params.ThreatModel(), **kwargs):
  return protocol.SecAggRound(params.choose_parameters(n, threat, **kwargs), round_num=0, order_seed=1)


def test_protocol_server_never_holds_private_material():
  rnd = _round(5)
  server_attrs = vars(rnd._server)  # pylint: disable=protected-access
  assert set(server_attrs) == {"graph", "params", "round_num", "public_keys", "mailbox"}
  client = rnd._clients[0]  # pylint: disable=protected-access
  secret_bytes = [client._s.private_bytes, client._c.private_bytes, client._self_seed]  # pylint: disable=protected-access
  blob = b"".join(b"".join(pk) for pk in rnd._server.public_keys.values())  # pylint: disable=protected-access
  blob += b"".join(ct for box in rnd._server.mailbox.values() for ct in box.values())  # pylint: disable=protected-access
  for s in secret_bytes:
    assert s not in blob


def test_a_client_asked_twice_never_reveals_both_shares_of_a_peer():
  """The review's attack: ask once with u among the survivors, once with u dropped."""
  rnd = _round(10, params.ThreatModel(max_dropout=0.2))
  client = rnd._clients[0]  # pylint: disable=protected-access
  peer = client.neighbours[0]
  everyone = list(range(10))
  first = client.unmask_response(everyone, [])
  assert peer in first["b"] and not first["sk"]
  assert client.unmask_response(everyone, [])["b"] == first["b"]  # the same request again: the same answer
  with pytest.raises(protocol.SecureAggregationError, match=f"refusing to reveal the mask key share of client {peer}"):
    client.unmask_response([u for u in everyone if u != peer], [peer])
  # and the other way round, on a fresh round
  rnd = _round(10, params.ThreatModel(max_dropout=0.2))
  client = rnd._clients[0]  # pylint: disable=protected-access
  peer = client.neighbours[0]
  assert peer in client.unmask_response([u for u in everyone if u != peer], [peer])["sk"]
  with pytest.raises(protocol.SecureAggregationError, match="refusing to reveal the self-mask seed share"):
    client.unmask_response(everyone, [])


def test_clients_refuse_requests_whose_release_is_unsafe():
  rnd = _round(10, params.ThreatModel(max_dropout=0.2))
  client = rnd._clients[0]  # pylint: disable=protected-access
  with pytest.raises(protocol.SecureAggregationError, match="more than the 2"):
    client.unmask_response(list(range(3, 10)), [0, 1, 2])
  with pytest.raises(protocol.SecureAggregationError, match="must split"):
    client.unmask_response(list(range(10)), [3])
  assert not client._revealed  # pylint: disable=protected-access
