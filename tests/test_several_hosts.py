"""Workers on other hosts, for real: each worker and the driver in a network namespace of its own.

The test makes a driver namespace and two worker namespaces, joined only by a
veth pair each (10.231.i.1 on the driver's side, 10.231.i.2 on worker i's),
starts `python -m tff_research.runtime.worker` in each worker namespace and
runs the driver (tests/netns_driver.py) in its own: every byte between them
crosses those veth pairs and nothing else (a worker's namespace has no other
interface than its loopback). FedAvg and the secure sum across the two hosts
must give the single-host result. The namespaces are removed at the end.
"""
import subprocess
import sys

import numpy as np
import pytest

from tests.netns_hosts import PORT
from tests.netns_hosts import WORKERS
from tests.netns_hosts import Hosts
from tests.netns_hosts import ip_command


@pytest.fixture
def hosts():
  made = Hosts()
  try:
    made.create()
  except (OSError, FileNotFoundError) as e:
    made.remove()
    pytest.skip(f"network namespaces cannot be made here ({e})")
  try:
    yield made
  finally:
    made.remove()
  assert not {made.driver, *made.workers} & set(ip_command("netns", "list").stdout.split())


def test_two_hosts_train_like_one_for_fedavg_and_the_secure_sum(hosts, tmp_path, python_env, repo_root,
                                                                shakespeare_dir):
  for namespace in hosts.workers:
    assert sorted(hosts.interfaces(namespace)) == sorted(["lo", hosts.links[hosts.workers.index(namespace)][1]])
  workers = [subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-m", "tff_research.runtime.worker",
                               f"--port={PORT}"], cwd=repo_root, env=python_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT) for namespace in hosts.workers]
  both, first = ",".join(hosts.addresses()), hosts.addresses()[0]
  out = tmp_path / "runs.npz"
  try:
    before = [hosts.received_bytes(i) for i in range(WORKERS)]
    driver = subprocess.run(
        ["ip", "netns", "exec", hosts.driver, sys.executable, "-m", "tests.netns_driver", str(out), shakespeare_dir,
         f"plain@{both};plain@{first};secure@{both};secure@{first}"],
        cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=600, check=False)
    received = [hosts.received_bytes(i) - b for i, b in enumerate(before)]
  finally:
    for worker in workers:
      worker.terminate()
    for worker in workers:
      worker.wait(timeout=30)
  assert driver.returncode == 0, driver.stderr[-3000:]
  # Both hosts were sent rounds (a smoke model is ~100 kB; each took a share of 6 two-host rounds).
  assert min(received) > 1_000_000, received
  runs = np.load(out)
  for aggregator, exact in (("plain", False), ("secure", True)):
    names = sorted(k[len(f"{aggregator}_1_"):] for k in runs.files if k.startswith(f"{aggregator}_1_"))
    for name in names:
      one, two = runs[f"{aggregator}_1_{name}"], runs[f"{aggregator}_2_{name}"]
      if exact and name != "losses":  # integer sums mod 2^b: the split between hosts cannot change a bit
        np.testing.assert_array_equal(two, one, err_msg=f"{aggregator} {name}")
      else:  # float partial sums merged (plain updates, train metrics): the order of additions differs
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6, err_msg=f"{aggregator} {name}")
