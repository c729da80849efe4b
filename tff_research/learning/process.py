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
from tff_research.runtime import resident
from tff_research.runtime.eager import in_eager_mode

ALGORITHMS = ("fedavg", "fedsgd")
AGGREGATORS = ("plain", "secure")
# How a client loops over its batches inside TFF's client computation.
# "reduce" (TFF's default) is `dataset.reduce`, whose body function TF
# instantiates and optimizes anew on every call, i.e. for every client of every
# round; "iterator" is a loop over `iter(dataset)` that lives in the
# computation's own graph, built once per session. Same batches, same steps.
LOOP_IMPLEMENTATIONS = ("iterator", "reduce")


def loop_implementation(name: str) -> tff.learning.LoopImplementation:
  if name not in LOOP_IMPLEMENTATIONS:
    raise ValueError(f"unknown loop implementation {name!r}; choose one of: {', '.join(LOOP_IMPLEMENTATIONS)}")
  return (tff.learning.LoopImplementation.DATASET_ITERATOR if name == "iterator"
          else tff.learning.LoopImplementation.DATASET_REDUCE)

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

  def __call__(self) -> tff.learning.models.VariableModel:
    keras_model = nwp_models.build_nwp_model(self.model_config, seed=self.seed, output_bias=self.output_bias,
                                             initialize=self.initialize_in_graph)
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=nwp_metrics.MaskedSparseCategoricalCrossentropy(self.pad_id),
        input_spec=self.element_spec,
        metrics=nwp_metrics.build_nwp_metrics(self.special_ids, self.pad_id),
    )

  def initial_weights(self) -> tff.learning.models.ModelWeights:
    """The seeded initial weights, in the order of the TFF model's variables."""
    build = in_eager_mode(nwp_models.build_nwp_model)
    keras_model = build(self.model_config, seed=self.seed, output_bias=self.output_bias)
    return tff.learning.models.ModelWeights(
        trainable=[v.numpy() for v in keras_model.trainable_weights],
        non_trainable=[v.numpy() for v in keras_model.non_trainable_weights])


def build_model_fn(model_config: nwp_models.ModelConfig, element_spec: Any,
                   special_ids: tuple[int, ...], pad_id: int = 0,
                   seed: Optional[int] = 0, output_bias=None,
                   initialize_in_graph: bool = False) -> NWPModelFn:
  """A no-arg builder of a `tff.learning` model wrapping the Keras NWP model.

  With a `seed`, the initial weights are the same in every run; `output_bias`
  initializes the logits' bias (see `models.nwp.unigram_log_prior`).
  `initialize_in_graph=True` keeps the real initializers inside TFF's
  computations (the slower behaviour of earlier versions, kept for comparison).
  """
  return NWPModelFn(model_config, element_spec, special_ids, pad_id, seed, output_bias,
                    initialize_in_graph)


class _WithInitialWeights:
  """A learning process whose `initialize()` starts from given model weights."""

  def __init__(self, process, initial_weights):
    self._process = process
    self._initial_weights = initial_weights

  def initialize(self):
    return self._process.set_model_weights(self._process.initialize(), self._initial_weights)

  def __getattr__(self, name):
    return getattr(self._process, name)


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  algorithm: str = "fedavg"
  client_optimizer: optimizers_lib.OptimizerConfig = optimizers_lib.OptimizerConfig("sgd", 0.5)
  server_optimizer: optimizers_lib.OptimizerConfig = optimizers_lib.OptimizerConfig("sgd", 1.0)
  aggregator: str = "plain"
  secure: Any = None  # tff_research.aggregation.SecureAggregationConfig when aggregator="secure"
  loop: str = "iterator"  # one of LOOP_IMPLEMENTATIONS

  def __post_init__(self):
    if self.algorithm not in ALGORITHMS:
      raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    if self.aggregator not in AGGREGATORS:
      raise ValueError(f"unknown aggregator {self.aggregator!r}; choose one of: {', '.join(AGGREGATORS)}")
    if self.aggregator == "secure" and self.algorithm != "fedavg":
      raise ValueError("--aggregator=secure is implemented for --algorithm=fedavg")
    loop_implementation(self.loop)
    optimizers_lib.build_optimizer(self.server_optimizer, optimizers_lib.SERVER_OPTIMIZERS)
    if self.algorithm == "fedavg":
      optimizers_lib.build_optimizer(self.client_optimizer, optimizers_lib.CLIENT_OPTIMIZERS)


class ResidentStateProcess:
  """A `tff.learning` process whose server state stays on the TFF worker between rounds.

  `next` returns the state as a `runtime.resident.Resident` handle, which the
  next round uses where it is instead of sending the model to Python and back
  (see runtime/resident.py for the measured cost). `get_model_weights` reads
  only the model from the worker; `resident.fetch(state)` reads the whole
  state (checkpoints). Same computation, same results.
  """

  def __init__(self, process):
    self._process = process
    state_type = process.next.type_signature.parameter[0]

    @tff.federated_computation(state_type)
    def model_weights_at_server(state):
      return tff.federated_map(process.get_model_weights, state)

    self._model_weights_at_server = model_weights_at_server

  def initialize(self):
    return self._process.initialize()

  def next(self, state, client_data) -> tff.learning.templates.LearningProcessOutput:
    return resident.call(self._process.next, state, client_data, keep=("state",))

  def get_model_weights(self, state):
    return resident.read_model_weights(state, self._model_weights_at_server, self._process.get_model_weights)

  def set_model_weights(self, state, weights):
    return self._process.set_model_weights(resident.fetch(state), weights)

  def __getattr__(self, name):
    return getattr(self._process, name)


def build_training_process(model_fn: ModelFn, config: AlgorithmConfig, keep_state_on_worker: bool = True):
  """The learning process for `config` (see module docstring for its interface).

  `keep_state_on_worker` (default) keeps the server state on the TFF worker
  between rounds (`ResidentStateProcess`); False sends it to Python and back
  every round, as calling a `tff.learning` process directly does.
  """
  process = _build_training_process(model_fn, config, keep_state_on_worker)
  if isinstance(model_fn, NWPModelFn) and not model_fn.initialize_in_graph:
    process = _WithInitialWeights(process, model_fn.initial_weights())
  if keep_state_on_worker and config.aggregator != "secure":
    process = ResidentStateProcess(process)
  return process


def _build_training_process(model_fn: ModelFn, config: AlgorithmConfig, keep_state_on_worker: bool):
  server_optimizer = optimizers_lib.build_optimizer(config.server_optimizer)
  loop = loop_implementation(config.loop)
  if config.algorithm == "fedsgd":
    return tff.learning.algorithms.build_fed_sgd(model_fn, server_optimizer_fn=server_optimizer,
                                                 loop_implementation=loop)
  client_optimizer = optimizers_lib.build_optimizer(config.client_optimizer, optimizers_lib.CLIENT_OPTIMIZERS)
  if config.aggregator == "secure":
    from tff_research.aggregation import secure_fed_avg  # pylint: disable=g-import-not-at-top
    secure = dataclasses.replace(config.secure or secure_fed_avg.SecureAggregationConfig(),
                                 loop_implementation=loop_implementation(config.loop),
                                 keep_state_on_worker=keep_state_on_worker)
    return secure_fed_avg.build_secure_weighted_fed_avg(
        model_fn, client_optimizer, server_optimizer, secure)
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=client_optimizer, server_optimizer_fn=server_optimizer,
      loop_implementation=loop)


def build_evaluation_process(model_fn: ModelFn, loop: str = "iterator"):
  """Federated evaluation (`tff.learning.algorithms.build_fed_eval`)."""
  return tff.learning.algorithms.build_fed_eval(model_fn, loop_implementation=loop_implementation(loop))


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

