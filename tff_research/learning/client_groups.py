"""An interactive learning process's client round run on groups of clients, one call after another.

TFF's mergeable context streams a call's clients through a worker in
`num_subrounds` groups (`runtime.context`), but it is handed the whole
round's CLIENTS-placed arguments at once: for the secure sum, every
survivor's mask material (a model-sized vector each, 9.3 MB at the
reference model: 9.3 GB for 1,000 clients, all made before the call). Here
the client round is split where TFF itself splits it, by TFF's own compiler
(`tff.backends.native.compile_to_mergeable_comp_form`: the work up to the
round's aggregations, their merge, and the work after them), and each group
is one call whose materials are made just before it and freed once it has
been computed:

  first(state, data_1, material_1)        -> acc = up_to_merge(...)
  middle(state, data_g, material_g, acc)  -> acc = merge(acc, up_to_merge(...))
  last(state, data_G, material_G, acc)    -> after_merge(arg, merge(acc, up_to_merge(arg)))

`last` returns what the client round returns. The merge is the aggregations'
own (TFF's `federated_aggregate` merge functions), so the result is the one
call's: the masked sum (integer words mod 2^w) exactly, metrics up to the
order in which their floats are added. `after_merge` takes the last group's
argument, as TFF's context gives it each group's; what it would compute on
clients feeds no output and is not run (it does not read the materials).
"""
from __future__ import annotations

import collections
from typing import Any, Sequence

import tensorflow as tf
import tensorflow_federated as tff


def split(members: Sequence[int], num_groups: int) -> list[list[int]]:
  """`members` in order, in `num_groups` groups (fewer if there are fewer members), sizes within one, larger first.

  Two sizes at most, so the calls use at most two CLIENTS cardinalities
  (each cardinality is its own executor on the worker: `runtime.resident`).
  """
  members = list(members)
  num_groups = max(1, min(int(num_groups), len(members)))
  size, extra = divmod(len(members), num_groups)
  groups, start = [], 0
  for g in range(num_groups):
    end = start + size + (1 if g < extra else 0)
    groups.append(members[start:end])
    start = end
  return groups


def _digest_of(member_type):
  """A scalar that needs every leaf of a value: fetching it makes the worker compute the value."""
  @tff.tensorflow.computation(member_type)
  def digest(value):
    leaves = tff.structure.flatten(value) if isinstance(value, tff.structure.Struct) else tf.nest.flatten(value)
    firsts = [tf.reduce_sum(tf.cast(tf.reshape(x, [-1])[:1], tf.float64)) for x in leaves]
    return tf.add_n(firsts) if firsts else tf.constant(0.0, tf.float64)
  return digest


class GroupedClientRound:
  """`client_round` (state@S, data@C, material@C) -> result@S, as three computations for groups (module docstring).

  Args:
    client_round: the client round of an `InteractiveLearningProcess`
      (`composers`), or the same composed with a dataset computation.
  """

  def __init__(self, client_round: tff.Computation):
    self.client_round = client_round
    form = tff.backends.native.compile_to_mergeable_comp_form(client_round)
    state_type, data_type, material_type = [t for _, t in tff.structure.iter_elements(
        client_round.type_signature.parameter)]
    acc_type = form.up_to_merge.type_signature.result
    digest = _digest_of(acc_type.member)

    def merged(state, data, material, acc):
      part = form.up_to_merge(state, data, material)
      return tff.federated_map(form.merge, tff.federated_zip([acc, part]))

    @tff.federated_computation(state_type, data_type, material_type)
    def first(state, data, material):
      acc = form.up_to_merge(state, data, material)
      return collections.OrderedDict(acc=acc, digest=tff.federated_map(digest, acc))

    @tff.federated_computation(state_type, data_type, material_type, acc_type)
    def middle(state, data, material, acc):
      acc = merged(state, data, material, acc)
      return collections.OrderedDict(acc=acc, digest=tff.federated_map(digest, acc))

    @tff.federated_computation(state_type, data_type, material_type, acc_type)
    def last(state, data, material, acc):
      return form.after_merge([state, data, material], merged(state, data, material, acc))

    self.first, self.middle, self.last = first, middle, last

  def __call__(self, call, state: Any, groups: Sequence[tuple[list[Any], Any]], release, keep) -> Any:
    """The client round's result over `groups`, one call each.

    Args:
      call: `runtime.resident.call` or a plain call, `call(comp, *args, keep=..., chain_step=...)`.
      state: the learning process's state (a handle or a value).
      groups: (datasets, materials_fn) per group; `materials_fn()` makes the
        group's materials just before its call.
      release: frees the materials made so far (called once a group's call was computed).
      keep: the result names the last call keeps on the worker.

    Returns:
      What `client_round(state, all data, all materials)` returns.
    """
    acc = None
    for index, (data, materials_fn) in enumerate(groups):
      materials = materials_fn()
      if index == len(groups) - 1:
        return call(self.last, state, data, materials, acc, keep=keep, chain_step=0)
      comp, args = (self.first, ()) if acc is None else (self.middle, (acc,))
      # `digest` comes back to Python: the worker has computed `acc`, so it
      # has read this group's materials, which may now be freed.
      acc = call(comp, state, data, materials, *args, keep=("acc",), chain_step=0)["acc"]
      release()
    raise ValueError("no group of clients")
