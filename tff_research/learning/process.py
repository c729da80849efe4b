"""Builders of the federated learning processes (the model function: model_fn.py; evaluation: evaluation.py).

`build_training_process` returns an object with the `tff.learning`
LearningProcess calling shape (`initialize`, `next(state, datasets)`,
`get_model_weights`, `set_model_weights`), whatever the algorithm (FedAvg with
any server optimizer, FedSGD) or the aggregator (TFF's plain weighted mean, or
our pairwise-masked secure sum), so the training loop treats them alike.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import tensorflow_federated as tff

from tff_research.aggregation import secure_fed_avg
from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import optimizers as optimizers_lib
from tff_research.runtime import resident

ALGORITHMS = ("fedavg", "fedsgd")
AGGREGATORS = ("plain", "secure")
# How a client loops over its batches inside TFF's client computation.
# "reduce" (TFF's default) is `dataset.reduce`, whose body function TF
# instantiates and optimizes anew on every call, i.e. for every client of every
# round; "iterator" is a loop over `iter(dataset)` that lives in the
# computation's own graph, built once per process. Same batches, same steps.
LOOP_IMPLEMENTATIONS = ("iterator", "reduce")


def loop_implementation(name: str) -> tff.learning.LoopImplementation:
  if name not in LOOP_IMPLEMENTATIONS:
    raise ValueError(f"unknown loop implementation {name!r}; choose one of: {', '.join(LOOP_IMPLEMENTATIONS)}")
  return (tff.learning.LoopImplementation.DATASET_ITERATOR if name == "iterator"
          else tff.learning.LoopImplementation.DATASET_REDUCE)

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


def build_training_process(model_fn: model_fn_lib.ModelFn, config: AlgorithmConfig, keep_state_on_worker: bool = True,
                           rounding_randomness: Optional[secure_fed_avg.RoundingRandomness] = None):
  """The learning process for `config` (see module docstring for its interface).

  Args:
    model_fn: a no-arg model builder (`model_fn.build_model_fn`); an `NWPModelFn`
      puts its seeded initial weights into the initial state.
    config: the algorithm, optimizers and aggregator.
    keep_state_on_worker: keep the server state on the TFF worker between
      rounds (`ResidentStateProcess`); False sends it to Python and back every
      round, as calling a `tff.learning` process directly does.
    rounding_randomness: aggregator="secure" only, for tests that compare
      runs bit for bit (`secure_fed_avg.reproducible_rounding`); None, as in
      every real run, leaves each client's rounding to its own CSPRNG.

  Returns:
    An object with `initialize`, `next(state, datasets)`, `get_model_weights`
    and `set_model_weights`.
  """
  process = _build_training_process(model_fn, config, keep_state_on_worker, rounding_randomness)
  if isinstance(model_fn, model_fn_lib.NWPModelFn) and not model_fn.initialize_in_graph:
    process = _WithInitialWeights(process, model_fn.initial_weights())
  if keep_state_on_worker and config.aggregator != "secure":
    process = ResidentStateProcess(process)
  return process


def _build_training_process(model_fn: model_fn_lib.ModelFn, config: AlgorithmConfig, keep_state_on_worker: bool,
                            rounding_randomness: Optional[secure_fed_avg.RoundingRandomness] = None):
  server_optimizer = optimizers_lib.build_optimizer(config.server_optimizer)
  loop = loop_implementation(config.loop)
  if config.algorithm == "fedsgd":
    return tff.learning.algorithms.build_fed_sgd(model_fn, server_optimizer_fn=server_optimizer,
                                                 loop_implementation=loop)
  client_optimizer = optimizers_lib.build_optimizer(config.client_optimizer, optimizers_lib.CLIENT_OPTIMIZERS)
  if config.aggregator == "secure":
    secure = dataclasses.replace(config.secure or secure_fed_avg.SecureAggregationConfig(),
                                 loop_implementation=loop_implementation(config.loop),
                                 keep_state_on_worker=keep_state_on_worker)
    return secure_fed_avg.build_secure_weighted_fed_avg(
        model_fn, client_optimizer, server_optimizer, secure, rounding_randomness)
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=client_optimizer, server_optimizer_fn=server_optimizer,
      loop_implementation=loop)
