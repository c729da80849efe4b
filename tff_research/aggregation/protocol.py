"""The Python side of SecAgg/SecAgg+: keys, shares and unmasking, stage by stage.

X25519, HKDF, AES-GCM and Shamir cannot run inside a TF graph on TFF's worker
(`tf.py_function` has no kernel there), so they run here, at the boundaries
between the protocol's stages, and hand the Federated Core computations only
what a client (or the server) would hold at that point:

  stage 0  AdvertiseKeys   client -> server: two fresh X25519 public keys
                           (c: encrypts shares, s: derives mask seeds)
  stage 1  ShareKeys       client -> server -> neighbour: AES-GCM-encrypted
                           Shamir shares of the client's self-mask seed b_u and
                           of its s private key, threshold t, to its
                           neighbours (and itself)
  stage 2  MaskedInput     [Federated Core, `masked_sum`] each client's
                           seed material (`ClientState.mask_material`) is a
                           CLIENTS-placed input; only survivors' masked
                           vectors reach the server's sum
  stage 3  Unmasking       survivors reveal shares of b_u for survivors and of
                           s_u^SK for dropped clients (never both for one u);
                           the server rebuilds the seeds and the Federated Core
                           unmask computation removes their masks.

`ClientState` and `ServerState` keep the roles apart in code: the server only
ever receives what the messages above carry (public keys, ciphertexts,
revealed shares) and never a private key or a pairwise seed of a live pair.
The consistency-check round (against an actively malicious server) is not
implemented: the simulated server is honest-but-curious.
"""
from __future__ import annotations

import collections
import math
import struct
from typing import Iterable, Optional, Sequence

import numpy as np

from tff_research.aggregation import graph as graph_lib
from tff_research.aggregation import key_agreement as ka
from tff_research.aggregation import shamir

_MASK = b"mask"
_ENC = b"enc"
_GCM_OVERHEAD = 12 + 16  # nonce + tag


class SecureAggregationError(RuntimeError):
  """The protocol cannot complete safely; no aggregate is released."""


def default_threshold(holders: int) -> int:
  """ceil(2h/3), and always a strict majority of the h share holders.

  A majority is what keeps an honest-but-curious server from getting both
  b_u and s_u^SK of one client; 2/3 leaves room for dropouts.
  """
  return max(holders // 2 + 1, math.ceil(2 * holders / 3))


def _pack_shares(src: int, dst: int, b_share: int, sk_share: int) -> bytes:
  return struct.pack(">II", src, dst) + shamir.int_to_bytes(b_share) + shamir.int_to_bytes(sk_share)


def _unpack_shares(msg: bytes) -> tuple[int, int, int, int]:
  src, dst = struct.unpack(">II", msg[:8])
  n = shamir.SHARE_BYTES
  return src, dst, shamir.bytes_to_int(msg[8:8 + n]), shamir.bytes_to_int(msg[8 + n:8 + 2 * n])


class ClientState:
  """One client's secrets for one round. Nothing here is ever read by the server."""

  def __init__(self, client_id: int, neighbours: Sequence[int], round_num: int, threshold: int,
               rounding_seed: Optional[bytes] = None):
    self.id = client_id
    self.neighbours = list(neighbours)
    self.round_num = round_num
    self.threshold = threshold
    self._c = ka.KeyPair.generate()
    self._s = ka.KeyPair.generate()
    self._self_seed = ka.fresh_seed()
    self._rounding_seed = rounding_seed or ka.fresh_seed()
    self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
    self._enc_keys: dict[int, bytes] = {}  # v -> the AES key of pair (u, v), both directions
    self._held: dict[int, tuple[int, int]] = {}  # src -> (b share, sk share) for x = self.id + 1

  def advertise_keys(self) -> tuple[bytes, bytes]:
    return self._c.public_bytes, self._s.public_bytes

  def _aad(self, src: int, dst: int) -> bytes:
    return struct.pack(">QII", self.round_num, src, dst)

  def share_keys(self, peer_keys: dict[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
    """Shamir-shares b_u and s_u^SK to neighbours + self; returns ciphertexts per neighbour."""
    if set(peer_keys) != set(self.neighbours):
      raise SecureAggregationError(f"client {self.id}: server sent keys for the wrong neighbours")
    self._peer_keys = dict(peer_keys)
    holders = self.neighbours + [self.id]
    xs = [h + 1 for h in holders]
    b_shares = shamir.split(int.from_bytes(self._self_seed, "big"), xs, self.threshold)
    sk_shares = shamir.split(int.from_bytes(self._s.private_bytes, "big"), xs, self.threshold)
    self._held[self.id] = (b_shares[self.id + 1], sk_shares[self.id + 1])
    out = {}
    for v in self.neighbours:
      key = self._enc_keys[v] = self._c.agree(peer_keys[v][0], self.round_num, self.id, v, _ENC)
      out[v] = ka.encrypt(key, _pack_shares(self.id, v, b_shares[v + 1], sk_shares[v + 1]),
                          self._aad(self.id, v))
    return out

  def receive_shares(self, ciphertexts: dict[int, bytes]) -> None:
    for u, ct in ciphertexts.items():
      if u not in self._peer_keys:
        raise SecureAggregationError(f"client {self.id}: share from non-neighbour {u}")
      key = self._enc_keys[u]  # agreed in share_keys (HKDF binds the pair, not its order)
      src, dst, b_share, sk_share = _unpack_shares(ka.decrypt(key, ct, self._aad(u, self.id)))
      if (src, dst) != (u, self.id):
        raise SecureAggregationError(f"client {self.id}: misrouted share {src}->{dst}")
      self._held[u] = (b_share, sk_share)

  def mask_material(self) -> collections.OrderedDict:
    """The CLIENTS-placed input of the masking computation (stage 2).

    self_seed: b_u; pair_seeds[j]: s_{u,v_j} = HKDF(X25519(s_u, s_{v_j})),
    pair_signs[j]: +1 if u < v_j else -1; rounding_seed: for stochastic rounding.
    """
    pair_seeds = np.zeros([len(self.neighbours), 2], np.int64)
    signs = np.zeros([len(self.neighbours)], np.int32)
    for j, v in enumerate(self.neighbours):
      pair_seeds[j] = ka.seed_to_tf(self._s.agree(self._peer_keys[v][1], self.round_num, self.id, v, _MASK))
      signs[j] = 1 if self.id < v else -1
    return collections.OrderedDict(
        self_seed=ka.seed_to_tf(self._self_seed),
        pair_seeds=pair_seeds,
        pair_signs=signs,
        rounding_seed=ka.seed_to_tf(self._rounding_seed),
    )

  def unmask_response(self, survivors: Sequence[int], dropped: Sequence[int]) -> dict:
    """Stage 3: shares of b_u for surviving u, of s_u^SK for dropped u; never both."""
    survivors, dropped = set(survivors), set(dropped)
    if survivors & dropped:
      raise SecureAggregationError(f"client {self.id}: a client cannot both survive and drop; refusing")
    if len(survivors) < self.threshold:
      raise SecureAggregationError(
          f"client {self.id}: only {len(survivors)} survivors, below threshold {self.threshold}; refusing")
    x = self.id + 1
    return {
        "b": {u: (x, self._held[u][0]) for u in self._held if u in survivors},
        "sk": {u: (x, self._held[u][1]) for u in self._held if u in dropped},
    }


class ServerState:
  """What the server holds: public keys, the public graph, ciphertexts it routes."""

  def __init__(self, neighbours: list[list[int]], round_num: int, threshold: int):
    self.neighbours = neighbours
    self.round_num = round_num
    self.threshold = threshold
    self.public_keys: dict[int, tuple[bytes, bytes]] = {}
    self.mailbox: dict[int, dict[int, bytes]] = collections.defaultdict(dict)

  def keys_for(self, v: int) -> dict[int, tuple[bytes, bytes]]:
    return {u: self.public_keys[u] for u in self.neighbours[v]}

  def route(self, src: int, ciphertexts: dict[int, bytes]) -> None:
    for dst, ct in ciphertexts.items():
      self.mailbox[dst][src] = ct

  def unmask_seeds(self, survivors: Sequence[int], dropped: Sequence[int],
                   responses: dict[int, dict]) -> tuple[np.ndarray, np.ndarray]:
    """Rebuilds the masks to remove: (seeds int64[m, 2], signs int32[m]) as clients applied them.

    Raises SecureAggregationError (and so releases nothing) when some secret
    has fewer than t shares among the survivors.
    """
    t = self.threshold
    if len(survivors) < t:
      raise SecureAggregationError(
          f"only {len(survivors)} clients survived, below the threshold t={t}: no aggregate is released")
    b_shares: dict[int, dict[int, int]] = collections.defaultdict(dict)
    sk_shares: dict[int, dict[int, int]] = collections.defaultdict(dict)
    for resp in responses.values():
      for u, (x, y) in resp["b"].items():
        b_shares[u][x] = y
      for u, (x, y) in resp["sk"].items():
        sk_shares[u][x] = y
    seeds, signs = [], []
    for u in survivors:
      if len(b_shares[u]) < t:
        raise SecureAggregationError(
            f"self-mask seed of client {u}: {len(b_shares[u])} shares, threshold t={t}: "
            "no aggregate is released")
      b = shamir.reconstruct(b_shares[u], t)
      seeds.append(ka.seed_to_tf(b.to_bytes(ka.SEED_BYTES, "big")))
      signs.append(1)
    surviving = set(survivors)
    for u in dropped:
      live = [v for v in self.neighbours[u] if v in surviving]
      if not live:
        continue
      if len(sk_shares[u]) < t:
        raise SecureAggregationError(
            f"dropped client {u}: {len(sk_shares[u])} shares of its key among survivors, threshold "
            f"t={t}: its pairwise masks cannot be removed, no aggregate is released")
      sk = shamir.reconstruct(sk_shares[u], t)
      keys = ka.KeyPair.from_private_bytes(sk.to_bytes(32, "big"))
      for v in live:
        seeds.append(ka.seed_to_tf(keys.agree(self.public_keys[v][1], self.round_num, u, v, _MASK)))
        signs.append(1 if v < u else -1)  # the sign survivor v applied
    return (np.asarray(seeds, np.int64).reshape([-1, 2]), np.asarray(signs, np.int32).reshape([-1]))


class SecAggRound:
  """One round among n simulated clients and the server, all in this process.

  Runs stages 0 and 1 on construction; `client_material` feeds stage 2 and
  `unmask` runs stage 3. Fresh keys and seeds every instance.
  """

  def __init__(self, num_clients: int, neighbours: Optional[int], threshold: Optional[int],
               round_num: int, graph_seed: int, rounding_rng: Optional[np.random.Generator] = None):
    self.num_clients = n = num_clients
    self.round_num = round_num
    self.graph = graph_lib.harary_neighbours(n, neighbours, graph_seed)
    holders = len(self.graph[0]) + 1
    t = default_threshold(holders) if threshold is None else int(threshold)
    if not holders // 2 + 1 <= t <= holders:
      raise ValueError(f"threshold t={t} must be a strict majority of the {holders} share holders "
                       f"(neighbours + self): {holders // 2 + 1} <= t <= {holders}")
    self.threshold = t
    def rounding_seed():
      return None if rounding_rng is None else rounding_rng.bytes(ka.SEED_BYTES)
    self._clients = [ClientState(u, self.graph[u], round_num, t, rounding_seed()) for u in range(n)]
    self._server = ServerState(self.graph, round_num, t)
    for c in self._clients:  # stage 0
      self._server.public_keys[c.id] = c.advertise_keys()
    for c in self._clients:  # stage 1
      self._server.route(c.id, c.share_keys(self._server.keys_for(c.id)))
    for c in self._clients:
      c.receive_shares(self._server.mailbox[c.id])

  @property
  def degree(self) -> int:
    return len(self.graph[0])

  def client_material(self, ids: Optional[Iterable[int]] = None) -> list[collections.OrderedDict]:
    ids = range(self.num_clients) if ids is None else ids
    return [self._clients[u].mask_material() for u in ids]

  def unmask(self, survivors: Sequence[int], dropped: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    if len(survivors) < self.threshold:
      raise SecureAggregationError(
          f"only {len(survivors)} clients survived, below the threshold t={self.threshold}: "
          "no aggregate is released")
    responses = {v: self._clients[v].unmask_response(survivors, dropped) for v in survivors}
    return self._server.unmask_seeds(survivors, dropped, responses)

  def protocol_upload_bytes(self) -> int:
    """Per-client upload outside the masked vector: keys, shares, revealed shares."""
    k = self.degree
    share_msg = 8 + 2 * shamir.SHARE_BYTES + _GCM_OVERHEAD
    return 2 * ka.PUBLIC_KEY_BYTES + k * share_msg + (k + 1) * (4 + shamir.SHARE_BYTES)
