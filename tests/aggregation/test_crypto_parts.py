"""Shamir, key agreement and the neighbour graph (pure Python, fast)."""
import itertools
import random

import numpy as np
import pytest

from tff_research.aggregation import graph, key_agreement as ka, protocol, shamir


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


@pytest.mark.parametrize("n,k,expected", [(10, 4, 4), (10, 3, 3), (11, 3, 4), (7, None, 6), (7, 9, 6)])
def test_harary_graph_regular_symmetric(n, k, expected):
  nbrs = graph.harary_neighbours(n, k, round_seed=5)
  for u, ns in enumerate(nbrs):
    assert len(ns) == expected and u not in ns
    for v in ns:
      assert u in nbrs[v]
  assert graph.harary_neighbours(n, k, 6) != nbrs or expected == n - 1


def test_protocol_server_never_holds_private_material():
  rnd = protocol.SecAggRound(5, None, 3, round_num=0, graph_seed=0)
  server_attrs = vars(rnd._server)  # pylint: disable=protected-access
  assert set(server_attrs) == {"neighbours", "round_num", "threshold", "public_keys", "mailbox"}
  client = rnd._clients[0]  # pylint: disable=protected-access
  secret_bytes = [client._s.private_bytes, client._c.private_bytes, client._self_seed]  # pylint: disable=protected-access
  blob = b"".join(b"".join(pk) for pk in rnd._server.public_keys.values())  # pylint: disable=protected-access
  blob += b"".join(ct for box in rnd._server.mailbox.values() for ct in box.values())  # pylint: disable=protected-access
  for s in secret_bytes:
    assert s not in blob


def test_threshold_must_be_a_majority_of_holders():
  with pytest.raises(ValueError, match="strict majority"):
    protocol.SecAggRound(6, None, 3, round_num=0, graph_seed=0)
  assert protocol.default_threshold(6) == 4
