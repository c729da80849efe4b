"""Pairwise-masked secure aggregation (SecAgg / SecAgg+) running in TFF's Federated Core.

Layers, one concept per module:
* the seam: `interactive` (an aggregation whose protocol runs Python between
  two Federated Core stages; a refused round is a value);
* the secure sum on it: `masked_sum` (`SecureSumFactory`, the one
  implementation, weighted or not), `encoders` (what runs at the clients
  before quantization and at the server after decoding), `secure_sum` (the
  sum used on its own), `fixed_point` (its ideal functionality as a plain
  `tff.aggregators` factory);
* TF parts: `quantization` (fixed-point encoding into Z_{2^b}), `prg` (mask
  PRGs: AES-CTR, Philox), `driver` (a round's protocol steps around the
  Federated Core stages);
* pure Python: `config` (a secure sum's settings) and the `secagg`
  subpackage, the protocol's parts: `params` (the degree and threshold a
  threat model needs, after Bell et al. 2020), `shamir`, `key_agreement`
  (X25519 + HKDF + AES-GCM), `streams` (AES-128-CTR keystreams), `graph`
  (the masking graph), `protocol` (the parties' stages: keys, shares, the
  release check, unmasking), `consistency` (the active-server option).

Threat model (the README lists each claim with the test that attacks it).
Dropouts are assumed independent of the masking graph unless the threat
model says the server chooses them: Bell et al.'s bound on the degree k,
like federated-compute's, is over a random ring order that the dropouts do
not depend on, and the server knows the order. By default the server is
honest-but-curious: it runs the protocol as written and tries to learn more
from what it sees (public keys, routed ciphertexts, masked vectors, the
shares it is sent). Up to C = ceil(gamma n) of a round's n clients
(`max_corrupt`) are semi-honest and collude with it, fixed before the
round; up to D = ceil(delta n) (`max_dropout`) drop after sharing their keys.
Under that model the server learns the sum of the survivors' inputs, which
holds at least `min_honest` (default 2) honest inputs, and nothing else,
except with probability 2^-sigma (sigma = 40): k and t come from
(n, delta, gamma) as Bell et al. analyse (`params`), rounds that could hold
fewer honest inputs are refused when built, and before any share is
revealed the server and again every client check the release
(`protocol.check_release`: a connected survivors' graph, t live holders per
secret, at most D dropped, at least C + min_honest survived); a client never
reveals both kinds of share of a peer. `server_chosen_dropouts=True` drops
the independence assumption (k > C + D; H(k, n) is k-vertex-connected), and
`active_server=True` covers a server that deviates from the protocol with
signed keys and the consistency round (`consistency`). Every client's
randomness (keys, self masks, stochastic rounding) comes from its own
CSPRNG, never from a seed the server knows.

Not claimed: a server that chooses the ring order (the simulation draws it,
in `protocol.SecAggRound`); inputs forged or poisoned by corrupt clients; a
server that lies about the result; denial of service; a real PKI (the key
registry is an in-process object). The simulation runs every party in one
Python process and one TFF worker, so the isolation between clients and
server is by code structure only, and nothing crosses a network; what it
does show is that the arithmetic is exact, that each masked vector as it
enters the server's sum is uniform whatever the input, that every refused
release reveals nothing, and what the protocol costs.
"""
import importlib
from typing import Any

from tff_research.aggregation.config import SecureSumConfig
from tff_research.aggregation.secagg.params import SecAggParameters
from tff_research.aggregation.secagg.params import ThreatModel
from tff_research.aggregation.secagg.params import choose_parameters

# Importing the package must not import TensorFlow (`learning.config` reads
# the secure sum's settings before TF's logging is configured), so the
# TensorFlow parts load on first use.
_LAZY = {
    "SecureAggregationError": "secagg.protocol",
    "SecureSumFactory": "masked_sum",
    "MaskedSumProcess": "masked_sum",
    "reproducible_rounding": "masked_sum",
    "FixedPointMeanFactory": "fixed_point",
    "Encoder": "encoders",
    "SecureSum": "secure_sum",
    "SecureSumResult": "secure_sum",
    "build_secure_sum": "secure_sum",
}


def __getattr__(name: str) -> Any:
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["SecureSumConfig", "SecAggParameters", "ThreatModel", "choose_parameters", *_LAZY]
