"""Fuzzing the corpus readers: any input loads or is one `DataError` line, never anything else."""
import contextlib
import json
import os
import re
import sqlite3
import tempfile

from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tff_research.data import nwp
from tff_research.data import stackoverflow
from tff_research.data import user_corpus
from tff_research.data.federated_text import DataError
from tff_research.data.federated_text import FederatedText

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Odd characters on purpose: lone surrogates, NUL, BOM, Unicode line breaks, RTL, emoji.
ODD = st.sampled_from(["\x00", "\ufeff", "\n", "\r", "\t", " ", "\u2028", "\x85", "\x1c", "é", "日",
                       "\u202e", "😀", "'", '"', "\\", "{", "}"])
CHARS = st.one_of(st.characters(categories=["Cs", "L", "N", "Zs", "Cc", "P", "S", "Cf"]), ODD)
TEXT = st.text(CHARS, max_size=40)
WORDY = st.lists(st.sampled_from(["the", "cat", "sat", "on", "mat", "!", "Ünïcode", "x\x00y"]),
                 max_size=12).map(" ".join)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)


def _loads_or_data_error(load, *args, **kwargs):
  """The corpus, or None after a one-line DataError; any other exception fails the test."""
  try:
    corpus = load(*args, **kwargs)
  except DataError as e:
    assert str(e) and "\n" not in str(e) and "\r" not in str(e), repr(str(e))
    event("DataError: " + re.sub(r"^.*?: (?=[a-z])", "", str(e))[:30])  # --hypothesis-show-statistics
    return None
  event("loaded")
  assert isinstance(corpus, FederatedText) and corpus.train
  corpus.summary()
  json.dumps(corpus.train, ensure_ascii=False).encode("utf-8")  # cacheable: no lone surrogates
  return corpus


@contextlib.contextmanager
def _file(content: bytes, name="c.jsonl"):
  with tempfile.TemporaryDirectory() as root:
    path = os.path.join(root, name)
    with open(path, "wb") as f:
      f.write(content)
    yield root, path


def _encode(text: str) -> bytes:
  """UTF-8, except lone surrogates, which become invalid UTF-8 (as CESU-8 bytes)."""
  return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_jsonl_random_bytes(content, bom):
  with _file((b"\xef\xbb\xbf" if bom else b"") + content) as (_, path):
    _loads_or_data_error(user_corpus.load_jsonl, path, min_words=1)


RECORD = st.one_of(
    st.fixed_dictionaries({"client_id": TEXT, "text": TEXT | WORDY}),
    st.fixed_dictionaries({"client_id": st.sampled_from(["a", "b", "ü"]), "text": WORDY}),
    st.dictionaries(st.sampled_from(["client_id", "text", "other"]), JSON, max_size=3),
    JSON,
)
LINE = st.one_of(
    st.fixed_dictionaries({"client_id": st.sampled_from(["a", "b"]), "text": WORDY}).map(
        lambda r: json.dumps(r).encode()),
    st.tuples(RECORD, st.booleans()).map(lambda r: _encode(json.dumps(r[0], ensure_ascii=r[1]))),
    st.binary(max_size=30),
    st.sampled_from([b"", b"  ", b"\r", b"\xef\xbb\xbf{}", b"{", b"NaN", b'{"client_id": "a"}']),
)


@FUZZ
@given(st.lists(LINE, max_size=8), st.sampled_from([b"\n", b"\r\n"]))
def test_jsonl_random_json_lines(lines, newline):
  with _file(newline.join(lines)) as (_, path):
    corpus = _loads_or_data_error(user_corpus.load_jsonl, path, min_words=1)
  if corpus is not None:
    try:
      nwp.build_nwp_data(corpus, vocab_size=20, sequence_length=4)
    except ValueError as e:  # words only in test texts: the train split has none
      assert "vocabulary is empty" in str(e) or "no train client" in str(e)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "日本"]), WORDY), min_size=1, max_size=12),
       st.integers(1, 6))
def test_valid_jsonl_keeps_every_text_of_every_kept_client_in_order(records, min_words):
  content = "\n".join(json.dumps({"client_id": c, "text": t}) for c, t in records).encode()
  with _file(content) as (_, path):
    corpus = _loads_or_data_error(user_corpus.load_jsonl, path, min_words=min_words)
  merged = {}
  for client_id, text in records:
    merged.setdefault(client_id, []).append(text)
  kept = {c: [t for t in v if t.strip()] for c, v in merged.items()
          if sum(len(user_corpus.vocab_lib.tokenize(t)) for t in v) >= min_words}
  if corpus is None:  # nothing kept, or one client with one text: nothing to evaluate on
    assert not kept or (len(kept) == 1 and len(next(iter(kept.values()))) == 1)
    return
  assert sorted(set(corpus.train) | set(corpus.test)) == sorted(kept)
  for client_id, texts in kept.items():  # by text or by client: every text once, in order
    assert corpus.train.get(client_id, []) + corpus.test.get(client_id, []) == texts


NAME = st.text(st.sampled_from("abcXYZ019 ._-éü日"), min_size=1, max_size=8).filter(
    lambda n: n not in (".", ".."))
CONTENT = st.one_of(st.binary(max_size=200), TEXT.map(_encode), st.lists(WORDY, max_size=5).map(
    lambda ls: "\n".join(ls).encode()))


@FUZZ
@given(st.dictionaries(st.lists(NAME, min_size=1, max_size=3).map(tuple), CONTENT, max_size=6),
       st.sampled_from(user_corpus.UNITS))
def test_textdir_random_trees(files, unit):
  with tempfile.TemporaryDirectory() as root:
    for parts, content in files.items():
      path = os.path.join(root, "corpus", *parts)
      try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
          f.write(content)
      except (FileExistsError, IsADirectoryError, NotADirectoryError):
        pass  # the same name was already used as a folder, or as a file
    os.makedirs(os.path.join(root, "corpus"), exist_ok=True)
    _loads_or_data_error(user_corpus.load_textdir, os.path.join(root, "corpus"), min_words=1, text_unit=unit)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["c.txt", "c", "d/e.md"]))
def test_textdir_single_random_file(content, name):
  with tempfile.TemporaryDirectory() as root:
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content)
    _loads_or_data_error(user_corpus.load_textdir, root, min_words=1)


@FEW
@given(st.binary(max_size=2000), st.booleans())
def test_stackoverflow_random_database_file(content, sqlite_header):
  content = (b"SQLite format 3\x00" if sqlite_header else b"") + content
  with _file(content, stackoverflow.SQLITE_NAME) as (root, _):
    _loads_or_data_error(stackoverflow.load, root)


def _example(tokens: bytes) -> bytes:
  """A serialized tf.train.Example with a `tokens` feature holding any bytes."""
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top
  example = example_pb2.Example()
  example.features.feature["tokens"].bytes_list.value.append(tokens)
  return example.SerializeToString()


BLOB = st.one_of(st.binary(max_size=40), TEXT, st.binary(max_size=20).map(_example),
                 st.one_of(TEXT.map(_encode), WORDY.map(str.encode)).map(_example))


@FEW
@given(st.lists(st.tuples(st.sampled_from(["train", "test", "heldout", "other"]), TEXT, BLOB),
                min_size=1, max_size=6))
def test_stackoverflow_random_rows(rows):
  with tempfile.TemporaryDirectory() as root:
    path = os.path.join(root, stackoverflow.SQLITE_NAME)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)")
    con.execute("CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER)")
    for split, client_id, blob in rows:
      client_id = client_id.encode("utf-8", "replace").decode("utf-8")  # sqlite3 refuses lone surrogates
      blob = blob.encode("utf-8", "replace").decode("utf-8") if isinstance(blob, str) else blob
      con.execute("INSERT INTO examples VALUES (?, ?, ?)", (split, client_id, blob))
      con.execute("INSERT INTO client_metadata VALUES (?, ?, 1)", (client_id, split))
    con.commit()
    con.close()
    _loads_or_data_error(stackoverflow.load, root)


@FEW
@given(st.binary(max_size=300))
def test_stackoverflow_random_word_count_file(content):
  with _file(content, stackoverflow.WORD_COUNT_NAME) as (root, _):
    try:
      words = stackoverflow.read_word_counts(root)
    except DataError as e:
      assert "\n" not in str(e)
      return
    assert words and all(isinstance(w, str) and w for w in words)
