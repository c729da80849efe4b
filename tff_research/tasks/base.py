"""What a learning task is: its data, its model's shape and how its results are worded.

In the shape of `tff.simulation.baselines.BaselineTask` (and FedJAX's task
flags): one `Task` object per task, so the rest of the code asks the task
instead of branching on its name. A task takes explicit keyword arguments, not
an `ExperimentConfig`: `tff_research.learning` imports this package, never the
other way round.

Importing this package does not import TensorFlow (`learning.config` reads
`TASKS` before flags configure TF's logging): the task modules import the data
and model modules, which do, inside their functions.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol

if TYPE_CHECKING:  # type hints only: these modules import TensorFlow
  from tff_research.data import nwp
  from tff_research.models import nwp as nwp_models


class DataLoader(Protocol):
  """`Task.load_data`: a run's federated token windows, from its data settings."""

  def __call__(self, *, dataset: str, data_dir: Optional[str], sequence_length: int, vocab_size: int,
               num_oov_buckets: int, shakespeare_unit: str, corpus_options: Mapping[str, Any],
               heldout_clients: float, verbose: bool) -> "nwp.NWPData":
    ...


class ModelConfigBuilder(Protocol):
  """`Task.model_config`: the Keras model's shape, from the run's model settings."""

  def __call__(self, *, vocab_size: int, embedding_size: int, latent_size: int, num_layers: int, cell: str,
               lstm_implementation: str) -> "nwp_models.ModelConfig":
    ...


@dataclasses.dataclass(frozen=True)
class Task:
  """One prediction task: next word, or next character.

  Attributes:
    name: the `--task` value.
    load_data: a `DataLoader`; every argument is a keyword.
    model_config: a `ModelConfigBuilder`; every argument is a keyword.
    excluded_label: the targets its accuracy leaves out, as the summary line
      words them ("Final test accuracy (without ...)").
    shakespeare_unit_datasets: the `--dataset` values on which the task reads
      `--shakespeare_unit` (what one example is); other datasets refuse a
      unit other than the default.
    fixed_vocabulary: the vocabulary is the task's own (TFF's characters):
      `--vocab_size` and `--num_oov_buckets` mean nothing and are refused.
  """
  name: str
  load_data: DataLoader
  model_config: ModelConfigBuilder
  excluded_label: str
  shakespeare_unit_datasets: tuple[str, ...] = ()
  fixed_vocabulary: bool = False

  def takes_shakespeare_unit(self, dataset: str) -> bool:
    """Whether `--shakespeare_unit` means anything for this task on `dataset`.

    Args:
      dataset: the `--dataset` value, compared whole (options included).

    Returns:
      True where the task reads the unit.
    """
    return dataset in self.shakespeare_unit_datasets
