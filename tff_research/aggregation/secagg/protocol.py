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
  stage 2  MaskedInput     [Federated Core] each client masks its input with
                           PRG(b_u) and +-PRG(s_uv) per neighbour v (its
                           `mask_seeds`); only survivors' masked vectors reach
                           the server's sum
  stage 3  Unmasking       the server checks that releasing is safe
                           (`check_release`), survivors reveal shares of b_u
                           for surviving u and of s_u^SK for dropped u, the
                           server rebuilds the seeds and the Federated Core
                           unmask computation removes their masks.

`ClientState` and `ServerState` keep the roles apart in code: the server only
ever receives what the messages above carry (public keys, ciphertexts,
revealed shares) and never a private key or a pairwise seed of a live pair.
A client remembers which kind of share it revealed for each peer and refuses
any later request for the other kind, however the requests are phrased, so
no sequence of requests gets both b_u and s_u^SK of one client from it.
That holds per client; a server that sends different survivor lists to
different clients can still collect each kind from a different group, which
the active-server option (`consistency.ActiveSecAggRound`: signed keys, and a
consistency check before stage 3) refuses.
"""
from __future__ import annotations

import collections
import struct
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from tff_research.aggregation.secagg import graph as graph_lib
from tff_research.aggregation.secagg import key_agreement as ka
from tff_research.aggregation.secagg import params as params_lib
from tff_research.aggregation.secagg import shamir

_MASK = b"mask"
_ENC = b"enc"
_GCM_OVERHEAD = 12 + 16  # nonce + tag
SELF_SHARE, KEY_SHARE = "self-mask seed", "mask key"

# A PRG seed and the sign its stream is added with (+1 or -1).
SignedSeed = tuple[bytes, int]


class SecureAggregationError(RuntimeError):
  """The protocol cannot complete safely; no aggregate is released."""


def check_release(graph: graph_lib.Graph, params: params_lib.SecAggParameters,
                  survivors: Iterable[int], dropped: Iterable[int]) -> None:
  """Raises SecureAggregationError unless unmasking reveals the survivors' sum and nothing else.

  The server learns the sum of every connected part of the survivors'
  subgraph that it unmasks, so the parts must be one; every survivor's
  self-mask seed and every dropped neighbour's key need t live holders; the
  dropouts must stay within the D the parameters were chosen for, on every
  graph, since beyond it the honest survivors' subgraph may be split by
  corrupt clients in a way no count here can see; and the survivors must
  number at least C + min_honest, so that min_honest honest inputs are in
  the sum even if all C corrupt clients survived.
  """
  n, t = params.num_clients, params.threshold
  survivors, dropped = set(survivors), set(dropped)
  if survivors & dropped or survivors | dropped != set(range(n)):
    raise SecureAggregationError(f"survivors and dropped clients must split the round's {n} clients")
  if len(survivors) < t:
    raise SecureAggregationError(f"only {len(survivors)} of {n} clients survived, below the threshold "
                                 f"t={t}: no aggregate is released")
  if len(dropped) > params.max_dropouts:
    raise SecureAggregationError(
        f"{len(dropped)} of {n} clients dropped, more than the {params.max_dropouts} the "
        "parameters were chosen for: no aggregate is released")
  if len(survivors) - params.max_corrupt < params.min_honest:
    raise SecureAggregationError(
        f"{len(survivors)} of {n} clients survived: with up to C={params.max_corrupt} of them corrupt, fewer than "
        f"min_honest={params.min_honest} honest inputs could be in the sum, so no aggregate is released")
  parts = graph_lib.components(graph, survivors)
  if len(parts) > 1:
    sizes = ", ".join(str(len(p)) for p in parts)
    raise SecureAggregationError(
        f"the survivors' masking graph is split into {len(parts)} parts (sizes {sizes}): unmasking "
        "would reveal the sum of each part, so no aggregate is released")
  for u in range(n):
    live = sum(1 for v in graph[u] if v in survivors) + (u in survivors)
    if live < t and (u in survivors or live > 0):
      raise SecureAggregationError(f"client {u} has {live} live share holders, below the threshold "
                                   f"t={t}: its masks cannot be removed, so no aggregate is released")


def _pack_shares(src: int, dst: int, b_share: int, sk_share: int) -> bytes:
  return struct.pack(">II", src, dst) + shamir.int_to_bytes(b_share) + shamir.int_to_bytes(sk_share)


def _unpack_shares(msg: bytes) -> tuple[int, int, int, int]:
  src, dst = struct.unpack(">II", msg[:8])
  n = shamir.SHARE_BYTES
  return src, dst, shamir.bytes_to_int(msg[8:8 + n]), shamir.bytes_to_int(msg[8 + n:8 + 2 * n])


class ClientState:
  """One client's secrets for one round. Nothing here is ever read by the server."""

  def __init__(self, client_id: int, graph: graph_lib.Graph, params: params_lib.SecAggParameters,
               round_num: int, rounding_seed: Optional[bytes] = None):
    self.id = client_id
    self.neighbours = list(graph[client_id])
    self.round_num = round_num
    self._graph = graph  # public: a client checks a release request itself
    self._params = params
    self._c = ka.KeyPair.generate()
    self._s = ka.KeyPair.generate()
    self._self_seed = ka.fresh_seed()
    self.rounding_seed = rounding_seed or ka.fresh_seed()
    self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
    self._enc_keys: dict[int, bytes] = {}  # v -> the AES key of pair (u, v), both directions
    self._held: dict[int, tuple[int, int]] = {}  # src -> (b share, sk share) for x = self.id + 1
    self._revealed: dict[int, str] = {}  # peer -> the one kind of its shares this client gave out

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
    t = self._params.threshold
    b_shares = shamir.split(int.from_bytes(self._self_seed, "big"), xs, t)
    sk_shares = shamir.split(int.from_bytes(self._s.private_bytes, "big"), xs, t)
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

  def mask_seeds(self) -> list[SignedSeed]:
    """Stage 2: (b_u, +1), then (s_uv, +1 if u < v else -1) per neighbour v."""
    seeds = [(self._self_seed, 1)]
    for v in self.neighbours:
      seeds.append((self._s.agree(self._peer_keys[v][1], self.round_num, self.id, v, _MASK),
                    1 if self.id < v else -1))
    return seeds

  def unmask_response(self, survivors: Sequence[int], dropped: Sequence[int]) -> dict:
    """Stage 3: shares of b_u for surviving u, of s_u^SK for dropped u.

    Refuses (SecureAggregationError, nothing revealed) a request whose release
    would be unsafe (`check_release`) or that asks for the other kind of
    share of a peer than an earlier request of this round got.
    """
    check_release(self._graph, self._params, survivors, dropped)
    survivors = set(survivors)
    wanted = {u: SELF_SHARE if u in survivors else KEY_SHARE for u in self._held}
    for u, kind in wanted.items():
      if self._revealed.get(u, kind) != kind:
        raise SecureAggregationError(
            f"client {self.id}: refusing to reveal the {kind} share of client {u} after revealing its "
            f"{self._revealed[u]} share this round")
    self._revealed.update(wanted)
    x = self.id + 1
    return {
        "b": {u: (x, self._held[u][0]) for u, kind in wanted.items() if kind == SELF_SHARE},
        "sk": {u: (x, self._held[u][1]) for u, kind in wanted.items() if kind == KEY_SHARE},
    }


class ServerState:
  """What the server holds: public keys, the public graph, ciphertexts it routes."""

  def __init__(self, graph: graph_lib.Graph, params: params_lib.SecAggParameters, round_num: int):
    self.graph = graph
    self.params = params
    self.round_num = round_num
    self.public_keys: dict[int, tuple[bytes, bytes]] = {}
    self.mailbox: dict[int, dict[int, bytes]] = collections.defaultdict(dict)

  def keys_for(self, v: int) -> dict[int, tuple[bytes, bytes]]:
    return {u: self.public_keys[u] for u in self.graph[v]}

  def route(self, src: int, ciphertexts: dict[int, bytes]) -> None:
    for dst, ct in ciphertexts.items():
      self.mailbox[dst][src] = ct

  def unmask_seeds(self, survivors: Sequence[int], dropped: Sequence[int],
                   responses: dict[int, dict]) -> list[SignedSeed]:
    """The masks to remove, as clients applied them: survivors' b_u, dropped clients'
    s_uv towards live v. Raises SecureAggregationError where a secret lacks t shares."""
    b_shares: dict[int, dict[int, int]] = collections.defaultdict(dict)
    sk_shares: dict[int, dict[int, int]] = collections.defaultdict(dict)
    for resp in responses.values():
      for u, (x, y) in resp["b"].items():
        b_shares[u][x] = y
      for u, (x, y) in resp["sk"].items():
        sk_shares[u][x] = y
    seeds = []
    for u in survivors:
      seeds.append((self._rebuild(u, b_shares[u], SELF_SHARE).to_bytes(ka.SEED_BYTES, "big"), 1))
    surviving = set(survivors)
    for u in dropped:
      live = [v for v in self.graph[u] if v in surviving]
      if not live:
        continue
      sk = self._rebuild(u, sk_shares[u], KEY_SHARE)
      keys = ka.KeyPair.from_private_bytes(sk.to_bytes(32, "big"))
      for v in live:
        seeds.append((keys.agree(self.public_keys[v][1], self.round_num, u, v, _MASK),
                      1 if v < u else -1))  # the sign survivor v applied
    return seeds

  def _rebuild(self, client: int, shares: dict[int, int], kind: str) -> int:
    t = self.params.threshold
    if len(shares) < t:
      raise SecureAggregationError(f"the {kind} of client {client} has {len(shares)} shares, "
                                   f"threshold t={t}: no aggregate is released")
    return shamir.reconstruct(shares, t)


class SecAggRound:
  """One round among n simulated clients and the server, all in this process.

  Runs stages 0 and 1 on construction; `mask_seeds` feeds stage 2 and
  `unmask` runs stage 3. Fresh keys and seeds every instance. `graph_fn(order,
  degree)` builds the masking graph (the Harary graph on the ring `order` by
  default; `check_release` guards any other).
  """

  def __init__(self, params: params_lib.SecAggParameters, round_num: int,
               order_seed: Optional[int] = None, rounding_rng: Optional[np.random.Generator] = None,
               graph_fn: Callable[[Sequence[int], int], graph_lib.Graph] = graph_lib.harary_graph):
    self.params = params
    self.num_clients = n = params.num_clients
    self.round_num = round_num
    self.order = graph_lib.random_order(n, order_seed)  # the ring, known to the server
    self.graph = graph_fn(self.order, params.degree)

    def rounding_seed():
      return None if rounding_rng is None else rounding_rng.bytes(ka.SEED_BYTES)

    self._clients = [ClientState(u, self.graph, params, round_num, rounding_seed()) for u in range(n)]
    self._server = ServerState(self.graph, params, round_num)
    self._exchange_keys()

  def _exchange_keys(self) -> None:
    """Stages 0-1; `consistency.ActiveSecAggRound` signs and checks them (the active-server option)."""
    for c in self._clients:  # stage 0
      self._server.public_keys[c.id] = c.advertise_keys()
    for c in self._clients:  # stage 1
      self._server.route(c.id, c.share_keys(self._server.keys_for(c.id)))
    for c in self._clients:
      c.receive_shares(self._server.mailbox[c.id])

  @property
  def threshold(self) -> int:
    return self.params.threshold

  @property
  def degree(self) -> int:
    return self.params.degree

  def mask_seeds(self, ids: Optional[Iterable[int]] = None) -> list[list[SignedSeed]]:
    ids = range(self.num_clients) if ids is None else ids
    return [self._clients[u].mask_seeds() for u in ids]

  def rounding_seeds(self, ids: Optional[Iterable[int]] = None) -> list[bytes]:
    ids = range(self.num_clients) if ids is None else ids
    return [self._clients[u].rounding_seed for u in ids]

  def check_release(self, survivors: Sequence[int], dropped: Sequence[int]) -> None:
    """The server's check before it asks any client for a share (stage 3)."""
    check_release(self.graph, self.params, survivors, dropped)

  def unmask(self, survivors: Sequence[int], dropped: Sequence[int]) -> list[SignedSeed]:
    """Stage 3: the rebuilt seeds of the masks to remove from the survivors' sum."""
    self.check_release(survivors, dropped)
    responses = {v: self._clients[v].unmask_response(survivors, dropped) for v in survivors}
    return self._server.unmask_seeds(survivors, dropped, responses)

  def protocol_upload_bytes(self) -> int:
    """Per-client upload outside the masked vector: keys, shares, revealed shares."""
    k = self.degree
    share_msg = 8 + 2 * shamir.SHARE_BYTES + _GCM_OVERHEAD
    return 2 * ka.PUBLIC_KEY_BYTES + k * share_msg + (k + 1) * (4 + shamir.SHARE_BYTES)
