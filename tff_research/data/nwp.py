"""Next-word-prediction data: federated text -> token windows -> tf.data batches.

Tokenization happens once, in Python, when `build_nwp_data` runs; every round
then only slices ready int32 arrays. Each client's batches are shuffled with a
seed derived from (seed, round, client), so a run is reproducible and a resumed
run sees exactly the batches an uninterrupted one would have.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.data import federated_text
from tff_research.data import splits
from tff_research.data import vocab as vocab_lib

DataError = federated_text.DataError
# `train` trains; `validation` (`NWPData.split_validation`) is what tuning reads;
# `test` is evaluated; `heldout` holds clients training never saw.
SPLITS = ("train", "validation", "test", "heldout")


@dataclasses.dataclass(frozen=True)
class ClientSpec:
  """How a client turns its examples into batches (like tff.simulation.baselines.ClientSpec)."""
  num_epochs: int = 1
  batch_size: int = 16
  max_elements: Optional[int] = None  # sequences per client; None = all
  shuffle: bool = True

  def __post_init__(self):
    if self.num_epochs < 1:
      raise ValueError(f"client_epochs must be positive, got {self.num_epochs}")
    if self.batch_size < 1:
      raise ValueError(f"client_batch_size must be positive, got {self.batch_size}")
    if self.max_elements is not None and self.max_elements < 1:
      raise ValueError(f"max_elements_per_client must be positive, got {self.max_elements}")


def client_seed(seed: int, round_num: int, client_id: str) -> int:
  """A stable 31-bit seed for one client in one round (independent of Python's hash salt)."""
  digest = hashlib.sha256(f"{seed}/{round_num}/{client_id}".encode("utf-8")).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclasses.dataclass
class NWPData:
  """Token windows per client for each of SPLITS, and the vocabulary."""
  vocab: vocab_lib.Vocabulary
  sequence_length: int
  train: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  name: str = "federated_text"
  # Ids that accuracy leaves out; None = all special ids (pad, OOV, BOS, EOS),
  # as TFF's word baselines do. TFF's character baseline leaves out padding only.
  excluded_ids: Optional[tuple[int, ...]] = None
  heldout: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  validation: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def accuracy_excluded_ids(self) -> tuple[int, ...]:
    return self.vocab.special_ids if self.excluded_ids is None else self.excluded_ids

  @property
  def train_client_ids(self) -> list[str]:
    return sorted(self.train)

  @property
  def test_client_ids(self) -> list[str]:
    return sorted(self.test)

  def client_ids(self, split: str) -> list[str]:
    """The clients with windows in `split` (one of SPLITS), sorted."""
    return sorted(self._split(split))

  def split_validation(self, share: float) -> None:
    """Moves `share` of the test clients (`splits.validation_ids`) to `validation`; 0 does nothing."""
    if self.validation:
      raise ValueError(f"{self.name} already has a validation split")
    chosen = splits.validation_ids(self.test, share)
    self.validation = {c: self.test[c] for c in chosen}
    self.test = {c: rows for c, rows in self.test.items() if c not in self.validation}

  @property
  def element_spec(self):
    shape = tf.TensorSpec([None, self.sequence_length], tf.int32)
    return (shape, shape)

  def client_dataset(self, client_id: str, spec: ClientSpec, split: str = "train",
                     seed: int = 0, round_num: int = 0) -> tf.data.Dataset:
    """Batches (x, y) of one client; x and y are [batch, sequence_length] int32."""
    rows = self._split(split)[client_id][self.row_order(client_id, spec, split, seed, round_num)]
    dataset = tf.data.Dataset.from_tensor_slices((rows[:, :-1], rows[:, 1:]))
    return dataset.batch(spec.batch_size)

  def row_order(self, client_id: str, spec: ClientSpec, split: str = "train", seed: int = 0,
                round_num: int = 0) -> np.ndarray:
    """Which of the client's windows its round sees, in order: every epoch of `client_dataset`, as int32 indices.

    The first `spec.max_elements` windows, shuffled each epoch with a seed of
    (seed, round, client) when `spec.shuffle`. `worker_data` sends this to
    workers that hold the windows, so both paths train on the same batches.
    """
    count = len(self._split(split)[client_id])
    if spec.max_elements is not None:
      count = min(count, spec.max_elements)
    if spec.shuffle and count > 1:
      epochs = [np.random.default_rng(client_seed(seed, round_num, client_id)).permutation(count)]
      for epoch in range(1, spec.num_epochs):
        epochs.append(np.random.default_rng([client_seed(seed, round_num, client_id), epoch]).permutation(count))
      return np.concatenate(epochs).astype(np.int32)
    return np.tile(np.arange(count, dtype=np.int32), spec.num_epochs)

  def client_datasets(self, client_ids: Sequence[str], spec: ClientSpec, split: str = "train",
                      seed: int = 0, round_num: int = 0) -> list[tf.data.Dataset]:
    return [self.client_dataset(c, spec, split, seed, round_num) for c in client_ids]

  def _split(self, split: str) -> dict[str, np.ndarray]:
    if split not in SPLITS:
      raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return getattr(self, split)

  def to_client_data(self, split: str = "train") -> tff.simulation.datasets.ClientData:
    """The split as a `tff.simulation.datasets.ClientData` of unbatched (x, y) windows."""
    rows_by_client = self._split(split)
    tensors = {c: (r[:, :-1], r[:, 1:]) for c, r in rows_by_client.items()}
    return tff.simulation.datasets.TestClientData(tensors)

  def num_sequences(self, split: str = "train") -> int:
    return sum(len(r) for r in self._split(split).values())


def text_client_data(corpus: federated_text.FederatedText, split: str = "train"
                     ) -> tff.simulation.datasets.ClientData:
  """Raw texts as a `tff.simulation.datasets.ClientData` with elements {'text': tf.string}."""
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  texts = corpus.train if split == "train" else corpus.test
  return tff.simulation.datasets.TestClientData(
      {c: {"text": np.asarray(t, dtype=object)} for c, t in texts.items() if t})


def build_nwp_data(corpus: federated_text.FederatedText, vocab_size: int = 10000,
                   sequence_length: int = 20, num_oov_buckets: int = 1,
                   truncate: Optional[bool] = None) -> NWPData:
  """Vocabulary, then token windows for every client.

  The vocabulary is the first `vocab_size` of `corpus.vocab_words` when the
  corpus brings a ranked list (Stack Overflow's word counts), else the most
  frequent train words. Texts are split with `corpus.tokenizer`.

  Args:
    corpus: texts per client, split into train and test.
    vocab_size: words in the vocabulary.
    sequence_length: targets per window.
    num_oov_buckets: out-of-vocabulary ids.
    truncate: one window per text (TFF's Stack Overflow baseline) instead of
      chunking the whole text (`vocab.to_sequences`); default `corpus.truncate`.

  Returns:
    `NWPData`: the vocabulary and each client's int32 windows per split.

  Raises:
    DataError: when no train client has any words (or a by-window split no test window).
  """
  if vocab_size < 1:
    raise ValueError(f"vocab_size must be positive, got {vocab_size}")
  if sequence_length < 1:
    raise ValueError(f"sequence_length must be positive, got {sequence_length}")
  truncate = corpus.truncate if truncate is None else truncate
  cuts = None
  if corpus.window_split is not None:
    if truncate:
      raise DataError(f"{corpus.name}: the by-window split needs chunked texts, not truncated ones")
    cuts, train_words = _window_cuts(corpus, sequence_length)
  if corpus.vocab_words:
    vocab = vocab_lib.Vocabulary(tuple(corpus.vocab_words[:vocab_size]), num_oov_buckets, corpus.tokenizer)
  elif cuts is not None:
    vocab = vocab_lib.vocabulary_from_counts(train_words, vocab_size, num_oov_buckets, corpus.tokenizer)
  else:
    vocab = vocab_lib.build_vocabulary(federated_text.texts_of(corpus.train), vocab_size, num_oov_buckets,
                                       corpus.tokenizer)

  def encode(split):
    out = {}
    for client_id, texts in split.items():
      rows = vocab_lib.to_sequences(texts, vocab, sequence_length, truncate)
      if len(rows):
        out[client_id] = rows
    return out

  train, test, heldout = encode(corpus.train), encode(corpus.test), encode(corpus.heldout)
  if cuts is not None:
    test = {c: rows[cuts[c]:] for c, rows in train.items() if cuts[c] < len(rows)}
    train = {c: rows[:cuts[c]] for c, rows in train.items()}
    if not test:
      raise DataError(f"{corpus.name}: split by token window leaves no test window: no client has two "
                      f"or more windows of {sequence_length} words (use a shorter --sequence_length or "
                      "another --split)")
  if not train:
    raise DataError(f"{corpus.name}: no train client has any words")
  return NWPData(vocab, sequence_length, train, test, corpus.name, heldout=heldout)


def _window_cuts(corpus: federated_text.FederatedText, sequence_length: int):
  """Per client, how many of its windows train (the first `window_split` of them, at
  least one of each side when it has two), and the words those windows predict."""
  cuts, train_words = {}, collections.Counter()
  for client_id, texts in corpus.train.items():
    words = [vocab_lib.tokenize(t, corpus.tokenizer) for t in texts]
    # `to_sequences` cuts BOS w1..wn EOS into windows of sequence_length targets:
    # word i of a text is a target of its window i // sequence_length.
    windows = [-(-(len(w) + 1) // sequence_length) for w in words]
    total = sum(windows)
    cut = min(max(1, round(corpus.window_split * total)), total - 1) if total > 1 else total
    cuts[client_id] = cut
    offset = 0
    for text_words, count in zip(words, windows):
      train_words.update(text_words[:max(0, cut - offset) * sequence_length])
      offset += count
  return cuts, train_words


def most_frequent_token(data: NWPData) -> int:
  """The id that is most often a train target, among ids that accuracy counts."""
  train_targets = np.concatenate([r[:, 1:].ravel() for r in data.train.values()])
  tokens = train_targets[~np.isin(train_targets, np.asarray(data.accuracy_excluded_ids))]
  return int(np.bincount(tokens).argmax()) if tokens.size else data.vocab.pad_id


def unigram_baseline_accuracy(data: NWPData, split: str = "test",
                              client_ids: Optional[Sequence[str]] = None) -> float:
  """Accuracy (without `data.accuracy_excluded_ids`) of always predicting the most frequent train token.

  Computed over `client_ids` of `split` (all of them by default), so it can be
  compared with a federated evaluation on the same clients.
  """
  most_frequent = most_frequent_token(data)
  if most_frequent == data.vocab.pad_id:
    return 0.0
  special = np.asarray(data.accuracy_excluded_ids)
  rows = data._split(split)  # pylint: disable=protected-access
  ids = sorted(rows) if client_ids is None else client_ids
  targets = np.concatenate([rows[c][:, 1:].ravel() for c in ids])
  targets = targets[~np.isin(targets, special)]
  return float(np.mean(targets == most_frequent)) if targets.size else 0.0
