"""Next-character prediction data, as TFF 0.87's Shakespeare character baseline builds it.

`tff.simulation.baselines.shakespeare` (McMahan et al. 2017's task) maps each
text to byte ids over its 86-character vocabulary: 0 is padding, characters are
1..86, then one out-of-vocabulary id (87), BOS (88) and EOS (89). A text becomes
BOS c1 .. cn EOS, right-padded with 0 to a multiple of `sequence_length + 1`
and cut into windows of that length that do not overlap: input = window[:-1],
target = window[1:]. `build_char_data` builds the same windows once, in numpy
(tests/test_next_char.py checks them against TFF's own preprocessing function),
so every round only slices int32 arrays, as for words.

`mcmahan_shakespeare()` is the paper's federated Shakespeare: one client per
(play, speaking role) with at least two lines (here: speeches), the last 20 %
of a role's lines, rounded up to at least one, test, in order (Section 3).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_research.data import federated_text
from tff_research.data import nwp
from tff_research.data import shakespeare
from tff_research.data import vocab as vocab_lib

# TFF's character list: its order fixes the ids, so it is read from TFF, not retyped.
CHAR_VOCAB: tuple[str, ...] = tuple(char_prediction_preprocessing.CHAR_VOCAB)
SEQUENCE_LENGTH = char_prediction_preprocessing.DEFAULT_SEQUENCE_LENGTH  # 80, McMahan et al.
TEST_SHARE = 0.2


def char_vocabulary() -> vocab_lib.Vocabulary:
  """TFF's ids: pad 0, the 86 characters 1..86, OOV 87, BOS 88, EOS 89 (90 classes)."""
  return vocab_lib.Vocabulary(CHAR_VOCAB, num_oov_buckets=1, tokenizer="bytes")


def char_windows(texts: Sequence[str], vocab: vocab_lib.Vocabulary, sequence_length: int) -> np.ndarray:
  """Non-overlapping windows of `sequence_length + 1` ids per text, shape [n, L + 1] (int32)."""
  if sequence_length < 1:
    raise ValueError(f"sequence_length must be positive, got {sequence_length}")
  window = sequence_length + 1
  rows = []
  for text in texts:
    ids = vocab.encode(text)
    ids += [vocab.pad_id] * (-len(ids) % window)
    rows.append(np.asarray(ids, np.int32).reshape(-1, window))
  return np.concatenate(rows) if rows else np.zeros([0, window], np.int32)


def build_char_data(corpus: federated_text.FederatedText,
                    sequence_length: int = SEQUENCE_LENGTH) -> nwp.NWPData:
  """Character windows of every client of `corpus` (its train/test split as it comes).

  Accuracy leaves out padding only (TFF's `MaskedCategoricalAccuracy(masked_tokens=[pad])`):
  EOS and OOV targets count, BOS is never a target.

  Args:
    corpus: texts per client, split into train and test.
    sequence_length: targets per window (TFF's baseline: 80).

  Returns:
    `NWPData` over TFF's 90 character ids, with `excluded_ids=(pad,)`.
  """
  vocab = char_vocabulary()

  def encode(split):
    return {c: rows for c, texts in split.items() if len(rows := char_windows(texts, vocab, sequence_length))}

  train, test = encode(corpus.train), encode(corpus.test)
  if not train:
    raise federated_text.DataError(f"{corpus.name}: no train client has any text")
  return nwp.NWPData(vocab, sequence_length, train, test, f"{corpus.name} (characters)",
                     excluded_ids=(vocab.pad_id,))


def split_last_share(texts_by_client: Iterable[tuple[str, list[str]]], name: str,
                     test_share: float = TEST_SHARE, min_texts: int = 2) -> federated_text.FederatedText:
  """Per client, the last `test_share` of its texts (rounded up, at least one) test, the rest train."""
  train, test = {}, {}
  for client_id, texts in texts_by_client:
    texts = [t for t in texts if t.strip()]
    if len(texts) < min_texts:
      continue
    num_test = max(1, math.ceil(test_share * len(texts)))
    train[client_id], test[client_id] = texts[:-num_test], texts[-num_test:]
  if not train:
    raise federated_text.DataError(f"{name}: no client has at least {min_texts} non-empty texts")
  return federated_text.FederatedText(name, train, test, tokenizer="bytes")


def mcmahan_shakespeare() -> federated_text.FederatedText:
  """Federated Shakespeare split as McMahan et al. 2017 (Section 3) describe it."""
  return split_last_share(shakespeare.iter_role_speeches(), "shakespeare")


def character_counts(corpus: federated_text.FederatedText) -> tuple[int, int]:
  """(train, test) characters, a character being one byte as in McMahan et al.'s count."""
  def count(split):
    return sum(len(t.encode("utf-8")) for texts in split.values() for t in texts)
  return count(corpus.train), count(corpus.test)
