"""Weighted FedAvg whose model update is aggregated with the pairwise-masked sum.

`tff.learning`'s aggregator interface gives an aggregator only the client
value and weight, no per-client seed material, so the secure sum cannot be
plugged in as a `model_aggregator`. Instead the process is composed from the
same `tff.learning.templates` pieces `build_weighted_fed_avg` uses (broadcast
distributor, model-delta client work weighted by number of examples, apply-
optimizer finalizer) around our masked sum, in two Federated Core stages with
the Python protocol step between them:

  client_stage(state@S, data@C, material@C):
      broadcast -> local training -> each client masks
      <weight * update, weight> (both masked) -> federated_sum mod 2^b
  [Python: survivors reveal shares; the server rebuilds seeds (protocol.py)]
  server_stage(state@S, masked_sum@S, clients@S, seeds@S, signs@S):
      unmask, decode, mean = sum(weight * update) / sum(weight), apply the
      server optimizer, round counter + 1.

`SecureFedAvgProcess` wraps both so `next(state, datasets)` has the calling
shape of a `tff.learning.templates.LearningProcess`. The state is a
`LearningAlgorithmState` whose `aggregator` field is the round counter (used
for fresh keys and the per-round neighbour graph), so it survives
checkpointing. Training metrics are summed in the clear, as in FedAvg; only
the model update and the weights are aggregated securely. Clients that drop
(Bernoulli(`dropout_rate`) per client per round, after sharing their keys)
are not trained at all in the simulation: nothing they compute after that
point reaches the server. Dropouts and stochastic rounding draw from
(`seed`, round, attempt at that round), so a round retried after too many
dropouts draws new dropouts and a resumed run draws what an uninterrupted one
would; keys are fresh from the OS either way (the masks cancel exactly, so the
result does not depend on them).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import masked_sum as masked_sum_lib
from tff_research.aggregation import params as params_lib
from tff_research.aggregation import prg as prg_lib
from tff_research.aggregation import protocol as protocol_lib
from tff_research.runtime import resident


def _plain_call(comp, *args, keep=(), meta=None, chain_step=1):
  del keep, meta, chain_step  # everything comes back to Python
  return comp(*args)


@dataclasses.dataclass(frozen=True)
class SecureAggregationConfig:
  """The secure sum inside FedAvg; every value is checked when the config is made."""
  neighbors: Optional[int] = None   # k; None = the smallest the Bell et al. bound allows (`params`)
  threshold: Optional[int] = None   # t; None = chosen within the bound (`params`)
  clip: float = 1.0                 # c for weighted deltas (num_examples * delta), per coordinate
  bits: int = 0                     # 0 = masked_sum.choose_bits (16 or 21 where they hold the sum finely enough, else 32)
  dropout_rate: float = 0.0         # simulated: per sampled client per round, after sharing keys
  max_dropout: float = params_lib.DEFAULT_MAX_DROPOUT  # delta: the protocol tolerates this fraction
  max_corrupt: float = params_lib.DEFAULT_MAX_CORRUPT  # gamma: corrupt clients it withstands
  prg: str = prg_lib.DEFAULT_PRG    # mask PRG: "aes-ctr" (cryptographic) or "philox" (fast, not)
  seed: int = 0                     # dropouts, stochastic rounding
  graph_seed: Optional[int] = None  # None: each round's graph order from the OS CSPRNG
  max_clients: int = 100            # overflow bound: clients per round
  max_client_weight: int = 2**16    # weights (num examples) are clipped to this
  loop_implementation: str = "iterator"  # clients' batch loop; see learning.process.LOOP_IMPLEMENTATIONS
  keep_state_on_worker: bool = True  # state and masked sum stay on the TFF worker (runtime.resident)

  def __post_init__(self):
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
    if self.dropout_rate > self.max_dropout:
      raise ValueError(f"dropout_rate {self.dropout_rate:g} exceeds max_dropout {self.max_dropout:g}: the "
                       "protocol's parameters assume at most that fraction of clients drops")
    if not (isinstance(self.max_clients, int) and self.max_clients >= 2):
      raise ValueError(f"max_clients must be an integer >= 2, got {self.max_clients}")
    self.secure_sum_config()  # checks the rest

  def secure_sum_config(self) -> masked_sum_lib.SecureSumConfig:
    return masked_sum_lib.SecureSumConfig(
        clip=self.clip, bits=self.bits, int_clip=self.max_client_weight, neighbors=self.neighbors,
        threshold=self.threshold, max_dropout=self.max_dropout, max_corrupt=self.max_corrupt,
        prg=self.prg, graph_seed=self.graph_seed)


class SecureFedAvgProcess:
  """Same calling shape as a `tff.learning.templates.LearningProcess`.

  `client_stage`, `server_stage` and `initialize_fn` are the Federated Core
  computations (print their `type_signature`).
  """

  def __init__(self, model_fn: Callable[[], Any], client_optimizer_fn, server_optimizer_fn,
               config: SecureAggregationConfig):
    self.config = config

    @tff.tensorflow.computation()
    def initial_model_weights_fn():
      return tff.learning.models.ModelWeights.from_model(model_fn())

    model_weights_type = initial_model_weights_fn.type_signature.result
    distributor = tff.learning.templates.build_broadcast_process(model_weights_type)
    from tff_research.learning import process as process_lib  # pylint: disable=g-import-not-at-top
    client_work = tff.learning.templates.build_model_delta_client_work(
        model_fn, client_optimizer_fn, client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
        loop_implementation=process_lib.loop_implementation(config.loop_implementation))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer_fn, model_weights_type)
    update_type = model_weights_type.trainable
    value_type = collections.OrderedDict(weighted_update=update_type, weight=tff.TensorType(np.int32))
    sum_config = config.secure_sum_config()
    self.quantizer = q = masked_sum_lib.Quantizer(value_type, config.max_clients, sum_config)
    self.parameters = sum_config.protocol_parameters(config.max_clients)
    self.masks = masks = prg_lib.build_mask_prg(config.prg, q.dim, q.word_dtype)
    mat_type, correction_type = masks.client_material_type(), masks.server_material_type()
    vec_type = tff.TensorType(q.word_np_dtype, [q.dim])

    @tff.federated_computation()
    def initialize_fn():
      return tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
          global_model_weights=tff.federated_eval(initial_model_weights_fn, tff.SERVER),
          distributor=distributor.initialize(),
          client_work=client_work.initialize(),
          aggregator=tff.federated_value(np.int32(0), tff.SERVER),  # round counter
          finalizer=finalizer.initialize()))

    state_type = initialize_fn.type_signature.result
    data_type = client_work.next.type_signature.parameter[2]

    @tff.tensorflow.computation(update_type, np.float32, mat_type)
    def mask_update(update, weight, material):
      w = tf.cast(tf.round(weight), tf.int32)
      # weighted_update = weight * update: the quantizer multiplies float leaves
      # by the weight (folded into its scale) before clipping.
      value = collections.OrderedDict(weighted_update=update, weight=w)
      return q.encode_and_mask(value, material, masks, multiplier=tf.cast(w, tf.float32))

    @tff.tensorflow.computation(vec_type, np.int32, correction_type)
    def unmask_mean(masked, clients, correction):
      # `next` checks the count in Python first; this stops a direct call from
      # decoding a sum the overflow bound does not cover.
      check = tf.debugging.assert_less_equal(
          clients, tf.constant(q.num_clients, tf.int32),
          message=f"more clients than max_clients={q.num_clients} (overflow bound)")
      with tf.control_dependencies([check]):
        value, clipped = q.unmask_and_decode(tf.identity(masked), correction, masks, clients)
      total = tf.cast(value["weight"], tf.float32)
      mean = tf.nest.map_structure(lambda u: tf.math.divide_no_nan(u, total), value["weighted_update"])
      return collections.OrderedDict(mean_update=mean, weight=value["weight"], clipped=clipped)

    @tff.tensorflow.computation(np.int32)
    def increment(round_num):
      return round_num + 1

    @tff.federated_computation(state_type, data_type, tff.FederatedType(mat_type, tff.CLIENTS))
    def client_stage(state, data, material):
      dist_out = distributor.next(state.distributor, state.global_model_weights)
      work_out = client_work.next(state.client_work, dist_out.result, data)
      masked = tff.federated_map(
          mask_update, (work_out.result.update, work_out.result.update_weight, material))
      carried = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
          state.global_model_weights, dist_out.state, work_out.state, state.aggregator,
          state.finalizer))
      return collections.OrderedDict(
          state=carried, masked_sum=tff.federated_sum(masked),
          clients=tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS)),
          distributor=dist_out.measurements, client_work=work_out.measurements)

    @tff.federated_computation(state_type, tff.FederatedType(vec_type, tff.SERVER),
                               tff.FederatedType(np.int32, tff.SERVER),
                               tff.FederatedType(correction_type, tff.SERVER))
    def server_stage(state, masked, clients, correction):
      decoded = tff.federated_map(unmask_mean, tff.federated_zip((masked, clients, correction)))
      fin_out = finalizer.next(state.finalizer, state.global_model_weights, decoded.mean_update)
      new_state = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
          fin_out.result, state.distributor, state.client_work,
          tff.federated_map(increment, state.aggregator), fin_out.state))
      return collections.OrderedDict(state=new_state, finalizer=fin_out.measurements,
                                     clipped=decoded.clipped, weight=decoded.weight)

    @tff.federated_computation(state_type)
    def model_weights_at_server(state):
      return state.global_model_weights

    self.initialize_fn = initialize_fn
    self._model_weights_at_server = model_weights_at_server
    self.client_stage = client_stage
    self.server_stage = server_stage
    self.mask_update = mask_update
    # Attempts per round: a retried round (after too many dropouts) draws new
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
    if n > cfg.max_clients:
      raise ValueError(f"{n} clients this round, but max_clients={cfg.max_clients} (overflow bound)")
    round_num = self._round_number(state)
    rng = np.random.default_rng([cfg.seed, round_num, self._attempts[round_num]])
    self._attempts[round_num] += 1
    if dropped is None:
      dropped = [u for u in range(n) if rng.random() < cfg.dropout_rate]
    dropped = sorted(set(int(u) for u in dropped))
    if any(not 0 <= u < n for u in dropped):
      raise ValueError(f"dropped clients must be indices in [0, {n})")
    survivors = [u for u in range(n) if u not in set(dropped)]
    parameters = self.parameters if n == cfg.max_clients else cfg.secure_sum_config().protocol_parameters(n)
    rnd = protocol_lib.SecAggRound(parameters, round_num,
                                   masked_sum_lib.graph_order_seed(cfg.graph_seed, round_num), rounding_rng=rng)
    # The server refuses at stage 3 anyway; checking first spares the round's training.
    rnd.check_release(survivors, dropped)
    try:
      srv, out = self._masked_round(state, client_datasets, rnd, survivors, dropped, round_num)
    finally:
      # Only now: a kept value is computed when it is used, so the masks are
      # read by the time the server stage's outputs have come back.
      self.masks.release()
    metrics = collections.OrderedDict(
        distributor=out["distributor"], client_work=out["client_work"],
        aggregator=collections.OrderedDict(), finalizer=srv["finalizer"],
        secure_aggregation=collections.OrderedDict(
            clipped=int(srv["clipped"]), dropped=len(dropped), clients=len(survivors),
            upload_bytes_per_client=self.quantizer.upload_bytes() + rnd.protocol_upload_bytes(),
            neighbors=rnd.degree, threshold=rnd.threshold, round=round_num, bits=self.quantizer.bits,
            cryptographic_prg=int(self.masks.cryptographic)))
    return tff.learning.templates.LearningProcessOutput(srv["state"], metrics)

  def _masked_round(self, state, client_datasets, rnd, survivors, dropped, round_num):
    """Stages 2 and 3 of the round: the clients' masked sum, then the server's unmasking."""
    # The state and the masked sum (model-sized) stay on the worker between the
    # two stages and until the next round, unless keep_state_on_worker=False.
    call = resident.call if self.config.keep_state_on_worker else _plain_call
    materials = [self.masks.client_material(seeds, rounding) for seeds, rounding in
                 zip(rnd.mask_seeds(survivors), rnd.rounding_seeds(survivors))]
    # chain_step=0: a round moves the state one step along resident.MAX_CHAIN,
    # as a one-call round does (re-sent every MAX_CHAIN rounds, not twice as often).
    out = call(self.client_stage, state, [client_datasets[u] for u in survivors], materials,
               keep=("state", "masked_sum"), chain_step=0)
    if int(out["clients"]) != len(survivors):
      raise protocol_lib.SecureAggregationError(
          f"round {round_num}: the server counted {int(out['clients'])} masked vectors, expected "
          f"{len(survivors)}: no aggregate is released")
    correction = self.masks.server_material(rnd.unmask(survivors, dropped))
    srv = call(self.server_stage, out["state"], out["masked_sum"], out["clients"], correction,
               keep=("state",), meta={"state": {"round": round_num + 1}})
    return srv, out

  @staticmethod
  def _round_number(state) -> int:
    if isinstance(state, resident.Resident) and "round" in state.meta:
      return int(state.meta["round"])
    return int(resident.fetch(state).aggregator)

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


def build_secure_weighted_fed_avg(model_fn: Callable[[], Any], client_optimizer_fn,
                                  server_optimizer_fn,
                                  config: SecureAggregationConfig = SecureAggregationConfig()
                                  ) -> SecureFedAvgProcess:
  """Like `tff.learning.algorithms.build_weighted_fed_avg` (NUM_EXAMPLES weighting),
  with the model update aggregated by the pairwise-masked secure sum."""
  return SecureFedAvgProcess(model_fn, client_optimizer_fn, server_optimizer_fn, config)
