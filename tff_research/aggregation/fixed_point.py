"""The secure sum's ideal functionality: its fixed-point weighted mean, without the protocol.

A plain `tff.aggregators.WeightedAggregationFactory`, so accuracy studies can
run stock `tff.learning.algorithms.build_weighted_fed_avg(model_aggregator=
FixedPointMeanFactory(config, num_clients))` and see what the secure sum's
quantization does to training, at plain FedAvg's speed. Each client encodes
exactly as in `masked_sum` (the same encoders, weight clipping, quantizer
layout and stochastic rounding); the server sums the encoded words with
`tff.federated_sum` (mod 2^b, or 2^64 when packed) and decodes them as the
secure sum decodes its unmasked sum. Masks cancel exactly, so on the same
clients, rounding seeds and dropouts the two give the same model bit for bit
(`tests/aggregation/test_seam.py`).

What it is not: private. The server sees every client's encoded value, and
the clients' rounding seeds are TF's op-level randomness (`tf.random.uniform`
in each client's computation), not a CSPRNG; `rounding_seed` fixes one seed
for every client and round (tests).

Measurements (group `fixed_point`): `clipped`, `weights_clipped`,
`quantization_error`, `clipping_error` (`masked_sum`'s docstring).
"""
from __future__ import annotations

import collections
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.aggregation import config as config_lib
from tff_research.aggregation import encoders as encoders_lib
from tff_research.aggregation import masked_sum
from tff_research.aggregation import quantization

MEASUREMENTS_GROUP = "fixed_point"


class FixedPointMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """The weighted mean of `masked_sum.SecureSumFactory`, in the clear (module docstring).

  Args:
    config: clip, bits, scale and int_clip (the threat-model fields are unused).
    num_clients: the most clients a round may have (the overflow bound).
    encoders: as `SecureSumFactory`'s.
    rounding_seed: None: each client draws its own seed in its computation;
      a `[2]` int64 seed: every client of every round rounds with it (tests).
  """

  def __init__(self, config: config_lib.SecureSumConfig = config_lib.SecureSumConfig(), num_clients: int = 100, *,
               encoders: Sequence[encoders_lib.Encoder] = (), rounding_seed: Optional[Any] = None):
    self.config, self.num_clients, self.encoders = config, int(num_clients), tuple(encoders)
    self._rounding_seed = None if rounding_seed is None else np.asarray(rounding_seed, np.int64).reshape([2])

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    q = quantization.Quantizer(masked_sum.weighted_value_type(value_type), self.num_clients, self.config,
                               track_error=True)
    encode, decode = self._client_encode(q, value_type, weight_type), self._server_decode(q)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      total = tff.federated_sum(tff.federated_map(encode, (value, weight)))
      clients = tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS))
      decoded = tff.federated_map(decode, tff.federated_zip((total, clients)))
      return tff.templates.MeasuredProcessOutput(state, decoded.value, decoded.measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)

  def _client_encode(self, q: quantization.Quantizer, value_type, weight_type):
    fixed_seed, encoders = self._rounding_seed, self.encoders

    @tff.tensorflow.computation(value_type, weight_type)
    def client_encode(value, weight):
      if fixed_seed is None:
        seed = tf.random.uniform([2], minval=tf.int64.min, maxval=tf.int64.max, dtype=tf.int64)
      else:
        seed = tf.constant(fixed_seed)
      value = encoders_lib.encode_all(encoders, value, seed)
      carried, multiplier = masked_sum.client_value(value, weight, q.int_clip)
      return q.encode(carried, seed, multiplier)
    return client_encode

  def _server_decode(self, q: quantization.Quantizer):
    encoders = self.encoders

    @tff.tensorflow.computation(tff.TensorType(q.word_np_dtype, [q.dim]), np.int32)
    def server_decode(total, clients):
      value, clipped, error = q.checked_decode_sum_and_error(total, clients)
      measurements = collections.OrderedDict(clipped=clipped, weights_clipped=value["weights_clipped"], **error)
      return collections.OrderedDict(value=masked_sum.weighted_mean(value, encoders, clients),
                                     measurements=collections.OrderedDict([(MEASUREMENTS_GROUP, measurements)]))
    return server_decode
