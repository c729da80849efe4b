"""Checkpoints that are either complete or absent: `tff.program` state, written atomically.

`tff.program.FileProgramStateManager` writes a SavedModel straight into
`round_N/`; a kill during that write leaves a directory that `load_latest`
then fails to read. Here the state is first written under `.partial/` (which
`get_versions` ignores, its name lacking the prefix) and renamed into place,
and a rename on one file system is atomic.
"""
from __future__ import annotations

import os
import shutil

import tensorflow_federated as tff

PARTIAL_DIR = ".partial"


class AtomicFileProgramStateManager(tff.program.FileProgramStateManager):
  """A `FileProgramStateManager` whose `save` never leaves a half-written version."""

  def __init__(self, root_dir: str, prefix: str = "round_", keep_total: int = 5,
               keep_first: bool = True, keep_every_k: int = 1):
    super().__init__(root_dir, prefix=prefix, keep_total=keep_total, keep_first=keep_first,
                     keep_every_k=keep_every_k)
    self._root = str(root_dir)
    self._partial_root = os.path.join(self._root, PARTIAL_DIR)
    self._writer = tff.program.FileProgramStateManager(self._partial_root, prefix=prefix, keep_total=0)

  async def save(self, program_state, version: int) -> None:
    final_path = self._get_path_for_version(version)
    if os.path.exists(final_path):
      raise tff.program.ProgramStateExistsError(version=version, path=self._root)
    partial_path = os.path.join(self._partial_root, os.path.basename(final_path))
    if os.path.exists(partial_path):  # left by a process killed mid-write
      shutil.rmtree(partial_path)
    await self._writer.save(program_state, version)
    os.replace(partial_path, final_path)
    await self._remove_old_program_state()


FINAL_WEIGHTS_FILE = "model_weights.npz"


def save_model_weights(model_weights: tff.learning.models.ModelWeights, path: str) -> None:
  """Final weights as plain numpy arrays (trainable then non-trainable), written atomically."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  arrays = {}
  for kind in ("trainable", "non_trainable"):
    for i, value in enumerate(getattr(model_weights, kind)):
      arrays[f"{kind}_{i:04d}"] = np.asarray(value)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_model_weights(path: str) -> tff.learning.models.ModelWeights:
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no saved model weights at {path}")
  with np.load(path) as data:
    keys = sorted(data.files)
    trainable = [data[k] for k in keys if k.startswith("trainable_")]
    non_trainable = [data[k] for k in keys if k.startswith("non_trainable_")]
  return tff.learning.models.ModelWeights(trainable=trainable, non_trainable=non_trainable)
