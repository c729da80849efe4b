"""Stack Overflow read offline from a small SQLite file in TFF's exact layout."""
import collections
import dataclasses
import os
import sqlite3
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines.stackoverflow import word_prediction_preprocessing

from tff_research.data import load_federated_text
from tff_research.data import nwp
from tff_research.data import stackoverflow
from tff_research.data.federated_text import DataError

WORDS = ("the", "i", "to", "a", "is", ".", ",", "?", "<URL>", "c#", "simple-ish", "you're",
         "python", "java", "sql", "css3", "(", ")", "function", "error")


def _post(rng, length):
  return " ".join(rng.choice(WORDS, size=length))


def _example(tokens: str, title: str = "a title") -> bytes:
  """A serialized tf.train.Example with the six features TFF's load_data parses."""
  def b(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
  features = {"creation_date": b("2017-01-01 00:00:00 UTC"), "tags": b("python|sql"),
              "title": b(title), "tokens": b(tokens), "type": b("answer"),
              "score": tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))}
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_sqlite(path, texts_by_split, index=True):
  """TFF's SqlClientData schema (as `save_to_sql_client_data` creates it), written by hand
  so that one client can be in several splits, as in the real file."""
  with sqlite3.connect(path) as con:
    con.execute("CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
                "serialized_example_proto BLOB NOT NULL);")
    con.execute("CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, "
                "num_examples INTEGER NOT NULL);")
    for split, by_client in texts_by_split.items():
      for client_id, texts in by_client.items():
        con.executemany("INSERT INTO examples VALUES (?, ?, ?)",
                        [(split, client_id, _example(t)) for t in texts])
        con.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (client_id, split, len(texts)))
    if index:
      con.execute("CREATE INDEX examples_client ON examples (client_id, split_name);")
  con.close()


def _fixture_texts(seed=0):
  rng = np.random.default_rng(seed)
  train = {f"{i:05d}": [_post(rng, rng.integers(1, 30)) for _ in range(8)] for i in (3, 1, 5, 2, 4)}
  test = {f"{i:05d}": [_post(rng, rng.integers(1, 30)) for _ in range(3)] for i in (1, 2, 6)}
  heldout = {"00010": [_post(rng, 5)]}
  return {"train": train, "test": test, "heldout": heldout}


@pytest.fixture(scope="module")
def so_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("so")
  write_sqlite(os.path.join(path, stackoverflow.SQLITE_NAME), _fixture_texts())
  return str(path)


def test_missing_file_is_a_one_line_error_naming_the_expected_path(tmp_path):
  with pytest.raises(DataError, match=r"expected TFF's SQLite file '.*stackoverflow\.sqlite'") as e:
    load_federated_text("stackoverflow", str(tmp_path), verbose=False)
  assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
  (tmp_path / stackoverflow.LZMA_NAME).write_bytes(b"")
  with pytest.raises(DataError, match="decompress it first"):
    load_federated_text("stackoverflow", str(tmp_path), verbose=False)


def test_splits_clients_and_texts_come_from_the_sqlite_file(so_dir, capsys):
  corpus = load_federated_text("stackoverflow", so_dir)
  expected = _fixture_texts()
  assert corpus.train == {c: expected["train"][c] for c in sorted(expected["train"])}
  assert corpus.test == expected["test"]
  assert "00010" not in corpus.train and "00010" not in corpus.test  # heldout is not used
  assert (corpus.tokenizer, corpus.truncate, corpus.vocab_words) == ("whitespace", True, None)
  assert "stackoverflow: 5 train clients, 3 test clients, 49 texts" in capsys.readouterr().out


def test_texts_match_what_tff_reads_from_the_same_file(so_dir):
  path = os.path.join(so_dir, stackoverflow.SQLITE_NAME)
  spec = collections.OrderedDict(
      (k, tf.TensorSpec([], tf.int64 if k == "score" else tf.string))
      for k in ("creation_date", "score", "tags", "title", "tokens", "type"))
  tff_train = tff.simulation.datasets.load_and_parse_sql_client_data(path, spec, "train")
  corpus = stackoverflow.load(so_dir)
  assert tff_train.client_ids == sorted(corpus.train)
  for client_id in tff_train.client_ids:
    tff_texts = [e["tokens"].numpy().decode() for e in tff_train.create_tf_dataset_for_client(client_id)]
    assert tff_texts == corpus.train[client_id]


def test_max_clients_caps_each_split_to_its_first_ids(so_dir):
  corpus = load_federated_text("stackoverflow:max_clients=2", so_dir, verbose=False)
  assert sorted(corpus.train) == ["00001", "00002"] and sorted(corpus.test) == ["00001", "00002"]
  assert load_federated_text("stackoverflow", so_dir, verbose=False, max_clients=1).client_ids == ["00001"]
  with pytest.raises(DataError, match="max_clients=N"):
    load_federated_text("stackoverflow:max_clients=0", so_dir, verbose=False)
  with pytest.raises(DataError, match="no option 'min_words'"):
    load_federated_text("stackoverflow", so_dir, verbose=False, min_words=3)


def test_without_an_index_one_scan_gives_the_same_corpus(tmp_path, so_dir):
  write_sqlite(os.path.join(tmp_path, stackoverflow.SQLITE_NAME), _fixture_texts(), index=False)
  path = os.path.join(tmp_path, stackoverflow.SQLITE_NAME)
  assert list(stackoverflow.iter_client_texts(path, "train", 3)) == list(
      stackoverflow.iter_client_texts(os.path.join(so_dir, stackoverflow.SQLITE_NAME), "train", 3))
  assert stackoverflow.load(str(tmp_path)) == stackoverflow.load(so_dir)


def test_nwp_rows_equal_tff_baseline_preprocessing(so_dir):
  """Same vocabulary -> exactly the ids TFF's word-prediction baseline feeds its model."""
  corpus = stackoverflow.load(so_dir)
  data = nwp.build_nwp_data(corpus, vocab_size=12, sequence_length=20, num_oov_buckets=1)
  assert set(data.vocab.words) <= set(WORDS)  # SO tokens (".", "<URL>", "c#") are kept whole
  to_ids = word_prediction_preprocessing.build_to_ids_fn(list(data.vocab.words), 20, 1)
  for client_id, texts in corpus.train.items():
    expected = [to_ids({"tokens": tf.constant(t)}).numpy() for t in texts]
    expected = np.stack([np.pad(e, (0, 21 - len(e))) for e in expected])
    np.testing.assert_array_equal(data.train[client_id], expected)
  assert any(len(t.split()) > 20 for v in corpus.train.values() for t in v)  # exercises truncation
  chunked = nwp.build_nwp_data(corpus, vocab_size=12, truncate=False)
  assert chunked.num_sequences() > data.num_sequences()


def test_word_count_file_gives_the_vocabulary_in_file_order(tmp_path, so_dir):
  os.symlink(os.path.join(so_dir, stackoverflow.SQLITE_NAME), tmp_path / stackoverflow.SQLITE_NAME)
  (tmp_path / stackoverflow.WORD_COUNT_NAME).write_text("python 9\n. 7\nzebra 7\npython 1\nsql 2\n")
  corpus = stackoverflow.load(str(tmp_path))
  assert corpus.vocab_words == ["python", ".", "zebra", "sql"]
  data = nwp.build_nwp_data(corpus, vocab_size=3)
  assert data.vocab.words == ("python", ".", "zebra") and data.vocab.tokenizer == "whitespace"
  (tmp_path / stackoverflow.WORD_COUNT_NAME).write_text("python 9\nbad line here\n")
  with pytest.raises(DataError, match=r"stackoverflow\.word_count:2: expected 'word count'"):
    stackoverflow.load(str(tmp_path))


def test_word_count_archive_as_tff_downloads_it(tmp_path):
  source = tmp_path / "src" / stackoverflow.WORD_COUNT_NAME
  source.parent.mkdir()
  source.write_text("the 10\ni 5\n")
  with tarfile.open(tmp_path / stackoverflow.WORD_COUNT_ARCHIVE, "w:bz2") as tar:
    tar.add(source, arcname=stackoverflow.WORD_COUNT_NAME)
  assert stackoverflow.read_word_counts(str(tmp_path)) == ["the", "i"]
  (tmp_path / stackoverflow.WORD_COUNT_ARCHIVE).write_bytes(b"not bzip2")
  with pytest.raises(DataError, match="not a readable tar.bz2"):
    stackoverflow.read_word_counts(str(tmp_path))


def test_file_written_by_tff_save_to_sql_client_data_loads(tmp_path):
  texts = {"a": ["x y z", "p q"], "b": ["r s"], "c": ["t u v"]}
  def dataset_fn(client_id):
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        tokens=texts[client_id], title=[""] * len(texts[client_id])))
  tff.simulation.datasets.save_to_sql_client_data(
      list(texts), dataset_fn, str(tmp_path / stackoverflow.SQLITE_NAME),
      split_names_by_client_id={"a": "train", "b": "train", "c": "test"})
  corpus = stackoverflow.load(str(tmp_path))
  assert corpus.train == {"a": texts["a"], "b": texts["b"]} and corpus.test == {"c": texts["c"]}


@pytest.mark.parametrize("content,match", [
    (b"not a database at all" * 100, "not a readable Stack Overflow SQLite file"),
    (None, "no table 'examples'"),
])
def test_wrong_files_are_one_line_errors(tmp_path, content, match):
  path = tmp_path / stackoverflow.SQLITE_NAME
  if content is None:
    sqlite3.connect(path).close()
  else:
    path.write_bytes(content)
  with pytest.raises(DataError, match=match) as e:
    stackoverflow.load(str(tmp_path))
  assert "\n" not in str(e.value)


def test_example_without_tokens_names_the_client(tmp_path):
  write_sqlite(str(tmp_path / stackoverflow.SQLITE_NAME), {"train": {"u1": ["a b"]}})
  with sqlite3.connect(tmp_path / stackoverflow.SQLITE_NAME) as con:
    con.execute("INSERT INTO examples VALUES ('train', 'u1', ?)", (b"\x0a\x00",))
  con.close()
  with pytest.raises(DataError, match="client 'u1': an example has no string feature 'tokens'"):
    stackoverflow.load(str(tmp_path))


def test_one_round_of_training_on_the_fixture(so_dir, tmp_path):
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(PRESETS["smoke"], dataset="stackoverflow", data_dir=so_dir, rounds=1,
                               output_dir=str(tmp_path), experiment_name="so_smoke")
  result = experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None)
  assert result.run.rounds_completed == 1
  assert result.data.sequence_length == 20 and result.data.vocab.tokenizer == "whitespace"
  assert np.isfinite(result.run.history[-1]["train/loss"])
  assert 0.0 <= result.run.final_eval["accuracy"] <= 1.0
