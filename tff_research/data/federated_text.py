"""Federated text: each client is one speaker or user with a list of texts.

`FederatedText` keeps raw texts per client for a train and a test split, and
optionally the texts of held-out clients that training never sees. It is
the common form every corpus is converted to (Shakespeare by role here; other
corpora plug in the same way), cached on disk as JSON so a second run starts at
once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Iterable, Mapping, Optional

from tff_research.data import vocab as vocab_lib

CACHE_VERSION = 1


class DataError(ValueError):
  """Bad or empty input data; the message is one line naming the problem."""


@dataclasses.dataclass
class FederatedText:
  """Texts per client; the optional fields say how the corpus wants to be tokenized.

  The defaults suit raw prose. A pre-tokenized corpus (Stack Overflow) sets
  `tokenizer="whitespace"`, `truncate=True` (one NWP window per text, as TFF's
  baseline) and may bring a ranked word list for the vocabulary. With
  `window_split` (`splits.py`'s by-window policy), `train` holds all texts and
  the NWP data cuts each client's token windows at that fraction.
  """
  name: str
  train: dict[str, list[str]]
  test: dict[str, list[str]]
  tokenizer: str = "words"                 # vocab.TOKENIZERS
  truncate: bool = False                   # NWP default: truncate texts instead of chunking
  vocab_words: Optional[list[str]] = None  # most frequent first; None = count the train split
  window_split: Optional[float] = None     # train fraction of each client's windows (by_window)
  split_note: str = ""                     # which split was used and why (`splits.split_clients`)
  # Clients never trained on and not in the vocabulary: all their texts (`splits.hold_out_users`,
  # Stack Overflow's heldout split).
  heldout: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  @property
  def client_ids(self) -> list[str]:
    return sorted(self.train)

  def summary(self) -> str:
    texts = [t for split in (self.train, self.test, self.heldout) for v in split.values() for t in v]
    words = sum(len(vocab_lib.tokenize(t, self.tokenizer)) for t in texts)
    clients = (_count(len(self.train), "client") if self.window_split is not None
               else f"{_count(len(self.train), 'train client')}, {_count(len(self.test), 'test client')}")
    if self.heldout:
      clients += f", {_count(len(self.heldout), 'held-out client')}"
    note = f" ({self.split_note})" if self.split_note else ""
    unit = "character" if self.tokenizer == "bytes" else "word"
    return f"{self.name}: {clients}{note}, {_count(len(texts), 'text')}, {_count(words, unit)}"

  def save(self, path: str) -> None:
    """Writes atomically (temp file + rename): a crash never leaves half a cache."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {"version": CACHE_VERSION, "name": self.name, "train": self.train, "test": self.test,
               "tokenizer": self.tokenizer, "truncate": self.truncate, "vocab_words": self.vocab_words,
               "heldout": self.heldout}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(payload, f)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "FederatedText | None":
    """The cached corpus, or None if the cache is missing, stale or unreadable."""
    try:
      with open(path, encoding="utf-8") as f:
        payload = json.load(f)
    except (OSError, ValueError):
      return None
    if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION:
      return None
    return cls(payload["name"], payload["train"], payload["test"], payload.get("tokenizer", "words"),
               bool(payload.get("truncate", False)), payload.get("vocab_words"),
               heldout=payload.get("heldout") or {})


def _count(number: int, noun: str) -> str:
  return f"{number:,} {noun}{'' if number == 1 else 's'}"


def split_by_order(
    texts_by_client: Iterable[tuple[str, list[str]]],
    name: str,
    train_fraction: float = 0.8,
    min_texts: int = 2,
) -> FederatedText:
  """Per client, the first `train_fraction` of texts train, the rest test.

  McMahan et al. 2017's Shakespeare split. Clients with fewer than `min_texts`
  texts are dropped; a client always keeps at least one train text, and one
  test text when it has two or more.
  """
  if not 0.0 < train_fraction <= 1.0:
    raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
  train, test = {}, {}
  for client_id, texts in texts_by_client:
    texts = [t for t in texts if t.strip()]
    if len(texts) < min_texts:
      continue
    cut = int(round(train_fraction * len(texts)))
    cut = max(1, min(cut, len(texts) - 1 if len(texts) > 1 and train_fraction < 1 else len(texts)))
    train[client_id] = texts[:cut]
    if texts[cut:]:
      test[client_id] = texts[cut:]
  if not train:
    raise DataError(f"{name}: no client has at least {min_texts} non-empty texts")
  return FederatedText(name, train, test)


def default_data_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "tff_research")


def texts_of(split: Mapping[str, list[str]]) -> Iterable[str]:
  for texts in split.values():
    yield from texts
