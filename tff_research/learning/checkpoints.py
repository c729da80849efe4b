"""Checkpoints that are either complete or absent: `tff.program` state, written atomically.

`tff.program.FileProgramStateManager` writes a SavedModel straight into
`round_N/`; a kill during that write leaves a directory that `load_latest`
then fails to read. Here the state is first written under `.partial/` (which
`get_versions` ignores, its name lacking the prefix) and renamed into place,
and a rename on one file system is atomic.

The state's leaves go into one `state.npz` (numpy, exact) instead of a
SavedModel: each `tf.saved_model.save`/`load` leaves a few MB behind in the
process (about 3 MB per save of 13 MB of state, measured here), so a long run
grew by checkpointing alone. Checkpoints written as SavedModels by earlier
versions still load.
"""
from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import tensorflow_federated as tff

from tff_research.runtime import resident
from tff_research.runtime import tff_internals

PARTIAL_DIR = ".partial"
STATE_FILE = "state.npz"


class AtomicFileProgramStateManager(tff.program.FileProgramStateManager):
  """A `FileProgramStateManager` whose `save` never leaves a half-written version.

  A state left on the TFF worker (`runtime.resident`) is read from there
  when saved, so whoever saves need not know where the state lives.
  """

  def __init__(self, root_dir: str, prefix: str = "round_", keep_total: int = 5,
               keep_first: bool = True, keep_every_k: int = 1):
    super().__init__(root_dir, prefix=prefix, keep_total=keep_total, keep_first=keep_first,
                     keep_every_k=keep_every_k)
    self._root = str(root_dir)
    self._partial_root = os.path.join(self._root, PARTIAL_DIR)

  async def save(self, program_state, version: int) -> None:
    final_path = self._get_path_for_version(version)
    if os.path.exists(final_path):
      raise tff.program.ProgramStateExistsError(version=version, path=self._root)
    partial_path = os.path.join(self._partial_root, os.path.basename(final_path))
    if os.path.exists(partial_path):  # left by a process killed mid-write
      shutil.rmtree(partial_path)
    os.makedirs(partial_path)
    leaves = tff_internals.structure_utils().flatten(resident.fetch(program_state))
    with open(os.path.join(partial_path, STATE_FILE), "wb") as f:
      np.savez(f, **{f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
      f.flush()
      os.fsync(f.fileno())
    os.replace(partial_path, final_path)
    await self._remove_old_program_state()

  async def load(self, version: int, structure: Any) -> Any:
    path = os.path.join(self._get_path_for_version(version), STATE_FILE)
    if not os.path.isfile(path):  # a SavedModel checkpoint, as tff.program writes it
      return await super().load(version, structure)
    with np.load(path) as data:
      leaves = [data[name] for name in sorted(data.files)]
    expected = len(tff_internals.structure_utils().flatten(structure))
    if len(leaves) != expected:
      raise ValueError(f"checkpoint {path} holds {len(leaves)} values, the run's state has {expected}")
    return tff_internals.structure_utils().unflatten_as(structure, leaves)


FINAL_WEIGHTS_FILE = "model_weights.npz"


def save_model_weights(model_weights: tff.learning.models.ModelWeights, path: str) -> None:
  """Final weights as plain numpy arrays (trainable then non-trainable), written atomically."""
  arrays = {}
  for kind in ("trainable", "non_trainable"):
    for i, value in enumerate(getattr(model_weights, kind)):
      arrays[f"{kind}_{i:04d}"] = np.asarray(value)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_model_weights(path: str) -> tff.learning.models.ModelWeights:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no saved model weights at {path}")
  with np.load(path) as data:
    keys = sorted(data.files)
    trainable = [data[k] for k in keys if k.startswith("trainable_")]
    non_trainable = [data[k] for k in keys if k.startswith("non_trainable_")]
  return tff.learning.models.ModelWeights(trainable=trainable, non_trainable=non_trainable)
