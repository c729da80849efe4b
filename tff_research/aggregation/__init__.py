"""Pairwise-masked secure aggregation (SecAgg / SecAgg+) running in TFF's Federated Core.

Modules, one concept each: `config` (a secure sum's settings), `params`
(the degree and threshold a threat model needs, after Bell et al. 2020),
`quantization` (fixed-point encoding into Z_{2^b}), `prg` (mask PRGs:
AES-CTR, Philox), `shamir` (secret sharing), `key_agreement` (X25519 + HKDF
+ AES-GCM), `graph` (the masking graph), `protocol` (the parties' Python
stages: keys, shares, the release check, unmasking), `driver` (a round's
steps around the Federated Core computations), `secure_sum` (those
computations and the secure sum), `secure_fed_avg` (FedAvg whose aggregation
is the masked sum). A researcher can swap the quantizer, the PRG or the
graph without touching the rest (`build_secure_sum`'s keyword arguments).

Threat model. The server is honest-but-curious: it runs the protocol as
written and tries to learn more from what it sees (public keys, routed
ciphertexts, masked vectors, the shares it is sent). Up to a fraction gamma
(`max_corrupt`) of a round's clients are semi-honest and collude with it
(static corruption); up to a fraction delta (`max_dropout`) drop out after
sharing their keys. Under that model the server learns the sum of the
surviving clients' inputs and nothing else, except with probability
2^-sigma (sigma = 40): masks expand 128-bit seeds with AES-128-CTR; the
degree k and threshold t are chosen from (n, delta, gamma) as Bell et al.
analyse (`params`); and before any share is revealed the server, and again
every client, checks that the survivors' masking graph is connected (else
the server would learn the sum of each part), that every secret has t live
holders and that no more than ceil(delta n) clients dropped
(`protocol.check_release`); a client never reveals both kinds of share of a
peer, however often it is asked.

Not claimed. An actively malicious server, one that sends different
survivor lists to different clients or drops and forges messages, needs
what Bonawitz et al. (CCS 2017) add for that setting: signed keys (a PKI)
and the consistency-check round; neither is implemented, nor are dropouts
chosen by an adversary. The simulation runs every party in one Python
process and one TFF worker, so the isolation between clients and server is
by code structure only, and nothing crosses a network; what it does show is
that the arithmetic is exact, that each masked vector as it enters the
server's sum is uniform whatever the input, that every refused release
reveals nothing, and what the protocol costs.
"""
from tff_research.aggregation.config import SecureSumConfig
from tff_research.aggregation.params import SecAggParameters
from tff_research.aggregation.params import ThreatModel
from tff_research.aggregation.params import choose_parameters
from tff_research.aggregation.protocol import SecureAggregationError
from tff_research.aggregation.secure_fed_avg import SecureAggregationConfig
from tff_research.aggregation.secure_fed_avg import SecureFedAvgProcess
from tff_research.aggregation.secure_fed_avg import build_secure_weighted_fed_avg
from tff_research.aggregation.secure_sum import SecureSum
from tff_research.aggregation.secure_sum import SecureSumResult
from tff_research.aggregation.secure_sum import build_secure_sum

__all__ = [
    "SecureSumConfig",
    "SecAggParameters",
    "ThreatModel",
    "choose_parameters",
    "SecureAggregationError",
    "SecureAggregationConfig",
    "SecureFedAvgProcess",
    "build_secure_weighted_fed_avg",
    "SecureSum",
    "SecureSumResult",
    "build_secure_sum",
]
