"""A lost worker becomes an error naming it, instead of a round that never ends.

TFF 0.87's contexts treat gRPC's UNAVAILABLE as retryable and retry it
forever (backoff up to 30 s): a killed worker leaves the driver waiting, with
no message, until something answers on that port again, and nothing moves the
dead worker's clients to the others. So while a remote call is in flight
(`WorkerWatch.guard()`), a thread here opens a TCP connection to each worker
every `interval` seconds; a worker that has not accepted one for
`lost_after` seconds is lost, and the main thread is interrupted (SIGUSR1,
whose handler raises `WorkerLostError`) wherever it waits.

Calls that do not go through TFF's retrying contexts (`runtime.resident`'s,
with one worker) fail at once with UNAVAILABLE instead; inside `guard()` such
a failure, with the worker accepting no connection, is the same error.

What the caller does then is its choice; the training loop stops before the
unfinished round's checkpoint, so the run's last checkpoint is intact and a
rerun, once the worker is back, resumes from it (docs/distributed.md).
"""
from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Iterator, Optional, Sequence

_INTERRUPT = signal.SIGUSR1
REMOTE_REMEDY = "restart it at the same address and rerun the same command to resume"
LOCAL_REMEDY = "rerun the same command to resume (it starts a new local worker)"


class WorkerLostError(RuntimeError):
  """A worker stopped answering for longer than the watch allows."""

  def __init__(self, address: str, seconds: float, remedy: str = REMOTE_REMEDY):
    self.address = address
    self.seconds = seconds
    self.remedy = remedy
    self.round_num: Optional[int] = None  # the round it interrupted, set by the training loop
    super().__init__(self._text())

  def during_round(self, round_num: int) -> WorkerLostError:
    self.round_num = round_num
    self.args = (self._text(),)
    return self

  def _text(self) -> str:
    where = f" during round {self.round_num}" if self.round_num is not None else ""
    if self.round_num is None:
      kept = ""
    elif self.round_num > 1:
      kept = f"; the checkpoint of round {self.round_num - 1} is intact"
    else:
      kept = "; no round had finished"
    why = (f"no connection for {self.seconds:.0f} s" if self.seconds else
           "a call to it failed and it accepts no connection")
    return f"worker {self.address} lost{where}: {why}{kept}; {self.remedy}"


def reachable(address: str, timeout: float) -> bool:
  """Whether a TCP connection to `host:port` opens within `timeout` seconds."""
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
      return True
  except OSError:
    return False


def _is_unavailable(error: BaseException) -> bool:
  """Whether `error` (or what it wraps) is gRPC's UNAVAILABLE: the worker's end of the channel is gone."""
  import grpc  # pylint: disable=g-import-not-at-top
  seen = 0
  while error is not None and seen < 5:
    if type(error).__name__ == "RetryableGRPCError":  # TFF's wrapper (executors_errors)
      return True
    if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
      return error.code() == grpc.StatusCode.UNAVAILABLE
    error, seen = error.__cause__ or error.__context__, seen + 1
  return False


_PROBES_AFTER_FAILURE = 5


class WorkerWatch:
  """Probes a set of workers in a background thread; `guard()` turns a loss into `WorkerLostError`."""

  def __init__(self, addresses: Sequence[str], lost_after: float = 60.0, interval: float = 1.0,
               remedy: str = REMOTE_REMEDY):
    if lost_after <= 0:
      raise ValueError(f"--worker_timeout must be positive (seconds), got {lost_after}")
    self.addresses = list(addresses)
    self.lost_after = lost_after
    self.interval = min(interval, lost_after / 2)
    self.remedy = remedy  # the error's advice: a remote worker must be restarted, a local one is started anew
    self._lost: Optional[WorkerLostError] = None
    self._armed = threading.Event()
    self._stop = threading.Event()
    self._main = threading.main_thread()
    self._thread = threading.Thread(target=self._probe_forever, name="worker-watch", daemon=True)
    self._thread.start()

  @property
  def lost(self) -> Optional[WorkerLostError]:
    return self._lost

  def stop(self) -> None:
    self._stop.set()

  def _probe_forever(self) -> None:
    unanswered_since: dict[str, float] = {}
    while not self._stop.wait(self.interval):
      now = time.monotonic()
      for address in self.addresses:
        if reachable(address, timeout=self.interval):
          unanswered_since.pop(address, None)
          continue
        since = unanswered_since.setdefault(address, now)
        if self._lost is None and now - since >= self.lost_after:
          self._lost = WorkerLostError(address, now - since, self.remedy)
      if self._lost is not None and self._armed.is_set():
        signal.pthread_kill(self._main.ident, _INTERRUPT)
        return

  def _on_interrupt(self, signum, frame) -> None:  # pylint: disable=unused-argument
    if self._lost is not None and self._armed.is_set():
      self._armed.clear()
      raise self._lost

  def _unreachable(self) -> Optional[WorkerLostError]:
    """The loss of the first worker that accepts no connection now, after a call failed as unavailable.

    No grace period: the call that failed is gone with whatever the worker held.
    A killed process's connections may close before its listening socket
    does, so a probe made at once can still connect: a worker is probed a
    few times over about a second before it counts as reachable.
    """
    for probe in range(_PROBES_AFTER_FAILURE):
      for address in self.addresses:
        if not reachable(address, timeout=self.interval):
          self._lost = self._lost or WorkerLostError(address, 0.0, self.remedy)
          return self._lost
      if probe < _PROBES_AFTER_FAILURE - 1:
        time.sleep(0.25)
    return None

  @contextlib.contextmanager
  def guard(self) -> Iterator[None]:
    """Runs the block; raises `WorkerLostError` as soon as a worker is lost, even mid-call.

    Outside the main thread no signal can reach the waiting call: the loss is
    then raised when the block ends (or at the next `guard()`).
    """
    if self._lost is not None:
      raise self._lost
    in_main = threading.current_thread() is self._main
    previous = signal.signal(_INTERRUPT, self._on_interrupt) if in_main else None
    self._armed.set()
    try:
      yield
    except Exception as error:  # pylint: disable=broad-except
      # Calls made outside TFF's retrying contexts (runtime.resident's) fail at once instead.
      lost = self._unreachable() if _is_unavailable(error) else None
      if lost is None:
        raise
      raise lost from None
    finally:
      self._armed.clear()
      if in_main:
        signal.signal(_INTERRUPT, previous)
    if self._lost is not None:
      raise self._lost
