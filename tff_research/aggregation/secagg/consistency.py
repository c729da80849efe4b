"""The active-server option: signed keys and the consistency check of Bonawitz et al. (CCS 2017).

Off by default (`SecureSumConfig.active_server`); with it, a round runs the
honest-but-curious protocol (`protocol`) with two additions, so that a
server that deviates from the protocol gets nothing it could not get by
following it:

* Signed keys (their AdvertiseKeys with a PKI). Every client has a long-term
  Ed25519 identity (`Identity`). A simulated key registry (`KeyRegistry`),
  filled once when the clients enrol and read-only after, stands in for the
  PKI: it maps client id -> verify key, and the server never writes it. In
  stage 0 each client signs (round, its id, c_pk, s_pk); the server
  broadcasts the table of all n signed adverts, and a client refuses the
  round unless its own entry is exactly what it sent and each neighbour's
  entry verifies against the registry. A server that substitutes keys (a man
  in the middle) is refused before any share is sent.
* The consistency check (their Round 3). After the masked inputs, the server
  sends each survivor the survivor list; the client signs (round, session,
  the list) and returns the signature; the server forwards the signatures;
  a client reveals shares (Unmasking) only if it holds valid signatures on
  exactly its own list from at least q distinct clients in that list, where
  2q > n + C (`params.consistency_quorum`: q = floor((n + C) / 2) + 1).

Why q, on every graph. An honest client signs one list per round (it
refuses a second), corrupt clients sign anything. If two different lists
each had q valid signatures, their honest signers would be disjoint, so
2 (q - C) <= n - C, i.e. 2q <= n + C: impossible. So every honest client
that reveals anything holds the same list L, reveals for each peer only the
kind of share L implies (`protocol.ClientState`), and the server's view is
that of an honest-but-curious server whose dropouts are L's, chosen by the
server: the server-chosen-dropouts bound (k > C + D, `params`) then keeps the
honest survivors connected, and t > corrupt holders keeps the other secret
of every peer out of reach. The rule is derived here from that counting
argument; Bonawitz et al.'s own threshold for the active setting is not
quoted, since its theorem could not be read offline. On a SecAgg+ graph a quorum of
t holders of each peer (its neighbours and itself) would keep the two
secrets of any one client apart (2t > k + 1 + corrupt holders), but lets
clients in different parts of the ring hold different lists, so the
survivors' sets the server unmasks need not be one list's, and it would raise
k; the global quorum costs each client q signature checks (q ~ n / 2) and
leaves k and t as the honest-but-curious bound chose them.

Freshness. The list signature covers the round number and a session id, the
SHA-256 of the table of signed adverts; a client checks its own fresh keys
are in the table, so a signature made in any other session, including an
earlier attempt at the same round number (a retried round), never verifies
in this one.

Not covered (see the README): a server that chooses the ring order (here
`graph.random_order` draws it, in `protocol.SecAggRound`, from the OS CSPRNG
of the process that simulates every party; a server drawing it could put
corrupt clients around a victim); forged or out-of-range inputs from corrupt
clients; a server that lies about the result; denial of service (the
server can always make a round fail); the registry is an in-process object,
not a PKI, and every party runs in one process.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct
import types
from typing import Iterable, Mapping, Optional, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tff_research.aggregation.secagg import graph as graph_lib
from tff_research.aggregation.secagg import key_agreement as ka
from tff_research.aggregation.secagg import params as params_lib
from tff_research.aggregation.secagg import protocol

SIGNATURE_BYTES = 64
VERIFY_KEY_BYTES = 32
_DOMAIN = b"tff_research/secagg/v1|"
_RAW = dict(encoding=serialization.Encoding.Raw)

# A signature as the server forwards it: (the client it claims to be from, the 64 bytes).
ForwardedSignature = tuple[int, bytes]


class Identity:
  """A client's long-term Ed25519 signing key; only `verify_key` leaves the client."""

  def __init__(self, private_key: ed25519.Ed25519PrivateKey):
    self._key = private_key
    self.verify_key: bytes = private_key.public_key().public_bytes(
        format=serialization.PublicFormat.Raw, **_RAW)

  @classmethod
  def generate(cls) -> "Identity":
    return cls(ed25519.Ed25519PrivateKey.generate())

  def sign(self, message: bytes) -> bytes:
    return self._key.sign(message)


class KeyRegistry:
  """The simulated PKI: client id -> Ed25519 verify key, fixed when the clients enrol.

  The mapping is copied into a read-only view and the object takes no new
  attributes, so nothing that holds the registry (the server included) can
  add or replace a key after enrolment.
  """
  __slots__ = ("_keys",)

  def __init__(self, verify_keys: Mapping[int, bytes]):
    keys = {int(u): bytes(k) for u, k in verify_keys.items()}
    if any(len(k) != VERIFY_KEY_BYTES for k in keys.values()):
      raise ValueError(f"Ed25519 verify keys are {VERIFY_KEY_BYTES} bytes")
    object.__setattr__(self, "_keys", types.MappingProxyType(keys))

  def __setattr__(self, name: str, value: object) -> None:
    raise AttributeError("the key registry is fixed when the clients enrol")

  def __contains__(self, client_id: object) -> bool:
    return client_id in self._keys

  def __len__(self) -> int:
    return len(self._keys)

  def verify_key(self, client_id: int) -> bytes:
    return self._keys[client_id]

  def verify(self, client_id: int, message: bytes, signature: object) -> bool:
    """Whether `signature` is `client_id`'s registered identity's signature on `message`."""
    if client_id not in self._keys or not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
      return False
    return _verified(self._keys[client_id], message, signature)


@functools.lru_cache(maxsize=1 << 14)
def _verified(verify_key: bytes, message: bytes, signature: bytes) -> bool:
  # Memoized on the exact bytes: verification is a pure function of them, so
  # each client's decision is unchanged, while the simulation, where every
  # client checks the same signatures, pays once per signature, not per client.
  try:
    ed25519.Ed25519PublicKey.from_public_bytes(verify_key).verify(signature, message)
  except InvalidSignature:
    return False
  return True


def enroll(num_clients: int) -> tuple[list[Identity], KeyRegistry]:
  """Long-term identities for clients 0..num_clients-1 and the registry of their verify keys.

  Args:
    num_clients: how many client slots to enrol (a process's largest round).

  Returns:
    (identities, registry): identity u is client u's secret; the registry is public.
  """
  identities = [Identity.generate() for _ in range(int(num_clients))]
  return identities, KeyRegistry({u: ident.verify_key for u, ident in enumerate(identities)})


@dataclasses.dataclass(frozen=True)
class SignedKeys:
  """What a client advertises in stage 0: its two X25519 public keys, signed."""
  c_public: bytes
  s_public: bytes
  signature: bytes


def advert_message(round_num: int, client_id: int, c_public: bytes, s_public: bytes) -> bytes:
  """The bytes a client signs in stage 0: (round, its id, c_pk, s_pk), each of fixed length."""
  if len(c_public) != ka.PUBLIC_KEY_BYTES or len(s_public) != ka.PUBLIC_KEY_BYTES:
    raise protocol.SecureAggregationError(f"client {client_id}: public keys must be {ka.PUBLIC_KEY_BYTES} bytes")
  return _DOMAIN + b"advertise|" + struct.pack(">QI", round_num, client_id) + c_public + s_public


def session_id(round_num: int, table: Mapping[int, SignedKeys]) -> bytes:
  """SHA-256 of the round's table of signed adverts, in client order: names this session only."""
  digest = hashlib.sha256(_DOMAIN + b"session|" + struct.pack(">QI", round_num, len(table)))
  for u in sorted(table):
    entry = table[u]
    digest.update(struct.pack(">I", u) + entry.c_public + entry.s_public + entry.signature)
  return digest.digest()


def survivors_message(round_num: int, session: bytes, num_clients: int, survivors: Iterable[int]) -> bytes:
  """The bytes a client signs in the consistency check: (round, session, n, the survivors as a bitmap)."""
  bitmap = bytearray((num_clients + 7) // 8)
  for u in survivors:
    bitmap[u // 8] |= 1 << (u % 8)
  return _DOMAIN + b"survivors|" + struct.pack(">QI", round_num, num_clients) + session + bytes(bitmap)


def count_valid_signatures(registry: KeyRegistry, message: bytes, survivors: Iterable[int],
                           signatures: Iterable[ForwardedSignature]) -> int:
  """Distinct clients in `survivors` whose registered identity signed `message`.

  A signature counts once per signer, only if it verifies, and only if its
  signer is in the list: a forged, replayed (another round, session or list)
  or duplicated one, or one from a client the list says dropped, adds nothing.
  """
  members, valid = set(survivors), set()
  for signer, signature in signatures:
    if signer in members and signer not in valid and registry.verify(signer, message, signature):
      valid.add(signer)
  return len(valid)


class ActiveClient:
  """One client's side of the active-server option, around its `protocol.ClientState`."""

  def __init__(self, state: protocol.ClientState, identity: Identity, registry: KeyRegistry,
               graph: graph_lib.Graph, params: params_lib.SecAggParameters):
    self.id = state.id
    self._state = state
    self._identity = identity
    self._registry = registry
    self._params = params
    self._neighbours = list(graph[state.id])
    self._advert: Optional[SignedKeys] = None
    self._session: Optional[bytes] = None
    self._signed: Optional[tuple[int, ...]] = None  # the one survivor list it signed this round

  def advertise(self) -> SignedKeys:
    """Stage 0: the two public keys, signed with the long-term identity."""
    c_public, s_public = self._state.advertise_keys()
    signature = self._identity.sign(advert_message(self._state.round_num, self.id, c_public, s_public))
    self._advert = SignedKeys(c_public, s_public, signature)
    return self._advert

  def share_keys(self, table: Mapping[int, SignedKeys]) -> dict[int, bytes]:
    """Stage 1 on the server's broadcast table: checked (`_accept_keys`), then shares as before."""
    return self._state.share_keys(self._accept_keys(table))

  def _accept_keys(self, table: Mapping[int, SignedKeys]) -> dict[int, tuple[bytes, bytes]]:
    n, round_num = self._params.num_clients, self._state.round_num
    if set(table) != set(range(n)):
      raise protocol.SecureAggregationError(f"client {self.id}: the key table must list the round's {n} clients")
    if self._advert is None or table[self.id] != self._advert:
      raise protocol.SecureAggregationError(
          f"client {self.id}: the key table does not hold the keys this client advertised: refusing the round")
    for v in self._neighbours:
      entry = table[v]
      if not self._registry.verify(v, advert_message(round_num, v, entry.c_public, entry.s_public),
                                   entry.signature):
        raise protocol.SecureAggregationError(
            f"client {self.id}: the keys advertised for client {v} are not signed by its registered identity "
            "(keys substituted by the server?): refusing the round")
    self._session = session_id(round_num, table)
    return {v: (table[v].c_public, table[v].s_public) for v in self._neighbours}

  def _list_message(self, survivors: Sequence[int]) -> bytes:
    return survivors_message(self._state.round_num, self._session, self._params.num_clients, survivors)

  def sign_survivors(self, survivors: Sequence[int], dropped: Sequence[int]) -> bytes:
    """The consistency check: signs the survivor list it received, once per round.

    Raises SecureAggregationError for a list that does not split the round's
    clients, that says this client dropped (it is answering), or that
    differs from one it already signed: a second signature would let two
    lists reach the quorum.
    """
    n, listed = self._params.num_clients, tuple(sorted(set(survivors)))
    if set(listed) & set(dropped) or set(listed) | set(dropped) != set(range(n)):
      raise protocol.SecureAggregationError(f"client {self.id}: survivors and dropped clients must split {n}")
    if self.id not in listed:
      raise protocol.SecureAggregationError(f"client {self.id}: the survivor list says this client dropped")
    if self._session is None:
      raise protocol.SecureAggregationError(f"client {self.id}: no keys were accepted this round")
    if self._signed is not None and self._signed != listed:
      raise protocol.SecureAggregationError(
          f"client {self.id}: refusing to sign a second, different survivor list this round")
    self._signed = listed
    return self._identity.sign(self._list_message(listed))

  def unmask_response(self, survivors: Sequence[int], dropped: Sequence[int],
                      signatures: Iterable[ForwardedSignature]) -> dict:
    """Unmasking: the shares `protocol.ClientState.unmask_response` gives, only on a quorum of signatures.

    Raises SecureAggregationError, revealing nothing, unless the request is
    for the list this client signed and at least q = `params.consistency_quorum`
    distinct clients in that list signed exactly it.
    """
    listed = tuple(sorted(set(survivors)))
    if self._signed is None or self._signed != listed:
      raise protocol.SecureAggregationError(
          f"client {self.id}: asked to reveal shares for a survivor list it did not sign: refusing")
    quorum = params_lib.consistency_quorum(self._params.num_clients, self._params.max_corrupt)
    valid = count_valid_signatures(self._registry, self._list_message(listed), listed, signatures)
    if valid < quorum:
      raise protocol.SecureAggregationError(
          f"client {self.id}: {valid} valid signatures on its survivor list, below the quorum q={quorum} "
          f"(2q > n + C = {self._params.num_clients + self._params.max_corrupt}): another list may be in use, "
          "so it reveals nothing")
    return self._state.unmask_response(survivors, dropped)


class ActiveSecAggRound(protocol.SecAggRound):
  """`protocol.SecAggRound` with signed keys and the consistency check (module docstring).

  Args:
    params: the round's parameters (chosen with `ThreatModel(active_server=True)`).
    round_num: the round number, signed into every message.
    identities: the clients' long-term identities, at least `params.num_clients`.
    registry: their verify keys (`enroll`).
    **kwargs: `order_seed`, `rounding_rng`, `graph_fn`, as `protocol.SecAggRound` takes them.
  """

  def __init__(self, params: params_lib.SecAggParameters, round_num: int, identities: Sequence[Identity],
               registry: KeyRegistry, **kwargs):
    if len(identities) < params.num_clients or any(u not in registry for u in range(params.num_clients)):
      raise ValueError(f"the active-server option needs {params.num_clients} enrolled clients")
    self._identities = list(identities)
    self.registry = registry
    self.advertised: dict[int, SignedKeys] = {}  # the table the server broadcasts in stage 0
    super().__init__(params, round_num, **kwargs)

  def _exchange_keys(self) -> None:
    """Stages 0-1 with signed adverts: the server collects them and broadcasts the table."""
    self._active = [ActiveClient(c, self._identities[c.id], self.registry, self.graph, self.params)
                    for c in self._clients]
    self.advertised = {a.id: a.advertise() for a in self._active}
    for u, keys in self.advertised.items():
      self._server.public_keys[u] = (keys.c_public, keys.s_public)
    for a in self._active:
      self._server.route(a.id, a.share_keys(self.table_for(a.id)))
    for c in self._clients:
      c.receive_shares(self._server.mailbox[c.id])

  def table_for(self, client: int) -> Mapping[int, SignedKeys]:
    """The table of signed adverts the server sends `client` in stage 0: one table for all.

    A server that deviates sends something else; the tests model one by overriding this.
    """
    del client  # an honest server sends every client the same table
    return self.advertised

  def unmask(self, survivors: Sequence[int], dropped: Sequence[int]) -> list[protocol.SignedSeed]:
    """The consistency check, then Unmasking, as an honest server runs them: one list for all."""
    self.check_release(survivors, dropped)
    signatures = [(v, self._active[v].sign_survivors(survivors, dropped)) for v in survivors]
    responses = {v: self._active[v].unmask_response(survivors, dropped, signatures) for v in survivors}
    return self._server.unmask_seeds(survivors, dropped, responses)

  def protocol_upload_bytes(self) -> int:
    """As `protocol.SecAggRound`, plus the two signatures (advert and survivor list)."""
    return super().protocol_upload_bytes() + 2 * SIGNATURE_BYTES

  def protocol_download_bytes(self) -> int:
    """Per client, what the option adds to its download: the n signed adverts and up to n signatures."""
    entry = 2 * ka.PUBLIC_KEY_BYTES + SIGNATURE_BYTES
    return self.num_clients * (entry + 4 + SIGNATURE_BYTES + 4)
