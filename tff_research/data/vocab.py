"""Word vocabulary and token ids, laid out like TFF's Stack Overflow NWP baseline.

Ids: 0 is padding, 1..V the V most frequent train words, then the
out-of-vocabulary bucket(s), then beginning- and end-of-sentence. The model's
output layer has `Vocabulary.size` units.

Three tokenizers: "words" (default) lower-cases and keeps runs of letters and
digits, for raw prose; "whitespace" splits on whitespace and keeps every token
as is, for corpora that are already tokenized (Stack Overflow keeps punctuation
as tokens, and its vocabulary counts them); "bytes" makes every UTF-8 byte a
token, as TFF's Shakespeare character baseline does (`tf.strings.bytes_split`),
so a non-ASCII character is several out-of-vocabulary tokens there and here.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re
import zlib
from typing import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

TOKENIZERS = ("words", "whitespace", "bytes")


def check_tokenizer(tokenizer: str) -> None:
  if tokenizer not in TOKENIZERS:
    raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")


def tokenize(text: str, tokenizer: str = "words") -> list[str]:
  """Lower-cased words with punctuation dropped (it would inflate accuracy), or
  for pre-tokenized text ("whitespace") the space-separated tokens unchanged."""
  if tokenizer == "words":
    return _WORD.findall(text.lower())
  if tokenizer == "whitespace":
    return text.split()
  if tokenizer == "bytes":
    return [chr(b) for b in text.encode("utf-8")]
  check_tokenizer(tokenizer)
  return []


def count_words(texts: Iterable[str], tokenizer: str = "words") -> collections.Counter:
  counts: collections.Counter = collections.Counter()
  for text in texts:
    counts.update(tokenize(text, tokenizer))
  return counts


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """A fixed word list plus the special ids around it."""
  words: tuple[str, ...]
  num_oov_buckets: int = 1
  tokenizer: str = "words"  # how `encode` splits a text (see TOKENIZERS)

  def __post_init__(self):
    if not self.words:
      raise ValueError("the vocabulary is empty: the training data has no words")
    if self.num_oov_buckets < 1:
      raise ValueError(f"num_oov_buckets must be at least 1, got {self.num_oov_buckets}")
    check_tokenizer(self.tokenizer)
    object.__setattr__(self, "_index", {w: i + 1 for i, w in enumerate(self.words)})

  pad_id = 0

  @property
  def oov_ids(self) -> tuple[int, ...]:
    start = len(self.words) + 1
    return tuple(range(start, start + self.num_oov_buckets))

  @property
  def bos_id(self) -> int:
    return len(self.words) + self.num_oov_buckets + 1

  @property
  def eos_id(self) -> int:
    return self.bos_id + 1

  @property
  def size(self) -> int:
    """Number of output classes (pad + words + OOV buckets + BOS + EOS)."""
    return self.eos_id + 1

  @property
  def special_ids(self) -> tuple[int, ...]:
    return (self.pad_id, *self.oov_ids, self.bos_id, self.eos_id)

  def word_id(self, word: str) -> int:
    index = self._index.get(word)  # type: ignore[attr-defined]
    if index is not None:
      return index
    bucket = zlib.crc32(word.encode("utf-8")) % self.num_oov_buckets
    return len(self.words) + 1 + bucket

  def encode(self, text: str) -> list[int]:
    """BOS, word ids, EOS."""
    return [self.bos_id, *(self.word_id(w) for w in tokenize(text, self.tokenizer)), self.eos_id]

  def decode_id(self, token_id: int) -> str:
    if 1 <= token_id <= len(self.words):
      return self.words[token_id - 1]
    names = {self.pad_id: "<pad>", self.bos_id: "<bos>", self.eos_id: "<eos>"}
    return names.get(token_id, "<oov>")

  def to_json(self) -> str:
    data = {"words": list(self.words), "num_oov_buckets": self.num_oov_buckets}
    if self.tokenizer != "words":
      data["tokenizer"] = self.tokenizer
    return json.dumps(data)

  @classmethod
  def from_json(cls, text: str) -> "Vocabulary":
    data = json.loads(text)
    return cls(tuple(data["words"]), int(data["num_oov_buckets"]), data.get("tokenizer", "words"))


def build_vocabulary(texts: Iterable[str], vocab_size: int, num_oov_buckets: int = 1,
                     tokenizer: str = "words") -> Vocabulary:
  """The `vocab_size` most frequent words (ties broken alphabetically)."""
  check_tokenizer(tokenizer)
  return vocabulary_from_counts(count_words(texts, tokenizer), vocab_size, num_oov_buckets, tokenizer)


def vocabulary_from_counts(counts: collections.Counter, vocab_size: int, num_oov_buckets: int = 1,
                           tokenizer: str = "words") -> Vocabulary:
  """The `vocab_size` most frequent words of `counts` (ties broken alphabetically)."""
  if vocab_size < 1:
    raise ValueError(f"vocab_size must be positive, got {vocab_size}")
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]
  return Vocabulary(tuple(w for w, _ in ranked), num_oov_buckets, tokenizer)


def to_sequences(texts: Sequence[str], vocab: Vocabulary, sequence_length: int,
                 truncate: bool = False) -> np.ndarray:
  """Token windows of `sequence_length + 1` ids, shape [num_sequences, L + 1].

  Each text becomes BOS w1 .. wn EOS and is cut into windows that overlap by one
  id, so every id after BOS is a target exactly once (input = window[:-1],
  target = window[1:]). The last window of a text is right-padded with 0.

  `truncate=True` is TFF's Stack Overflow baseline instead: one window per text,
  BOS plus its first `sequence_length` words, plus EOS only if the text is
  shorter than that; words past `sequence_length` are dropped.
  """
  if sequence_length < 1:
    raise ValueError(f"sequence_length must be positive, got {sequence_length}")
  window = sequence_length + 1
  rows = []
  for text in texts:
    if truncate:
      words = tokenize(text, vocab.tokenizer)[:sequence_length]
      ids = [vocab.bos_id, *(vocab.word_id(w) for w in words)]
      if len(words) < sequence_length:
        ids.append(vocab.eos_id)
      rows.append(ids + [0] * (window - len(ids)))
      continue
    ids = vocab.encode(text)
    for start in range(0, len(ids) - 1, sequence_length):
      chunk = ids[start:start + window]
      rows.append(chunk + [0] * (window - len(chunk)))
  if not rows:
    return np.zeros([0, window], np.int32)
  return np.asarray(rows, np.int32)
