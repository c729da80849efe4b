"""The secure sum's protocol parts that are pure Python (no TensorFlow), one concept each.

`params` (the degree and threshold a threat model needs, after Bell et al.
2020), `graph` (the masking graph), `shamir` (secret sharing),
`key_agreement` (X25519 + HKDF + AES-GCM), `streams` (AES-128-CTR
keystreams), `protocol` (the parties' stages: keys, shares, the release
check, unmasking), `consistency` (the active-server option: Ed25519
identities, signed keys, the consistency round).
"""
