"""Workers on other hosts, for real: each worker and the driver in a network namespace of its own.

The test makes a driver namespace and two worker namespaces, joined only by a
veth pair each (10.231.i.1 on the driver's side, 10.231.i.2 on worker i's),
starts `python -m tff_research.runtime.worker` in each worker namespace and
runs the driver (tests/netns_driver.py) in its own: every byte between them
crosses those veth pairs and nothing else (a worker's namespace has no other
interface than its loopback). FedAvg and the secure sum across the two hosts
must give the single-host result, with client datasets sent by the driver and
(FedAvg) with datasets built on the workers, each from its own copy of the client
files (a mount namespace per worker binds its copy at the path the driver
names; the driver's own directory is empty). The namespaces are removed at
the end.
"""
import os
import shutil
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


def _export_and_copy(tmp_path, python_env, repo_root, shakespeare_dir) -> tuple[str, list[str]]:
  """The smoke data's client files, written by the command line and copied to one directory per worker
  host; the written directory is emptied, so that only the workers' copies hold them."""
  exported = str(tmp_path / "worker_data")
  done = subprocess.run([sys.executable, "-m", "experiments.train_nwp", "--preset=smoke",
                         f"--data_dir={shakespeare_dir}", f"--worker_data_dir={exported}",
                         "--export_worker_data_only"], cwd=repo_root, env=python_env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0 and "client data on the workers:" in done.stdout, done.stderr[-2000:]
  copies = [str(tmp_path / f"host{i + 1}_data") for i in range(WORKERS)]
  for copy in copies:
    shutil.copytree(exported, copy)
  shutil.rmtree(exported)
  os.makedirs(exported)
  return exported, copies


def test_two_hosts_train_like_one_for_fedavg_and_the_secure_sum(hosts, tmp_path, python_env, repo_root,
                                                                shakespeare_dir):
  for namespace in hosts.workers:
    assert sorted(hosts.interfaces(namespace)) == sorted(["lo", hosts.links[hosts.workers.index(namespace)][1]])
  probe = subprocess.run(["ip", "netns", "exec", hosts.workers[0], "unshare", "--mount", "sh", "-c",
                          f"mount --bind {tmp_path} {tmp_path}"], capture_output=True, text=True, check=False)
  if probe.returncode:
    pytest.skip(f"mount namespaces cannot be made here ({probe.stderr.strip() or probe.returncode})")
  exported, copies = _export_and_copy(tmp_path, python_env, repo_root, shakespeare_dir)
  worker = f"mount --bind {{}} {exported} && exec {sys.executable} -m tff_research.runtime.worker --port={PORT}"
  workers = [subprocess.Popen(["ip", "netns", "exec", namespace, "unshare", "--mount", "sh", "-c",
                               worker.format(copy)], cwd=repo_root, env=python_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT) for namespace, copy in zip(hosts.workers, copies)]
  both, first = ",".join(hosts.addresses()), hosts.addresses()[0]
  out = tmp_path / "runs.npz"
  try:
    before = [hosts.received_bytes(i) for i in range(WORKERS)]
    driver = subprocess.run(
        ["ip", "netns", "exec", hosts.driver, sys.executable, "-m", "tests.netns_driver", str(out), shakespeare_dir,
         f"plain@{both};plain@{first};secure@{both};secure@{first};plain+data@{both}",
         exported],
        cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=600, check=False)
    received = [hosts.received_bytes(i) - b for i, b in enumerate(before)]
  finally:
    for worker in workers:
      worker.terminate()
    for worker in workers:
      worker.wait(timeout=30)
  assert driver.returncode == 0, driver.stderr[-3000:]
  assert not os.listdir(exported)  # the workers read their own copies
  # Both hosts were sent rounds (a smoke model is ~100 kB; each took a share of 6 two-host rounds).
  assert min(received) > 1_000_000, received
  runs = np.load(out)
  for aggregator, exact in (("plain", False), ("secure", True)):
    names = sorted(k[len(f"{aggregator}_1_"):] for k in runs.files if k.startswith(f"{aggregator}_1_"))
    # Datasets built on the workers: plain FedAvg here (the secure sum's, bit for bit: test_worker_data.py).
    kinds = ("2", "data_2") if aggregator == "plain" else ("2",)
    for name, two_hosts in ((n, kind) for n in names for kind in kinds):
      one, two = runs[f"{aggregator}_1_{name}"], runs[f"{aggregator}_{two_hosts}_{name}"]
      if exact and name != "losses":  # integer sums mod 2^b: the split between hosts cannot change a bit
        np.testing.assert_array_equal(two, one, err_msg=f"{aggregator} {two_hosts} {name}")
      else:  # float partial sums merged (plain updates, train metrics): the order of additions differs
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6, err_msg=f"{aggregator} {two_hosts} {name}")
