"""The `model_fn` TFF's learning builders take: a Keras NWP model wrapped as a `tff.learning` model."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_research.metrics import nwp_metrics
from tff_research.models import custom
from tff_research.models import nwp as nwp_models
from tff_research.runtime.eager import in_eager_mode

ModelFn = Callable[[], tff.learning.models.VariableModel]


@dataclasses.dataclass(frozen=True, eq=False)
class NWPModelFn:
  """A no-arg builder of a `tff.learning` model wrapping the Keras NWP model.

  TFF calls it inside its computations, where the model's variable
  initializers run on every call (every client of every round, every
  evaluation client) only to be overwritten by the broadcast weights. So the
  model it builds has zeros initializers, and the real initial weights come
  from `initial_weights()` (the same seeded initializers, run once in Python);
  `build_training_process` puts them into the initial server state. Same
  initial weights as before, bit for bit (tests/test_training.py), without a
  QR decomposition per client.
  """

  model_config: nwp_models.ModelConfig
  element_spec: Any
  special_ids: tuple[int, ...]
  pad_id: int = 0
  seed: Optional[int] = 0
  output_bias: Any = None
  initialize_in_graph: bool = False
  keras_model: Optional[custom.KerasModelBuilder] = None  # your own model (`models.custom`) instead of ours

  def _build_keras(self, initialize: bool):
    if self.keras_model is not None:
      sequence_length = self.element_spec[0].shape[1] or 1
      return custom.build(self.keras_model, self.model_config.vocab_size, sequence_length)
    return nwp_models.build_nwp_model(self.model_config, seed=self.seed, output_bias=self.output_bias,
                                      initialize=initialize)

  def __call__(self) -> tff.learning.models.VariableModel:
    keras_model = self._build_keras(self.initialize_in_graph)
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=nwp_metrics.MaskedSparseCategoricalCrossentropy(self.pad_id),
        input_spec=self.element_spec,
        metrics=nwp_metrics.build_nwp_metrics(self.special_ids, self.pad_id),
    )

  def initial_weights(self) -> tff.learning.models.ModelWeights:
    """The seeded initial weights, in the order of the TFF model's variables."""
    if self.keras_model is not None and self.seed is not None:
      tf.keras.utils.set_random_seed(self.seed)  # your model's initializers: the same weights every run
    keras_model = in_eager_mode(self._build_keras)(True)
    return tff.learning.models.ModelWeights(
        trainable=[v.numpy() for v in keras_model.trainable_weights],
        non_trainable=[v.numpy() for v in keras_model.non_trainable_weights])


def build_model_fn(model_config: nwp_models.ModelConfig, element_spec: Any,
                   special_ids: tuple[int, ...], pad_id: int = 0,
                   seed: Optional[int] = 0, output_bias=None,
                   initialize_in_graph: bool = False,
                   keras_model: Optional[custom.KerasModelBuilder] = None) -> NWPModelFn:
  """A no-arg builder of a `tff.learning` model wrapping the Keras NWP model.

  Args:
    model_config: the Keras model's shape (`models.nwp.ModelConfig`).
    element_spec: the (x, y) spec of a client's batches (`NWPData.element_spec`).
    special_ids: ids that accuracy and recall@3 leave out.
    pad_id: the padding id, left out of the loss and of every metric.
    seed: with a seed, the initial weights are the same in every run.
    output_bias: the logits' initial bias (see `models.nwp.unigram_log_prior`).
    initialize_in_graph: keep the real initializers inside TFF's computations
      (slower: benchmarks/round_overhead.py measures the difference).
    keras_model: your own model's builder (`models.custom`), called with the
      vocabulary size; `model_config` then gives only that size, and your
      model's own initializers run (seeded by `seed` for the initial weights).

  Returns:
    An `NWPModelFn`: call it for a `tff.learning` model; `initial_weights()`
    gives the seeded weights.
  """
  return NWPModelFn(model_config, element_spec, special_ids, pad_id, seed, output_bias,
                    initialize_in_graph, keras_model)
