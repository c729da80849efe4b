"""Next-word prediction: TFF's Stack Overflow baseline task, on any federated text corpus."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from tff_research.tasks import base

if TYPE_CHECKING:  # type hints only: these modules import TensorFlow
  from tff_research.data import nwp
  from tff_research.models import nwp as nwp_models


def load_data(*, dataset: str, data_dir: Optional[str], sequence_length: int, vocab_size: int,
              num_oov_buckets: int, shakespeare_unit: str, corpus_options: Mapping[str, Any],
              heldout_clients: float, verbose: bool) -> "nwp.NWPData":
  """Word windows of every client of `dataset`, over its `vocab_size` most frequent train words.

  Args:
    dataset: a `data.load_federated_text` name (shakespeare, stackoverflow, jsonl:PATH, ...).
    data_dir: where corpora are cached (None: the default).
    sequence_length: targets per window.
    vocab_size: words in the vocabulary.
    num_oov_buckets: out-of-vocabulary ids.
    shakespeare_unit: unused: Shakespeare's words come by speech (`learning.config` refuses another unit).
    corpus_options: `ExperimentConfig.corpus_options()` (your own corpus only).
    heldout_clients: the share of clients held out whole from training
      (`data.datasets.load_federated_text`).
    verbose: print the corpus's summary line.

  Returns:
    `NWPData` of word windows; accuracy leaves out pad, OOV, BOS and EOS.
  """
  del shakespeare_unit  # every task takes the same arguments
  # Imported here: they import TensorFlow, and importing tasks must not (see base).
  from tff_research.data import datasets  # pylint: disable=g-import-not-at-top
  from tff_research.data import nwp  # pylint: disable=g-import-not-at-top
  corpus = datasets.load_federated_text(dataset, data_dir, verbose=verbose, heldout_clients=heldout_clients,
                                          **corpus_options)
  return nwp.build_nwp_data(corpus, vocab_size, sequence_length, num_oov_buckets)


def model_config(*, vocab_size: int, embedding_size: int, latent_size: int, num_layers: int, cell: str,
                 lstm_implementation: str) -> "nwp_models.ModelConfig":
  """TFF's Stack Overflow NWP model's shape: a projection of `embedding_size` before the logits.

  Args:
    vocab_size: output classes (`Vocabulary.size`).
    embedding_size: token embedding size (and the projection's).
    latent_size: units per recurrent layer.
    num_layers: recurrent layers.
    cell: "lstm" or "cifg".
    lstm_implementation: "keras" or "block".

  Returns:
    The `models.nwp.ModelConfig`, with glorot-uniform recurrent kernels.
  """
  from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top
  return nwp_models.ModelConfig(vocab_size, embedding_size, latent_size, num_layers, cell, projection=True,
                                kernel_initializer="glorot_uniform", lstm_implementation=lstm_implementation)


TASK = base.Task(name="next_word", load_data=load_data, model_config=model_config,
                 excluded_label="pad/OOV/BOS/EOS")
