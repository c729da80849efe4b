"""Federated Stack Overflow, read offline from TFF's SQLite file.

Nothing is downloaded: `tff.simulation.datasets.stackoverflow.load_data` would
fetch `stackoverflow.sqlite.lzma` at run time, which fails without internet.
Instead `data_dir` must hold that file decompressed, `stackoverflow.sqlite`
(TFF keeps it in `~/.tff`). Its layout is TFF's `SqlClientData`: a table
`examples(split_name, client_id, serialized_example_proto)`, one row per post,
and `client_metadata(client_id, split_name, num_examples)`; splits `train`,
`heldout` and `test`; each proto is a `tf.train.Example` with string features
`creation_date`, `tags`, `title`, `tokens`, `type` and int64 `score`. A post's
`tokens` (lower-cased, punctuation split off, space-separated) is one text.

The vocabulary comes from TFF's word-count file `stackoverflow.word_count`
(`word count` lines, most frequent first; or its archive
`stackoverflow.word_count.tar.bz2`) when `data_dir` has it, else from the train
split. Texts are truncated to one window each, as TFF's word-prediction
baseline does.
"""
from __future__ import annotations

import contextlib
import io
import os
import pathlib
import sqlite3
import tarfile
from typing import Iterator, Optional

from tff_research.data import federated_text

DataError = federated_text.DataError

SQLITE_NAME = "stackoverflow.sqlite"
LZMA_NAME = SQLITE_NAME + ".lzma"
WORD_COUNT_NAME = "stackoverflow.word_count"
WORD_COUNT_ARCHIVE = WORD_COUNT_NAME + ".tar.bz2"
SQLITE_URL = "https://storage.googleapis.com/tff-datasets-public/stackoverflow.sqlite.lzma"
SPLITS = ("train", "heldout", "test")
TEXT_FEATURE = "tokens"
# Words kept from the word-count file: far more than any vocabulary we train with.
MAX_VOCAB_WORDS = 100_000

_REQUIRED_COLUMNS = {
    "examples": {"split_name", "client_id", "serialized_example_proto"},
    "client_metadata": {"client_id", "split_name"},
}


def database_path(data_dir: str) -> str:
  """`data_dir/stackoverflow.sqlite`, or a DataError saying how to get it there."""
  path = os.path.join(data_dir, SQLITE_NAME)
  if os.path.isfile(path):
    return path
  lzma_path = os.path.join(data_dir, LZMA_NAME)
  if os.path.isfile(lzma_path):
    hint = f"found {lzma_path}: decompress it first (xz -dk {LZMA_NAME})"
  else:
    hint = (f"nothing is downloaded: put TFF's {SQLITE_NAME} there (it is in ~/.tff after "
            f"tff.simulation.datasets.stackoverflow.load_data; or fetch {SQLITE_URL} yourself and decompress it)")
  raise DataError(f"stackoverflow: expected TFF's SQLite file {path!r}; {hint}")


@contextlib.contextmanager
def _connect(path: str) -> Iterator[sqlite3.Connection]:
  """A read-only connection (never creates or changes the file), closed on exit."""
  uri = pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=ro"
  try:
    connection = sqlite3.connect(uri, uri=True)
  except sqlite3.Error as e:
    raise DataError(f"{path}: cannot open as SQLite: {e}") from e
  try:
    yield connection
  except sqlite3.Error as e:
    raise DataError(f"{path}: not a readable Stack Overflow SQLite file: {e}") from e
  finally:
    connection.close()


def _check_format(connection: sqlite3.Connection, path: str) -> None:
  tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
  for table, required in _REQUIRED_COLUMNS.items():
    if table not in tables:
      raise DataError(f"{path}: no table {table!r} (expected TFF's SqlClientData layout)")
    columns = {r[1] for r in connection.execute(f"PRAGMA table_info({table})")}
    missing = sorted(required - columns)
    if missing:
      raise DataError(f"{path}: table {table!r} lacks column(s) {', '.join(missing)}")


def _has_client_index(connection: sqlite3.Connection) -> bool:
  """Whether `examples` has an index led by client_id (then per-client queries are fast)."""
  for row in connection.execute("PRAGMA index_list(examples)").fetchall():
    columns = connection.execute(f"PRAGMA index_info({_quote(row[1])})").fetchall()
    if columns and columns[0][2] == "client_id":
      return True
  return False


def _quote(identifier: str) -> str:
  return '"' + identifier.replace('"', '""') + '"'


def _parse_text(blob, path: str, client_id: str, feature: str) -> str:
  """The string `feature` of one serialized tf.train.Example."""
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top
  where = f"{path}: client {client_id!r}"
  if not isinstance(blob, bytes):
    raise DataError(f"{where}: serialized_example_proto is {type(blob).__name__}, not a BLOB")
  try:
    example = example_pb2.Example.FromString(blob)
  except message.DecodeError as e:
    raise DataError(f"{where}: an example is not a serialized tf.train.Example") from e
  features = example.features.feature
  values = features[feature].bytes_list.value if feature in features else ()
  if len(values) != 1:
    raise DataError(f"{where}: an example has no string feature {feature!r}")
  try:
    return values[0].decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{where}: feature {feature!r} is not valid UTF-8 (byte {e.start})") from e


def split_client_ids(path: str, split: str, max_clients: Optional[int] = None) -> list[str]:
  """Client ids of `split` in TFF's order (sorted), at most `max_clients` of them."""
  with _connect(path) as connection:
    _check_format(connection, path)
    return _client_ids(connection, split, max_clients)


def _client_ids(connection: sqlite3.Connection, split: str, max_clients: Optional[int]) -> list[str]:
  query = "SELECT DISTINCT client_id FROM client_metadata WHERE split_name = ? ORDER BY client_id"
  args: tuple = (split,)
  if max_clients is not None:
    query += " LIMIT ?"
    args += (max_clients,)
  return [str(r[0]) for r in connection.execute(query, args)]


def iter_client_texts(path: str, split: str = "train", max_clients: Optional[int] = None,
                      feature: str = TEXT_FEATURE) -> Iterator[tuple[str, list[str]]]:
  """Yields (client_id, texts) for the clients of `split`, in sorted id order.

  Streams: with an index on `examples.client_id` one client's rows are read at
  a time; without one, a single scan keeps only the selected clients' texts.
  Clients without examples in `split` are skipped; a client's texts keep row
  order. At most `max_clients` clients (the first ones in sorted order).
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
  if max_clients is not None and (isinstance(max_clients, bool) or not isinstance(max_clients, int)
                                  or max_clients < 1):
    raise ValueError(f"max_clients must be a positive integer or None, got {max_clients!r}")
  with _connect(path) as connection:
    _check_format(connection, path)
    ids = _client_ids(connection, split, max_clients)
    if _has_client_index(connection):
      query = "SELECT serialized_example_proto FROM examples WHERE client_id = ? AND split_name = ?"
      for client_id in ids:
        texts = [_parse_text(r[0], path, client_id, feature)
                 for r in connection.execute(query, (client_id, split))]
        if texts:
          yield client_id, texts
      return
    wanted = set(ids)
    by_client: dict[str, list[str]] = {}
    query = "SELECT client_id, serialized_example_proto FROM examples WHERE split_name = ?"
    for client_id, blob in connection.execute(query, (split,)):
      client_id = str(client_id)
      if client_id in wanted:
        by_client.setdefault(client_id, []).append(_parse_text(blob, path, client_id, feature))
    for client_id in ids:
      if client_id in by_client:
        yield client_id, by_client.pop(client_id)


def read_word_counts(data_dir: str, max_words: int = MAX_VOCAB_WORDS) -> Optional[list[str]]:
  """Words of TFF's `stackoverflow.word_count` in file order (most frequent first).

  Reads the plain file, else the `.tar.bz2` archive TFF downloads, from
  `data_dir`; None when neither is there. Like TFF, a repeated word keeps its
  first position.
  """
  path = os.path.join(data_dir, WORD_COUNT_NAME)
  archive = os.path.join(data_dir, WORD_COUNT_ARCHIVE)
  if os.path.isfile(path):
    with open(path, "rb") as f:
      return _parse_word_counts(f, path, max_words)
  if not os.path.isfile(archive):
    return None
  try:
    with tarfile.open(archive, "r:bz2") as tar:
      member = next((m for m in tar.getmembers()
                     if m.isfile() and os.path.basename(m.name) == WORD_COUNT_NAME), None)
      if member is None:
        raise DataError(f"{archive}: has no file {WORD_COUNT_NAME}")
      f = tar.extractfile(member)
      assert f is not None
      return _parse_word_counts(f, f"{archive}:{member.name}", max_words)
  except (tarfile.TarError, EOFError, OSError) as e:
    raise DataError(f"{archive}: not a readable tar.bz2 archive: {e}") from e


def _parse_word_counts(f: io.BufferedIOBase, where: str, max_words: int) -> list[str]:
  words: dict[str, None] = {}
  for line_no, raw in enumerate(f, 1):
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{where}:{line_no}: invalid UTF-8 at byte {e.start} of the line") from e
    parts = line.split()
    if not parts:
      continue
    if len(parts) != 2 or not parts[1].isdigit():
      raise DataError(f"{where}:{line_no}: expected 'word count', got {line.strip()[:40]!r}")
    words.setdefault(parts[0])
    if len(words) >= max_words:
      break
  if not words:
    raise DataError(f"{where}: no words")
  return list(words)


def load(data_dir: str, max_clients: Optional[int] = None, heldout: bool = False) -> federated_text.FederatedText:
  """Stack Overflow as FederatedText: `train` split -> train texts, `test` split -> test texts.

  Args:
    data_dir: the folder holding `stackoverflow.sqlite`.
    max_clients: caps each split separately to its first clients in sorted id
      order (TFF's order); None reads every client, which for the full file
      needs tens of GB of memory.
    heldout: also read the `heldout` split (users never in train, all dates)
      into `heldout`.

  Returns:
    The corpus.
  """
  path = database_path(data_dir)
  train = dict(iter_client_texts(path, "train", max_clients))
  if not train:
    raise DataError(f"{path}: the 'train' split has no examples")
  test = dict(iter_client_texts(path, "test", max_clients))
  held = dict(iter_client_texts(path, "heldout", max_clients)) if heldout else {}
  if heldout and not held:
    raise DataError(f"{path}: the 'heldout' split has no examples")
  return federated_text.FederatedText("stackoverflow", train, test, tokenizer="whitespace",
                                      truncate=True, vocab_words=read_word_counts(data_dir), heldout=held)
