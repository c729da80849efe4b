"""Builders for the NWP model function and the federated learning processes.

`build_training_process` returns an object with the `tff.learning`
LearningProcess calling shape (`initialize`, `next(state, datasets)`,
`get_model_weights`, `set_model_weights`), whatever the algorithm (FedAvg with
any server optimizer, FedSGD) or the aggregator (TFF's plain weighted mean, or
our pairwise-masked secure sum), so the training loop treats them alike.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import tensorflow_federated as tff

from tff_research.learning import optimizers as optimizers_lib
from tff_research.metrics import nwp_metrics
from tff_research.models import nwp as nwp_models

ALGORITHMS = ("fedavg", "fedsgd")
AGGREGATORS = ("plain", "secure")

ModelFn = Callable[[], tff.learning.models.VariableModel]


def build_model_fn(model_config: nwp_models.ModelConfig, element_spec: Any,
                   special_ids: tuple[int, ...], pad_id: int = 0,
                   seed: Optional[int] = 0, output_bias=None) -> ModelFn:
  """A no-arg builder of a `tff.learning` model wrapping the Keras NWP model.

  With a `seed`, the initial weights are the same in every run; `output_bias`
  initializes the logits' bias (see `models.nwp.unigram_log_prior`).
  """
  def model_fn() -> tff.learning.models.VariableModel:
    keras_model = nwp_models.build_nwp_model(model_config, seed=seed, output_bias=output_bias)
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=nwp_metrics.MaskedSparseCategoricalCrossentropy(pad_id),
        input_spec=element_spec,
        metrics=nwp_metrics.build_nwp_metrics(special_ids, pad_id),
    )
  return model_fn


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  algorithm: str = "fedavg"
  client_optimizer: optimizers_lib.OptimizerConfig = optimizers_lib.OptimizerConfig("sgd", 0.5)
  server_optimizer: optimizers_lib.OptimizerConfig = optimizers_lib.OptimizerConfig("sgd", 1.0)
  aggregator: str = "plain"
  secure: Any = None  # tff_research.aggregation.SecureAggregationConfig when aggregator="secure"

  def __post_init__(self):
    if self.algorithm not in ALGORITHMS:
      raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    if self.aggregator not in AGGREGATORS:
      raise ValueError(f"unknown aggregator {self.aggregator!r}; choose one of: {', '.join(AGGREGATORS)}")
    if self.aggregator == "secure" and self.algorithm != "fedavg":
      raise ValueError("--aggregator=secure is implemented for --algorithm=fedavg")
    optimizers_lib.build_optimizer(self.server_optimizer, optimizers_lib.SERVER_OPTIMIZERS)
    if self.algorithm == "fedavg":
      optimizers_lib.build_optimizer(self.client_optimizer, optimizers_lib.CLIENT_OPTIMIZERS)


def build_training_process(model_fn: ModelFn, config: AlgorithmConfig):
  """The learning process for `config` (see module docstring for its interface)."""
  server_optimizer = optimizers_lib.build_optimizer(config.server_optimizer)
  if config.algorithm == "fedsgd":
    return tff.learning.algorithms.build_fed_sgd(model_fn, server_optimizer_fn=server_optimizer)
  client_optimizer = optimizers_lib.build_optimizer(config.client_optimizer, optimizers_lib.CLIENT_OPTIMIZERS)
  if config.aggregator == "secure":
    from tff_research.aggregation import secure_fed_avg  # pylint: disable=g-import-not-at-top
    return secure_fed_avg.build_secure_weighted_fed_avg(
        model_fn, client_optimizer, server_optimizer, config.secure)
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=client_optimizer, server_optimizer_fn=server_optimizer)


def build_evaluation_process(model_fn: ModelFn):
  """Federated evaluation (`tff.learning.algorithms.build_fed_eval`)."""
  return tff.learning.algorithms.build_fed_eval(model_fn)


def evaluate(eval_process, eval_state, model_weights, datasets) -> tuple[Any, dict[str, float]]:
  """Runs federated evaluation of `model_weights` on `datasets`; returns (state, metrics)."""
  eval_state = eval_process.set_model_weights(eval_state, model_weights)
  output = eval_process.next(eval_state, datasets)
  metrics = output.metrics["client_work"]["eval"]["current_round_metrics"]
  return output.state, {k: float(v) for k, v in metrics.items()}


def train_metrics(process_metrics) -> dict[str, float]:
  """The flat training metrics of one round from a process's `metrics` output."""
  flat = {}
  client_work = process_metrics.get("client_work", {})
  train = client_work.get("train", client_work)
  for key, value in train.items():
    flat[key] = float(value)
  return flat


def secure_aggregation_metrics(process_metrics) -> dict[str, float]:
  """Per-round costs of the secure sum (clipped values, dropped clients, upload bytes), if any."""
  return {k: float(v) for k, v in (process_metrics.get("secure_aggregation") or {}).items()}

