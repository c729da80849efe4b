"""Weighted FedAvg whose model update is aggregated with the pairwise-masked sum.

`tff.learning`'s aggregator interface gives an aggregator only the client
value and weight, no per-client seed material, so the secure sum cannot be
plugged in as a `model_aggregator`. Instead the process is composed from the
same `tff.learning.templates` pieces `build_weighted_fed_avg` uses (broadcast
distributor, model-delta client work weighted by number of examples, apply-
optimizer finalizer) around our masked sum, in two Federated Core stages with
the protocol driver's Python steps between them (`driver`):

  client_stage(state@S, data@C, material@C):
      broadcast -> local training -> each client masks
      <weight * update, weight> (both masked) -> federated_sum mod 2^b
  [Python: the count checked, survivors reveal shares, the server rebuilds seeds]
  server_stage(state@S, masked_sum@S, clients@S, correction@S):
      unmask, decode, mean = sum(weight * update) / sum(weight), apply the
      server optimizer, round number + 1.

`SecureFedAvgProcess` wraps both so `next(state, datasets)` has the calling
shape of a `tff.learning.templates.LearningProcess`. The state is a
`LearningAlgorithmState` whose `aggregator` field holds the round number
(`aggregator["round_num"]`), so it survives checkpointing. Training metrics
are summed in the clear, as in FedAvg; only the model update and the weights
are aggregated securely. Clients that drop (Bernoulli(`dropout_rate`) per
client per round, after sharing their keys) are not trained at all in the
simulation: nothing they compute after that point reaches the server.

Randomness. Simulated dropouts model the network, not a secret: they draw
from (`seed`, round, attempt at that round), so a round retried after a
refused release draws new dropouts and a resumed run draws the same ones.
Everything a client draws is its own: keys, self-mask seed and the seed of
its stochastic rounding come from the OS CSPRNG in `protocol.ClientState`
(`key_agreement.fresh_seed`), never from anything the server knows (the
config's seed, the round, the attempt, public keys, the graph's order), so
the server cannot recompute a client's rounding, and the rounding errors of
different clients are independent (what `quantization.decode_error` relies
on). A run is therefore not reproducible bit for bit unless a caller injects
`rounding_randomness` (tests that compare runs bit for bit: see
`reproducible_rounding`; there the rounding is as public as that seed).

Weights. A client's weight is its example count rounded and clipped to
[0, `int_clip`] in float64 before any cast (`client_weight`), so counts of
2^31 and more cannot wrap to a negative int32, and that one clipped weight
both multiplies its update and enters the securely summed denominator: the
mean is sum(w_u delta_u) / sum(w_u) with the same w_u. How many clients had
their weight clipped is securely summed too (`secure_aggregation/
weights_clipped`).

Quantization error. Each client also securely sums its own squared rounding
error and clipping error (`quantization.Quantizer(track_error=True)`), so the
server can state how far quantization moved the round's mean without seeing
any client's update: `secure_aggregation/quantization_error` (relative L2,
`quantization.decode_error`); the training loop warns, in one line, when it
exceeds QUANTIZATION_WARNING_LEVEL.
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
from tff_research.aggregation import params as params_lib
from tff_research.aggregation import prg as prg_lib
from tff_research.aggregation import quantization
from tff_research.aggregation import secure_sum as secure_sum_lib
from tff_research.runtime import resident

ROUND_NUM = "round_num"  # the key of the round number in the state's `aggregator` field
# A round whose mean quantization moved by more than this (relative L2,
# `quantization_error`) gets a warning line in the training loop's log.
QUANTIZATION_WARNING_LEVEL = 0.05
# `rounding_randomness(round_num, attempt)`: a generator whose bytes become
# the clients' rounding seeds (tests only, see `reproducible_rounding`).
RoundingRandomness = Callable[[int, int], np.random.Generator]
_ROUNDING_STREAM = 0x726f756e64  # keeps reproducible_rounding's stream apart from the dropouts'


def reproducible_rounding(seed: int) -> RoundingRandomness:
  """Rounding seeds from (`seed`, round, attempt): for tests that compare runs bit for bit.

  Whoever knows `seed` can recompute every client's rounding with it, so
  this is no setting of a real run (none of the command line's flags reach
  it): there each client draws its rounding seed from the OS CSPRNG.

  Args:
    seed: any integer.

  Returns:
    `rounding_randomness` for `build_secure_weighted_fed_avg`.
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


def _plain_call(comp, *args, keep=(), meta=None, chain_step=1):
  del keep, meta, chain_step  # everything comes back to Python
  return comp(*args)


@dataclasses.dataclass(frozen=True)
class SecureAggregationConfig:
  """The secure sum inside FedAvg; every value is checked when the config is made.

  The fields shared with `SecureSumConfig` carry its names; `int_clip` is the
  most examples a client's weight counts (weights are integer leaves).
  """
  neighbors: Optional[int] = None   # k; None = the smallest the Bell et al. bound allows (`params`)
  threshold: Optional[int] = None   # t; None = chosen within the bound (`params`)
  clip: float = 1.0                 # c for weighted deltas (num_examples * delta), per coordinate
  bits: int = 0                     # 0 = quantization.choose_bits (16 or 21 where they hold the sum, else 32)
  scale: Optional[float] = None     # fixed-point scale; None = the largest power of 2 that fits
  int_clip: int = 2**16             # weights (num examples) are clipped to this
  max_dropout: float = params_lib.DEFAULT_MAX_DROPOUT  # delta: the protocol tolerates this fraction
  max_corrupt: float = params_lib.DEFAULT_MAX_CORRUPT  # gamma: corrupt clients it withstands
  min_honest: int = params_lib.DEFAULT_MIN_HONEST  # honest inputs every release holds (`SecureSumConfig`)
  server_chosen_dropouts: bool = False  # threat model: the server picks who drops (`SecureSumConfig`)
  active_server: bool = False  # signed keys and the consistency check (`SecureSumConfig`, `consistency`)
  prg: str = prg_lib.DEFAULT_PRG    # mask PRG: "aes-ctr" (cryptographic) or "philox" (fast, not)
  graph_seed: Optional[int] = None  # None: each round's graph order from the OS CSPRNG
  num_clients: int = 100            # the most clients a round may have (overflow bound, n of the parameters)
  dropout_rate: float = 0.0         # simulated: per sampled client per round, after sharing keys
  seed: int = 0                     # simulated dropouts only (clients' rounding is their own: module docstring)
  loop_implementation: tff.learning.LoopImplementation = tff.learning.LoopImplementation.DATASET_ITERATOR
  keep_state_on_worker: bool = True  # state and masked sum stay on the TFF worker (runtime.resident)

  def __post_init__(self):
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
    if self.dropout_rate > self.max_dropout:
      raise ValueError(f"dropout_rate {self.dropout_rate:g} exceeds max_dropout {self.max_dropout:g}: the "
                       "protocol's parameters assume at most that fraction of clients drops")
    if not (isinstance(self.num_clients, int) and self.num_clients >= 2):
      raise ValueError(f"num_clients must be an integer >= 2, got {self.num_clients}")
    if not (isinstance(self.int_clip, int) and self.int_clip >= 1):
      raise ValueError(f"int_clip (the most examples a weight counts) must be an integer >= 1, got {self.int_clip}")
    # The rest, and the quantization of this value shape (levels per client, clip, overflow).
    quantization.Quantizer(_value_type(tff.TensorType(np.float32, [1])), self.num_clients, self.secure_sum_config())

  def secure_sum_config(self) -> config_lib.SecureSumConfig:
    fields = {f.name for f in dataclasses.fields(config_lib.SecureSumConfig)}
    return config_lib.SecureSumConfig(**{name: getattr(self, name) for name in fields})


def client_value(update: Any, weight: tf.Tensor, int_clip: int) -> tuple[collections.OrderedDict, tf.Tensor]:
  """What a client's secure sum carries, and the multiplier of its float leaves. Graph code.

  Args:
    update: the client's model update (`tff.learning`'s model delta).
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


def _value_type(update_type) -> collections.OrderedDict:
  """What a client's secure sum carries: its weighted update, its weight and whether that was clipped."""
  return collections.OrderedDict(weighted_update=update_type, weight=tff.TensorType(np.int32),
                                 weights_clipped=tff.TensorType(np.int32))


@dataclasses.dataclass(frozen=True)
class _LearningParts:
  """The `tff.learning` templates the process is composed of."""
  initial_weights: Any
  distributor: Any
  client_work: Any
  finalizer: Any


def _learning_parts(model_fn, client_optimizer_fn, server_optimizer_fn,
                    loop_implementation: tff.learning.LoopImplementation) -> _LearningParts:

  @tff.tensorflow.computation()
  def initial_weights():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  weights_type = initial_weights.type_signature.result
  return _LearningParts(
      initial_weights,
      tff.learning.templates.build_broadcast_process(weights_type),
      tff.learning.templates.build_model_delta_client_work(
          model_fn, client_optimizer_fn, client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
          loop_implementation=loop_implementation),
      tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer_fn, weights_type))


def _initialize_fn(parts: _LearningParts):
  @tff.federated_computation()
  def initialize_fn():
    return tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        global_model_weights=tff.federated_eval(parts.initial_weights, tff.SERVER),
        distributor=parts.distributor.initialize(),
        client_work=parts.client_work.initialize(),
        aggregator=tff.federated_value(collections.OrderedDict([(ROUND_NUM, np.int32(0))]), tff.SERVER),
        finalizer=parts.finalizer.initialize()))
  return initialize_fn


def _client_stage(parts: _LearningParts, q: quantization.Quantizer, masks: prg_lib.MaskPrg, state_type):
  """Broadcast, local training, masking, the server's sum of the masked vectors."""
  update_type = parts.initial_weights.type_signature.result.trainable
  data_type = parts.client_work.next.type_signature.parameter[2]

  @tff.tensorflow.computation(update_type, np.float32, masks.client_material_type())
  def mask_update(update, weight, material):
    value, multiplier = client_value(update, weight, q.int_clip)
    return q.encode_and_mask(value, material, masks, multiplier=multiplier)

  @tff.federated_computation(state_type, data_type, tff.FederatedType(masks.client_material_type(), tff.CLIENTS))
  def client_stage(state, data, material):
    dist_out = parts.distributor.next(state.distributor, state.global_model_weights)
    work_out = parts.client_work.next(state.client_work, dist_out.result, data)
    masked = tff.federated_map(mask_update, (work_out.result.update, work_out.result.update_weight, material))
    carried = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        state.global_model_weights, dist_out.state, work_out.state, state.aggregator, state.finalizer))
    return collections.OrderedDict(
        state=carried, masked_sum=tff.federated_sum(masked),
        clients=tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS)),
        distributor=dist_out.measurements, client_work=work_out.measurements)

  return client_stage


def _server_stage(parts: _LearningParts, q: quantization.Quantizer, masks: prg_lib.MaskPrg, state_type):
  """Unmasking, the weighted mean, the server optimizer, the round number + 1."""
  vec_type = tff.TensorType(q.word_np_dtype, [q.dim])

  @tff.tensorflow.computation(vec_type, np.int32, masks.server_material_type())
  def unmask_mean(masked, clients, correction):
    value, clipped, error = q.checked_unmask_decode_and_error(masked, correction, masks, clients)
    total = tf.cast(value["weight"], tf.float32)
    mean = tf.nest.map_structure(lambda u: tf.math.divide_no_nan(u, total), value["weighted_update"])
    return collections.OrderedDict(mean_update=mean, weight=value["weight"], clipped=clipped,
                                   weights_clipped=value["weights_clipped"], **error)

  @tff.tensorflow.computation(state_type.member.aggregator)
  def next_round(aggregator):
    return collections.OrderedDict([(ROUND_NUM, aggregator[ROUND_NUM] + 1)])

  @tff.federated_computation(state_type, tff.FederatedType(vec_type, tff.SERVER),
                             tff.FederatedType(np.int32, tff.SERVER),
                             tff.FederatedType(masks.server_material_type(), tff.SERVER))
  def server_stage(state, masked, clients, correction):
    decoded = tff.federated_map(unmask_mean, tff.federated_zip((masked, clients, correction)))
    fin_out = parts.finalizer.next(state.finalizer, state.global_model_weights, decoded.mean_update)
    new_state = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        fin_out.result, state.distributor, state.client_work,
        tff.federated_map(next_round, state.aggregator), fin_out.state))
    return collections.OrderedDict(state=new_state, finalizer=fin_out.measurements, clipped=decoded.clipped,
                                   weight=decoded.weight, weights_clipped=decoded.weights_clipped,
                                   quantization_error=decoded.quantization_error,
                                   clipping_error=decoded.clipping_error)

  return server_stage


class SecureFedAvgProcess:
  """Same calling shape as a `tff.learning.templates.LearningProcess`.

  `client_stage`, `server_stage` and `initialize_fn` are the Federated Core
  computations (print their `type_signature`); `driver` runs the protocol's
  Python steps between them.
  """

  def __init__(self, model_fn: Callable[[], Any], client_optimizer_fn, server_optimizer_fn,
               config: SecureAggregationConfig, rounding_randomness: Optional[RoundingRandomness] = None):
    self.config = config
    parts = _learning_parts(model_fn, client_optimizer_fn, server_optimizer_fn, config.loop_implementation)
    update_type = parts.initial_weights.type_signature.result.trainable
    sum_config = config.secure_sum_config()
    self.quantizer = quantization.Quantizer(_value_type(update_type), config.num_clients, sum_config,
                                            track_error=True)
    self.driver = driver_lib.ProtocolDriver(sum_config, config.num_clients, self.quantizer)
    self.masks, self.parameters = self.driver.masks, self.driver.parameters
    self.initialize_fn = _initialize_fn(parts)
    state_type = self.initialize_fn.type_signature.result
    self.client_stage = _client_stage(parts, self.quantizer, self.masks, state_type)
    self._server_stage = _server_stage(parts, self.quantizer, self.masks, state_type)
    # Called directly, too many clients is one ValueError before TFF runs (argument 2 is the count).
    self.server_stage = secure_sum_lib.CountChecked(self._server_stage, self.quantizer, 2)
    self._rounding_randomness = rounding_randomness
    self._model_weights_at_server = tff.federated_computation(lambda state: state.global_model_weights,
                                                              state_type)
    # Attempts per round: a retried round (after a refused release) draws new
    # dropouts, while a resumed run draws what an uninterrupted one would.
    self._attempts: dict[int, int] = collections.defaultdict(int)

  def initialize(self):
    return self.initialize_fn()

  def next(self, state, client_datasets: Sequence[tf.data.Dataset],
           dropped: Optional[Sequence[int]] = None) -> tff.learning.templates.LearningProcessOutput:
    """One round; raises `SecureAggregationError` (state unchanged) when the release would be unsafe.

    Args:
      state: the server state (`initialize()` or the previous round's).
      client_datasets: one dataset per sampled client.
      dropped: indices of clients that drop this round after sharing their
        keys; None draws them (`dropout_rate`).

    Returns:
      A `LearningProcessOutput` with the new state and the round's metrics.
    """
    cfg = self.config
    n = len(client_datasets)
    round_num = self._round_number(state)
    attempt = self._attempts[round_num]
    self._attempts[round_num] += 1
    if dropped is None:  # the simulated network: seeded, unlike anything a client draws
      network = np.random.default_rng([cfg.seed, round_num, attempt])
      dropped = [u for u in range(n) if network.random() < cfg.dropout_rate]
    # None: each client's rounding seed from its own CSPRNG (protocol.ClientState).
    rounding = None if self._rounding_randomness is None else self._rounding_randomness(round_num, attempt)
    # Refused here, before any client trains, if stage 3 would refuse it.
    secure_round = self.driver.start_round(n, round_num, dropped, rounding_rng=rounding)
    try:
      srv, out = self._masked_round(state, client_datasets, secure_round)
    finally:
      # Only now: a kept value may be computed when it is used, so the masks
      # are read for sure once the server stage's outputs have come back.
      self.driver.release()
    rnd = secure_round.protocol
    metrics = collections.OrderedDict(
        distributor=out["distributor"], client_work=out["client_work"],
        aggregator=collections.OrderedDict(), finalizer=srv["finalizer"],
        secure_aggregation=collections.OrderedDict(
            clipped=int(srv["clipped"]), weights_clipped=int(srv["weights_clipped"]),
            quantization_error=float(srv["quantization_error"]), clipping_error=float(srv["clipping_error"]),
            dropped=len(secure_round.dropped),
            clients=len(secure_round.survivors), upload_bytes_per_client=self.driver.upload_bytes(rnd),
            neighbors=rnd.degree, threshold=rnd.threshold, round=round_num, bits=self.quantizer.bits,
            cryptographic_prg=int(self.masks.cryptographic)))
    return tff.learning.templates.LearningProcessOutput(srv["state"], metrics)

  def _masked_round(self, state, client_datasets, secure_round: driver_lib.SecureRound):
    """Stages 2 and 3 of the round: the clients' masked sum, then the server's unmasking."""
    # The state and the masked sum (model-sized) stay on the worker between the
    # two stages and until the next round, unless keep_state_on_worker=False.
    call = resident.call if self.config.keep_state_on_worker else _plain_call
    rnd, survivors = secure_round.protocol, secure_round.survivors
    materials = self.driver.client_materials(rnd, survivors)
    # chain_step=0: a round moves the state one step along resident.MAX_CHAIN,
    # as a one-call round does (re-sent every MAX_CHAIN rounds, not twice as often).
    out = call(self.client_stage, state, [client_datasets[u] for u in survivors], materials,
               keep=("state", "masked_sum"), chain_step=0)
    correction = self.driver.correction(rnd, int(out["clients"]), survivors, secure_round.dropped)
    srv = call(self._server_stage, out["state"], out["masked_sum"], out["clients"], correction,
               keep=("state",), meta={"state": {ROUND_NUM: secure_round.round_num + 1}})
    return srv, out

  @staticmethod
  def _round_number(state) -> int:
    if isinstance(state, resident.Resident) and ROUND_NUM in state.meta:
      return int(state.meta[ROUND_NUM])
    return int(resident.fetch(state).aggregator[ROUND_NUM])

  def get_model_weights(self, state) -> tff.learning.models.ModelWeights:
    return resident.read_model_weights(state, self._model_weights_at_server,
                                       lambda s: s.global_model_weights)

  def set_model_weights(self, state, weights):
    state = resident.fetch(state)
    return tff.learning.templates.LearningAlgorithmState(
        global_model_weights=tff.learning.models.ModelWeights(
            trainable=weights.trainable, non_trainable=weights.non_trainable),
        distributor=state.distributor, client_work=state.client_work,
        aggregator=state.aggregator, finalizer=state.finalizer)


def build_secure_weighted_fed_avg(model_fn: Callable[[], Any], client_optimizer_fn, server_optimizer_fn,
                                  config: SecureAggregationConfig = SecureAggregationConfig(),
                                  rounding_randomness: Optional[RoundingRandomness] = None
                                  ) -> SecureFedAvgProcess:
  """Like `tff.learning.algorithms.build_weighted_fed_avg` (NUM_EXAMPLES weighting), with the
  model update aggregated by the pairwise-masked secure sum.

  Args:
    model_fn: a no-arg callable returning a `tff.learning.models.VariableModel`.
    client_optimizer_fn: the clients' `tff.learning.optimizers.Optimizer`.
    server_optimizer_fn: the server's.
    config: the secure sum's settings (`SecureAggregationConfig`).
    rounding_randomness: None (every real run): each client's rounding seed
      comes from its own CSPRNG. Tests that compare runs bit for bit pass
      `reproducible_rounding(seed)`, which anyone knowing the seed can replay.

  Returns:
    A `SecureFedAvgProcess`.
  """
  return SecureFedAvgProcess(model_fn, client_optimizer_fn, server_optimizer_fn, config, rounding_randomness)
