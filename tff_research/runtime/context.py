"""Execution contexts: TFF's C++ runtime on one machine or on several workers.

`use_local_runtime()` is the default: one `ManagedWorker` on loopback behind a
`RemoteExecutor`, built exactly like TFF's own `local_cpp_executor_factory`
(same compiler, same executor stack, so results are bit-identical) except that
the worker's lifetime is ours: it dies with Python on every exit path.

`use_remote_workers(["host:port", ...])` connects to workers started with
`python -m tff_research.runtime.worker` (TFF's own executor service): one
worker becomes the default context, several become TFF's mergeable context,
which splits each round's clients across them.

`num_subrounds=K` (either function) streams a call's clients through the
workers in K groups, one after another where there are fewer workers than
groups: a worker then holds one group's client data and results at a time
instead of the whole round's, at the cost of the state travelling through
Python (BENCHMARKS.md, "Clients a round at scale"). A caller that streams its
clients itself, because each group needs inputs made just for it (the secure
sum's masks, `learning.composers`), reads `own_stream_groups()`: on one
worker it makes its calls inside `whole_calls()`, where they run unsplit;
with several it runs them on `worker_contexts()`, one context per worker,
several at once with `call_on_workers`.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator, Optional, Sequence

from tff_research.runtime import liveness
from tff_research.runtime import tff_internals
from tff_research.runtime import workers as workers_lib

_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ("grpc.max_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_BYTES),
]

_OWNED_WORKERS: list[workers_lib.ManagedWorker] = []
# The gRPC stub of the one worker behind the default context, when there is
# exactly one (runtime.resident keeps values on it between calls).
_SINGLE_WORKER_STUB = None
_SINGLE_WORKER_CONTEXT = None
# The default context as installed here, the groups it splits a call's clients
# into, the context `whole_calls()` installs (one worker streaming groups only)
# and, with several workers, one synchronous context per worker.
_DEFAULT_CONTEXT = None
_NUM_SUBROUNDS = 1
_WHOLE_CALL_CONTEXT = None
_WORKER_CONTEXTS: list = []
_SHUTDOWN_CALLBACKS: list[Callable[[], None]] = []
# False while the default context runs on `use_remote_workers`' workers, which
# may be on other machines (runtime.handoff then cannot reach them).
_WORKERS_ARE_LOCAL = True
# Every gRPC stub made here; `shutdown()` closes them.
_STUBS: list = []
# Probes the current context's workers (runtime.liveness); None under a context not made here.
_WATCH: Optional[liveness.WorkerWatch] = None
# Seconds without a connection after which a worker counts as lost.
DEFAULT_LOST_AFTER = 60.0


def on_shutdown(callback: Callable[[], None]) -> None:
  """Calls `callback()` whenever the contexts' workers are replaced or stopped."""
  _SHUTDOWN_CALLBACKS.append(callback)


def workers_are_local() -> bool:
  """Whether the current context's workers run on this machine (all but `use_remote_workers`)."""
  return _WORKERS_ARE_LOCAL


def own_stream_groups() -> int:
  """The groups a caller that makes inputs for each group itself splits a round's clients into.

  The installed `num_subrounds` (at least one per worker) where the default
  context streams groups or has several workers; 1 under any other context.
  On one worker the caller's calls run unsplit within `whole_calls()`; with
  several, on `worker_contexts()`: TFF's mergeable context would split each
  of them again, and a call with a SERVER-placed input merged after its
  aggregation, which such a caller's group calls have, is not one it splits
  correctly (measured: 7 clients counted for 6).
  """
  if (_WHOLE_CALL_CONTEXT is None and not _WORKER_CONTEXTS) or not _default_is_current():
    return 1
  return _NUM_SUBROUNDS


def worker_contexts() -> list:
  """With several workers behind the default context (and it current): one synchronous context per worker; else []."""
  return list(_WORKER_CONTEXTS) if _WORKER_CONTEXTS and _default_is_current() else []


def call_on_workers(calls: Sequence[tuple[Any, Callable[[], Any]]]) -> list:
  """`fn()` for each `(worker context, fn)`, all at once, each in its own thread under its context.

  Returns the results in order; the first call that raised raises here.
  The threads are daemons: if a worker is lost, `guard_worker_calls()`
  interrupts this (main) thread's wait, and a thread still waiting on the
  lost worker does not keep the process from exiting.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  results: list = [None] * len(calls)
  errors: list = [None] * len(calls)

  def run(index: int, worker_context, fn) -> None:
    try:
      with tff.framework.get_context_stack().install(worker_context):  # the stack is per thread
        results[index] = fn()
    except BaseException as error:  # pylint: disable=broad-except  (re-raised in the caller's thread)
      errors[index] = error

  threads = [threading.Thread(target=run, args=(i, c, fn), daemon=True, name=f"worker-call-{i}")
             for i, (c, fn) in enumerate(calls)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  for error in errors:
    if error is not None:
      raise error
  return results


def _default_is_current() -> bool:
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  return tff.framework.get_context_stack().current is _DEFAULT_CONTEXT


@contextlib.contextmanager
def whole_calls() -> Iterator[None]:
  """Within the block, calls run on the one worker unsplit, while the default context streams groups.

  For a caller that streams a round's clients itself (`own_stream_groups()`
  groups, one call each, module docstring): its calls must not be split
  into groups again. The block's context is the single-worker one, so
  `runtime.resident` keeps values there. Elsewhere it changes nothing.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  if _WHOLE_CALL_CONTEXT is None or not _default_is_current():
    yield
    return
  with tff.framework.get_context_stack().install(_WHOLE_CALL_CONTEXT):
    yield


def single_worker_stub():
  """The `RemoteExecutorGrpcStub` of the current context's only worker, or None.

  None as well when another context (TFF's test context, say) was installed
  over ours, and while the default context streams a call's clients in
  groups (`num_subrounds` > 1), except within `whole_calls()`.
  """
  if _SINGLE_WORKER_STUB is None:
    return None
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  if tff.framework.get_context_stack().current is not _SINGLE_WORKER_CONTEXT:
    return None
  return _SINGLE_WORKER_STUB


@functools.cache
def _worker_stub_class():
  """TFF's gRPC stub, except that freeing values on a worker is best effort.

  TFF frees a worker's values from `weakref.finalize` callbacks, which also run
  at interpreter exit. By then the worker may be gone: we stop it on every exit
  path, Ctrl-C included, and a remote worker may have died, and a failed free
  would print a gRPC traceback after the run's clean one-line message.
  Freeing memory on a worker that no longer exists has nothing left to do, so
  a closed stub frees nothing and an unreachable worker's free is dropped.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  executors_errors = tff_internals.executors_errors()

  class WorkerStub(tff.framework.RemoteExecutorGrpcStub):
    closed = False

    def _free(self, rpc, request):
      if self.closed:
        return None
      try:
        return rpc(request)
      except executors_errors.RetryableGRPCError:  # the worker is unreachable
        return None

    def dispose(self, request):
      return self._free(super().dispose, request)

    def dispose_executor(self, request):
      return self._free(super().dispose_executor, request)

  return WorkerStub


def _stub_for(address: str):
  import grpc  # pylint: disable=g-import-not-at-top
  channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
  stub = _worker_stub_class()(channel)
  _STUBS.append(stub)
  return stub


def _executor_factory(address: str, default_num_clients: int = 0, stub=None):
  """A TFF executor factory whose stacks are RemoteExecutors on `address`."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  stub = stub or _stub_for(address)

  def stack_fn(cardinalities):
    # The worker needs a CLIENTS cardinality even for server-only computations.
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = default_num_clients
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)


def _context_for(address: str, asynchronous: bool = False, default_num_clients: int = 0, stub=None):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  kind = tff.framework.AsyncExecutionContext if asynchronous else tff.framework.SyncExecutionContext
  return kind(
      executor_fn=_executor_factory(address, default_num_clients, stub),
      compiler_fn=tff.backends.native.desugar_and_transform_to_native,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


def _set_default_context(context) -> None:
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  tff.framework.get_context_stack().set_default_context(context)


def _forget_workers() -> None:
  global _SINGLE_WORKER_STUB, _SINGLE_WORKER_CONTEXT, _WATCH, _DEFAULT_CONTEXT, _WHOLE_CALL_CONTEXT, _NUM_SUBROUNDS
  _SINGLE_WORKER_STUB = _SINGLE_WORKER_CONTEXT = _DEFAULT_CONTEXT = _WHOLE_CALL_CONTEXT = None
  _NUM_SUBROUNDS = 1
  _WORKER_CONTEXTS.clear()
  if _WATCH is not None:
    _WATCH.stop()
    _WATCH = None
  for callback in _SHUTDOWN_CALLBACKS:
    callback()


def shutdown() -> None:
  """Stops the workers this process started for its contexts."""
  global _WORKERS_ARE_LOCAL
  _forget_workers()
  _WORKERS_ARE_LOCAL = True  # TFF's own default context runs its worker here
  while _STUBS:  # values still alive must not try to free themselves on a stopped worker
    _STUBS.pop().closed = True
  while _OWNED_WORKERS:
    _OWNED_WORKERS.pop().stop()
  workers_lib.reap_stray_workers()


def use_local_runtime(
    max_concurrent_computation_calls: Optional[int] = None,
    num_workers: int = 1,
    worker_log: Optional[str] = None,
    lost_after: float = DEFAULT_LOST_AFTER,
    num_subrounds: int = 1,
) -> list[workers_lib.ManagedWorker]:
  """Makes TFF run on worker(s) owned by this process; returns them.

  `max_concurrent_computation_calls=None` picks
  `workers.default_max_concurrent_computation_calls()`.

  `num_workers > 1` starts that many local workers behind TFF's mergeable
  context (mostly useful to test the multi-worker path on one machine).
  `lost_after`, `num_subrounds`: as in `use_remote_workers`.
  """
  if num_workers < 1:
    raise ValueError(f"num_workers must be at least 1, got {num_workers}")
  _check_subrounds(num_subrounds)
  shutdown()
  started = []
  for _ in range(num_workers):
    worker = workers_lib.ManagedWorker(
        max_concurrent_computation_calls=max_concurrent_computation_calls,
        log_path=worker_log,
    )
    _OWNED_WORKERS.append(worker)
    started.append(worker)
  for worker in started:
    workers_lib.wait_until_serving(worker.address)
  _install([w.address for w in started], local=True, lost_after=lost_after, num_subrounds=num_subrounds)
  return started


def guard_worker_calls():
  """A context manager: within it, a worker of the current context that stops answering raises
  `liveness.WorkerLostError` (naming it) instead of leaving TFF to retry forever."""
  return _WATCH.guard() if _WATCH is not None else contextlib.nullcontext()


def subrounds_for(clients_per_round: int, clients_per_subround: int) -> int:
  """The `num_subrounds` that gives groups of at most `clients_per_subround` (0: one group, the whole round)."""
  return -(-clients_per_round // clients_per_subround) if clients_per_subround > 0 else 1


def _check_subrounds(num_subrounds: int) -> None:
  if not isinstance(num_subrounds, int) or num_subrounds < 1:
    raise ValueError(f"num_subrounds must be a positive integer, got {num_subrounds!r}")


def use_remote_workers(addresses: Sequence[str], timeout: float = 30.0,
                       lost_after: float = DEFAULT_LOST_AFTER, num_subrounds: int = 1) -> None:
  """Makes TFF run on already-running workers at `host:port` addresses.

  Args:
    addresses: each worker's `host:port` (`python -m tff_research.runtime.worker`).
    timeout: seconds to wait for each worker to answer before giving up.
    lost_after: seconds without a connection after which a worker counts as
      lost during `guard_worker_calls()` (the training loop's rounds).
    num_subrounds: the groups each call's clients are split into (at least
      one per worker); more groups than workers run one after another.
  """
  _check_subrounds(num_subrounds)
  addresses = [a.strip() for a in addresses if a.strip()]
  if not addresses:
    raise ValueError("no worker address given (expected host:port[,host:port...])")
  for address in addresses:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
      raise ValueError(f"worker address {address!r} is not host:port")
    workers_lib.wait_until_serving(address, timeout=timeout)
  _install(addresses, local=False, lost_after=lost_after, num_subrounds=num_subrounds)


def _install(addresses: Sequence[str], local: bool, lost_after: float = DEFAULT_LOST_AFTER,
             num_subrounds: int = 1) -> None:
  global _SINGLE_WORKER_STUB, _SINGLE_WORKER_CONTEXT, _WORKERS_ARE_LOCAL, _WATCH
  global _DEFAULT_CONTEXT, _WHOLE_CALL_CONTEXT, _NUM_SUBROUNDS
  _forget_workers()
  _WORKERS_ARE_LOCAL = local
  # An owned worker can die too (the kernel's OOM killer): it is watched like a remote one.
  _WATCH = liveness.WorkerWatch(addresses, lost_after=lost_after,
                                remedy=liveness.LOCAL_REMEDY if local else liveness.REMOTE_REMEDY)
  groups = max(num_subrounds, len(addresses))
  if len(addresses) == 1:
    stub = _stub_for(addresses[0])
    _SINGLE_WORKER_STUB, _SINGLE_WORKER_CONTEXT = stub, _context_for(addresses[0], stub=stub)
    default = _SINGLE_WORKER_CONTEXT
    if groups > 1:  # streamed: TFF's mergeable context, and whole calls for callers streaming themselves
      default, _WHOLE_CALL_CONTEXT = _mergeable(addresses, groups), _SINGLE_WORKER_CONTEXT
  else:
    default = _mergeable(addresses, groups)
    _WORKER_CONTEXTS.extend(_context_for(a) for a in addresses)
  _DEFAULT_CONTEXT, _NUM_SUBROUNDS = default, groups
  _set_default_context(default)


def _mergeable(addresses: Sequence[str], groups: int):
  """TFF's mergeable context over one asynchronous context per worker, `groups` groups a call."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  return tff.backends.native.create_mergeable_comp_execution_context(
      [_context_for(a, asynchronous=True) for a in addresses], num_subrounds=groups)


@contextlib.contextmanager
def local_runtime(**kwargs) -> Iterator[list[workers_lib.ManagedWorker]]:
  """`with local_runtime(): ...` runs TFF locally and always stops the worker."""
  try:
    yield use_local_runtime(**kwargs)
  finally:
    shutdown()


@contextlib.contextmanager
def tff_test_context() -> Iterator[None]:
  """TFF's own test context (its secure intrinsics become plain sums) installed for the `with` block only.

  TFF's context starts a `worker_binary` of its own and, when garbage-collected,
  sends it SIGINT and waits: a process started with SIGINT ignored (a
  background job, as CI may run the suite) would wait forever, at whatever
  moment the collector runs. So the workers it started are killed by pid when
  the block ends, and the later wait returns at once.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  before = frozenset(child.pid for child in workers_lib.worker_binary_children())  # ours, e.g. the runtime's
  context = tff.backends.test.create_sync_test_cpp_execution_context()
  try:
    with tff.framework.get_context_stack().install(context):
      yield
  finally:
    workers_lib.reap_stray_workers(keep=before)

