"""Next-character prediction data, as TFF 0.87's Shakespeare character baseline builds it.

`tff.simulation.baselines.shakespeare` (McMahan et al. 2017's task) maps each
text to byte ids over its 86-character vocabulary: 0 is padding, characters are
1..86, then one out-of-vocabulary id (87), BOS (88) and EOS (89). A text becomes
BOS c1 .. cn EOS, right-padded with 0 to a multiple of `sequence_length + 1`
and cut into windows of that length that do not overlap: input = window[:-1],
target = window[1:]. `build_char_data` builds the same windows once, in numpy
(tests/test_next_char.py checks them against TFF's own preprocessing function),
so every round only slices int32 arrays, as for words.

`mcmahan_shakespeare(unit)` is the paper's federated Shakespeare: one client
per (play, speaking role), the last 20 % of a role's texts, rounded up to at
least one, test, in order (Section 3). A text is a speech (`unit="speech"`,
the default, as TFF's and LEAF's Shakespeare make an example "a contiguous set
of lines spoken by the character") or one line of a speech (`unit="line"`,
McMahan et al.'s examples). The paper keeps the roles "with at least two
lines"; both units keep the roles with at least two speeches: on our plays that
gives 1,154 roles against the paper's 1,146, where two verse lines would keep
1,281 (tests/test_next_char.py checks the line split's figures against the
paper's).
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
MIN_SPEECHES = 2  # the client filter, for either unit (see the module docstring)


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
                     excluded_ids=(vocab.pad_id,), heldout=encode(corpus.heldout))


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


def mcmahan_shakespeare(unit: str = shakespeare.DEFAULT_UNIT) -> federated_text.FederatedText:
  """Federated Shakespeare split as McMahan et al. 2017 (Section 3) describe it.

  Args:
    unit: what one text is, a speech or a line (`shakespeare.UNITS`).

  Returns:
    One client per role with at least `MIN_SPEECHES` speeches; the last 20 %
    of its texts (rounded up, at least one) test. Named "shakespeare" for
    speeches, "shakespeare lines" for lines.
  """
  shakespeare.check_unit(unit)
  roles = ((client_id, shakespeare.texts_of(speeches, unit))
           for client_id, speeches in shakespeare.iter_role_speech_lines() if len(speeches) >= MIN_SPEECHES)
  return split_last_share(roles, "shakespeare" if unit == shakespeare.DEFAULT_UNIT else f"shakespeare {unit}s")


def updates_per_round(data: nwp.NWPData, epochs: int, batch_size: int) -> float:
  """McMahan et al.'s u = E n / (K B): expected local updates per client per round (Table 2).

  n is the number of train examples of all K train clients; an example here is
  one window of `sequence_length + 1` ids (a line of up to 79 bytes is one).
  Partial batches are not rounded up, as in the paper's formula.

  Args:
    data: the train clients' windows.
    epochs: E, local epochs.
    batch_size: B, local batch size.

  Returns:
    u.
  """
  windows = sum(len(rows) for rows in data.train.values())
  return epochs * windows / (len(data.train) * batch_size)


def split_figures(data: nwp.NWPData) -> dict[str, int]:
  """Clients, characters and windows of the train and test split of character windows.

  A character is an id other than padding, BOS and EOS: one byte of a text
  (an out-of-vocabulary byte included), as `character_counts` counts them.

  Args:
    data: `build_char_data`'s windows.

  Returns:
    {clients, train_characters, test_characters, train_windows, test_windows}.
  """
  special = [data.vocab.pad_id, data.vocab.bos_id, data.vocab.eos_id]

  def characters(split):
    return int(sum(np.isin(rows, special, invert=True).sum() for rows in split.values()))

  return {"clients": len(data.train), "train_characters": characters(data.train),
          "test_characters": characters(data.test),
          "train_windows": sum(len(rows) for rows in data.train.values()),
          "test_windows": sum(len(rows) for rows in data.test.values())}


def character_counts(corpus: federated_text.FederatedText) -> tuple[int, int]:
  """(train, test) characters, a character being one byte as in McMahan et al.'s count."""
  def count(split):
    return sum(len(t.encode("utf-8")) for texts in split.values() for t in texts)
  return count(corpus.train), count(corpus.test)
