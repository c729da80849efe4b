"""Client data built on the workers: a round sends each client's file name and row order, not its windows.

`WorkerData(data, data_dir)` writes every client's int32 windows of every
split to `data_dir` (`export`), one file per client and split, named by a
hash of the client, the split and the windows themselves, in 256
subdirectories by the name's first two hex digits (a corpus of a million
clients would crowd one directory). A round then sends
each sampled client only that name and the order of its windows
(`NWPData.row_order`: the same seeds, epochs and cap as the driver-side
`client_dataset`), and `dataset_computation` builds the batches inside the
federated computation, on the worker, from `data_dir` on the worker's own
file system (`learning.process.with_datasets_built_by` composes it with the
processes: `tff.simulation.compose_dataset_computation_with_computation`).
Same windows in the same order, so the same weights, bit for bit.

Naming files by content means a worker holding other data (another
vocabulary, another split) cannot be read by mistake: its files have other
names, and the round stops with one line naming the missing file
(`WorkerDataError`). Copy `data_dir` to every worker host, at the same path
(docs/distributed.md).
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_research.data import federated_text
from tff_research.data import nwp

FILE_SUFFIX = ".tensor"
# What a round sends for one client: its file's name and the order of its windows.
CLIENT_INPUT_TYPE = tff.StructType([("key", np.str_), ("order", tff.TensorType(np.int32, [None]))])
_MISSING_FILE = re.compile(r"(\S+" + re.escape(FILE_SUFFIX) + r"); No such file or directory")


class WorkerDataError(federated_text.DataError):
  """A worker lacks a client's file: its data directory holds other data, or none."""


class WorkerData:
  """Every split of `data` as per-client files under `data_dir`, and the computation that reads them.

  `client_datasets(client_ids, spec, split, seed, round_num)` takes the
  arguments of `NWPData.client_datasets` and returns what a round sends in
  their place, one `CLIENT_INPUT_TYPE` value per client.
  """

  def __init__(self, data: nwp.NWPData, data_dir: str):
    if not data_dir:
      raise ValueError("--worker_data_dir is empty: name the directory the workers read client data from")
    self.data = data
    self.data_dir = os.path.abspath(data_dir)
    self._keys = {(split, client): _file_key(split, client, rows)
                  for split in nwp.SPLITS for client, rows in getattr(data, split).items()}

  def export(self) -> tuple[int, int]:
    """Writes the files `data_dir` lacks (atomically); returns (files written, files in all)."""
    os.makedirs(self.data_dir, exist_ok=True)
    written = 0
    for (split, client), key in self._keys.items():
      path = self._path(key)
      if os.path.exists(path):
        continue
      os.makedirs(os.path.dirname(path), exist_ok=True)
      rows = getattr(self.data, split)[client]
      with open(path + ".tmp", "wb") as f:
        f.write(tf.make_tensor_proto(np.ascontiguousarray(rows, dtype=np.int32)).SerializeToString())
      os.replace(path + ".tmp", path)
      written += 1
    return written, len(self._keys)

  def _path(self, key: str) -> str:
    return os.path.join(self.data_dir, key[:2], key + FILE_SUFFIX)

  def client_datasets(self, client_ids: Sequence[str], spec: nwp.ClientSpec, split: str = "train",
                      seed: int = 0, round_num: int = 0) -> list[dict[str, Any]]:
    return [{"key": np.str_(self._keys[(split, c)]),
             "order": self.data.row_order(c, spec, split, seed, round_num)} for c in client_ids]

  def dataset_computation(self, batch_size: int) -> tff.Computation:
    """(key, order) -> the client's batches of (x, y), read from `data_dir` where the computation runs."""
    data_dir, width = self.data_dir, self.data.sequence_length + 1

    @tff.tensorflow.computation(CLIENT_INPUT_TYPE)
    def client_dataset(client):
      path = tf.strings.join([data_dir, "/", tf.strings.substr(client.key, 0, 2), "/", client.key, FILE_SUFFIX])
      rows = tf.ensure_shape(tf.io.parse_tensor(tf.io.read_file(path), tf.int32), [None, width])
      rows = tf.gather(rows, client.order)
      return tf.data.Dataset.from_tensor_slices((rows[:, :-1], rows[:, 1:])).batch(batch_size)

    return client_dataset

  def summary(self, written: int, total: int) -> str:
    return (f"client data on the workers: {total} client files in {self.data_dir} ({written} written now); "
            "every worker reads them at that path on its own host")


def _file_key(split: str, client_id: str, rows: np.ndarray) -> str:
  digest = hashlib.sha256()
  for part in (split, client_id, repr(rows.shape)):
    digest.update(part.encode("utf-8") + b"\0")
  digest.update(np.ascontiguousarray(rows, dtype=np.int32).tobytes())
  return digest.hexdigest()[:40]


def missing_file_error(error: BaseException, data_dir: str) -> WorkerDataError | None:
  """The one-line error for a worker's failed read of a client file, or None when `error` is something else."""
  match = _MISSING_FILE.search(str(error))
  if match is None:
    return None
  return WorkerDataError(f"a worker has no {match.group(1)}: its --worker_data_dir={data_dir} lacks this run's "
                         "client data (copy the driver's directory there, or run the same command with "
                         "--export_worker_data_only on that host; docs/distributed.md)")
