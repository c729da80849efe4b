"""Every corpus shape trains: one text per client, mixes, a single client, hard-wrapped prose.

The split policies (`data/splits.py`): by text within each client, by holding
out whole clients, by token window; `auto` picks by text where enough clients
have two or more texts, else by client. Three shapes train from the command
line; the rest, and what each evaluates on, are checked in process.
"""
import dataclasses
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from tff_research.data import load_federated_text
from tff_research.data import nwp
from tff_research.data import splits
from tff_research.data.federated_text import DataError
from tff_research.learning import experiment
from tff_research.learning.config import PRESETS

WORDS = ("the king queen loves hates a crown sword night day speaks to of and my lord lady fair foul "
         "sleeps dreams castle storm sea ship sails home war peace").split()


def _sentence(rng, words=12):
  return " ".join(rng.choice(WORDS) for _ in range(words))


def _jsonl(path, texts_by_client):
  with open(path, "w", encoding="utf-8") as f:
    for client, texts in texts_by_client.items():
      for text in texts:
        f.write(json.dumps({"client_id": client, "text": text}) + "\n")
  return str(path)


def _textdir(root, files):
  for name, content in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    with open(os.path.join(root, name), "w", encoding="utf-8") as f:
      f.write(content)
  return str(root)


def _one_text_each(n=30, seed=0):
  rng = random.Random(seed)
  return {f"user{i:02d}": [_sentence(rng, 40)] for i in range(n)}


def _smoke(dataset, **changes):
  return dataclasses.replace(PRESETS["smoke"], dataset=dataset, vocab_size=40, **changes)


def _train(config, tmp_path, name):
  config = dataclasses.replace(config, output_dir=str(tmp_path), experiment_name=name)
  return experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None)


def test_one_text_per_client_holds_out_whole_clients_and_evaluates_on_them(tmp_path, capsys):
  path = _jsonl(tmp_path / "posts.jsonl", _one_text_each())
  corpus = load_federated_text(f"jsonl:{path}")
  assert "split by client: only 0 of 30 clients have two or more texts, too few to evaluate on, so 6 of 30 " \
         "clients are held out whole" in capsys.readouterr().out
  assert not set(corpus.train) & set(corpus.test) and len(corpus.test) == 6
  result = _train(_smoke(f"jsonl:{path}"), tmp_path, "one_text")
  trained_on = set(result.data.train_client_ids)
  assert result.run.eval_client_ids and not trained_on & set(result.run.eval_client_ids)
  assert np.isfinite(result.run.final_eval["loss"])


def test_held_out_clients_do_not_depend_on_file_order(tmp_path):
  texts = _one_text_each(50)
  forward = load_federated_text(f"jsonl:{_jsonl(tmp_path / 'a.jsonl', texts)}", verbose=False)
  backward = load_federated_text(f"jsonl:{_jsonl(tmp_path / 'b.jsonl', dict(reversed(texts.items())))}",
                                 verbose=False)
  assert sorted(forward.test) == sorted(backward.test) and len(forward.test) == 10
  fewer = load_federated_text(f"jsonl:{tmp_path / 'a.jsonl'}", verbose=False, split="by_client",
                              train_fraction=0.5)
  assert len(fewer.test) == 25


def test_one_line_per_file_in_a_textdir_is_split_by_client(tmp_path):
  rng = random.Random(1)
  root = _textdir(tmp_path / "notes", {f"u{i}.txt": _sentence(rng, 30) + "\n" for i in range(12)})
  corpus = load_federated_text(f"textdir:{root}", verbose=False)
  assert corpus.split_note.startswith("split by client") and len(corpus.test) == 2


def test_a_mix_of_one_text_and_many_text_clients(tmp_path):
  rng = random.Random(2)
  texts = {f"single{i}": [_sentence(rng, 30)] for i in range(8)}
  texts.update({f"many{i}": [_sentence(rng) for _ in range(5)] for i in range(8)})
  path = _jsonl(tmp_path / "mix.jsonl", texts)
  by_text = load_federated_text(f"jsonl:{path}", verbose=False)  # 8 of 16 have several texts: enough
  assert by_text.split_note == "split by text: 8 of 16 clients have two or more texts"
  assert set(by_text.test) == {f"many{i}" for i in range(8)}
  assert by_text.train["many0"] == texts["many0"][:4] and by_text.test["many0"] == texts["many0"][4:]
  by_client = load_federated_text(f"jsonl:{path}", verbose=False, split="by_client")
  assert not set(by_client.train) & set(by_client.test) and len(by_client.test) == 3


def test_a_single_client_with_one_text_says_what_would_make_it_work(tmp_path):
  path = _jsonl(tmp_path / "diary.jsonl", {"me": [_sentence(random.Random(3), 200)]})
  with pytest.raises(DataError) as error:
    load_federated_text(f"jsonl:{path}", verbose=False)
  assert str(error.value) == ("jsonl:diary.jsonl: 1 client with 1 text leaves no client to hold out for "
                              "evaluation: add clients, split the text into lines or paragraphs, or use "
                              "--split=by_window")
  with pytest.raises(DataError, match=r"every client has a single text\): use --split=by_client"):
    load_federated_text(f"jsonl:{path}", verbose=False, split="by_text")
  with pytest.raises(DataError, match="1 client with 1 text leaves no client to hold out"):
    load_federated_text(f"jsonl:{path}", verbose=False, split="by_client")


def test_by_window_cuts_each_client_in_order_and_learns_its_vocabulary_from_train_windows(tmp_path):
  rng = random.Random(4)
  text = _sentence(rng, 155) + " zebra"  # 156 words + EOS: 10 windows of 16, "zebra" in the last
  path = _jsonl(tmp_path / "book.jsonl", {"me": [text]})
  corpus = load_federated_text(f"jsonl:{path}", verbose=False, split="by_window")
  assert corpus.split_note.startswith("split by token window")
  data = nwp.build_nwp_data(corpus, vocab_size=100, sequence_length=16)
  whole = nwp.build_nwp_data(dataclasses.replace(corpus, window_split=None), vocab_size=100,
                             sequence_length=16)
  assert len(data.train["me"]) == 8 and len(data.test["me"]) == 2  # round(0.8 * 10)
  assert "zebra" in whole.vocab.words and "zebra" not in data.vocab.words  # test words stay unseen
  for split in ("train", "test"):
    assert getattr(data, split)["me"].shape[1] == 17
  result = _train(_smoke(f"jsonl:{path}", split="by_window", sequence_length=16, clients_per_round=1,
                         eval_clients=0), tmp_path, "window")
  assert result.run.eval_client_ids == ["me"] and np.isfinite(result.run.final_eval["loss"])


def test_bad_split_options_are_one_line(tmp_path):
  config = _smoke("jsonl:x.jsonl")
  for changes, message in [(dict(split="random"), "--split must be one of: auto, by_text, by_client, by_window"),
                           (dict(train_fraction=1.0), "--train_fraction must be in (0, 1)"),
                           (dict(train_fraction=float("nan")), "--train_fraction must be in (0, 1)"),
                           (dict(min_words=0), "--min_words must be a positive integer"),
                           (dict(text_unit="paragraph"), "--text_unit applies to textdir: corpora")]:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
      dataclasses.replace(config, **changes).validate()
  with pytest.raises(ValueError, match="--split applies to jsonl: and textdir: corpora, not --dataset=shakespeare"):
    dataclasses.replace(PRESETS["smoke"], split="by_client").validate()
  with pytest.raises(ValueError, match="text_unit must be one of"):
    dataclasses.replace(_smoke("textdir:x"), text_unit="sentence").validate()
  with pytest.raises(ValueError, match="split must be one of"):
    splits.check_split("by_user", 0.8)


@pytest.fixture
def train_cli(python_env, repo_root, tmp_path):
  def run(*flags):
    args = [sys.executable, "-m", "experiments.train_nwp", "--preset=smoke", "--vocab_size=40",
            f"--output_dir={tmp_path / 'runs'}", "--noprogress", "--noplot", *flags]
    proc = subprocess.run(args, cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "round 2/2" in proc.stdout
    return proc.stdout
  return run


def test_command_line_trains_one_text_per_client(train_cli, tmp_path):
  path = _jsonl(tmp_path / "posts.jsonl", _one_text_each())
  out = train_cli(f"--dataset=jsonl:{path}", "--experiment_name=one_text")
  assert "split by client" in out and "Final test accuracy" in out


def test_command_line_trains_a_textdir_mix_with_held_out_texts(train_cli, tmp_path):
  rng = random.Random(5)
  files = {f"one/u{i}.txt": _sentence(rng, 30) for i in range(4)}
  files.update({f"many/u{i}.txt": "\n".join(_sentence(rng) for _ in range(6)) for i in range(4)})
  out = train_cli(f"--dataset=textdir:{_textdir(tmp_path / 'mix', files)}", "--experiment_name=mix",
                  "--min_words=5")
  assert "split by text: 4 of 8 clients have two or more texts" in out


def test_command_line_trains_hard_wrapped_prose_by_paragraph(train_cli, tmp_path):
  rng = random.Random(6)
  paragraphs = ["\n".join(_sentence(rng, 8) for _ in range(4)) for _ in range(10)]  # lines wrapped at 8 words
  root = _textdir(tmp_path / "essays", {"author.txt": "\n\n".join(paragraphs) + "\n"})
  corpus = load_federated_text(f"textdir:{root}", verbose=False, text_unit="paragraph")
  assert len(corpus.train["author"]) == 8 and len(corpus.test["author"]) == 2
  out = train_cli(f"--dataset=textdir:{root}", "--text_unit=paragraph", "--experiment_name=prose",
                  "--clients_per_round=1")
  assert "1 train client, 1 test client (split by text: 1 of 1 clients have two or more texts)" in out
