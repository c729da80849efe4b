"""One composer of learning processes, for TFF's aggregators and for interactive ones.

`compose_learning_process(initial_model_weights_fn, model_weights_distributor,
client_work, model_update_aggregator, model_finalizer)` takes the arguments of
`tff.learning.templates.compose_learning_process`. Given a
`tff.templates.AggregationProcess` it returns TFF's own process. Given an
`aggregation.interactive.InteractiveAggregationProcess` (the secure sum) it
returns an `InteractiveLearningProcess`: the same calling shape
(`initialize`, `next(state, client_data)`, `get_model_weights`,
`set_model_weights`), the same `LearningAlgorithmState` (the aggregator's
state in its `aggregator` field) and the same `LearningProcessOutput`
(metrics: `distributor`, `client_work`, `aggregator`, `finalizer`). A round
of it is two Federated Core calls with the aggregator's Python steps between:

  client round (state, data, material):
      broadcast -> client work -> aggregator.client_stage(update, weight)
  [Python: aggregator.correction(plan, clients)]
  server round (state, partial sum, clients, correction):
      aggregator.server_stage -> finalizer -> the new state

A round the aggregator refuses (`interactive.Refused`: too many dropouts for
a safe release, a count that does not match) leaves the state as it was and
is started over, up to `max_attempts` times, with new dropouts; then
`SecureAggregationError`. Clients that drop (`DropoutSimulation`) drop after
the aggregator's setup and are not trained at all: nothing they would
compute reaches the server.

Where the runtime streams a call's clients through one worker in groups
(`num_subrounds` > 1, `--clients_per_subround`), the client round runs on
that many groups of survivors itself, one call each, with one group's
materials in memory at a time (`client_groups`), its calls unsplit within
`runtime.context.whole_calls()`. With several workers it runs them in waves
of one group per worker at the same time, on each worker's own context, one
wave's materials in memory at a time (at least one group per worker; a round
with no more survivors than workers is one call that TFF's mergeable
context splits across them).
"""
from __future__ import annotations

import collections
import functools
import logging
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import interactive
from tff_research.aggregation.secagg.protocol import SecureAggregationError
from tff_research.learning import client_groups
from tff_research.learning.dropouts import DropoutSimulation
from tff_research.runtime import context as context_lib
from tff_research.runtime import resident

MAX_ROUND_ATTEMPTS = 5
_LOG = logging.getLogger(__name__)


def compose_learning_process(initial_model_weights_fn, model_weights_distributor, client_work,
                             model_update_aggregator, model_finalizer, **interactive_options: Any):
  """TFF's composed process, or an `InteractiveLearningProcess` for an interactive aggregator.

  Args:
    initial_model_weights_fn: a `tff.tensorflow.computation` returning the initial `ModelWeights`.
    model_weights_distributor: a `tff.learning.templates.DistributionProcess`.
    client_work: a `tff.learning.templates.ClientWorkProcess`.
    model_update_aggregator: a `tff.templates.AggregationProcess`, or an
      `interactive.InteractiveAggregationProcess`: weighted (its result is
      the mean), or unweighted (a sum, which the server round divides by
      the clients counted: TFF's `UnweightedMeanFactory` around a sum).
    model_finalizer: a `tff.learning.templates.FinalizerProcess`.
    **interactive_options: `InteractiveLearningProcess`'s keyword arguments
      (`dropouts`, `keep_state_on_worker`, `max_attempts`, `log`); refused
      for a TFF aggregator.

  Returns:
    A process with the `tff.learning.templates.LearningProcess` calling shape.
  """
  if not interactive.is_interactive(model_update_aggregator):
    if interactive_options:
      raise ValueError(f"{', '.join(sorted(interactive_options))}: options of interactive aggregators only")
    return tff.learning.templates.compose_learning_process(
        initial_model_weights_fn, model_weights_distributor, client_work, model_update_aggregator,
        model_finalizer)
  return InteractiveLearningProcess(initial_model_weights_fn, model_weights_distributor, client_work,
                                    model_update_aggregator, model_finalizer, **interactive_options)


def _build_initialize(initial_weights, distributor, client_work, aggregator, finalizer):
  @tff.federated_computation()
  def initialize():
    return tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        global_model_weights=tff.federated_eval(initial_weights, tff.SERVER),
        distributor=distributor.initialize(), client_work=client_work.initialize(),
        aggregator=aggregator.initialize(), finalizer=finalizer.initialize()))
  return initialize


def _build_client_round(distributor, client_work, aggregator, state_type):
  data_type = client_work.next.type_signature.parameter[2]
  material_type = aggregator.client_stage.type_signature.parameter[3 if aggregator.is_weighted else 2]

  @tff.federated_computation(state_type, data_type, material_type)
  def client_round(state, data, material):
    dist_out = distributor.next(state.distributor, state.global_model_weights)
    work_out = client_work.next(state.client_work, dist_out.result, data)
    if aggregator.is_weighted:
      partial = aggregator.client_stage(state.aggregator, work_out.result.update, work_out.result.update_weight,
                                        material)
    else:
      partial = aggregator.client_stage(state.aggregator, work_out.result.update, material)
    carried = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        state.global_model_weights, dist_out.state, work_out.state, state.aggregator, state.finalizer))
    return collections.OrderedDict(state=carried, masked_sum=partial.masked_sum, clients=partial.clients,
                                   distributor=dist_out.measurements, client_work=work_out.measurements)
  return client_round


def _build_server_round(aggregator, finalizer, state_type):
  parameter = aggregator.server_stage.type_signature.parameter
  partial_type, clients_type, correction_type = parameter[1], parameter[2], parameter[3]

  mean = None if aggregator.is_weighted else _mean_of_sum(aggregator.server_stage.type_signature.result.result.member)

  @tff.federated_computation(state_type, partial_type, clients_type, correction_type)
  def server_round(state, partial, clients, correction):
    agg_out = aggregator.server_stage(state.aggregator, partial, clients, correction)
    update = agg_out.result if mean is None else tff.federated_map(mean, tff.federated_zip((agg_out.result, clients)))
    fin_out = finalizer.next(state.finalizer, state.global_model_weights, update)
    new_state = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        fin_out.result, state.distributor, state.client_work, agg_out.state, fin_out.state))
    return collections.OrderedDict(state=new_state, finalizer=fin_out.measurements,
                                   aggregator=agg_out.measurements)
  return server_round


def _mean_of_sum(sum_type):
  """sum / clients, leaf by leaf (the unweighted mean of an unweighted interactive aggregator's sum)."""
  @tff.tensorflow.computation(sum_type, np.int32)
  def mean(total, clients):
    return tf.nest.map_structure(lambda x: tf.math.divide_no_nan(x, tf.cast(clients, x.dtype)), total)
  return mean


def _plain_call(comp, *args, keep=(), meta=None, chain_step=1):
  del keep, meta, chain_step  # everything comes back to Python
  return comp(*args)


class InteractiveLearningProcess:
  """A learning process around an interactive aggregator (module docstring).

  `initialize_fn`, `client_round` and `server_round` are its Federated Core
  computations (print their `type_signature`).

  Args:
    initial_model_weights_fn, model_weights_distributor, client_work,
    model_update_aggregator, model_finalizer: as `compose_learning_process`'s.
    dropouts: the simulated network (None: nobody drops).
    keep_state_on_worker: the state and the partial sum stay on the TFF
      worker between the calls and rounds (`runtime.resident`); False sends
      them to Python and back.
    max_attempts: tries of a round the aggregator refuses.
    log: where a refused round's line goes (default: this module's logger).
  """

  def __init__(self, initial_model_weights_fn, model_weights_distributor, client_work, model_update_aggregator,
               model_finalizer, *, dropouts: Optional[DropoutSimulation] = None, keep_state_on_worker: bool = True,
               max_attempts: int = MAX_ROUND_ATTEMPTS, log: Optional[Callable[[str], None]] = None):
    self.aggregator = model_update_aggregator
    self.dropouts = dropouts or DropoutSimulation()
    self.max_attempts = int(max_attempts)
    self._log = log or _LOG.warning
    self._call = resident.call if keep_state_on_worker else _plain_call
    self.initialize_fn = _build_initialize(initial_model_weights_fn, model_weights_distributor, client_work,
                                           model_update_aggregator, model_finalizer)
    state_type = self.initialize_fn.type_signature.result
    self.client_round = _build_client_round(model_weights_distributor, client_work, model_update_aggregator,
                                            state_type)
    self.server_round = _build_server_round(model_update_aggregator, model_finalizer, state_type)
    self._model_weights_at_server = tff.federated_computation(lambda state: state.global_model_weights,
                                                              state_type)
    # Attempts per round: a retried round draws new dropouts, while a resumed
    # run draws what an uninterrupted one would.
    self._attempts: dict[int, int] = collections.defaultdict(int)
    self._grouped: Optional[client_groups.GroupedClientRound] = None

  def initialize(self):
    return self.initialize_fn()

  def next(self, state, client_data: Sequence[Any],
           dropped: Optional[Sequence[int]] = None) -> tff.learning.templates.LearningProcessOutput:
    """One round, started over while the aggregator refuses it (state unchanged by a refusal).

    Args:
      state: the server state (`initialize()` or the previous round's).
      client_data: one dataset per sampled client.
      dropped: indices of clients that drop after the setup, for every
        attempt; None draws them (`dropouts`).

    Returns:
      A `LearningProcessOutput` with the new state and the round's metrics.

    Raises:
      SecureAggregationError: refused `max_attempts` times.
    """
    round_num = self._round_number(state)
    for attempt_of_call in range(1, self.max_attempts + 1):
      outcome = self._attempt(state, client_data, round_num, dropped)
      if not isinstance(outcome, interactive.Refused):
        return outcome
      if attempt_of_call == self.max_attempts:
        raise SecureAggregationError(outcome.reason)
      self._log(f"round {round_num}: {outcome.reason}; retrying ({attempt_of_call}/{self.max_attempts - 1})")
    raise AssertionError("unreachable")

  def _attempt(self, state, client_data, round_num: int, dropped):
    attempt = self._attempts[round_num]
    self._attempts[round_num] += 1
    n = len(client_data)
    if dropped is None:
      dropped = self.dropouts.dropped(n, round_num, attempt)
    # Refused here, before any client trains, if the release would be refused.
    plan = self.aggregator.start_round(n, round_num, dropped, attempt)
    if isinstance(plan, interactive.Refused):
      return plan
    workers = context_lib.worker_contexts()
    if workers:
      groups = client_groups.split_for_workers(plan.survivors, context_lib.own_stream_groups(), len(workers))
    else:
      groups = client_groups.split(plan.survivors, context_lib.own_stream_groups())
    try:
      with context_lib.whole_calls():  # the groups are this process's own (client_groups)
        return self._run_stages(state, client_data, plan, groups, workers)
    finally:
      # Only now: a kept value may be computed when it is used, so the
      # materials are read for sure once the server round's outputs are back.
      self.aggregator.release()

  def _run_stages(self, state, client_data, plan: interactive.RoundPlan, groups: list[list[int]], workers: list):
    out = self._client_stage(state, client_data, plan, groups, workers)
    correction = self.aggregator.correction(plan, int(out["clients"]))
    if isinstance(correction, interactive.Refused):
      return correction
    srv = self._call(self.server_round, out["state"], out["masked_sum"], out["clients"], correction,
                     keep=("state",), meta={"state": {interactive.ROUND_NUM: plan.round_num + 1}})
    metrics = collections.OrderedDict(
        distributor=out["distributor"], client_work=out["client_work"],
        aggregator=self.aggregator.measurements(plan, srv["aggregator"]), finalizer=srv["finalizer"])
    return tff.learning.templates.LearningProcessOutput(srv["state"], metrics)

  def _client_stage(self, state, client_data, plan: interactive.RoundPlan, groups: list[list[int]],
                    workers: list):
    """The client round on the survivors: one call, or one per group (on `workers`' contexts where given)."""
    # chain_step=0: a round moves the state one step along resident.MAX_CHAIN,
    # as a one-call round does (re-sent every MAX_CHAIN rounds, not twice as often).
    keep = ("state", "masked_sum")
    if len(groups) == 1:
      return self._call(self.client_round, state, [client_data[u] for u in plan.survivors],
                        self.aggregator.client_materials(plan), keep=keep, chain_step=0)
    if self._grouped is None or self._grouped.client_round is not self.client_round:
      self._grouped = client_groups.GroupedClientRound(self.client_round)  # (with_datasets_built_by may swap it)
    per_group = [([client_data[u] for u in group], functools.partial(self.aggregator.client_materials, plan, group))
                 for group in groups]
    if workers:
      return self._grouped.on_workers(workers, resident.fetch(state), per_group, self.aggregator.release)
    return self._grouped(self._call, state, per_group, self.aggregator.release, keep)

  @staticmethod
  def _round_number(state) -> int:
    if isinstance(state, resident.Resident) and interactive.ROUND_NUM in state.meta:
      return int(state.meta[interactive.ROUND_NUM])
    return int(resident.fetch(state).aggregator[interactive.ROUND_NUM])

  def get_model_weights(self, state) -> tff.learning.models.ModelWeights:
    return resident.read_model_weights(state, self._model_weights_at_server, lambda s: s.global_model_weights)

  def set_model_weights(self, state, weights):
    state = resident.fetch(state)
    return tff.learning.templates.LearningAlgorithmState(
        global_model_weights=tff.learning.models.ModelWeights(
            trainable=weights.trainable, non_trainable=weights.non_trainable),
        distributor=state.distributor, client_work=state.client_work,
        aggregator=state.aggregator, finalizer=state.finalizer)
