"""The secure sum used on its own: a structure of tensors per client in, their sum out.

`build_secure_sum(value_type, num_clients, config)` wraps the unweighted
process of `masked_sum.SecureSumFactory` (the one implementation of the
protocol; its docstring says what runs where). `SecureSum.__call__` runs a
whole round with every check; `new_round`, `masked_round_sum` and
`unmask_round_sum` are its steps, for code that wants to look between them
(the notebook, the attacks in `tests/aggregation`), and `computations` holds
the Federated Core computations with two views for them: `client_encode`
(a client's quantized vector without masks) and `server_view` (the masked
vectors as they enter the server's sum).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import tensorflow_federated as tff

from tff_research.aggregation import config as config_lib
from tff_research.aggregation import encoders as encoders_lib
from tff_research.aggregation import masked_sum
from tff_research.aggregation.secagg import protocol as protocol_lib


@dataclasses.dataclass
class SecureSumResult:
  value: Any                 # the sum over surviving clients, same structure as the inputs
  clipped: int               # values clipped (or non-finite) over all surviving clients
  clients: int               # clients whose masked vector was summed (counted in Federated Core)
  dropped: int               # clients that dropped after stage 1
  upload_bytes_per_client: int
  threshold: int
  neighbors: int             # degree of the masking graph (n - 1: complete)
  prg: str                   # the mask PRG


@dataclasses.dataclass(frozen=True)
class SumComputations:
  """The Federated Core computations of a secure sum (print their `type_signature`)."""
  client_encode: Any   # (value, material) -> the quantized vector without masks
  client_mask: Any     # (value, material) -> the masked vector a client uploads
  server_unmask: Any   # (masked_sum, clients, correction) -> <value, clipped>, unplaced
  server_view: Any     # (values@CLIENTS, material@CLIENTS) -> the masked vectors as they enter the sum
  masked_sum: Any      # (values@CLIENTS, material@CLIENTS) -> <masked_sum@SERVER, clients@SERVER>
  unmask: Any          # (masked_sum@SERVER, clients@SERVER, correction@SERVER) -> <value, clipped>@SERVER


def build_sum_computations(process: masked_sum.MaskedSumProcess) -> SumComputations:
  """The computations of an unweighted masked-sum process, and two views of them for tests and notebooks."""
  q, masks = process.quantizer, process.masks
  client_type = masks.client_material_type()

  @tff.tensorflow.computation(process.value_type, client_type)
  def client_encode(value, material):
    return q.encode(encoders_lib.encode_all(process.encoders, value, material["rounding_seed"]),
                    material["rounding_seed"])

  values_type = tff.FederatedType(process.value_type, tff.CLIENTS)
  materials_type = tff.FederatedType(client_type, tff.CLIENTS)

  @tff.federated_computation(values_type, materials_type)
  def server_view(values, material):
    return tff.federated_map(process.client_mask, (values, material))

  @tff.federated_computation(values_type, materials_type)
  def masked_sum_of(values, material):
    return process.client_stage(process.initialize(), values, material)

  stage = process.server_stage
  parameter = stage.type_signature.parameter

  @tff.federated_computation(parameter[1], parameter[2], parameter[3])
  def unmask(masked, clients, correction):
    out = stage(process.initialize(), masked, clients, correction)
    return tff.federated_zip(collections.OrderedDict(value=out.result, clipped=out.measurements.clipped))

  def unmask_unplaced(masked, clients, correction):
    out = process.server_unmask(masked, clients, correction)
    return collections.OrderedDict(value=out["value"], clipped=out["measurements"]["clipped"])

  return SumComputations(client_encode, process.client_mask, unmask_unplaced, server_view, masked_sum_of,
                         masked_sum.CountChecked(unmask, q, 1))


class SecureSum:
  """A secure sum over up to `num_clients` clients (`build_secure_sum`).

  `computations` holds the Federated Core computations, `driver` the
  protocol's round steps, `quantizer` the encoding, `masks` the mask PRG. `__call__` runs the
  whole protocol with every check; `masked_round_sum` and `unmask_round_sum`
  are its two halves, for code that wants to look between them.
  """

  def __init__(self, value_type: Any, num_clients: int, config: config_lib.SecureSumConfig, **parts: Any):
    self.config = config
    self.process = masked_sum.SecureSumFactory(config, num_clients, **parts).create(value_type)
    self.quantizer, self.driver = self.process.quantizer, self.process.driver
    self.num_clients = self.quantizer.num_clients
    self.masks, self.parameters = self.process.masks, self.process.parameters
    self.computations = build_sum_computations(self.process)

  def new_round(self, num_clients: int, round_num: int,
                rounding_rng: Optional[np.random.Generator] = None) -> protocol_lib.SecAggRound:
    """Stages 0-1 (keys and shares) for `num_clients` clients; fresh keys every call."""
    return self.driver.new_protocol_round(num_clients, round_num, rounding_rng)

  def client_materials(self, rnd: protocol_lib.SecAggRound, ids: Iterable[int]) -> list[Any]:
    """The CLIENTS-placed mask material of clients `ids` (stage 2); `masks.release()` frees it."""
    return self.driver.client_materials(rnd, ids)

  def masked_round_sum(self, rnd: protocol_lib.SecAggRound, values: Sequence[Any],
                       survivors: Sequence[int]) -> Any:
    """Stage 2: the survivors mask `values` (theirs, in order); the server sums them."""
    try:
      return self.computations.masked_sum(list(values), self.client_materials(rnd, survivors))
    finally:
      self.driver.release()

  def unmask_round_sum(self, rnd: protocol_lib.SecAggRound, masked: Any, survivors: Sequence[int],
                       dropped: Sequence[int]) -> Any:
    """Stage 3: checks, rebuilds the seeds from the survivors' shares, unmasks; <value, clipped>."""
    correction = self.driver.correction(rnd, int(masked["clients"]), survivors, dropped)
    try:
      return self.computations.unmask(masked["masked_sum"], masked["clients"], correction)
    finally:
      self.driver.release()

  def __call__(self, values: Sequence[Any], round_num: int = 0, dropped: Iterable[int] = (),
               rounding_rng: Optional[np.random.Generator] = None) -> SecureSumResult:
    """Runs the protocol on `values` (one structure per client); `dropped` clients
    drop after sharing their keys, so their masked vectors never reach the server.

    Raises `protocol.SecureAggregationError` (and releases nothing) when
    unmasking would not be safe (`protocol.check_release`).
    """
    secure_round = self.driver.start_round(len(values), round_num, dropped, rounding_rng)
    rnd, survivors = secure_round.protocol, secure_round.survivors
    masked = self.masked_round_sum(rnd, [values[u] for u in survivors], survivors)
    res = self.unmask_round_sum(rnd, masked, survivors, secure_round.dropped)
    return SecureSumResult(
        value=res["value"], clipped=int(res["clipped"]), clients=len(survivors),
        dropped=len(secure_round.dropped), upload_bytes_per_client=self.driver.upload_bytes(rnd),
        threshold=rnd.threshold, neighbors=rnd.degree, prg=self.masks.name)


def build_secure_sum(value_type: Any, num_clients: int,
                     config: config_lib.SecureSumConfig = config_lib.SecureSumConfig(),
                     **parts: Any) -> SecureSum:
  """Builds the Federated Core computations of a secure sum of `value_type`.

  Args:
    value_type: the (nested) tensor type each client contributes.
    num_clients: the most summands (the overflow bound, and the n the
      protocol parameters are chosen for).
    config: clipping, bits, threat model, graph and PRG (`SecureSumConfig`).
    **parts: `SecureSumFactory`'s keyword arguments: `encoders=` (client
      encoders and server decoders around the quantizer, `encoders`),
      `masks=` (a `prg.MaskPrg` subclass) or `graph_fn=`
      (`graph_fn(order, degree)` -> neighbour lists) to swap one part for a
      researcher's own.

  Returns:
    A `SecureSum`.

  Raises:
    ValueError: at build time, in one line, when the bits are too few or the
      protocol parameters are unsafe.
  """
  return SecureSum(value_type, num_clients, config, **parts)
