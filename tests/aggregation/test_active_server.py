"""The active-server option (`consistency`): the attacks of a server that deviates, with and without it.

Pure Python: masks are the AES-CTR streams of `prg`, added to integer vectors
mod 2^32 as the Federated Core computation adds them; the last test runs the
option once through the Federated Core secure sum.
"""
import itertools

import numpy as np
import pytest

from tff_research.aggregation.secagg import consistency
from tff_research.aggregation.secagg import key_agreement as ka
from tff_research.aggregation.secagg import params
from tff_research.aggregation.secagg import protocol
from tff_research.aggregation.secagg import shamir
from tff_research.aggregation.secagg import streams  # pylint: disable=g-import-not-at-top

N = 8
DIM = 257
HONEST_BUT_CURIOUS = params.ThreatModel()
ACTIVE = params.ThreatModel(server_chosen_dropouts=True, active_server=True)


def _hbc_round(n=N, order_seed=3):
  return protocol.SecAggRound(params.choose_parameters(n, HONEST_BUT_CURIOUS), round_num=0, order_seed=order_seed)


def _active_round(n=N, round_num=0, enrolled=None, order_seed=3, cls=consistency.ActiveSecAggRound):
  identities, registry = enrolled or consistency.enroll(n)
  return cls(params.choose_parameters(n, ACTIVE), round_num, identities, registry, order_seed=order_seed)


def _masked_input(rnd, u, x):
  """What client u uploads in stage 2: x plus its self mask and pairwise masks, mod 2^32."""
  return streams.add_signed_streams(x.copy(), rnd.mask_seeds([u])[0])


def _split_views(rnd, victim, corrupt):
  """The review's attack: survivor lists in which `victim` survives (group A) or dropped (group B).

  Group A is the victim and t - 2 more of its honest share holders, group B
  the rest of them: with the corrupt holder's shares of both kinds, each
  group's shares reach t. Clients that hold none of the victim's shares get
  no request (the attack needs none of them).
  """
  t = rnd.threshold
  holders = sorted(set(rnd.graph[victim]) | {victim})
  others = [h for h in holders if h not in (victim, corrupt)]
  group_a, group_b = [victim] + others[:t - 2], others[t - 2:]
  assert len(group_a) + 1 >= t and len(group_b) + 1 >= t, "the review's split needs t <= k / 2 + 1"
  everyone = list(range(rnd.num_clients))
  views = {u: everyone for u in group_a}
  views.update({u: [v for v in everyone if v != victim] for u in group_b})
  return views, group_a, group_b


def _dropped(rnd, survivors):
  return [u for u in range(rnd.num_clients) if u not in survivors]


def _victim_shares(responses, corrupt_shares, victim):
  """The victim's (b, sk) shares the server holds: those revealed, plus the corrupt holder's pair."""
  x, (b, sk) = corrupt_shares
  b_shares, sk_shares = {x: b}, {x: sk}
  for resp in responses:
    b_shares.update({p: y for u, (p, y) in resp["b"].items() if u == victim})
    sk_shares.update({p: y for u, (p, y) in resp["sk"].items() if u == victim})
  return b_shares, sk_shares


def _unmask_one(rnd, victim, y, b_seed, s_private):
  """The victim's input from its masked vector, its self-mask seed and its mask key."""
  keys = ka.KeyPair.from_private_bytes(s_private)
  seeds = [(b_seed, -1)]
  for v in rnd.graph[victim]:
    s_pk = rnd._server.public_keys[v][1]  # pylint: disable=protected-access
    seeds.append((keys.agree(s_pk, rnd.round_num, victim, v, b"mask"), -1 if victim < v else 1))
  return streams.add_signed_streams(y.copy(), seeds)


def test_inconsistent_lists_give_the_server_both_secrets_without_the_option():
  """The review's attack at n = 8 on the honest-but-curious protocol: it succeeds."""
  rnd = _hbc_round()
  victim = 0
  corrupt = rnd.graph[victim][0]
  x = np.random.default_rng(0).integers(0, 2**32, DIM, dtype=np.uint64).astype(np.uint32)
  y = _masked_input(rnd, victim, x)
  views, _, _ = _split_views(rnd, victim, corrupt)
  clients = rnd._clients  # pylint: disable=protected-access
  responses = [clients[v].unmask_response(view, _dropped(rnd, view)) for v, view in views.items()]
  corrupt_shares = (corrupt + 1, clients[corrupt]._held[victim])  # pylint: disable=protected-access
  b_shares, sk_shares = _victim_shares(responses, corrupt_shares, victim)
  b = shamir.reconstruct(b_shares, rnd.threshold).to_bytes(ka.SEED_BYTES, "big")
  sk = shamir.reconstruct(sk_shares, rnd.threshold).to_bytes(32, "big")
  assert b == clients[victim]._self_seed  # pylint: disable=protected-access
  assert sk == clients[victim]._s.private_bytes  # pylint: disable=protected-access
  np.testing.assert_array_equal(_unmask_one(rnd, victim, y, b, sk), x)  # its input, exactly


def _sign_as_corrupt(rnd, identities, corrupt, survivors):
  """A corrupt client signs whatever the server asks, with its own identity, for this session."""
  session = consistency.session_id(rnd.round_num, rnd.advertised)
  return corrupt, identities[corrupt].sign(
      consistency.survivors_message(rnd.round_num, session, rnd.num_clients, sorted(survivors)))


def _active_attack(rnd, identities, views, corrupt):
  """The server collects each client's signature on its own view, adds the corrupt client's on
  every view, forwards all of them to everyone and asks for shares. Returns (responses, refusals)."""
  active = rnd._active  # pylint: disable=protected-access
  signatures = [(v, active[v].sign_survivors(view, _dropped(rnd, view))) for v, view in views.items()]
  signatures += [_sign_as_corrupt(rnd, identities, corrupt, view) for view in {tuple(w) for w in views.values()}]
  responses, refusals = {}, {}
  for v, view in views.items():
    try:
      responses[v] = active[v].unmask_response(view, _dropped(rnd, view), signatures)
    except protocol.SecureAggregationError as e:
      refusals[v] = str(e)
  return responses, refusals


def test_inconsistent_lists_are_refused_with_the_option():
  """The same attack with signed keys and the consistency check: no client reveals, nothing is rebuilt."""
  enrolled = consistency.enroll(N)
  rnd = _active_round(enrolled=enrolled)
  victim = 0
  corrupt = rnd.graph[victim][0]
  views, _, _ = _split_views(rnd, victim, corrupt)
  responses, refusals = _active_attack(rnd, enrolled[0], views, corrupt)
  assert not responses and set(refusals) == set(views)
  assert all("below the quorum" in e for e in refusals.values())
  assert not any(c._revealed for c in rnd._clients)  # pylint: disable=protected-access
  held = rnd._clients[corrupt]._held[victim]  # pylint: disable=protected-access
  b_shares, sk_shares = _victim_shares(responses.values(), (corrupt + 1, held), victim)
  for shares in (b_shares, sk_shares):
    with pytest.raises(shamir.NotEnoughSharesError):
      shamir.reconstruct(shares, rnd.threshold)


@pytest.mark.parametrize("swap,reverse", list(itertools.product([False, True], [False, True])))
def test_conflicting_lists_to_two_halves_reveal_one_list_at_most(swap, reverse):
  """Every client gets a list: the victim survives in one, dropped in the other, and the server
  favours either half and asks in either order. At most the half holding one list reveals (2q > n + C),
  so only one kind of the victim's shares ever reaches t; with one client left out, neither half does."""
  n = 10
  enrolled = consistency.enroll(n)
  rnd = _active_round(n, enrolled=enrolled)
  victim, corrupt = 0, rnd.graph[0][0]
  honest = [u for u in range(n) if u != corrupt]
  keeps, drops = list(range(n)), [u for u in range(n) if u != victim]
  half_a, half_b = [victim] + [u for u in honest if u != victim][:4], [u for u in honest if u != victim][4:]
  if swap:
    half_a, half_b = [victim] + half_b[:-1], half_a[1:] + half_b[-1:]
  views = {u: keeps for u in half_a} | {u: drops for u in half_b}
  if reverse:
    views = dict(reversed(list(views.items())))
  responses, refusals = _active_attack(rnd, enrolled[0], views, corrupt)
  quorum = params.consistency_quorum(n, rnd.params.max_corrupt)
  assert len({tuple(views[v]) for v in responses}) <= 1  # the revealers all hold one list
  for group in (half_a, half_b):  # with the corrupt client's signature, a half reaches q or it does not
    assert set(group) <= set(responses if len(group) + 1 >= quorum else refusals)
  held = rnd._clients[corrupt]._held[victim]  # pylint: disable=protected-access
  b_shares, sk_shares = _victim_shares(responses.values(), (corrupt + 1, held), victim)
  assert min(len(b_shares), len(sk_shares)) < rnd.threshold
  # Withholding the list from one client leaves neither half a quorum: nobody reveals.
  rnd = _active_round(n, enrolled=enrolled)
  views.pop(half_a[-1] if len(half_a) > len(half_b) else half_b[-1])
  responses, refusals = _active_attack(rnd, enrolled[0], views, corrupt)
  assert not responses and set(refusals) == set(views)


class _SubstitutingServer(consistency.ActiveSecAggRound):
  """A man in the middle: client 0 gets its first neighbour's keys replaced by the server's own."""
  server_keys = (ka.KeyPair.generate(), ka.KeyPair.generate())
  resign_with = None  # an identity of the server's, to re-sign the forged entry with

  def table_for(self, client):
    if client != 0:
      return self.advertised
    v = self.graph[0][0]
    c_pk, s_pk = (k.public_bytes for k in self.server_keys)
    signature = self.advertised[v].signature
    if self.resign_with is not None:
      signature = self.resign_with.sign(consistency.advert_message(self.round_num, v, c_pk, s_pk))
    return {**self.advertised, v: consistency.SignedKeys(c_pk, s_pk, signature)}


def test_substituted_public_keys_are_refused():
  # Without the option the substitution goes unnoticed and hands the server client 0's pairwise seed.
  class Mitm(protocol.SecAggRound):
    def _exchange_keys(self):
      v = self.graph[0][0]
      for c in self._clients:
        self._server.public_keys[c.id] = c.advertise_keys()
      forged = {**self._server.keys_for(0), v: tuple(k.public_bytes for k in _SubstitutingServer.server_keys)}
      for c in self._clients:
        self._server.route(c.id, c.share_keys(forged if c.id == 0 else self._server.keys_for(c.id)))

  rnd = Mitm(params.choose_parameters(N, HONEST_BUT_CURIOUS), round_num=0, order_seed=3)
  v = rnd.graph[0][0]
  s_pk0 = rnd._server.public_keys[0][1]  # pylint: disable=protected-access
  seed_0v = dict(zip([0] + rnd.graph[0], [s for s, _ in rnd.mask_seeds([0])[0]]))[v]
  assert _SubstitutingServer.server_keys[1].agree(s_pk0, 0, 0, v, b"mask") == seed_0v
  # With it, client 0 refuses the round, whether the server keeps v's signature or signs the keys itself.
  for resign_with in (None, consistency.Identity.generate()):
    server = type("Server", (_SubstitutingServer,), {"resign_with": resign_with})
    with pytest.raises(protocol.SecureAggregationError, match=f"advertised for client {v} are not signed"):
      _active_round(cls=server)


def test_a_changed_own_entry_or_a_rewritten_registry_is_refused():
  class OwnKeysChanged(consistency.ActiveSecAggRound):
    def table_for(self, client):
      entry = self.advertised[client]
      return {**self.advertised, client: consistency.SignedKeys(entry.s_public, entry.c_public, entry.signature)}

  with pytest.raises(protocol.SecureAggregationError, match="does not hold the keys this client advertised"):
    _active_round(cls=OwnKeysChanged)
  keys = {0: consistency.Identity.generate().verify_key}
  registry = consistency.KeyRegistry(keys)
  keys[0] = consistency.Identity.generate().verify_key  # the enrolling caller's dict is copied, not kept
  assert registry.verify_key(0) != keys[0]
  with pytest.raises(TypeError):
    registry._keys[0] = keys[0]  # pylint: disable=protected-access
  with pytest.raises(AttributeError):
    registry._keys = {0: keys[0]}  # pylint: disable=protected-access


def _honest_signatures(rnd, survivors):
  return [(v, rnd._active[v].sign_survivors(survivors, _dropped(rnd, survivors))) for v in survivors]  # pylint: disable=protected-access


def test_forged_replayed_duplicated_and_outside_signatures_do_not_count():
  n = 10
  enrolled = consistency.enroll(n)
  identities, registry = enrolled
  survivors, dropped = list(range(1, n)), [0]
  quorum = params.consistency_quorum(n, params.choose_parameters(n, ACTIVE).max_corrupt)
  earlier = _active_round(n, round_num=4, enrolled=enrolled)
  other_round = _active_round(n, round_num=5, enrolled=enrolled)
  retried = _active_round(n, round_num=5, enrolled=enrolled)  # the same round number, attempted again
  old = {"round 4": _honest_signatures(earlier, survivors), "round 5, first attempt": _honest_signatures(
      other_round, survivors)}
  fresh = _honest_signatures(retried, survivors)
  signer = retried._active[1]  # pylint: disable=protected-access
  message = signer._list_message(survivors)  # pylint: disable=protected-access
  count = lambda sigs: consistency.count_valid_signatures(registry, message, survivors, sigs)  # pylint: disable=unnecessary-lambda-assignment
  assert count(fresh) == n - 1
  for name, replayed in old.items():
    assert count(replayed) == 0, name
  other_list = list(range(2, n))
  assert count([(v, identities[v].sign(signer._list_message(other_list))) for v in survivors]) == 0  # pylint: disable=protected-access
  assert count([(v, bytes(64)) for v in survivors] + [(v, b"short") for v in survivors]) == 0
  assert count([(v, identities[2].sign(message)) for v in survivors]) == 1  # client 2's, relabelled: only 2's counts
  assert count([fresh[0]] * n) == 1  # duplicates count once
  assert count([(0, identities[0].sign(message)), (n, identities[1].sign(message))]) == 0  # dropped client, unknown id
  # One fresh signature short of the quorum, padded with every kind above: client 1 reveals nothing.
  padded = fresh[:quorum - 1] + old["round 5, first attempt"] + [fresh[0]] * n + [(0, identities[0].sign(message))]
  with pytest.raises(protocol.SecureAggregationError, match=f"{quorum - 1} valid signatures"):
    signer.unmask_response(survivors, dropped, padded)
  assert not retried._clients[1]._revealed  # pylint: disable=protected-access
  assert signer.unmask_response(survivors, dropped, fresh[:quorum])["b"]


def test_a_client_signs_one_list_and_reveals_only_for_it():
  rnd = _active_round(10)
  client = rnd._active[1]  # pylint: disable=protected-access
  everyone = list(range(10))
  with pytest.raises(protocol.SecureAggregationError, match="says this client dropped"):
    client.sign_survivors([u for u in everyone if u != 1], [1])
  client.sign_survivors(everyone, [])
  assert client.sign_survivors(everyone, []) == client.sign_survivors(everyone, [])  # the same list: the same answer
  with pytest.raises(protocol.SecureAggregationError, match="second, different survivor list"):
    client.sign_survivors([u for u in everyone if u != 2], [2])
  signatures = _honest_signatures(rnd, everyone)
  with pytest.raises(protocol.SecureAggregationError, match="did not sign"):
    client.unmask_response([u for u in everyone if u != 2], [2], signatures)


@pytest.mark.parametrize("n,dropped", [(8, []), (8, [5]), (10, [0]), (20, [3, 17]), (24, [])])
def test_honest_run_with_the_option_gives_the_exact_sum(n, dropped):
  rnd = _active_round(n, order_seed=None)
  assert len(dropped) <= rnd.params.max_dropouts
  survivors = [u for u in range(n) if u not in dropped]
  xs = np.random.default_rng(n).integers(0, 2**32, (n, DIM), dtype=np.uint64).astype(np.uint32)
  total = np.zeros(DIM, np.uint32)
  for u in survivors:
    total += _masked_input(rnd, u, xs[u])  # uint32 arithmetic wraps mod 2^32
  unmasked = streams.add_signed_streams(total, [(seed, -sign) for seed, sign in rnd.unmask(survivors, dropped)])
  np.testing.assert_array_equal(unmasked, xs[survivors].sum(axis=0, dtype=np.uint64).astype(np.uint32))
  base = protocol.SecAggRound.protocol_upload_bytes(rnd)
  assert rnd.protocol_upload_bytes() == base + 2 * consistency.SIGNATURE_BYTES


def test_the_option_through_the_secure_sum_and_its_settings():
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.aggregation import SecureSumConfig  # pylint: disable=g-import-not-at-top
  from tff_research.aggregation import build_secure_sum  # pylint: disable=g-import-not-at-top
  from tff_research.learning import config as learning_config  # pylint: disable=g-import-not-at-top
  n = 6
  values = [np.arange(7, dtype=np.int32) * (u + 1) - 20 for u in range(n)]
  off = build_secure_sum(tff.TensorType(np.int32, [7]), n, SecureSumConfig(int_clip=1000))
  on = build_secure_sum(tff.TensorType(np.int32, [7]), n, SecureSumConfig(int_clip=1000, active_server=True))
  assert type(off.new_round(n, 0)) is protocol.SecAggRound  # off: the honest-but-curious protocol, unchanged
  assert isinstance(on.new_round(n, 0), consistency.ActiveSecAggRound) and on.config.threat().server_chosen_dropouts
  result = on(values, round_num=1, dropped=[4])
  np.testing.assert_array_equal(result.value, np.sum([values[u] for u in range(n) if u != 4], axis=0))
  rnd = on.new_round(n, 2)
  assert result.upload_bytes_per_client == on.quantizer.upload_bytes() + protocol.SecAggRound.protocol_upload_bytes(
      rnd) + 2 * consistency.SIGNATURE_BYTES
  experiment = learning_config.ExperimentConfig(aggregator="secure", secure_active_server=True)
  assert experiment.secure_sum_config().active_server


def test_settings_that_cannot_reach_the_quorum_are_refused_when_built():
  from tff_research.aggregation import config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="needs server_chosen_dropouts=True") as error:
    params.ThreatModel(active_server=True)
  assert "\n" not in str(error.value)
  assert config.SecureSumConfig(active_server=True).threat() == ACTIVE  # the config turns both on
  for n, delta, gamma, fix in [(10, 0.45, 0.05, "the smallest round that works is n=20"),
                               (10, 0.5, 0.1, "no round size does")]:
    threat = params.ThreatModel(max_dropout=delta, max_corrupt=gamma, server_chosen_dropouts=True,
                                active_server=True)
    with pytest.raises(ValueError, match=rf"needs q=6 signatures .* only 5 of n=10 .*; {fix}") as error:
      params.choose_parameters(n, threat)
    assert "\n" not in str(error.value)
  # 2q > n + C: q = 6 of 10 (C = 1) and of 20 (C = 1); the n - D survivors reach it from n = 4 at the defaults.
  assert [params.consistency_quorum(n, c) for n, c in [(4, 1), (10, 1), (20, 1), (100, 5)]] == [3, 6, 11, 53]
  assert params.choose_parameters(4, ACTIVE).threshold == 3
  # A process built for 10 clients with delta = 0.4 accepts rounds of 5 to 10 without the option; with it,
  # 9 clients leave 5 survivors for a quorum of 6, so only rounds of 10.
  assert config.SecureSumConfig(max_dropout=0.4).smallest_round(10) == 5
  assert config.SecureSumConfig(max_dropout=0.4, active_server=True).smallest_round(10) == 10
