"""Builders of the federated learning processes (the model function: model_fn.py; evaluation: evaluation.py).

`build_training_process` returns an object with the `tff.learning`
LearningProcess calling shape (`initialize`, `next(state, datasets)`,
`get_model_weights`, `set_model_weights`), whatever the algorithm (FedAvg with
any server optimizer, FedSGD) or the aggregator (a `tff.aggregators` factory,
or an interactive one such as our pairwise-masked secure sum: `algorithms`),
so the training loop treats them alike.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import tensorflow_federated as tff

from tff_research.aggregation import interactive
from tff_research.learning import algorithms
from tff_research.learning import composers
from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import optimizers as optimizers_lib
from tff_research.runtime import resident

ALGORITHMS = ("fedavg", "fedsgd")
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
  """The algorithm and its optimizers; the aggregator is an object (`build_training_process`)."""
  algorithm: str = "fedavg"
  client_optimizer: optimizers_lib.OptimizerConfig = optimizers_lib.OptimizerConfig("sgd", 0.5)
  server_optimizer: optimizers_lib.OptimizerConfig = optimizers_lib.OptimizerConfig("sgd", 1.0)
  loop: str = "iterator"  # one of LOOP_IMPLEMENTATIONS

  def __post_init__(self):
    if self.algorithm not in ALGORITHMS:
      raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
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


def with_datasets_built_by(process, dataset_computation: Optional[tff.Computation]):
  """`process` whose `next` takes `dataset_computation`'s input per client, not a dataset (None: unchanged).

  The computation then builds each client's dataset where the client runs,
  on the worker (`data.worker_data`). TFF's processes are composed by
  `tff.simulation.compose_dataset_computation_with_learning_process`; an
  interactive one's client round, the only call with data, by
  `compose_dataset_computation_with_computation`.
  """
  if dataset_computation is None:
    return process
  if isinstance(process, composers.InteractiveLearningProcess):
    process.client_round = tff.simulation.compose_dataset_computation_with_computation(
        dataset_computation, process.client_round)
    return process
  return tff.simulation.compose_dataset_computation_with_learning_process(dataset_computation, process)


def build_training_process(model_fn: model_fn_lib.ModelFn, config: AlgorithmConfig, *,
                           model_aggregator: Optional[Any] = None, keep_state_on_worker: bool = True,
                           dropouts: Optional[composers.DropoutSimulation] = None,
                           log: Optional[Callable[[str], None]] = None,
                           dataset_computation: Optional[tff.Computation] = None):
  """The learning process for `config` (see module docstring for its interface).

  Args:
    model_fn: a no-arg model builder (`model_fn.build_model_fn`); an `NWPModelFn`
      puts its seeded initial weights into the initial state.
    config: the algorithm and optimizers.
    model_aggregator: None (TFF's weighted mean), a `tff.aggregators`
      weighted factory, an unweighted one (DP: unweighted FedAvg), or an
      interactive one (`aggregation.SecureSumFactory`).
    keep_state_on_worker: keep the server state on the TFF worker between
      rounds (`ResidentStateProcess`, or the interactive process's own); False
      sends it to Python and back every round, as calling a `tff.learning`
      process directly does.
    dropouts: interactive aggregators: the simulated network.
    log: interactive aggregators: where a refused round's line goes.
    dataset_computation: builds each client's dataset from what `next` is
      given for it (`with_datasets_built_by`); None: `next` takes datasets.

  Returns:
    An object with `initialize`, `next(state, datasets)`, `get_model_weights`
    and `set_model_weights`.
  """
  is_interactive = interactive.is_interactive(model_aggregator)
  options = (dict(dropouts=dropouts, keep_state_on_worker=keep_state_on_worker, log=log) if is_interactive
             else {})
  server_optimizer = optimizers_lib.build_optimizer(config.server_optimizer)
  loop = loop_implementation(config.loop)
  if config.algorithm == "fedsgd":
    process = algorithms.build_fed_sgd(model_fn, server_optimizer, model_aggregator=model_aggregator,
                                       loop_implementation=loop, **options)
  else:
    client_optimizer = optimizers_lib.build_optimizer(config.client_optimizer, optimizers_lib.CLIENT_OPTIMIZERS)
    process = algorithms.build_fed_avg(model_fn, client_optimizer, server_optimizer,
                                       model_aggregator=model_aggregator, loop_implementation=loop, **options)
  process = with_datasets_built_by(process, dataset_computation)
  if isinstance(model_fn, model_fn_lib.NWPModelFn) and not model_fn.initialize_in_graph:
    process = _WithInitialWeights(process, model_fn.initial_weights())
  if keep_state_on_worker and not is_interactive:
    process = ResidentStateProcess(process)
  return process
