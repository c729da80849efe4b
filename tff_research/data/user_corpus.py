"""Your own federated corpus: a JSON Lines file or a folder of text files.

`jsonl:PATH`: one JSON object per line, `{"client_id": "...", "text": "..."}`
(other keys are ignored; blank lines are skipped; a UTF-8 BOM is allowed).
Lines with the same `client_id` belong to one client, anywhere in the file:
its texts are merged in file order.

`textdir:PATH`: one UTF-8 file per client, subfolders allowed. The client id
is the path relative to PATH without its last extension, with `/` separators
(`alice.txt` -> `alice`, `team/bob.md` -> `team/bob`); two files giving the same
id are an error. Each non-blank line is one text (`text_unit="paragraph"` makes
blank-line separated blocks the texts instead). Hidden files and folders
(starting with `.`) and anything that is not a regular file are skipped.

Both then drop clients with fewer than `min_words` words and split the rest
into train and test by a policy of `splits.py` (`split`, `train_fraction`):
by text within each client, by holding out whole clients, or by token window;
the default picks by text where that leaves enough test clients, else by
client. Errors are one-line `DataError`s naming the file and the line or byte
offset.
"""
from __future__ import annotations

import codecs
import json
import os
import re
from typing import Iterable

from tff_research.data import federated_text
from tff_research.data import splits
from tff_research.data import vocab as vocab_lib

DataError = federated_text.DataError

DEFAULT_MIN_WORDS = 20  # about one training window (sequence length 20) per client
DEFAULT_TRAIN_FRACTION = splits.DEFAULT_TRAIN_FRACTION
UNITS = ("line", "paragraph")

_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number",
               float: "a number", bool: "a boolean", type(None): "null"}


def _show(path: str) -> str:
  """A path fit for a one-line message (quoted if it has odd characters)."""
  return path if path.isprintable() and path.strip() == path else repr(path)


def check_settings(min_words: int, train_fraction: float, split: str = splits.DEFAULT_SPLIT,
                   text_unit: str = "line") -> None:
  """ValueError (one line) naming the first bad loading option."""
  if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 1:
    raise ValueError(f"min_words must be a positive integer, got {min_words!r}")
  splits.check_split(split, train_fraction)
  _check_unit(text_unit)


def _check_unit(text_unit: str) -> None:
  if text_unit not in UNITS:
    raise ValueError(f"text_unit must be one of: {', '.join(UNITS)}; got {text_unit!r}")


def read_jsonl(path: str) -> dict[str, list[str]]:
  """Texts by client id (first-seen order), texts of repeated ids merged in file order."""
  if not os.path.exists(path):
    raise DataError(f"jsonl: no such file: {_show(path)}")
  if os.path.isdir(path):
    raise DataError(f"jsonl: {_show(path)} is a directory, not a JSON Lines file (use textdir:)")
  texts: dict[str, list[str]] = {}
  offset = 0
  try:
    with open(path, "rb") as f:
      for line_no, raw in enumerate(f, 1):
        where = f"{_show(path)}:{line_no}"
        start = offset
        offset += len(raw)
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
          raw = raw[len(codecs.BOM_UTF8):]
          start += len(codecs.BOM_UTF8)
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise DataError(f"{where}: invalid UTF-8 at byte offset {start + e.start}") from e
        if not line.strip(" \t\r\n"):
          continue
        client_id, text = _parse_record(line, where)
        texts.setdefault(client_id, []).append(text)
  except OSError as e:
    raise DataError(f"{_show(path)}: cannot read: {e.strerror or e}") from e
  if not texts:
    raise DataError(f"{_show(path)}: no records (expected one JSON object per line with "
                    f"\"client_id\" and \"text\")")
  return texts


def _parse_record(line: str, where: str) -> tuple[str, str]:
  line = line.rstrip("\r\n")
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(f"{where}: malformed JSON: {e.msg} at column {e.pos + 1}") from e
  except (ValueError, RecursionError) as e:  # e.g. nesting too deep, an integer too long
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(f"{where}: malformed JSON: {reason}") from e
  if not isinstance(record, dict):
    raise DataError(f"{where}: expected a JSON object with \"client_id\" and \"text\", "
                    f"got {_JSON_TYPES.get(type(record), type(record).__name__)}")
  values = []
  for key in ("client_id", "text"):
    if key not in record:
      raise DataError(f"{where}: missing \"{key}\"")
    value = record[key]
    if not isinstance(value, str):
      raise DataError(f"{where}: \"{key}\" must be a string, got "
                      f"{_JSON_TYPES.get(type(value), type(value).__name__)}")
    if _SURROGATE.search(value):
      raise DataError(f"{where}: \"{key}\" contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)")
    values.append(value)
  if not values[0]:
    raise DataError(f"{where}: \"client_id\" is empty")
  return values[0], values[1]


def read_textdir(path: str, text_unit: str = "line") -> dict[str, list[str]]:
  """Texts by client id (sorted by file path), one client per regular file under `path`."""
  _check_unit(text_unit)
  if not os.path.exists(path):
    raise DataError(f"textdir: no such directory: {_show(path)}")
  if not os.path.isdir(path):
    raise DataError(f"textdir: {_show(path)} is not a directory (use jsonl: for a JSON Lines file)")

  def walk_error(e: OSError):
    raise DataError(f"{_show(e.filename or path)}: cannot list: {e.strerror or e}") from e

  files = []
  for dirpath, dirnames, filenames in os.walk(path, onerror=walk_error):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
  texts: dict[str, list[str]] = {}
  source: dict[str, str] = {}
  for file in files:
    if not os.path.isfile(file):  # broken links, FIFOs, sockets
      continue
    relative = os.path.relpath(file, path)
    if _SURROGATE.search(relative):
      raise DataError(f"{_show(os.fsencode(file).decode('utf-8', 'backslashreplace'))}: "
                      "file name is not valid UTF-8")
    client_id = os.path.splitext(relative)[0].replace(os.sep, "/")
    if client_id in source:
      raise DataError(f"{_show(path)}: {_show(source[client_id])} and {_show(relative)} "
                      f"both give client id {client_id!r}")
    source[client_id] = relative
    texts[client_id] = _split_text(_read_utf8(file), text_unit)
  if not files:
    raise DataError(f"textdir: no text files under {_show(path)} (expected one UTF-8 file per client)")
  return texts


def _read_utf8(file: str) -> str:
  try:
    with open(file, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"{_show(file)}: cannot read: {e.strerror or e}") from e
  start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
  try:
    return data[start:].decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{_show(file)}: invalid UTF-8 at byte offset {start + e.start}") from e


def _split_text(text: str, text_unit: str) -> list[str]:
  """Non-blank lines, or blank-line separated paragraphs with their lines joined by spaces."""
  lines = [line.strip() for line in text.splitlines()]
  if text_unit == "line":
    return [line for line in lines if line]
  paragraphs, block = [], []
  for line in lines + [""]:
    if line:
      block.append(line)
    elif block:
      paragraphs.append(" ".join(block))
      block = []
  return paragraphs


def to_federated_text(texts_by_client: dict[str, list[str]], name: str, source: str,
                      min_words: int = DEFAULT_MIN_WORDS, train_fraction: float = DEFAULT_TRAIN_FRACTION,
                      split: str = splits.DEFAULT_SPLIT) -> federated_text.FederatedText:
  """Drops clients under `min_words` words, then splits the rest by `split` (`splits.py`)."""
  check_settings(min_words, train_fraction, split)
  kept = [(c, t) for c, t in texts_by_client.items() if _num_words(t) >= min_words]
  if not kept:
    raise DataError(f"{source}: no client left after filtering: none of the {len(texts_by_client):,} "
                    f"clients has at least {min_words} words (min_words)")
  return splits.split_clients(kept, name, split, train_fraction)


def _num_words(texts: Iterable[str]) -> int:
  return sum(len(vocab_lib.tokenize(t)) for t in texts)


def load_jsonl(path: str, min_words: int = DEFAULT_MIN_WORDS, train_fraction: float = DEFAULT_TRAIN_FRACTION,
               split: str = splits.DEFAULT_SPLIT) -> federated_text.FederatedText:
  """The `jsonl:PATH` corpus (see the module docstring)."""
  check_settings(min_words, train_fraction, split)
  return to_federated_text(read_jsonl(path), f"jsonl:{os.path.basename(path)}", _show(path),
                           min_words, train_fraction, split)


def load_textdir(path: str, min_words: int = DEFAULT_MIN_WORDS, train_fraction: float = DEFAULT_TRAIN_FRACTION,
                 text_unit: str = "line", split: str = splits.DEFAULT_SPLIT) -> federated_text.FederatedText:
  """The `textdir:PATH` corpus (see the module docstring); `text_unit` is "line" or "paragraph"."""
  check_settings(min_words, train_fraction, split, text_unit)
  name = os.path.basename(os.path.normpath(path)) or path
  return to_federated_text(read_textdir(path, text_unit), f"textdir:{name}", _show(path),
                           min_words, train_fraction, split)
