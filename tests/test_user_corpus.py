"""Your own corpus: `jsonl:PATH` and `textdir:PATH`, their splits, filters and errors."""
import json
import os
import re

import pytest

from tff_research.data import load_federated_text
from tff_research.data import nwp
from tff_research.data import user_corpus
from tff_research.data.federated_text import DataError

SENTENCE = "the quick brown fox jumps over the lazy dog"  # 9 words


def _write_jsonl(path, records):
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
  return str(path)


def _error(fn, *args, **kwargs) -> str:
  with pytest.raises(DataError) as e:
    fn(*args, **kwargs)
  message = str(e.value)
  assert "\n" not in message
  return message


def test_jsonl_splits_each_client_in_file_order_and_merges_repeated_ids(tmp_path, capsys):
  records = [{"client_id": "alice", "text": f"{SENTENCE} {i}"} for i in range(5)]
  records.insert(2, {"client_id": "bob", "text": f"{SENTENCE} b0", "extra": [1]})
  records += [{"client_id": "bob", "text": f"{SENTENCE} b1"}, {"client_id": "alice", "text": f"{SENTENCE} 5"}]
  path = _write_jsonl(tmp_path / "c.jsonl", records)
  corpus = load_federated_text(f"jsonl:{path}", str(tmp_path / "cache"))
  alice = [f"{SENTENCE} {i}" for i in range(6)]
  assert corpus.train["alice"] == alice[:5] and corpus.test["alice"] == alice[5:]  # round(0.8 * 6) = 5
  assert corpus.train["bob"] == [f"{SENTENCE} b0"] and corpus.test["bob"] == [f"{SENTENCE} b1"]
  assert corpus.name == "jsonl:c.jsonl"
  out = capsys.readouterr().out
  assert out.startswith("jsonl:c.jsonl: 2 train clients, 2 test clients (split by text: 2 of 2 clients have "
                        "two or more texts), 8 texts") and "not cached" in out
  assert not os.path.exists(tmp_path / "cache")  # custom corpora are never cached


def test_jsonl_skips_blank_lines_and_allows_a_bom_and_crlf(tmp_path):
  path = tmp_path / "c.jsonl"
  line = json.dumps({"client_id": "ü", "text": SENTENCE * 3})
  path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n\r\n  \n" + line.encode())
  corpus = user_corpus.load_jsonl(str(path))
  assert corpus.train == {"ü": [SENTENCE * 3]} and corpus.test == {"ü": [SENTENCE * 3]}


def test_min_words_drops_small_clients(tmp_path):
  path = _write_jsonl(tmp_path / "c.jsonl", [
      {"client_id": "big", "text": SENTENCE}, {"client_id": "big", "text": SENTENCE},
      {"client_id": "big", "text": "two words"}, {"client_id": "small", "text": SENTENCE}])
  assert user_corpus.load_jsonl(path).client_ids == ["big"]  # 20 words vs 9 (default 20)
  assert user_corpus.load_jsonl(path, min_words=5).client_ids == ["big", "small"]
  message = _error(user_corpus.load_jsonl, path, min_words=21)
  assert "no client left after filtering" in message and "2 clients" in message
  with pytest.raises(ValueError, match="min_words must be a positive integer"):
    user_corpus.load_jsonl(path, min_words=0)


@pytest.mark.parametrize("content,match", [
    (b'{"client_id": "a", "text": "x"}\n\xff\xfe\n', r"c\.jsonl:2: invalid UTF-8 at byte offset 32"),
    (b'{"client_id": "a", "text": "x"}\n{"client_id": "a",\n', r"c\.jsonl:2: malformed JSON: .* column 19"),
    (b'["a", "b"]\n', r"c\.jsonl:1: expected a JSON object .* got an array"),
    (b'{"text": "x"}\n', r'c\.jsonl:1: missing "client_id"'),
    (b'{"client_id": "a"}\n', r'c\.jsonl:1: missing "text"'),
    (b'{"client_id": 7, "text": "x"}\n', r'c\.jsonl:1: "client_id" must be a string, got a number'),
    (b'{"client_id": "a", "text": null}\n', r'c\.jsonl:1: "text" must be a string, got null'),
    (b'{"client_id": "", "text": "x"}\n', r'c\.jsonl:1: "client_id" is empty'),
    (b'{"client_id": "a", "text": "\\ud800"}\n', r'c\.jsonl:1: "text" contains an unpaired UTF-16 surrogate'),
    (b"[" * 100000 + b"\n", r"c\.jsonl:1: malformed JSON"),
    (b"", r"c\.jsonl: no records"),
    (b"\n \n", r"c\.jsonl: no records"),
])
def test_bad_jsonl_is_one_line_naming_file_and_line(tmp_path, content, match):
  path = tmp_path / "c.jsonl"
  path.write_bytes(content)
  message = _error(load_federated_text, f"jsonl:{path}", verbose=False)
  assert re.search(match, message), message
  assert str(path) in message


def test_missing_paths_are_clear_errors(tmp_path):
  assert "jsonl: no such file" in _error(load_federated_text, f"jsonl:{tmp_path}/nope.jsonl", verbose=False)
  assert "is a directory" in _error(load_federated_text, f"jsonl:{tmp_path}", verbose=False)
  assert "textdir: no such directory" in _error(load_federated_text, f"textdir:{tmp_path}/nope",
                                                verbose=False)
  (tmp_path / "f.txt").write_text(SENTENCE)
  assert "is not a directory" in _error(load_federated_text, f"textdir:{tmp_path}/f.txt", verbose=False)
  assert "needs a path" in _error(load_federated_text, "jsonl:", verbose=False)


def _tree(root, files):
  for relative, content in files.items():
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
  return str(root)


def test_textdir_one_client_per_file_with_relative_ids_and_line_texts(tmp_path):
  lines = [f"{SENTENCE} {i}" for i in range(5)]
  root = _tree(tmp_path / "corpus", {
      "alice.txt": "\n".join(lines) + "\n",
      "team/bob.md": "\ufeff" + "\r\n\r\n".join(lines[:2]),
      "team/deep/carol": "  " + lines[0] + "  \n\n" + lines[1],
      ".git/config": "hidden folder",
      "team/.DS_Store": "hidden file",
      "tiny.txt": "too few words",
  })
  corpus = load_federated_text(f"textdir:{root}", verbose=False)
  assert corpus.client_ids == ["alice", "team/bob", "team/deep/carol"]
  assert corpus.train["alice"] == lines[:4] and corpus.test["alice"] == lines[4:]
  assert corpus.train["team/bob"] == lines[:1] and corpus.test["team/bob"] == lines[1:2]
  assert corpus.train["team/deep/carol"] == lines[:1]
  assert corpus.name == "textdir:corpus"


def test_textdir_paragraph_unit_joins_lines_of_a_block(tmp_path):
  root = _tree(tmp_path, {"a.txt": "one two\nthree\n\n\nfour five\n six\n"})
  corpus = load_federated_text(f"textdir:{root}", verbose=False, min_words=1, text_unit="paragraph")
  assert corpus.train["a"] == ["one two three"] and corpus.test["a"] == ["four five six"]


def test_textdir_errors_name_the_file(tmp_path):
  root = _tree(tmp_path / "a", {"x.txt": SENTENCE, "x.md": SENTENCE})
  assert _error(user_corpus.load_textdir, root).endswith(": x.md and x.txt both give client id 'x'")
  root = _tree(tmp_path / "b", {"ok.txt": SENTENCE, "sub/bad.txt": b"caf\xc3\xa9 \xc3"})
  assert _error(user_corpus.load_textdir, root).endswith("sub/bad.txt: invalid UTF-8 at byte offset 6")
  os.makedirs(tmp_path / "c" / "empty")
  assert "no text files under" in _error(user_corpus.load_textdir, str(tmp_path / "c"))
  root = _tree(tmp_path / "d", {"a.txt": "", "b.txt": "\n\n"})
  assert "no client left after filtering" in _error(user_corpus.load_textdir, root)


def test_changed_file_is_read_again_not_served_from_a_cache(tmp_path):
  path = _write_jsonl(tmp_path / "c.jsonl", [{"client_id": "a", "text": SENTENCE * 3}] * 2)
  assert load_federated_text(f"jsonl:{path}", str(tmp_path), verbose=False).client_ids == ["a"]
  _write_jsonl(path, [{"client_id": "b", "text": SENTENCE * 3}] * 2)
  assert load_federated_text(f"jsonl:{path}", str(tmp_path), verbose=False).client_ids == ["b"]


def test_unknown_dataset_lists_the_forms_and_unknown_options_are_refused(tmp_path):
  message = _error(load_federated_text, "reddit", str(tmp_path))
  for form in ("shakespeare", "stackoverflow", "jsonl:PATH", "textdir:PATH"):
    assert form in message
  path = _write_jsonl(tmp_path / "c.jsonl", [{"client_id": "a", "text": SENTENCE * 3}])
  assert "no option 'text_unit'" in _error(load_federated_text, f"jsonl:{path}", verbose=False, text_unit="line")


def test_user_corpus_builds_nwp_windows(tmp_path):
  path = _write_jsonl(tmp_path / "c.jsonl",
                      [{"client_id": f"c{i % 3}", "text": f"{SENTENCE} {i}"} for i in range(15)])
  data = nwp.build_nwp_data(user_corpus.load_jsonl(path, min_words=5), vocab_size=50, sequence_length=8)
  assert data.train_client_ids == ["c0", "c1", "c2"] and data.test_client_ids == ["c0", "c1", "c2"]
  assert data.vocab.tokenizer == "words" and data.train["c0"].shape[1] == 9
