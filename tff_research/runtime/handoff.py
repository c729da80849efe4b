"""Large inputs handed to a TFF worker on this machine through memory files, not gRPC.

A tensor argument of a computation travels serialized through TFF's Python
layer and gRPC: a 4.7 MB CLIENTS-placed vector cost 55-65 ms of Python CPU
per client here (BENCHMARKS.md, "Mask PRGs"), about 13 ms per MB. A worker on
the same machine reads the same bytes from a memory file (`memfd_create`)
at `/proc/<pid>/fd/<fd>` in a few milliseconds: the computation takes the
path (a string) and `read_tensor` reads it with `tf.io.read_file`. A memory
file lives in this process's memory only: it is gone when the process dies
(no data is left behind, whatever the exit), and `close()` frees it at once.

The path a computation gets is not the memory file's `/proc/<pid>/fd/<fd>`
(fd numbers are reused, so a path kept from one round would read a later
round's mask there) but a fresh symbolic link to it with a 128-bit random
name from the OS CSPRNG, in a directory only this user may open (0700, its
own name random too, on /dev/shm where it exists): unique to one material
and unguessable. `close()` removes the link before it frees the file, so a
path never resolves again after its material is released. The directory
goes at exit; a killed process leaves at most the directory and dangling
links (no data). The memory file itself stays reachable through /proc to
whoever may read this process's memory anyway (same user, ptrace rights).
"""
from __future__ import annotations

import atexit
import mmap
import os
import secrets
import shutil
import sys
import tempfile
from typing import Optional

import numpy as np

from tff_research.runtime import context as context_lib


def available() -> bool:
  """Whether computations can read memory files of this process: Linux, with the
  current context's workers on this machine (`use_remote_workers` puts them elsewhere)."""
  return (sys.platform.startswith("linux") and hasattr(os, "memfd_create")
          and os.path.isdir(f"/proc/{os.getpid()}/fd") and context_lib.workers_are_local())


_link_dir: Optional[str] = None
_link_dir_pid: Optional[int] = None


def link_directory() -> str:
  """This process's private directory of links (0700, random name), made on first use, removed at exit."""
  global _link_dir, _link_dir_pid
  if _link_dir is None or _link_dir_pid != os.getpid() or not os.path.isdir(_link_dir):
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    _link_dir = tempfile.mkdtemp(prefix="tff_research-", dir=base)  # mode 0700
    _link_dir_pid = os.getpid()
    atexit.register(shutil.rmtree, _link_dir, True)
  return _link_dir


class MemoryFile:
  """A file in this process's memory, writable as a numpy array; `path` names it for a worker.

  `path` is a link with a random name made for this file alone (module
  docstring), gone after `close()`.
  """

  def __init__(self, num_words: int, dtype: type):
    self.dtype = np.dtype(dtype)
    size = int(num_words) * self.dtype.itemsize
    self._fd = os.memfd_create("tff_research", os.MFD_CLOEXEC)
    os.ftruncate(self._fd, size)
    self._map = mmap.mmap(self._fd, size) if size else None
    self.array = np.frombuffer(self._map, self.dtype) if size else np.zeros(0, self.dtype)
    self.path = os.path.join(link_directory(), secrets.token_hex(16))
    os.symlink(f"/proc/{os.getpid()}/fd/{self._fd}", self.path)

  def close(self) -> None:
    if self._fd < 0:
      return
    try:
      os.unlink(self.path)  # first: the name never points at a later file on this fd
    except FileNotFoundError:
      pass
    self.array = None
    if self._map is not None:
      self._map.close()
    os.close(self._fd)
    self._fd = -1

  def __del__(self):
    try:
      self.close()
    except (OSError, BufferError):
      pass


def read_tensor(path, dtype, num_words: int):
  """Graph code: the `num_words` words of `dtype` (uint32 or uint64) in the file at `path`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  raw_dtype = {tf.uint32: tf.int32, tf.uint64: tf.int64}[tf.as_dtype(dtype)]
  words = tf.io.decode_raw(tf.io.read_file(path), raw_dtype)  # little-endian, like numpy here
  return tf.reshape(tf.bitcast(words, dtype), [num_words])
