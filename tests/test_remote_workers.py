"""Training on TFF's own worker service: two workers on loopback, same result as local."""
import dataclasses
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf

from tff_research import runtime
from tff_research.learning import experiment
from tff_research.learning.config import PRESETS
from tff_research.runtime import workers as workers_lib


def _start_worker_cli(port, python_env, repo_root):
  return subprocess.Popen([sys.executable, "-m", "tff_research.runtime.worker", f"--port={port}"],
                          cwd=repo_root, env=python_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _cpu_seconds(pid):
  times = psutil.Process(pid).cpu_times()
  return times.user + times.system


def _worker_pid(wrapper_pid):
  deadline = time.time() + 30
  while time.time() < deadline:
    kids = [p for p in psutil.Process(wrapper_pid).children() if "worker_binary" in p.name()]
    if kids:
      return kids[0].pid
    time.sleep(0.2)
  raise AssertionError("worker wrapper started no worker_binary")


def test_two_remote_workers_train_like_the_local_runtime(shakespeare_dir, tmp_path, python_env, repo_root):
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir, output_dir=str(tmp_path),
                               clients_per_round=4, rounds=2)
  data = experiment.load_nwp_data(config, verbose=False)
  run = lambda name: experiment.run_experiment(  # noqa: E731
      dataclasses.replace(config, experiment_name=name), progress=False, plot=False,
      log=lambda _: None, data=data)
  local = run("local")

  ports = [workers_lib.pick_free_port(), workers_lib.pick_free_port()]
  wrappers = [_start_worker_cli(p, python_env, repo_root) for p in ports]
  try:
    worker_pids = [_worker_pid(w.pid) for w in wrappers]
    before = [_cpu_seconds(p) for p in worker_pids]
    runtime.use_remote_workers([f"127.0.0.1:{p}" for p in ports])
    remote = run("remote")
    used = [_cpu_seconds(p) - b for p, b in zip(worker_pids, before)]
  finally:
    for wrapper in wrappers:
      wrapper.terminate()
    for wrapper in wrappers:
      wrapper.wait(timeout=30)
    runtime.use_local_runtime()  # the rest of the suite runs locally again

  # An idle worker uses a few hundredths of a CPU second over such a run.
  assert all(u > 0.15 for u in used), f"a worker did no work: cpu seconds {used}"
  for a, b in zip(tf.nest.flatten(local.run.model_weights.trainable),
                  tf.nest.flatten(remote.run.model_weights.trainable)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert remote.run.final_eval["accuracy"] == pytest.approx(local.run.final_eval["accuracy"], abs=1e-6)
  for pid in worker_pids:
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_unreachable_worker_is_a_clear_error():
  port = workers_lib.pick_free_port()
  with pytest.raises(workers_lib.WorkerError, match=f"no TFF worker answered at 127.0.0.1:{port}"):
    runtime.use_remote_workers([f"127.0.0.1:{port}"], timeout=1.0)


def test_bad_worker_address_is_rejected():
  with pytest.raises(ValueError, match="is not host:port"):
    runtime.use_remote_workers(["localhost"])


def test_workers_get_one_malloc_arena_unless_told_otherwise(monkeypatch):
  from tff_research.runtime import workers  # pylint: disable=g-import-not-at-top
  for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "TFF_RESEARCH_WORKER_MALLOC"):
    monkeypatch.delenv(name, raising=False)
  assert workers.worker_environment()["MALLOC_ARENA_MAX"] == "1"
  monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
  assert workers.worker_environment()["MALLOC_ARENA_MAX"] == "4"
  monkeypatch.delenv("MALLOC_ARENA_MAX")
  monkeypatch.setenv("TFF_RESEARCH_WORKER_MALLOC", "mmap")
  env = workers.worker_environment()
  assert env["MALLOC_MMAP_THRESHOLD_"] == "131072" and "MALLOC_ARENA_MAX" not in env
  monkeypatch.setenv("TFF_RESEARCH_WORKER_MALLOC", "glibc")
  env = workers.worker_environment()
  assert "MALLOC_MMAP_THRESHOLD_" not in env and "MALLOC_ARENA_MAX" not in env
  monkeypatch.setenv("TFF_RESEARCH_WORKER_MALLOC", "jemalloc")
  with pytest.raises(workers.WorkerError, match="TFF_RESEARCH_WORKER_MALLOC='jemalloc' is not one of"):
    workers.worker_environment()


def test_concurrent_computations_share_the_cores_between_them(monkeypatch):
  from tff_research.runtime import workers  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
  monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
  assert workers.default_max_concurrent_computation_calls() == 2
  assert workers.worker_environment(2)["TF_NUM_INTRAOP_THREADS"] == "1"
  assert workers.worker_environment(1)["TF_NUM_INTRAOP_THREADS"] == "2"
  assert "TF_NUM_INTRAOP_THREADS" not in workers.worker_environment(-1)
  monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
  assert workers.worker_environment(2)["TF_NUM_INTRAOP_THREADS"] == "3"
  monkeypatch.setattr(workers.os, "cpu_count", lambda: 16)
  assert workers.default_max_concurrent_computation_calls() == -1


def test_a_started_worker_gets_that_environment():
  from tff_research.runtime import workers  # pylint: disable=g-import-not-at-top
  worker = workers.ManagedWorker()
  try:
    with open(f"/proc/{worker.pid}/environ", "rb") as f:
      environ = f.read().split(b"\0")
    assert any(e.startswith(b"MALLOC_ARENA_MAX=") for e in environ)
  finally:
    worker.stop()
  assert not worker.is_running()


_VALUES_ALIVE_AT_EXIT = """
import asyncio
import numpy as np
import tensorflow_federated as tff
from tff_research import runtime
from tff_research.runtime import context

runtime.use_local_runtime()
executor = tff.framework.RemoteExecutor(context.single_worker_stub(), dispose_batch_size=1)
executor.set_cardinalities({tff.CLIENTS: 1})
value = asyncio.run(executor.create_value(np.float32(1.0), tff.TensorType(np.float32)))
runtime.shutdown()  # what every entry point does on Ctrl-C; `value` is still alive at exit
print("done")
"""


def test_values_alive_at_exit_do_not_try_to_free_themselves_on_a_stopped_worker(python_env, repo_root):
  # TFF frees a value from a weakref finalizer that also runs at interpreter exit;
  # an interrupted run once printed that free's gRPC traceback after its one-line message.
  done = subprocess.run([sys.executable, "-c", _VALUES_ALIVE_AT_EXIT], cwd=repo_root, env=python_env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_freeing_values_on_an_unreachable_worker_is_dropped_quietly():
  from tensorflow_federated.proto.v0 import executor_pb2  # pylint: disable=g-import-not-at-top

  from tff_research.runtime import context  # pylint: disable=g-import-not-at-top
  stub = context._stub_for(f"127.0.0.1:{workers_lib.pick_free_port()}")  # pylint: disable=protected-access
  assert stub.dispose(executor_pb2.DisposeRequest()) is None
  assert stub.dispose_executor(executor_pb2.DisposeExecutorRequest()) is None
  with pytest.raises(Exception, match="UNAVAILABLE"):  # only freeing is best effort
    stub.get_executor(executor_pb2.GetExecutorRequest())


def test_clients_streamed_in_subrounds_train_like_the_whole_round_at_once(shakespeare_dir, tmp_path):
  """runtime.use_local_runtime(num_subrounds=3): a round's 9 clients in 3 groups, one after another."""
  config = dataclasses.replace(PRESETS["smoke"], data_dir=shakespeare_dir, output_dir=str(tmp_path),
                               clients_per_round=9, rounds=2)
  data = experiment.load_nwp_data(config, verbose=False)
  runs = {}
  try:
    for subrounds in (1, 3):
      runtime.use_local_runtime(num_subrounds=subrounds)
      runs[subrounds] = experiment.run_experiment(
          dataclasses.replace(config, experiment_name=f"subrounds{subrounds}"), progress=False, plot=False,
          log=lambda _: None, data=data)
  finally:
    runtime.use_local_runtime()  # the rest of the suite runs on one call a round again
  for a, b in zip(tf.nest.flatten(runs[1].run.model_weights.trainable),
                  tf.nest.flatten(runs[3].run.model_weights.trainable)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)  # float sums, other order
  assert runs[3].run.history[-1]["train/num_examples"] == runs[1].run.history[-1]["train/num_examples"]
  with pytest.raises(ValueError, match="num_subrounds must be a positive integer, got 0"):
    runtime.use_local_runtime(num_subrounds=0)
