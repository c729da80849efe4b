"""The protocol driver: one round of SecAgg/SecAgg+ around the Federated Core computations.

A round, whatever it aggregates (`secure_sum.SecureSum`, `masked_sum`):

  start_round       stages 0-1 (keys, shares) for the round's clients, and the
                    server's release check (`protocol.check_release`) for the
                    dropouts it will see: a round that would be refused at
                    stage 3 is refused before any client computes
  client_materials  stage 2: each survivor's mask material, the CLIENTS-placed
                    input of its masking computation
  correction        stage 3: the client count checked, the survivors' shares
                    requested, the seeds rebuilt: the SERVER-placed input of
                    the unmasking computation
  release           frees what the materials hold (memory files), once the
                    computations that read them have returned

The parts a researcher may swap are arguments: the mask PRG (`masks`, a
`prg.MaskPrg` subclass) and the masking graph (`graph_fn(order, degree)`,
the Harary graph by default). Whatever the graph, nothing is released unless the
survivors' subgraph is connected.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from tff_research.aggregation import config as config_lib
from tff_research.aggregation import prg as prg_lib
from tff_research.aggregation import quantization
from tff_research.aggregation.secagg import consistency
from tff_research.aggregation.secagg import graph as graph_lib
from tff_research.aggregation.secagg import params as params_lib
from tff_research.aggregation.secagg import protocol as protocol_lib


@dataclasses.dataclass
class SecureRound:
  """One round in progress: its protocol state and who survived."""
  protocol: protocol_lib.SecAggRound
  round_num: int
  survivors: list[int]
  dropped: list[int]


def graph_order_seed(seed: Optional[int], round_num: int) -> Optional[int]:
  """The order seed of a round's graph: None (OS CSPRNG) unless a fixed seed is configured."""
  if seed is None:
    return None
  return int(np.random.SeedSequence([int(seed), int(round_num)]).generate_state(1)[0])


class ProtocolDriver:
  """Round-level steps of the protocol for up to `num_clients` clients (see the module docstring).

  Args:
    config: the secure sum's settings.
    num_clients: the most clients a round may have (the n of the parameters).
    quantizer: the encoding whose vectors are masked (its `dim` and word type).
    masks: a `prg.MaskPrg` subclass, built for the quantizer's vectors; None
      is `config.prg`.
    graph_fn: `graph_fn(order, degree)` -> neighbour lists; None is the Harary graph.
  """

  def __init__(self, config: config_lib.SecureSumConfig, num_clients: int, quantizer: quantization.Quantizer,
               masks: Optional[type] = None, graph_fn=None):
    self.config = config
    self.num_clients = int(num_clients)
    # Every round size this driver may run is checked now, so a given k or t
    # that fails at a smaller round fails here, not when that round starts.
    self.smallest_round = config.smallest_round(self.num_clients)
    self.parameters = config.protocol_parameters(self.num_clients)
    self.masks = (masks(quantizer.dim, quantizer.word_dtype) if masks is not None
                  else prg_lib.build_mask_prg(config.prg, quantizer.dim, quantizer.word_dtype))
    self.graph_fn = graph_fn or graph_lib.harary_graph
    self._quantizer = quantizer
    # The active-server option's long-term identities and their registry (the
    # simulated PKI), enrolled once, before any round, one per client slot.
    self._identities, self.registry = consistency.enroll(self.num_clients) if config.active_server else ([], None)

  def parameters_for(self, num_clients: int) -> params_lib.SecAggParameters:
    if num_clients > self.num_clients:
      raise ValueError(f"{num_clients} clients, but the overflow bound was built for {self.num_clients}")
    if num_clients < self.smallest_round:
      raise ValueError(f"a round of {num_clients} clients is below the {self.smallest_round} to {self.num_clients} "
                       f"this secure sum accepts ({self.config.threat().describe()}; no parameters withstand it "
                       f"at {self.smallest_round - 1}): sample at least {self.smallest_round} clients")
    return self.parameters if num_clients == self.num_clients else self.config.protocol_parameters(num_clients)

  def new_protocol_round(self, num_clients: int, round_num: int,
                         rounding_rng: Optional[np.random.Generator] = None) -> protocol_lib.SecAggRound:
    """Stages 0-1 (keys and shares) for `num_clients` clients; fresh keys every call."""
    if self.config.active_server:  # signed keys and the consistency check (`consistency`)
      return consistency.ActiveSecAggRound(
          self.parameters_for(num_clients), round_num, self._identities, self.registry,
          order_seed=graph_order_seed(self.config.graph_seed, round_num), rounding_rng=rounding_rng,
          graph_fn=self.graph_fn)
    return protocol_lib.SecAggRound(self.parameters_for(num_clients), round_num,
                                    graph_order_seed(self.config.graph_seed, round_num), rounding_rng,
                                    graph_fn=self.graph_fn)

  def start_round(self, num_clients: int, round_num: int, dropped: Iterable[int] = (),
                  rounding_rng: Optional[np.random.Generator] = None) -> SecureRound:
    """Stages 0-1, then the release check for these dropouts (SecureAggregationError if unsafe)."""
    dropped = sorted(set(int(d) for d in dropped))
    if any(not 0 <= d < num_clients for d in dropped):
      raise ValueError(f"dropped clients must be indices in [0, {num_clients})")
    rnd = self.new_protocol_round(num_clients, round_num, rounding_rng)
    survivors = [u for u in range(num_clients) if u not in set(dropped)]
    rnd.check_release(survivors, dropped)
    return SecureRound(rnd, round_num, survivors, dropped)

  def client_materials(self, rnd: protocol_lib.SecAggRound, ids: Iterable[int]) -> list[Any]:
    """Stage 2: the CLIENTS-placed mask material of clients `ids`."""
    ids = list(ids)
    return [self.masks.client_material(seeds, rounding) for seeds, rounding in
            zip(rnd.mask_seeds(ids), rnd.rounding_seeds(ids))]

  def correction(self, rnd: protocol_lib.SecAggRound, counted: int, survivors: Sequence[int],
                 dropped: Sequence[int]) -> Any:
    """Stage 3: the SERVER-placed material that removes the masks the survivors' sum still holds."""
    if counted != len(survivors) or counted > self.num_clients:
      raise protocol_lib.SecureAggregationError(
          f"round {rnd.round_num}: the server counted {counted} masked vectors, expected {len(survivors)} "
          f"(at most {self.num_clients}): no aggregate is released")
    return self.masks.server_material(rnd.unmask(survivors, dropped))

  def release(self) -> None:
    """Frees the materials' memory files (after the computations that read them returned)."""
    self.masks.release()

  def upload_bytes(self, rnd: protocol_lib.SecAggRound) -> int:
    """Per client: the masked vector and the protocol's messages."""
    return self._quantizer.upload_bytes() + rnd.protocol_upload_bytes()
