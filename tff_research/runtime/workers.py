"""TFF `worker_binary` processes that cannot outlive the Python that owns them.

TFF's own local context starts `worker_binary` lazily and stops it only from a
`__del__` that sends SIGINT and waits. After a normal exit, an exception, a
SIGTERM or a SIGKILL of Python the worker is left running, still computing and
holding the parent's pipes open (hangs CI and `| tee`); with SIGINT ignored
(background jobs) the `__del__` deadlocks. So we start the worker ourselves:

* in the main thread, with `PR_SET_PDEATHSIG=SIGKILL`, so the kernel kills it
  when its parent dies, even by SIGKILL;
* with SIGINT restored to default and its own stdin closed;
* registered in a process-wide registry that an `atexit` hook and a SIGTERM
  handler drain with SIGKILL (no waiting on a worker that may never answer).

`reap_stray_workers()` also ends any `worker_binary` child that TFF's own
default context started, as a last line of defence.
"""
from __future__ import annotations

import asyncio
import atexit
import ctypes
import os
import signal
import socket
import subprocess
import threading
from typing import Optional

from tff_research.runtime import tff_internals

_PR_SET_PDEATHSIG = 1
_REGISTRY: "set[ManagedWorker]" = set()
_REGISTRY_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


class WorkerError(RuntimeError):
  """A TFF worker could not be found, started or reached."""


def find_worker_binary() -> str:
  """Path of the `worker_binary` shipped inside the installed TFF wheel."""
  try:
    return tff_internals.worker_binary_path()
  except tff_internals.TffInternalsError as e:
    raise WorkerError(str(e)) from e


def pick_free_port(host: str = "127.0.0.1") -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind((host, 0))
    return sock.getsockname()[1]


def _die_with_parent() -> None:
  """Runs in the child between fork and exec."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  try:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  except OSError:
    pass


# How the worker's glibc malloc is set up, chosen with TFF_RESEARCH_WORKER_MALLOC
# (measured on the demo round, BENCHMARKS.md "Memory over long runs"):
#
# * "arena1" (default): MALLOC_ARENA_MAX=1. With glibc's defaults TF's many
#   threads spread the per-client, model-sized tensors over up to 8 arenas
#   per core that fragment and never shrink (worker peak 1.11 -> 1.36 GB over
#   50 rounds, still rising); one arena keeps the heap's holes reusable (0.98
#   -> 1.14 GB, flat over the last 20 rounds), and tensors up to 32 MB still
#   come from the heap, already mapped, so rounds stay fast.
# * "mmap": the earlier default, MALLOC_MMAP_THRESHOLD_=131072 with huge pages:
#   every tensor over 128 KB is a fresh mmap that the kernel zeroes page by
#   page (2-3x the kernel time of "arena1"; rounds 5-10 % slower), for a
#   similar peak.
# * "glibc": glibc's own defaults (for comparisons).
#
# A variable already in the environment wins over the profile's.
WORKER_MALLOC_PROFILES = {
    "arena1": {"MALLOC_ARENA_MAX": "1"},
    "mmap": {"MALLOC_MMAP_THRESHOLD_": "131072", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "glibc": {},
}
DEFAULT_WORKER_MALLOC = "arena1"


def worker_environment(max_concurrent_computation_calls: int = -1) -> dict[str, str]:
  """The environment a local worker starts with: ours, its malloc profile, its TF threads.

  With a limit of N concurrent computations on a machine of C cores, each
  computation gets C // N intra-op threads (TF_NUM_INTRAOP_THREADS), so that
  together they fill the cores without oversubscribing them.
  """
  env = dict(os.environ)
  profile = env.get("TFF_RESEARCH_WORKER_MALLOC") or DEFAULT_WORKER_MALLOC
  if profile not in WORKER_MALLOC_PROFILES:
    raise WorkerError(f"TFF_RESEARCH_WORKER_MALLOC={profile!r} is not one of: "
                      f"{', '.join(WORKER_MALLOC_PROFILES)}")
  for key, value in WORKER_MALLOC_PROFILES[profile].items():
    env.setdefault(key, value)
  if max_concurrent_computation_calls > 0:
    threads = max(1, (os.cpu_count() or 1) // max_concurrent_computation_calls)
    env.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
  return env


def default_max_concurrent_computation_calls() -> int:
  """How many TF computations a local worker runs at once: one per core on up to 4 cores, else no limit (-1).

  Measured on 2 cores (BENCHMARKS.md): with no limit, the 10 clients of a
  demo round run at once, each with TF's thread pools sized for the whole
  machine, and oversubscribe it. One computation at a time with two threads
  was about 10 % faster than that; two at a time with one thread each
  (`worker_environment`) about 8 % faster again, with the same results bit
  for bit: a client's small LSTM ops use one core better than two. Machines
  with more cores keep TFF's default (no limit), which this machine could not
  measure.
  """
  cores = os.cpu_count() or 1
  return cores if cores <= 4 else -1


class ManagedWorker:
  """One `worker_binary --port=N` child process, owned by this Python process."""

  def __init__(
      self,
      port: Optional[int] = None,
      max_concurrent_computation_calls: Optional[int] = None,
      grpc_max_message_length_megabytes: Optional[int] = None,
      log_path: Optional[str] = None,
      die_with_parent: bool = True,
  ):
    self.port = port or pick_free_port()
    self.address = f"127.0.0.1:{self.port}"
    if max_concurrent_computation_calls is None:
      max_concurrent_computation_calls = default_max_concurrent_computation_calls()
    self.max_concurrent_computation_calls = max_concurrent_computation_calls
    args = [
        find_worker_binary(),
        f"--port={self.port}",
        f"--max_concurrent_computation_calls={max_concurrent_computation_calls}",
    ]
    if grpc_max_message_length_megabytes:
      args.append(f"--grpc_max_message_length_megabytes={grpc_max_message_length_megabytes}")
    self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    if threading.current_thread() is not threading.main_thread():
      # PDEATHSIG fires when the *thread* that forked dies, so only trust it
      # from the main thread; the atexit hook still covers other cases.
      die_with_parent = False
    self.process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=self._log,
        stderr=self._log,
        preexec_fn=_die_with_parent if die_with_parent else None,
        close_fds=True,
        env=worker_environment(max_concurrent_computation_calls),
    )
    _register(self)

  @property
  def pid(self) -> int:
    return self.process.pid

  def is_running(self) -> bool:
    return self.process.poll() is None

  def stop(self, timeout: float = 5.0) -> None:
    """Kills the worker (SIGKILL: it holds no state worth a graceful stop)."""
    if self.process.poll() is None:
      try:
        self.process.kill()
      except ProcessLookupError:
        pass
      try:
        self.process.wait(timeout=timeout)
      except subprocess.TimeoutExpired:
        pass
    if self._log is not subprocess.DEVNULL:
      self._log.close()
      self._log = subprocess.DEVNULL
    with _REGISTRY_LOCK:
      _REGISTRY.discard(self)

  def __repr__(self) -> str:
    state = "running" if self.is_running() else "stopped"
    return f"ManagedWorker(pid={self.pid}, address={self.address}, {state})"


def _register(worker: ManagedWorker) -> None:
  with _REGISTRY_LOCK:
    _REGISTRY.add(worker)
  install_exit_hooks()


def stop_all_workers() -> None:
  """Stops every worker this process started, then any stray TFF worker child."""
  with _REGISTRY_LOCK:
    workers = list(_REGISTRY)
  for worker in workers:
    worker.stop()
  reap_stray_workers()


def worker_cpu_seconds() -> float:
  """User + system CPU seconds used so far by this process's `worker_binary` children
  (benchmarks difference it around a round: where the work of a round went)."""
  import psutil  # pylint: disable=g-import-not-at-top
  total = 0.0
  for pid in running_worker_pids(descendants_of=os.getpid()):
    try:
      times = psutil.Process(pid).cpu_times()
    except psutil.Error:
      continue
    total += times.user + times.system
  return total


def worker_binary_children() -> list:
  """The `worker_binary` processes that descend from this one (psutil processes; empty if it cannot look)."""
  try:
    import psutil  # pylint: disable=g-import-not-at-top
    children = psutil.Process(os.getpid()).children(recursive=True)
  except Exception:  # pylint: disable=broad-except
    return []
  found = []
  for child in children:
    try:
      if "worker_binary" in " ".join(child.cmdline()[:1]):
        found.append(child)
    except Exception:  # pylint: disable=broad-except
      continue
  return found


def reap_stray_workers(keep: frozenset[int] = frozenset()) -> list[int]:
  """Kills the `worker_binary` processes that descend from this process, but those in `keep`; returns their pids."""
  killed = []
  for child in worker_binary_children():
    if child.pid in keep:
      continue
    try:
      child.kill()
      killed.append(child.pid)
    except Exception:  # pylint: disable=broad-except
      continue
  return killed


_EXIT_PENDING = False


def _raise_exit(code: int) -> None:
  raise SystemExit(code)


def _on_sigterm(signum, frame):  # pylint: disable=unused-argument
  """Stops the workers, then exits by raising SystemExit in the main thread, so
  `finally` blocks (and saved state) unwind.

  When the signal lands inside a task of an event loop the main thread runs (a
  `tff.program` save or release in `asyncio.run`), raising here would raise
  inside that task; asyncio then re-raises it from the tasks that await it and
  logs "Task exception was never retrieved" with the whole traceback at exit.
  The exit is raised from a loop callback instead, the way asyncio itself
  defers Ctrl-C: it stops the loop at its next step and `asyncio.run` cancels
  the tasks cleanly. Outside a task, or on a second SIGTERM, it exits at once.
  """
  global _EXIT_PENDING
  stop_all_workers()
  code = 128 + signum
  try:
    loop = asyncio.get_running_loop()
  except RuntimeError:
    loop = None
  if loop is None or _EXIT_PENDING or asyncio.current_task(loop) is None:
    raise SystemExit(code)
  _EXIT_PENDING = True
  loop.call_soon_threadsafe(_raise_exit, code)


def install_exit_hooks() -> None:
  """atexit + SIGTERM handling; idempotent. SIGINT already raises KeyboardInterrupt."""
  global _HOOKS_INSTALLED
  if _HOOKS_INSTALLED:
    return
  _HOOKS_INSTALLED = True
  atexit.register(stop_all_workers)
  if threading.current_thread() is threading.main_thread():
    try:
      if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
      pass


def wait_until_serving(address: str, timeout: float = 30.0) -> None:
  """Blocks until a gRPC channel to `address` is ready."""
  import grpc  # pylint: disable=g-import-not-at-top
  channel = grpc.insecure_channel(address)
  try:
    grpc.channel_ready_future(channel).result(timeout=timeout)
  except grpc.FutureTimeoutError as e:
    raise WorkerError(f"no TFF worker answered at {address} within {timeout:.0f} s") from e
  finally:
    channel.close()


def running_worker_pids(descendants_of: Optional[int] = None) -> list[int]:
  """PIDs of running `worker_binary` processes: all, or those below one process."""
  import psutil  # pylint: disable=g-import-not-at-top
  if descendants_of is None:
    procs = psutil.process_iter(["pid", "cmdline", "status"])
  else:
    try:
      procs = psutil.Process(descendants_of).children(recursive=True)
    except psutil.NoSuchProcess:
      return []
  pids = []
  for proc in procs:
    try:
      cmd = proc.cmdline()
      if cmd and cmd[0].endswith("worker_binary") and proc.status() != psutil.STATUS_ZOMBIE:
        pids.append(proc.pid)
    except psutil.Error:
      continue
  return pids

