"""A lost worker becomes an error naming it, instead of a round that never ends.

TFF 0.87's contexts treat gRPC's UNAVAILABLE as retryable and retry it
forever (backoff up to 30 s): a killed worker leaves the driver waiting, with
no message, until something answers on that port again, and nothing moves the
dead worker's clients to the others. So while a remote call is in flight
(`WorkerWatch.guard()`), a thread here opens a TCP connection to each worker
every `interval` seconds; a worker that has not accepted one for
`lost_after` seconds is lost, and the main thread is interrupted (SIGUSR1,
whose handler raises `WorkerLostError`) wherever it waits.

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


class WorkerLostError(RuntimeError):
  """A worker stopped answering for longer than the watch allows."""

  def __init__(self, address: str, seconds: float):
    self.address = address
    self.seconds = seconds
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
    return (f"worker {self.address} lost{where}: no connection for {self.seconds:.0f} s{kept}; "
            "restart it at the same address and rerun the same command to resume")


def reachable(address: str, timeout: float) -> bool:
  """Whether a TCP connection to `host:port` opens within `timeout` seconds."""
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
      return True
  except OSError:
    return False


class WorkerWatch:
  """Probes a set of workers in a background thread; `guard()` turns a loss into `WorkerLostError`."""

  def __init__(self, addresses: Sequence[str], lost_after: float = 60.0, interval: float = 1.0):
    if lost_after <= 0:
      raise ValueError(f"--worker_timeout must be positive (seconds), got {lost_after}")
    self.addresses = list(addresses)
    self.lost_after = lost_after
    self.interval = min(interval, lost_after / 2)
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
          self._lost = WorkerLostError(address, now - since)
      if self._lost is not None and self._armed.is_set():
        signal.pthread_kill(self._main.ident, _INTERRUPT)
        return

  def _on_interrupt(self, signum, frame) -> None:  # pylint: disable=unused-argument
    if self._lost is not None and self._armed.is_set():
      self._armed.clear()
      raise self._lost

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
    finally:
      self._armed.clear()
      if in_main:
        signal.signal(_INTERRUPT, previous)
    if self._lost is not None:
      raise self._lost
