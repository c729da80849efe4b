"""The pairwise-masked secure sum as an interactive aggregation (Bonawitz et al. 2017; Bell et al. 2020).

`SecureSumFactory(config, num_clients).create(value_type[, weight_type])`
builds a `MaskedSumProcess` (the `interactive` seam). What runs where:

* CLIENTS (`client_stage`, a `tff.tensorflow.computation` under
  `tff.federated_map`): the value goes through the encoders
  (`encoders.Encoder`: none by default), is weighted (weighted processes:
  `client_value`), encoded into Z_{2^b} (`quantization`) and masked with the
  client's material (`prg`): PRG(b_u) and +-PRG(s_uv) per neighbour v. The
  server sums the masked vectors and a 1 per client (`tff.federated_sum`).
* Python, between the stages (`driver`): keys and shares before the round,
  the release check for the round's dropouts (`protocol.check_release`), the
  count the server saw checked, the seeds rebuilt from survivors' shares.
* SERVER (`server_stage`): the masks removed, the sum decoded, the encoders
  undone in reverse order; weighted: the mean sum(w_u x_u) / sum(w_u).

Randomness. Everything a client draws is its own: keys, self-mask seed and
the seed of its stochastic rounding come from the OS CSPRNG
(`protocol.ClientState`), never from anything the server knows (config seed,
round, attempt, public keys, graph order), so the server cannot recompute a
client's rounding and the rounding errors of different clients are
independent (what `quantization.decode_error` relies on). A run is therefore
not reproducible bit for bit unless a test injects `rounding_randomness`
(`reproducible_rounding`; there the rounding is as public as that seed).

Weights. A client's weight is its example count rounded and clipped to
[0, `int_clip`] in float64 before any cast (`client_weight`), so counts of
2^31 and more cannot wrap to a negative int32, and that one clipped weight
both multiplies its value and enters the securely summed denominator.

Measurements of a weighted process (the `secure` group; `metrics.csv`'s
`secure/...` columns): `clipped` (values clipped or non-finite),
`weights_clipped`, `quantization_error` and `clipping_error` (relative L2,
from securely summed per-client errors: `quantization.decode_error`; above
QUANTIZATION_WARNING_LEVEL `quantization_warning` gives a line), `dropped`,
`clients`, `upload_bytes_per_client`, `neighbors` (k), `threshold` (t),
`round`, `bits`, `cryptographic_prg` (1 for AES-CTR).

Threat model: the `aggregation` package docstring (the README lists each
claim with the test that attacks it).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import config as config_lib
from tff_research.aggregation import driver as driver_lib
from tff_research.aggregation import encoders as encoders_lib
from tff_research.aggregation import interactive
from tff_research.aggregation import quantization
from tff_research.aggregation.secagg import protocol as protocol_lib
from tff_research.runtime import resident

ROUND_NUM = interactive.ROUND_NUM
MEASUREMENTS_GROUP = "secure"  # the measurements' group name (metrics.csv: secure/...)
# A round whose mean quantization moved by more than this (relative L2,
# `quantization_error`) gets a warning line (`quantization_warning`).
QUANTIZATION_WARNING_LEVEL = 0.05
# `rounding_randomness(round_num, attempt)`: a generator whose bytes become
# the clients' rounding seeds (tests only, see `reproducible_rounding`).
RoundingRandomness = Callable[[int, int], np.random.Generator]
_ROUNDING_STREAM = 0x726f756e64  # keeps reproducible_rounding's stream apart from the dropouts'


def reproducible_rounding(seed: int) -> RoundingRandomness:
  """Rounding seeds from (`seed`, round, attempt): for tests that compare runs bit for bit.

  Whoever knows `seed` can recompute every client's rounding with it, so
  this is no setting of a real run (no flag reaches it): there each client
  draws its rounding seed from the OS CSPRNG.

  Args:
    seed: any integer.

  Returns:
    `rounding_randomness` for `SecureSumFactory`.
  """
  def rounding_randomness(round_num: int, attempt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _ROUNDING_STREAM, int(round_num), int(attempt)])
  return rounding_randomness


def client_weight(weight: tf.Tensor, int_clip: int) -> tuple[tf.Tensor, tf.Tensor]:
  """A client's weight for the secure mean, and whether it was clipped. Graph code.

  Args:
    weight: the example count (float32, as `tff.learning`'s client work gives it).
    int_clip: the most a weight counts.

  Returns:
    (w, clipped): w = round(weight) clipped to [0, int_clip] as int32 (in
    float64 first, so counts >= 2^31 clip instead of wrapping to negative;
    NaN counts 0), the one value that multiplies the update and enters the
    denominator; clipped: int32 1 if w differs from round(weight), else 0.
  """
  rounded = tf.round(tf.cast(weight, tf.float64))
  rounded = tf.where(tf.math.is_nan(rounded), tf.zeros_like(rounded), rounded)
  w = tf.clip_by_value(rounded, 0.0, float(int_clip))
  return tf.cast(w, tf.int32), tf.cast(tf.not_equal(w, rounded), tf.int32)


def client_value(update: Any, weight: tf.Tensor, int_clip: int) -> tuple[collections.OrderedDict, tf.Tensor]:
  """What a client's weighted secure sum carries, and the multiplier of its float leaves. Graph code.

  Args:
    update: the client's value (a model update).
    weight: its example count.
    int_clip: the most a weight counts.

  Returns:
    (value, multiplier): value = <weighted_update=update, weight=w,
    weights_clipped=0 or 1> (`client_weight`) and multiplier = w as float32.
    The quantizer multiplies the float leaves by it (folded into its scale)
    before clipping: weighted_update is w * update with the same clipped w
    that is summed as the weight.
  """
  w, clipped = client_weight(weight, int_clip)
  value = collections.OrderedDict(weighted_update=update, weight=w, weights_clipped=clipped)
  return value, tf.cast(w, tf.float32)


def weighted_value_type(value_type: Any) -> collections.OrderedDict:
  """What a client's weighted sum carries: its weighted value, its weight and whether that was clipped."""
  return collections.OrderedDict(weighted_update=value_type, weight=tff.TensorType(np.int32),
                                 weights_clipped=tff.TensorType(np.int32))


def weighted_mean(value: Any, encoders: Sequence[encoders_lib.Encoder], clients: tf.Tensor) -> Any:
  """The decoded weighted sum's mean: the encoders undone on sum(w x), then / sum(w). Graph code."""
  total = tf.cast(value["weight"], tf.float32)
  weighted = encoders_lib.decode_all(encoders, value["weighted_update"], clients)
  return tf.nest.map_structure(lambda u: tf.math.divide_no_nan(u, total), weighted)


def quantization_warning(record: dict[str, Any], round_num: int) -> Optional[str]:
  """One warning line when the secure sum's quantization moved the round's mean too far, else None.

  Args:
    record: the round's record (the training loop's); only secure rounds
      carry `secure/quantization_error` (module docstring).
    round_num: the round.

  Returns:
    The line, or None at or below QUANTIZATION_WARNING_LEVEL.
  """
  error = record.get(MEASUREMENTS_GROUP, {}).get("quantization_error")
  level = QUANTIZATION_WARNING_LEVEL
  if error is None or not error > level:
    return None
  return (f"warning: round {round_num}: quantization moved the secure mean update by {error:.1%} (relative L2, "
          f"above {level:.0%}), so this run may not track plain FedAvg; more --secure_bits or a --secure_clip "
          "nearer the updates' range lowers it (said once a run; secure/quantization_error in metrics.csv has "
          "every round)")


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
      count = resident.fetch(args[self._clients_index])
      # A concrete count only: traced inside another computation, the graph's check remains.
      if isinstance(count, (int, np.integer, np.ndarray)) and np.issubdtype(np.asarray(count).dtype, np.integer):
        self._quantizer.check_clients(count)
    return self._comp(*args)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._comp, name)


class SecureSumFactory(interactive.InteractiveAggregationFactory):
  """The pairwise-masked secure sum for up to `num_clients` clients a round (module docstring).

  Threat model (`config.threat()`; the README lists each claim with the test
  that attacks it): the server is honest-but-curious unless
  `active_server`; up to ceil(max_corrupt n) clients collude with it and up
  to ceil(max_dropout n) drop after the setup, independently of the masking
  graph unless `server_chosen_dropouts`. The server then learns the sum of
  the survivors' values, at least `min_honest` of them honest, and nothing
  else (but with probability 2^-40); a round that could release less is
  refused (`interactive.Refused`) before anything is revealed. Not claimed:
  inputs forged by corrupt clients, a lying server, denial of service.

  Args:
    config: clipping, bits, threat model, graph and PRG (`SecureSumConfig`).
    num_clients: the most clients a round may have (the overflow bound, and
      the n the protocol parameters are chosen for).
    encoders: `encoders.Encoder`s run at the clients before quantization
      (in order) and undone at the server after decoding (in reverse).
    masks: a `prg.MaskPrg` subclass instead of `config.prg`'s.
    graph_fn: `graph_fn(order, degree)` -> neighbour lists, instead of the Harary graph.
    rounding_randomness: None (every real run): each client's rounding seed
      comes from its own CSPRNG; tests that compare runs bit for bit pass
      `reproducible_rounding(seed)`.
  """

  def __init__(self, config: config_lib.SecureSumConfig = config_lib.SecureSumConfig(), num_clients: int = 100, *,
               encoders: Sequence[encoders_lib.Encoder] = (), masks: Optional[type] = None, graph_fn=None,
               rounding_randomness: Optional[RoundingRandomness] = None):
    if not (isinstance(num_clients, int) and num_clients >= 2):
      raise ValueError(f"num_clients must be an integer >= 2, got {num_clients}")
    self.config = config
    self.num_clients = num_clients
    self.encoders = tuple(encoders)
    self._masks, self._graph_fn, self._rounding_randomness = masks, graph_fn, rounding_randomness
    config.smallest_round(num_clients)  # every round size up to num_clients has safe parameters
    # The quantization of a float32 value (levels per client, the clip, overflow), so a
    # bad setting fails here, in one line, not when a learning process is built.
    self.build_quantizer(tff.TensorType(np.float32, [1]), weighted=False)

  def create(self, value_type: Any, weight_type: Optional[Any] = None) -> MaskedSumProcess:
    return MaskedSumProcess(value_type, weight_type, self)

  def build_quantizer(self, value_type: Any, weighted: bool) -> quantization.Quantizer:
    """The quantizer of what the encoders make of `value_type` (mod 2^b where they wrap their output)."""
    encoded = encoders_lib.encoded_type(self.encoders, tff.types.to_type(value_type))
    bits = encoders_lib.modular_bits(self.encoders)
    if bits is None:
      carried = weighted_value_type(encoded) if weighted else encoded
      return quantization.Quantizer(carried, self.num_clients, self.config, track_error=weighted)
    if weighted:
      raise ValueError("encoders that wrap their output mod 2^b (distributed DP) make an unweighted sum: "
                       "create(value_type) without a weight type")
    if self.config.bits not in (0, bits):
      raise ValueError(f"the encoders wrap their output mod 2^{bits}, but the secure sum is set to {self.config.bits} "
                       "bits: leave its bits at 0 or set the same")
    return quantization.Quantizer(encoded, self.num_clients, dataclasses.replace(self.config, bits=bits),
                                  modular=True)


class MaskedSumProcess(interactive.InteractiveAggregationProcess):
  """The masked sum of one value type (`SecureSumFactory.create`); the stages: module docstring.

  Attributes beyond the seam's: `quantizer`, `masks` (the mask PRG),
  `driver` (the protocol's round steps), `parameters` (k and t at
  `num_clients`), `client_mask` (the clients' TF computation).
  """

  def __init__(self, value_type: Any, weight_type: Optional[Any], factory: SecureSumFactory):
    self.value_type = tff.types.to_type(value_type)
    self.is_weighted = weight_type is not None
    self.config, self.num_clients, self.encoders = factory.config, factory.num_clients, factory.encoders
    self.quantizer = factory.build_quantizer(self.value_type, self.is_weighted)
    self.driver = driver_lib.ProtocolDriver(self.config, self.num_clients, self.quantizer, factory._masks,
                                            factory._graph_fn)
    self.masks, self.parameters = self.driver.masks, self.driver.parameters
    self._rounding_randomness = factory._rounding_randomness
    self.initialize = tff.federated_computation(
        lambda: tff.federated_value(collections.OrderedDict([(ROUND_NUM, np.int32(0))]), tff.SERVER))
    self.state_type = self.initialize.type_signature.result
    self.client_mask = self._client_mask(weight_type)
    self.client_stage = self._client_stage(weight_type)
    unmask = self._server_unmask()
    self.server_unmask = CountChecked(unmask, self.quantizer, 1)
    self.server_stage = CountChecked(self._server_stage(unmask), self.quantizer, 2)

  def _client_mask(self, weight_type):
    q, masks, encoders = self.quantizer, self.masks, self.encoders
    material_type = masks.client_material_type()
    if weight_type is None:
      @tff.tensorflow.computation(self.value_type, material_type)
      def client_mask(value, material):
        value = encoders_lib.encode_all(encoders, value, material["rounding_seed"])
        return q.encode_and_mask(value, material, masks)
      return client_mask

    @tff.tensorflow.computation(self.value_type, weight_type, material_type)
    def weighted_client_mask(value, weight, material):
      value = encoders_lib.encode_all(encoders, value, material["rounding_seed"])
      carried, multiplier = client_value(value, weight, q.int_clip)
      return q.encode_and_mask(carried, material, masks, multiplier=multiplier)
    return weighted_client_mask

  def _client_stage(self, weight_type):
    mask, material_type = self.client_mask, tff.FederatedType(self.masks.client_material_type(), tff.CLIENTS)
    values_type = tff.FederatedType(self.value_type, tff.CLIENTS)

    def summed(masked):
      clients = tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS))
      return collections.OrderedDict(masked_sum=tff.federated_sum(masked), clients=clients)

    if weight_type is None:
      @tff.federated_computation(self.state_type, values_type, material_type)
      def client_stage(state, values, material):
        del state  # nothing of it reaches the clients
        return summed(tff.federated_map(mask, (values, material)))
      return client_stage

    @tff.federated_computation(self.state_type, values_type, tff.FederatedType(weight_type, tff.CLIENTS),
                               material_type)
    def weighted_client_stage(state, values, weights, material):
      del state
      return summed(tff.federated_map(mask, (values, weights, material)))
    return weighted_client_stage

  def _server_unmask(self):
    q, masks, encoders = self.quantizer, self.masks, self.encoders
    vec_type = tff.TensorType(q.word_np_dtype, [q.dim])

    @tff.tensorflow.computation(vec_type, np.int32, masks.server_material_type())
    def server_unmask(masked_sum, clients, correction):
      if not self.is_weighted:
        value, clipped = q.checked_unmask_and_decode(masked_sum, correction, masks, clients)
        value = encoders_lib.decode_all(encoders, value, clients)
        return collections.OrderedDict(value=value, measurements=collections.OrderedDict(clipped=clipped))
      value, clipped, error = q.checked_unmask_decode_and_error(masked_sum, correction, masks, clients)
      return collections.OrderedDict(
          value=weighted_mean(value, encoders, clients),
          measurements=collections.OrderedDict(clipped=clipped, weights_clipped=value["weights_clipped"],
                                               **error))
    return server_unmask

  def _server_stage(self, unmask):
    vec_type = tff.TensorType(self.quantizer.word_np_dtype, [self.quantizer.dim])

    @tff.tensorflow.computation(self.state_type.member)
    def next_state(state):
      return collections.OrderedDict([(ROUND_NUM, state[ROUND_NUM] + 1)])

    @tff.federated_computation(self.state_type, tff.FederatedType(vec_type, tff.SERVER),
                               tff.FederatedType(np.int32, tff.SERVER),
                               tff.FederatedType(self.masks.server_material_type(), tff.SERVER))
    def server_stage(state, masked_sum, clients, correction):
      decoded = tff.federated_map(unmask, tff.federated_zip((masked_sum, clients, correction)))
      return tff.templates.MeasuredProcessOutput(
          state=tff.federated_map(next_state, state), result=decoded.value, measurements=decoded.measurements)
    return server_stage

  def start_round(self, num_clients: int, round_num: int, dropped: Sequence[int] = (),
                  attempt: int = 0) -> interactive.RoundPlan | interactive.Refused:
    """Keys and shares for the round's clients, and the release check for `dropped` (module docstring).

    Raises:
      ValueError: a round size this process does not accept, or bad indices.
    """
    rounding = None if self._rounding_randomness is None else self._rounding_randomness(round_num, attempt)
    try:
      secure_round = self.driver.start_round(num_clients, round_num, dropped, rounding_rng=rounding)
    except protocol_lib.SecureAggregationError as e:
      return interactive.Refused(round_num, str(e))
    return interactive.RoundPlan(round_num, secure_round.survivors, secure_round.dropped, secure_round.protocol)

  def client_materials(self, plan: interactive.RoundPlan, members: Optional[Sequence[int]] = None) -> list[Any]:
    members = plan.survivors if members is None else list(members)
    if not set(members) <= set(plan.survivors):
      raise ValueError(f"round {plan.round_num}: materials asked for clients that are not survivors")
    return self.driver.client_materials(plan.protocol, members)

  def correction(self, plan: interactive.RoundPlan, clients: int) -> Any:
    try:
      return self.driver.correction(plan.protocol, int(clients), plan.survivors, plan.dropped)
    except protocol_lib.SecureAggregationError as e:
      return interactive.Refused(plan.round_num, str(e))

  def release(self) -> None:
    self.driver.release()

  def measurements(self, plan: interactive.RoundPlan, server_measurements: Any) -> collections.OrderedDict:
    rnd = plan.protocol
    measured = collections.OrderedDict((k, _scalar(v)) for k, v in server_measurements.items())
    measured.update(dropped=len(plan.dropped), clients=len(plan.survivors),
                    upload_bytes_per_client=self.driver.upload_bytes(rnd), neighbors=rnd.degree,
                    threshold=rnd.threshold, round=plan.round_num, bits=self.quantizer.bits,
                    cryptographic_prg=int(self.masks.cryptographic))
    return collections.OrderedDict([(MEASUREMENTS_GROUP, measured)])


def _scalar(value: Any) -> int | float:
  array = np.asarray(value)
  return int(array) if np.issubdtype(array.dtype, np.integer) else float(array)

