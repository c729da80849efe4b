"""Test hosts on one machine: a driver network namespace joined to worker namespaces by veth pairs.

Used by tests/test_several_hosts.py and benchmarks/remote_bytes.py. Needs root
and iproute2; `Hosts.create` raises OSError (one line) where namespaces cannot
be made. Addresses are 10.231.i.1 (driver side) and 10.231.i.2 (worker i).
"""
import json
import os
import subprocess

PORT = 8000
WORKERS = 2  # the default number of worker namespaces


def ip_command(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


class Hosts:
  """A driver namespace joined to WORKERS worker namespaces by veth pairs (created here, removed by `remove`)."""

  def __init__(self, workers: int = WORKERS):
    tag = f"{os.getpid() % 100000}"
    self.driver = f"tffr{tag}d"
    self.workers = [f"tffr{tag}w{i}" for i in range(1, workers + 1)]
    self.links = [(f"tv{tag}d{i}", f"tv{tag}w{i}") for i in range(1, len(self.workers) + 1)]

  def create(self) -> None:
    for namespace in [self.driver, *self.workers]:
      self._run("netns", "add", namespace)
      self._run("-n", namespace, "link", "set", "lo", "up")
    for i, (namespace, (driver_end, worker_end)) in enumerate(zip(self.workers, self.links), start=1):
      self._run("link", "add", driver_end, "netns", self.driver, "type", "veth", "peer", "name", worker_end,
                "netns", namespace)
      self._run("-n", self.driver, "addr", "add", f"10.231.{i}.1/24", "dev", driver_end)
      self._run("-n", namespace, "addr", "add", f"10.231.{i}.2/24", "dev", worker_end)
      self._run("-n", self.driver, "link", "set", driver_end, "up")
      self._run("-n", namespace, "link", "set", worker_end, "up")

  def addresses(self) -> list[str]:
    return [f"10.231.{i}.2:{PORT}" for i in range(1, len(self.workers) + 1)]

  def interfaces(self, namespace: str) -> list[str]:
    return [link["ifname"] for link in json.loads(self._run("-n", namespace, "-j", "link", "show").stdout)]

  def received_bytes(self, i: int) -> int:
    """Bytes worker i (from 0) has received over its veth pair."""
    return self._bytes(i, "rx")

  def sent_bytes(self, i: int) -> int:
    """Bytes worker i (from 0) has sent over its veth pair."""
    return self._bytes(i, "tx")

  def _bytes(self, i: int, direction: str) -> int:
    namespace, (_, worker_end) = self.workers[i], self.links[i]
    (link,) = json.loads(self._run("-n", namespace, "-s", "-j", "link", "show", "dev", worker_end).stdout)
    return int(link["stats64"][direction]["bytes"])

  def remove(self) -> None:
    for namespace in [self.driver, *self.workers]:  # a namespace's veth ends go with it
      ip_command("netns", "del", namespace)

  def _run(self, *args: str) -> subprocess.CompletedProcess:
    result = ip_command(*args)
    if result.returncode:
      raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result
