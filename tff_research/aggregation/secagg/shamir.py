"""Shamir secret sharing over the prime field GF(2^521 - 1).

Why this field: the secrets we share are 128-bit self-mask seeds and 256-bit
X25519 private keys; the Mersenne prime 2^521 - 1 is larger than both, so each
secret is one field element and no splitting or encoding tricks are needed.
A share is one field element (66 bytes). Coefficients come from `secrets`
(the OS CSPRNG). This is textbook Shamir (1979): a random polynomial of degree
t - 1 with the secret as its constant term, evaluated at x = 1, 2, ...; any t
shares give the secret back by Lagrange interpolation at 0, fewer reveal
nothing about it.
"""
from __future__ import annotations

import secrets
from typing import Mapping, Sequence

PRIME = 2**521 - 1
SHARE_BYTES = (PRIME.bit_length() + 7) // 8


class NotEnoughSharesError(ValueError):
  """Fewer than `threshold` shares were offered for a reconstruction."""


def split(secret: int, xs: Sequence[int], threshold: int) -> dict[int, int]:
  """Shares `secret` at the distinct nonzero points `xs`; any `threshold` recover it."""
  if not 0 <= secret < PRIME:
    raise ValueError("secret must be a field element in [0, 2^521 - 1)")
  if not 1 <= threshold <= len(xs):
    raise ValueError(f"threshold {threshold} must be in [1, {len(xs)}] (number of shares)")
  if len(set(xs)) != len(xs) or any(x % PRIME == 0 for x in xs):
    raise ValueError("share points must be distinct and nonzero mod p")
  coeffs = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
  shares = {}
  for x in xs:
    y = 0
    for c in reversed(coeffs):  # Horner
      y = (y * x + c) % PRIME
    shares[x] = y
  return shares


def reconstruct(shares: Mapping[int, int], threshold: int) -> int:
  """The secret from any `threshold` of `shares` ({x: y}); raises if too few."""
  if len(shares) < threshold:
    raise NotEnoughSharesError(f"{len(shares)} shares offered, {threshold} needed")
  points = list(shares.items())[:threshold]
  secret = 0
  for j, (xj, yj) in enumerate(points):
    num, den = 1, 1
    for m, (xm, _) in enumerate(points):
      if m != j:
        num = num * (-xm) % PRIME
        den = den * (xj - xm) % PRIME
    secret = (secret + yj * num * pow(den, -1, PRIME)) % PRIME
  return secret


def int_to_bytes(value: int) -> bytes:
  return value.to_bytes(SHARE_BYTES, "big")


def bytes_to_int(data: bytes) -> int:
  return int.from_bytes(data, "big")
