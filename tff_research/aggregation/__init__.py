"""Pairwise-masked secure aggregation (SecAgg / SecAgg+) running in TFF's Federated Core.

Modules, one concept each: `shamir` (secret sharing), `key_agreement`
(X25519 + HKDF + AES-GCM), `graph` (SecAgg+ neighbour graph), `protocol`
(the Python stages: keys, shares, unmasking), `masked_sum` (the Federated
Core computations), `secure_fed_avg` (FedAvg whose aggregation is the masked sum).
"""
from tff_research.aggregation.masked_sum import SecureSum, SecureSumConfig, SecureSumResult, build_secure_sum
from tff_research.aggregation.protocol import SecureAggregationError
from tff_research.aggregation.secure_fed_avg import (SecureAggregationConfig, SecureFedAvgProcess,
                                                     build_secure_weighted_fed_avg)
