"""Interactive aggregation: a sum whose protocol needs Python between two Federated Core stages.

TFF's own `tff.aggregators` factories build an `AggregationProcess` whose
`next` is one Federated Core computation. A protocol such as the
pairwise-masked secure sum cannot be one: X25519, Shamir, HKDF and AES run in
Python (`tf.py_function` does not run in TFF's worker), after the server has
seen who sent a masked vector and before it may unmask. This module is that
seam, written once; `masked_sum.SecureSumFactory` is its implementation and
`learning.composers` puts any of them into a learning process.

A round of an `InteractiveAggregationProcess`:

  start_round(n, round_num, dropped, attempt)   Python: a `RoundPlan`, or `Refused`
  client_materials(plan[, members])             Python: one CLIENTS-placed input per survivor
                                                (or per member: a round streamed in groups)
  client_stage(state@S, value@C[, weight@C], material@C)
                                  -> <partial@S, clients@S>       Federated Core
  correction(plan, clients)                     Python: the SERVER-placed input, or `Refused`
  server_stage(state@S, partial@S, clients@S, correction@S)
                                  -> MeasuredProcessOutput@S      Federated Core
  measurements(plan, server_measurements)       Python: the round's measurements
  release()                                     Python: frees what the materials hold

A caller may run the client stage on groups of the survivors, one call
after another (a round of 1,000 clients through one worker): it asks for one
group's materials, calls the stage, and releases them before the next group,
so the materials of one group at a time exist; the groups' partial results
are merged by TFF's own merge of the stage's aggregations
(`learning.client_groups`). The correction is computed once, after the last
group, from the count of all of them.

A refused round is a value (`Refused`), not an exception the caller has to
know: nothing was released and the state is what it was, so the composer may
start the round over (`learning.composers`). Like TFF's `AggregationProcess`,
a process is weighted (`create(value_type, weight_type)`: `client_stage`
takes a weight and the result is the weighted mean) or unweighted
(`create(value_type)`: the result is the sum).

The state is SERVER-placed and carries the round number under `ROUND_NUM`,
which `server_stage` advances: a resumed run starts the round it left
(checkpoints store the state in `LearningAlgorithmState.aggregator`).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Optional, Sequence

ROUND_NUM = "round_num"  # the key of the round number in an interactive process's state


@dataclasses.dataclass(frozen=True)
class Refused:
  """A round refused before anything was released; the state is unchanged."""
  round_num: int
  reason: str


@dataclasses.dataclass
class RoundPlan:
  """A round in progress: who takes part, and the protocol's state for it."""
  round_num: int
  survivors: list[int]     # indices (into the round's clients) of those whose values are summed
  dropped: list[int]       # indices of those that drop after the setup
  protocol: Any = None     # the implementation's own round state


class InteractiveAggregationProcess(abc.ABC):
  """Two Federated Core stages and the Python protocol steps between them (module docstring).

  Attributes:
    initialize: a `tff.Computation`, () -> state@SERVER.
    client_stage: a `tff.federated_computation`; see the module docstring.
    server_stage: a `tff.federated_computation`; its result is a
      `tff.templates.MeasuredProcessOutput` of the new state, the sum (or
      mean) and the measurements computed in Federated Core.
    is_weighted: whether `client_stage` takes a weight.
  """
  initialize: Any
  client_stage: Any
  server_stage: Any
  is_weighted: bool

  @abc.abstractmethod
  def start_round(self, num_clients: int, round_num: int, dropped: Sequence[int] = (),
                  attempt: int = 0) -> RoundPlan | Refused:
    """The round's setup for `num_clients` clients of which `dropped` drop after it."""

  @abc.abstractmethod
  def client_materials(self, plan: RoundPlan, members: Optional[Sequence[int]] = None) -> list[Any]:
    """One CLIENTS-placed input of `client_stage` per survivor, in order.

    `members`: only these survivors' (indices into the round's clients, a
    subset of `plan.survivors`, in order), for a stage run on a group.
    """

  @abc.abstractmethod
  def correction(self, plan: RoundPlan, clients: int) -> Any:
    """The SERVER-placed input of `server_stage`, given the count the server saw; or `Refused`."""

  @abc.abstractmethod
  def measurements(self, plan: RoundPlan, server_measurements: Any) -> Any:
    """The round's measurements: those of `server_stage` and the protocol's own (Python values)."""

  @abc.abstractmethod
  def release(self) -> None:
    """Frees what `client_materials` and `correction` made, once the stages that read it returned."""


class InteractiveAggregationFactory(abc.ABC):
  """Creates an `InteractiveAggregationProcess` for a value type, as `tff.aggregators` factories do."""
  # True: only unweighted processes (a sum; one client, one vote), which a
  # learning process averages over the clients counted (distributed DP).
  unweighted: bool = False

  @abc.abstractmethod
  def create(self, value_type: Any, weight_type: Optional[Any] = None) -> InteractiveAggregationProcess:
    """A weighted process (mean) if `weight_type` is given, else an unweighted one (sum)."""


def is_interactive(aggregator: Any) -> bool:
  """Whether `aggregator` (a factory or a process) is of this module's kind, not one of `tff.aggregators`."""
  return isinstance(aggregator, (InteractiveAggregationFactory, InteractiveAggregationProcess))


def run_round(process: InteractiveAggregationProcess, state: Any, values: Sequence[Any], round_num: int,
              dropped: Sequence[int] = (), weights: Optional[Sequence[Any]] = None, attempt: int = 0) -> Any:
  """One round of `process` on the Python values of its clients, every step in order (module docstring).

  For code that runs an aggregation on its own (notebooks, tests); the
  learning processes have their own loop (`learning.composers`).

  Args:
    process: the process.
    state: its state (`process.initialize()` or the previous round's).
    values: one value per client of the round.
    round_num: the round.
    dropped: indices of clients that drop after the setup.
    weights: one weight per client, for a weighted process.
    attempt: which try of the round this is.

  Returns:
    The server stage's `MeasuredProcessOutput` with the protocol's
    measurements (`measurements`) in place of the server stage's, or
    `Refused`.
  """
  plan = process.start_round(len(values), round_num, dropped, attempt)
  if isinstance(plan, Refused):
    return plan
  try:
    survivors = [values[u] for u in plan.survivors]
    materials = process.client_materials(plan)
    if process.is_weighted:
      partial = process.client_stage(state, survivors, [weights[u] for u in plan.survivors], materials)
    else:
      partial = process.client_stage(state, survivors, materials)
    correction = process.correction(plan, int(partial["clients"]))
    if isinstance(correction, Refused):
      return correction
    out = process.server_stage(state, partial["masked_sum"], partial["clients"], correction)
  finally:
    process.release()
  return type(out)(state=out.state, result=out.result, measurements=process.measurements(plan, out.measurements))
