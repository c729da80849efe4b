"""A worker killed mid-round: the driver names it within the timeout, keeps its checkpoint, and a rerun ends
with the weights of a run that lost nothing."""
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests import test_remote_workers
from tff_research.learning.entry_point import EXIT_WORKER_LOST
from tff_research.runtime import liveness
from tff_research.runtime import workers as workers_lib

LOST_AFTER = 4.0


def _listening_socket():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen()
  return server, f"127.0.0.1:{server.getsockname()[1]}"


def test_a_closed_port_interrupts_a_blocked_wait_within_the_timeout():
  server, address = _listening_socket()
  watch = liveness.WorkerWatch([address], lost_after=1.0, interval=0.2)
  try:
    threading.Timer(0.5, server.close).start()
    start = time.monotonic()
    with pytest.raises(liveness.WorkerLostError, match=f"worker {address} lost: no connection for 1 s"):
      with watch.guard():
        threading.Event().wait(60)  # where TFF waits on its event loop's future
    assert time.monotonic() - start < 5
  finally:
    watch.stop()
    server.close()


def test_a_live_worker_is_never_reported_and_a_loss_between_calls_is_raised_at_the_next():
  server, address = _listening_socket()
  watch = liveness.WorkerWatch([address], lost_after=0.6, interval=0.1)
  try:
    with watch.guard():
      time.sleep(1.5)  # well past lost_after, answering all along
    server.close()
    time.sleep(1.5)  # lost while no call was in flight: nothing may interrupt here
    with pytest.raises(liveness.WorkerLostError):
      with watch.guard():
        pass
  finally:
    watch.stop()
    server.close()


def test_the_round_it_interrupted_is_named_with_the_checkpoint_kept():
  error = liveness.WorkerLostError("10.0.0.2:8000", 30.2).during_round(7)
  assert str(error) == ("worker 10.0.0.2:8000 lost during round 7: no connection for 30 s; the checkpoint of "
                        "round 6 is intact; restart it at the same address and rerun the same command to resume")
  assert "no round had finished" in str(liveness.WorkerLostError("h:1", 5).during_round(1))


def _driver(run_dir_parent, addresses, python_env, repo_root, shakespeare_dir, extra=()):
  command = [sys.executable, "-m", "experiments.train_nwp", "--preset=smoke", "--rounds=6", *extra,
             "--clients_per_round=20", "--max_elements_per_client=64", f"--data_dir={shakespeare_dir}",
             f"--workers={','.join(addresses)}", f"--worker_timeout={LOST_AFTER}",
             f"--output_dir={run_dir_parent}", "--noplot"]
  return subprocess.Popen(command, cwd=repo_root, env=python_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for_round(metrics_csv, round_num, driver, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline and driver.poll() is None:
    if os.path.exists(metrics_csv):
      with open(metrics_csv) as f:
        if any(line.startswith(f"{round_num},") for line in f):
          return
    time.sleep(0.2)
  raise AssertionError(f"the driver did not reach round {round_num} (exit {driver.poll()})")


def test_a_worker_killed_mid_round_stops_the_run_at_its_checkpoint_and_a_rerun_matches(
    tmp_path, python_env, repo_root, shakespeare_dir):
  ports = [workers_lib.pick_free_port(), workers_lib.pick_free_port()]
  addresses = [f"127.0.0.1:{p}" for p in ports]
  wrappers = [test_remote_workers._start_worker_cli(p, python_env, repo_root) for p in ports]
  try:
    victim = test_remote_workers._worker_pid(wrappers[1].pid)
    driver = _driver(tmp_path / "cut", addresses, python_env, repo_root, shakespeare_dir)
    _wait_for_round(tmp_path / "cut" / "smoke" / "metrics.csv", 2, driver)
    os.kill(victim, 9)  # rounds take about a second and the driver is inside one almost all the time
    killed_at = time.monotonic()
    output, _ = driver.communicate(timeout=120)
    assert time.monotonic() - killed_at < LOST_AFTER + 20, output
    assert driver.returncode == EXIT_WORKER_LOST, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: worker {addresses[1]} lost during round "), output
    stopped_in = int(last.split("during round ")[1].split(":")[0])
    checkpoints = sorted(int(d[len("round_"):]) for d in os.listdir(tmp_path / "cut" / "smoke" / "checkpoints")
                         if d.startswith("round_"))
    assert checkpoints[-1] == stopped_in - 1, (checkpoints, last)

    wrappers[1].wait(timeout=30)
    wrappers[1] = test_remote_workers._start_worker_cli(ports[1], python_env, repo_root)
    test_remote_workers._worker_pid(wrappers[1].pid)
    workers_lib.wait_until_serving(addresses[1])
    outputs = {name: _driver(tmp_path / name, addresses, python_env, repo_root, shakespeare_dir).communicate(
        timeout=300)[0] for name in ("cut", "whole")}  # "cut" resumes; "whole" never lost a worker
    assert f"Resuming from the round-{stopped_in - 1} checkpoint" in outputs["cut"], outputs["cut"]
    for output in outputs.values():
      assert "Finished 6 rounds" in output, output
  finally:
    for wrapper in wrappers:
      wrapper.terminate()
    for wrapper in wrappers:
      wrapper.wait(timeout=30)
  resumed = np.load(tmp_path / "cut" / "smoke" / "model_weights.npz")
  whole = np.load(tmp_path / "whole" / "smoke" / "model_weights.npz")
  assert sorted(resumed.files) == sorted(whole.files)
  for name in whole.files:
    np.testing.assert_array_equal(resumed[name], whole[name])


def test_a_worker_killed_in_a_secure_round_on_two_workers_stops_the_run_at_its_checkpoint(
    tmp_path, python_env, repo_root, shakespeare_dir):
  """The secure round runs its groups on both workers at once, in threads (client_groups.on_workers): the
  loss still reaches the driver's main thread as one line, and no thread waiting on the dead worker holds
  the process open."""
  ports = [workers_lib.pick_free_port(), workers_lib.pick_free_port()]
  addresses = [f"127.0.0.1:{p}" for p in ports]
  wrappers = [test_remote_workers._start_worker_cli(p, python_env, repo_root) for p in ports]
  try:
    victim = test_remote_workers._worker_pid(wrappers[1].pid)
    driver = _driver(tmp_path, addresses, python_env, repo_root, shakespeare_dir,
                     extra=["--aggregator=secure", "--clients_per_subround=5"])
    _wait_for_round(tmp_path / "smoke" / "metrics.csv", 2, driver)
    os.kill(victim, 9)
    killed_at = time.monotonic()
    output, _ = driver.communicate(timeout=120)
    assert time.monotonic() - killed_at < LOST_AFTER + 20, output
  finally:
    for wrapper in wrappers:
      wrapper.terminate()
    for wrapper in wrappers:
      wrapper.wait(timeout=30)
  assert driver.returncode == EXIT_WORKER_LOST, output
  last = output.strip().splitlines()[-1]
  assert last.startswith(f"error: worker {addresses[1]} lost during round "), output
  assert "Traceback" not in output, output
  stopped_in = int(last.split("during round ")[1].split(":")[0])
  checkpoints = sorted(int(d[len("round_"):]) for d in os.listdir(tmp_path / "smoke" / "checkpoints")
                       if d.startswith("round_"))
  assert checkpoints[-1] == stopped_in - 1, (checkpoints, last)


def test_the_local_worker_killed_mid_run_stops_run_experiment_with_the_local_advice(shakespeare_dir, tmp_path):
  """The kernel's OOM killer takes the local worker: WorkerLostError out of run_experiment, not a hang."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import PRESETS  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir, output_dir=str(tmp_path), rounds=400)
  data = experiment.load_nwp_data(config, verbose=False)
  (worker,) = runtime.use_local_runtime(lost_after=2.0)
  metrics_csv = os.path.join(config.run_dir, "metrics.csv")

  def kill_after_round_2():
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(metrics_csv) and "\n2," in open(metrics_csv).read()):
      time.sleep(0.1)
    os.kill(worker.pid, 9)

  killer = threading.Thread(target=kill_after_round_2, daemon=True)
  killer.start()
  try:
    with pytest.raises(liveness.WorkerLostError) as lost:
      experiment.run_experiment(config, progress=False, plot=False, log=lambda _: None, data=data)
  finally:
    killer.join()
    runtime.use_local_runtime()  # the rest of the suite gets a live worker again
  assert str(lost.value).startswith(f"worker {worker.address} lost during round ")
  assert str(lost.value).endswith(liveness.LOCAL_REMEDY) and lost.value.round_num < 400
