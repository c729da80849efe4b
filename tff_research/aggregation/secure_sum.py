"""Pairwise-masked secure sum in TFF's Federated Core (Bonawitz et al. 2017; Bell et al. 2020).

What runs where:

* CLIENTS, `tff.tensorflow.computation` under `tff.federated_map`
  (`client_mask`): encode the value into Z_{2^b} (`quantization`) and add the
  client's mask material (`prg`): PRG(b_u) and +PRG(s_uv) (u < v) /
  -PRG(s_uv) (u > v) for each neighbour v, word-wise mod 2^32 (or mod 2^64
  for packed words). The material is a CLIENTS-placed input made in Python
  (`protocol`, `prg`): X25519, HKDF, Shamir and AES cannot run in a TF graph
  on the worker.
* SERVER: `tff.federated_sum` of the masked vectors and of 1 per client (the
  client count).
* SERVER, after Python has checked that the release is safe and rebuilt the
  seeds from survivors' Shamir shares (`driver`): `unmask` subtracts the
  survivors' self masks and the dropped clients' unmatched pairwise masks,
  maps Z_{2^b} back to signed integers and dequantizes.

The parts are modules of their own, and the quantizer, the mask PRG and the
graph can each be swapped (`SecureSum`'s keyword arguments).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import tensorflow_federated as tff

from tff_research.aggregation import config as config_lib
from tff_research.aggregation import driver as driver_lib
from tff_research.aggregation import prg as prg_lib
from tff_research.aggregation import protocol as protocol_lib
from tff_research.aggregation import quantization
from tff_research.runtime import resident


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


class CountChecked:
  """A server computation that refuses, in Python and in one line, more clients than the overflow bound covers.

  Called directly with too large a count, the computation's own graph check
  would fail inside TFF's worker as a multi-line gRPC error; this raises
  `ValueError` before TFF is called. Everything else (`type_signature`, ...)
  is the wrapped computation's.

  Args:
    comp: the computation.
    quantizer: whose `check_clients` applies.
    clients_index: the position of the client count among the arguments.
  """

  def __init__(self, comp: Any, quantizer: quantization.Quantizer, clients_index: int):
    self._comp = comp
    self._quantizer = quantizer
    self._clients_index = clients_index

  def __call__(self, *args: Any) -> Any:
    if len(args) > self._clients_index:
      count = np.asarray(resident.fetch(args[self._clients_index]))
      # A concrete count only: traced inside another computation, the graph's check remains.
      if count.size == 1 and np.issubdtype(count.dtype, np.integer):
        self._quantizer.check_clients(count)
    return self._comp(*args)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._comp, name)


def build_sum_computations(q: quantization.Quantizer, masks: prg_lib.MaskPrg) -> SumComputations:
  """The computations of a secure sum of `q.value_type` masked by `masks`."""
  client_type, server_type = masks.client_material_type(), masks.server_material_type()
  vec_type = tff.TensorType(q.word_np_dtype, [q.dim])

  @tff.tensorflow.computation(q.value_type, client_type)
  def client_encode(value, material):
    return q.encode(value, material["rounding_seed"])

  @tff.tensorflow.computation(q.value_type, client_type)
  def client_mask(value, material):
    return q.encode_and_mask(value, material, masks)

  @tff.tensorflow.computation(vec_type, np.int32, server_type)
  def server_unmask(masked_sum, clients, correction):
    value, clipped = q.checked_unmask_and_decode(masked_sum, correction, masks, clients)
    return collections.OrderedDict(value=value, clipped=clipped)

  values_type = tff.FederatedType(q.value_type, tff.CLIENTS)
  materials_type = tff.FederatedType(client_type, tff.CLIENTS)

  @tff.federated_computation(values_type, materials_type)
  def server_view(values, material):
    return tff.federated_map(client_mask, (values, material))

  @tff.federated_computation(values_type, materials_type)
  def masked_sum(values, material):
    masked = tff.federated_map(client_mask, (values, material))
    clients = tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS))
    return collections.OrderedDict(masked_sum=tff.federated_sum(masked), clients=clients)

  @tff.federated_computation(tff.FederatedType(vec_type, tff.SERVER), tff.FederatedType(np.int32, tff.SERVER),
                             tff.FederatedType(server_type, tff.SERVER))
  def unmask(masked, clients, correction):
    return tff.federated_map(server_unmask, tff.federated_zip((masked, clients, correction)))

  return SumComputations(client_encode, client_mask, CountChecked(server_unmask, q, 1), server_view, masked_sum,
                         CountChecked(unmask, q, 1))


class SecureSum:
  """A secure sum over up to `num_clients` clients (`build_secure_sum`).

  `computations` holds the Federated Core computations, `driver` the
  protocol's round steps, `quantizer` the encoding, `masks` the mask PRG. `__call__` runs the
  whole protocol with every check; `masked_round_sum` and `unmask_round_sum`
  are its two halves, for code that wants to look between them.
  """

  def __init__(self, value_type: Any, num_clients: int, config: config_lib.SecureSumConfig,
               quantizer: Optional[quantization.Quantizer] = None, masks: Optional[type] = None,
               graph_fn=None):
    self.config = config
    self.quantizer = quantizer or quantization.Quantizer(value_type, num_clients, config)
    self.num_clients = self.quantizer.num_clients
    self.driver = driver_lib.ProtocolDriver(config, self.num_clients, self.quantizer, masks, graph_fn)
    self.masks = self.driver.masks
    self.parameters = self.driver.parameters
    self.computations = build_sum_computations(self.quantizer, self.masks)

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
    **parts: `quantizer=` (a `quantization.Quantizer`), `masks=` (a
      `prg.MaskPrg` subclass) or `graph_fn=` (`graph_fn(order, degree)` ->
      neighbour lists) to swap one part for a researcher's own.

  Returns:
    A `SecureSum`.

  Raises:
    ValueError: at build time, in one line, when the bits are too few or the
      protocol parameters are unsafe.
  """
  return SecureSum(value_type, num_clients, config, **parts)
