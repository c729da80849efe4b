"""X25519 key agreement + HKDF-SHA256 key derivation, and seeds as TF inputs.

Each client makes fresh X25519 key pairs every round (`KeyPair.generate`);
only public keys (32 bytes) travel through the server. Two clients derive the
same secret from their own private key and the other's public key, then HKDF
turns it into a key bound to its purpose, the round and the (unordered) pair
of client ids, so a key never repeats across rounds, pairs or uses.

Mask seeds are 128 bits (not folded to 32 bits as in Flower). They enter TF as
two int64 words (`seed_to_tf`); see `prg` for how the PRGs use all 128.
Shares are encrypted in transit with AES-128-GCM under a separate pairwise key
(`purpose=b"enc"`, from a separate key pair, as in Bonawitz et al.), so the
server that routes them cannot read them.
"""
from __future__ import annotations

import os
import struct

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEED_BYTES = 16
PUBLIC_KEY_BYTES = 32
_INFO_PREFIX = b"tff_research/secagg/v1"
_RAW = dict(encoding=serialization.Encoding.Raw)


class KeyPair:
  """An X25519 key pair; `private_bytes` leaves the client only as Shamir shares."""

  def __init__(self, private_key: x25519.X25519PrivateKey):
    self._private = private_key
    self.public_bytes: bytes = private_key.public_key().public_bytes(
        format=serialization.PublicFormat.Raw, **_RAW)

  @classmethod
  def generate(cls) -> "KeyPair":
    return cls(x25519.X25519PrivateKey.generate())

  @classmethod
  def from_private_bytes(cls, data: bytes) -> "KeyPair":
    return cls(x25519.X25519PrivateKey.from_private_bytes(data))

  @property
  def private_bytes(self) -> bytes:
    return self._private.private_bytes(
        format=serialization.PrivateFormat.Raw,
        encryption_algorithm=serialization.NoEncryption(), **_RAW)

  def agree(self, peer_public: bytes, round_num: int, id_a: int, id_b: int,
            purpose: bytes, length: int = SEED_BYTES) -> bytes:
    """HKDF-SHA256(X25519(self, peer)) bound to purpose, round and pair."""
    shared = self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    return derive_key(shared, round_num, id_a, id_b, purpose, length)


def derive_key(shared: bytes, round_num: int, id_a: int, id_b: int, purpose: bytes,
               length: int = SEED_BYTES) -> bytes:
  lo, hi = sorted((int(id_a), int(id_b)))
  info = _INFO_PREFIX + b"|" + purpose + struct.pack(">QQQ", round_num, lo, hi)
  return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(shared)


def fresh_seed() -> bytes:
  """A 128-bit seed from the OS CSPRNG (self masks)."""
  return os.urandom(SEED_BYTES)


def seed_to_tf(seed: bytes) -> np.ndarray:
  """128-bit seed -> int64[2] (both 64-bit halves, reinterpreted as signed)."""
  if len(seed) != SEED_BYTES:
    raise ValueError(f"expected a {SEED_BYTES}-byte seed, got {len(seed)} bytes")
  return np.frombuffer(seed, dtype=">u8").astype(np.uint64).view(np.int64).copy()


def encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
  nonce = os.urandom(12)
  return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def decrypt(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
  return AESGCM(key).decrypt(ciphertext[:12], ciphertext[12:], associated_data)
