"""The next-character task against TFF 0.87's own Shakespeare character baseline."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_models
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_research.data import federated_text
from tff_research.data import next_char
from tff_research.data import nwp
from tff_research.learning.config import PRESETS
from tff_research.models import nwp as nwp_models


@pytest.fixture(scope="module")
def corpus():
  return next_char.mcmahan_shakespeare()


def test_ids_are_tffs(corpus):
  vocab = next_char.char_vocabulary()
  pad, oov, bos, eos = char_prediction_preprocessing.get_special_tokens()
  assert (vocab.pad_id, vocab.oov_ids, vocab.bos_id, vocab.eos_id) == (pad, (oov,), bos, eos)
  assert vocab.size == 90 and len(next_char.CHAR_VOCAB) == 86


@pytest.mark.parametrize("client_id", ["hamlet/HAMLET", "the-tempest/BOATSWAIN"])
def test_batches_equal_tffs_preprocessing(corpus, client_id):
  """Same client, same batches: TFF's `create_preprocess_fn` (unshuffled) and ours."""
  texts = corpus.train[client_id]
  texts = texts + ["Caf\u00e9 \u2014 fa\u00e7ade"]  # non-ASCII: several OOV bytes each, in both
  spec = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=4, shuffle_buffer_size=1)
  preprocess = char_prediction_preprocessing.create_preprocess_fn(spec, sequence_length=80)
  theirs = list(preprocess(tf.data.Dataset.from_tensor_slices({"snippets": texts})).as_numpy_iterator())
  data = next_char.build_char_data(federated_text.FederatedText("one", {client_id: texts}, {}), 80)
  ours = list(data.client_dataset(client_id, nwp.ClientSpec(1, 4, None, shuffle=False)).as_numpy_iterator())
  assert len(ours) == len(theirs) > 1
  for (x, y), (tx, ty) in zip(ours, theirs):
    np.testing.assert_array_equal(x, tx)
    np.testing.assert_array_equal(y, ty)
  assert next_char.char_vocabulary().oov_ids[0] in np.concatenate([x.ravel() for x, _ in ours])


def test_model_matches_tffs():
  theirs = char_prediction_models.create_recurrent_model(vocab_size=90, sequence_length=80)
  ours = nwp_models.build_nwp_model(PRESETS["shakespeare_char"].model_config(90), seed=0)
  assert ours.count_params() == theirs.count_params() == 820_522
  assert [w.shape for w in ours.trainable_weights] == [w.shape for w in theirs.trainable_weights]


def test_mcmahan_split(corpus):
  """Roles with >= 2 texts; the last 20 %, rounded up, test (McMahan et al.: 1,146 clients)."""
  assert 1_100 <= len(corpus.train) <= 1_200
  assert set(corpus.train) == set(corpus.test)
  for client_id, train in corpus.train.items():
    n = len(train) + len(corpus.test[client_id])
    assert len(corpus.test[client_id]) == max(1, int(np.ceil(0.2 * n)))
  data = next_char.build_char_data(corpus)
  assert data.accuracy_excluded_ids == (0,)
  # Always predicting the most frequent character (a space) is right about one time in six.
  assert data.vocab.decode_id(nwp.most_frequent_token(data)) == " "
  assert 0.1 < nwp.unigram_baseline_accuracy(data) < 0.25
