"""FedAvg and FedSGD whose model aggregator is a TFF factory or an interactive one (the secure sum).

`build_weighted_fed_avg` and `build_fed_sgd` take the arguments of their
`tff.learning.algorithms` namesakes that this package uses, and
`model_aggregator=` of either kind, picked by type:

* a `tff.aggregators.WeightedAggregationFactory` (None: TFF's `MeanFactory`):
  TFF's own builder, so the process is TFF's;
* an `aggregation.interactive.InteractiveAggregationFactory` (e.g.
  `aggregation.SecureSumFactory`): the same pieces TFF composes
  (broadcast distributor, TFF's client work, apply-optimizer finalizer),
  composed by `composers.compose_learning_process` around it.

`build_fed_avg` picks the weighting by type too: an
`UnweightedAggregationFactory` (TFF's differentially private factories:
one client, one vote) gives TFF's unweighted FedAvg, an interactive factory
marked `unweighted` (distributed DP, `privacy.distributed`) the same
composed around it (the composer divides its sum by the clients counted),
anything else the weighted one. `interactive_options` (`dropouts`, `keep_state_on_worker`,
`max_attempts`, `log`) go to `composers.InteractiveLearningProcess`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import tensorflow_federated as tff

from tff_research.aggregation import interactive
from tff_research.learning import composers
from tff_research.runtime import tff_internals

_ITERATOR = tff.learning.LoopImplementation.DATASET_ITERATOR


def _initial_weights_fn(model_fn: Callable[[], Any]):
  @tff.tensorflow.computation()
  def initial_weights():
    return tff.learning.models.ModelWeights.from_model(model_fn())
  return initial_weights


def _check_options(model_aggregator, interactive_options) -> bool:
  """Whether `model_aggregator` is interactive; refuses its options for a TFF one."""
  if interactive.is_interactive(model_aggregator):
    return True
  if interactive_options:
    raise ValueError(f"{', '.join(sorted(interactive_options))}: options of interactive aggregators only")
  return False


def _compose(model_fn, client_work, server_optimizer_fn, model_aggregator, interactive_options):
  initial_weights = _initial_weights_fn(model_fn)
  weights_type = initial_weights.type_signature.result
  if getattr(model_aggregator, "unweighted", False):
    aggregator = model_aggregator.create(weights_type.trainable)
  else:
    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
  return composers.compose_learning_process(
      initial_weights, tff.learning.templates.build_broadcast_process(weights_type), client_work, aggregator,
      tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer_fn, weights_type),
      **interactive_options)


def build_weighted_fed_avg(model_fn: Callable[[], Any], client_optimizer_fn, server_optimizer_fn, *,
                           model_aggregator: Optional[Any] = None,
                           loop_implementation: tff.learning.LoopImplementation = _ITERATOR,
                           **interactive_options: Any):
  """FedAvg weighted by each client's number of examples.

  Args:
    model_fn: a no-arg callable returning a `tff.learning.models.VariableModel`.
    client_optimizer_fn: the clients' `tff.learning.optimizers.Optimizer`.
    server_optimizer_fn: the server's.
    model_aggregator: a TFF weighted factory, or an interactive one (module docstring).
    loop_implementation: how clients loop over their batches.
    **interactive_options: for an interactive aggregator only (module docstring).

  Returns:
    TFF's `LearningProcess`, or a `composers.InteractiveLearningProcess`.
  """
  if not _check_options(model_aggregator, interactive_options):
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=client_optimizer_fn, server_optimizer_fn=server_optimizer_fn,
        model_aggregator=model_aggregator, loop_implementation=loop_implementation)
  client_work = tff.learning.templates.build_model_delta_client_work(
      model_fn, client_optimizer_fn, client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
      loop_implementation=loop_implementation)
  return _compose(model_fn, client_work, server_optimizer_fn, model_aggregator, interactive_options)


def build_fed_sgd(model_fn: Callable[[], Any], server_optimizer_fn, *, model_aggregator: Optional[Any] = None,
                  loop_implementation: tff.learning.LoopImplementation = _ITERATOR, **interactive_options: Any):
  """FedSGD: each client's gradient over its data, weighted by its number of examples.

  The arguments are `build_weighted_fed_avg`'s, without a client optimizer
  (a client takes no step: the server optimizer applies the mean gradient);
  the result is TFF's `LearningProcess`, or a `composers.InteractiveLearningProcess`.
  """
  if not _check_options(model_aggregator, interactive_options):
    return tff.learning.algorithms.build_fed_sgd(
        model_fn, server_optimizer_fn=server_optimizer_fn, model_aggregator=model_aggregator,
        loop_implementation=loop_implementation)
  client_work = tff_internals.fed_sgd_client_work(model_fn, loop_implementation)
  return _compose(model_fn, client_work, server_optimizer_fn, model_aggregator, interactive_options)


def build_fed_avg(model_fn: Callable[[], Any], client_optimizer_fn, server_optimizer_fn, *,
                  model_aggregator: Optional[Any] = None,
                  loop_implementation: tff.learning.LoopImplementation = _ITERATOR, **interactive_options: Any):
  """FedAvg, unweighted for an unweighted factory (DP: TFF's, or distributed DP's interactive one), else weighted."""
  if getattr(model_aggregator, "unweighted", False):  # an interactive sum: the composer takes its mean
    client_work = tff.learning.templates.build_model_delta_client_work(
        model_fn, client_optimizer_fn, client_weighting=tff.learning.ClientWeighting.UNIFORM,
        loop_implementation=loop_implementation)
    return _compose(model_fn, client_work, server_optimizer_fn, model_aggregator, interactive_options)
  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    _check_options(model_aggregator, interactive_options)
    return tff.learning.algorithms.build_unweighted_fed_avg(
        model_fn, client_optimizer_fn=client_optimizer_fn, server_optimizer_fn=server_optimizer_fn,
        model_aggregator=model_aggregator, loop_implementation=loop_implementation)
  return build_weighted_fed_avg(model_fn, client_optimizer_fn, server_optimizer_fn,
                                model_aggregator=model_aggregator, loop_implementation=loop_implementation,
                                **interactive_options)
