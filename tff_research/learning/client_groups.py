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

`last` returns what the client round returns. On one worker the groups run
one after another (`__call__`). With several (`on_workers`), they run in
waves of one group per worker, at the same time, each worker carrying its
own `acc`; the workers' accs are then merged and one last group of a single
member ends the round, so that the round's one `last` call, which no other
call can run beside, is short. The merge is the aggregations'
own (TFF's `federated_aggregate` merge functions), so the result is the one
call's: the masked sum (integer words mod 2^w) exactly, metrics up to the
order in which their floats are added. `after_merge` takes the last group's
argument, as TFF's context gives it each group's; what it would compute on
clients feeds no output and is not run (it does not read the materials).
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_research.runtime import context as context_lib


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


def split_for_workers(members: Sequence[int], num_groups: int, num_workers: int) -> list[list[int]]:
  """Groups for `GroupedClientRound.on_workers`: whole waves of one group per worker, then the last member alone.

  At least `num_groups` groups before the last, rounded up to a multiple of
  `num_workers` (fewer where there are fewer members). One group, all of
  `members`, where there are no more members than workers.
  """
  members = list(members)
  if num_workers < 2 or len(members) <= num_workers:
    return [members]
  waves = -(-max(int(num_groups), num_workers) // num_workers)
  return split(members[:-1], waves * num_workers) + [members[-1:]]


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

    @tff.federated_computation(acc_type, acc_type)
    def merge_two(acc, other):
      return tff.federated_map(form.merge, tff.federated_zip([acc, other]))

    self.first, self.middle, self.last, self.merge_two = first, middle, last, merge_two

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

  def on_workers(self, contexts: Sequence[Any], state: Any, groups: Sequence[tuple[list[Any], Any]],
                 release) -> Any:
    """The client round's result over `groups` (`split_for_workers`), on one context per worker.

    Every group but the last runs in waves of one group per worker, the
    wave's calls at the same time (`runtime.context.call_on_workers`); a
    wave's materials are made just before it and freed once all its calls
    came back. Then the workers' accs are merged and the last group's call
    (on the first worker) returns the round's result. Values travel through
    Python: `state` must be a Python value.

    Args:
      contexts: one synchronous context per worker (`runtime.context.worker_contexts()`).
      state, groups, release: as in `__call__`.

    Returns:
      What `client_round(state, all data, all materials)` returns.
    """
    if len(groups) < 2:
      raise ValueError("on_workers needs at least two groups (split_for_workers)")
    *body, (tail_data, tail_materials_fn) = groups
    accs: list = [None] * len(contexts)
    for start in range(0, len(body), len(contexts)):
      wave = body[start:start + len(contexts)]
      calls = []
      for worker, (data, materials_fn) in enumerate(wave):
        comp, extra = (self.first, ()) if accs[worker] is None else (self.middle, (accs[worker],))
        calls.append((contexts[worker], functools.partial(comp, state, data, materials_fn(), *extra)))
      # Every result is back in Python, so every call has read its materials.
      accs[:len(wave)] = [result["acc"] for result in context_lib.call_on_workers(calls)]
      del calls  # inline masks (remote workers: no memory files) are freed with the calls holding them
      release()
    acc, *others = [a for a in accs if a is not None]
    with tff.framework.get_context_stack().install(contexts[0]):
      for other in others:
        acc = self.merge_two(acc, other)
      return self.last(state, tail_data, tail_materials_fn(), acc)
