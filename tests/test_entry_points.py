"""The command line: one-line errors, and no TFF worker left behind on any exit path.

Each command runs as a subprocess carrying a unique marker in its environment;
any `worker_binary` it started inherits the marker, so leftovers are found
even after they were re-parented to init.
"""
import math
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from tff_research.learning import training_loop


def _workers_with_marker(marker):
  found = []
  for proc in psutil.process_iter(["pid", "cmdline"]):
    try:
      cmd = proc.info["cmdline"] or []
      if cmd and cmd[0].endswith("worker_binary") and proc.environ().get("TFF_RESEARCH_TEST_MARKER") == marker:
        if proc.status() != psutil.STATUS_ZOMBIE:
          found.append(proc.pid)
    except psutil.Error:
      continue
  return found


def _assert_no_workers(marker, wait=5.0):
  deadline = time.time() + wait
  while _workers_with_marker(marker) and time.time() < deadline:
    time.sleep(0.2)
  leftover = _workers_with_marker(marker)
  for pid in leftover:  # don't leave them to hang the rest of the suite
    os.kill(pid, signal.SIGKILL)
  assert not leftover, f"worker_binary left running: {leftover}"


@pytest.fixture
def train_cmd(python_env, repo_root, shakespeare_dir, tmp_path):
  marker = uuid.uuid4().hex
  env = dict(python_env, TFF_RESEARCH_TEST_MARKER=marker)

  def start(*flags, ignore_sigint=False, extra_env=None):
    args = [sys.executable, "-m", "experiments.train_nwp", "--preset=smoke",
            f"--data_dir={shakespeare_dir}", f"--output_dir={tmp_path}", "--noprogress", *flags]
    # Explicit either way: a suite run as a background job inherits SIGINT
    # ignored, and Python then keeps ignoring it (the Ctrl-C test would see a run finish).
    disposition = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
    preexec = lambda: signal.signal(signal.SIGINT, disposition)
    return subprocess.Popen(args, cwd=repo_root, env=dict(env, **(extra_env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec)

  start.marker = marker
  start.output_dir = str(tmp_path)
  yield start
  _assert_no_workers(marker)


def _finish(proc, timeout=240):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def test_smoke_run_prints_final_accuracy_and_leaves_no_worker(train_cmd):
  code, out, err = _finish(train_cmd("--experiment_name=cli"))
  assert code == 0, err[-2000:]
  assert "Final test accuracy" in out and "unigram baseline" in out
  assert "round 2/2" in out
  rows = training_loop.read_metrics_csv(os.path.join(train_cmd.output_dir, "cli", "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2]
  assert os.path.isfile(os.path.join(train_cmd.output_dir, "cli", "learning_curve.png"))
  assert "Traceback" not in err
  # The line names the clients evaluated (the smoke preset's sample of 4) out of those that exist, and says
  # where the model stands against the unigram baseline (2 rounds of a tiny model: not above it yet).
  final = next(line for line in out.splitlines() if line.startswith("Final test accuracy"))
  accuracy, unigram = (float(part.split(":")[-1].split()[0]) for part in final.split("   ")[:2])
  assert " on 4 of " in final and "Finished 2 rounds (2 trained now)" in out
  assert ("has not learned yet" in final) == (accuracy <= unigram)
  assert ("x the unigram baseline" in final) == (accuracy > unigram)
  code, out, err = _finish(train_cmd("--experiment_name=cli"))  # the same command again: nothing to train
  assert code == 0, err[-2000:]
  assert "Already finished: 2 rounds, nothing left to train" in out and "Final test accuracy" in out
  _assert_no_workers(train_cmd.marker)


def test_run_with_sigint_ignored_exits_cleanly(train_cmd):
  """Background jobs start with SIGINT ignored; TFF's own cleanup deadlocks there."""
  code, _, err = _finish(train_cmd("--experiment_name=bg", "--rounds=1", ignore_sigint=True))
  assert code == 0, err[-2000:]
  _assert_no_workers(train_cmd.marker)


def test_secure_fed_sgd_runs_from_the_command_line(train_cmd):
  """FedSGD takes the secure sum as its model aggregator like FedAvg does (one seam, picked by type)."""
  code, out, err = _finish(train_cmd("--experiment_name=secure_sgd", "--algorithm=fedsgd", "--aggregator=secure",
                                     "--clients_per_round=4", "--server_learning_rate=0.5"))
  assert code == 0, err[-2000:]
  rows = training_loop.read_metrics_csv(os.path.join(train_cmd.output_dir, "secure_sgd", "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2]
  assert all(r["secure/clients"] == 4 and r["secure/cryptographic_prg"] == 1 for r in rows)
  assert "Final test accuracy" in out and "Traceback" not in err


def test_distributed_dp_runs_from_the_command_line(train_cmd):
  """--dp=distributed over --aggregator=secure: the noisy masked sum, epsilon and the survivors every round."""
  code, out, err = _finish(train_cmd("--experiment_name=dp_distributed", "--aggregator=secure", "--dp=distributed",
                                     "--clients_per_round=5", "--dp_noise_multiplier=0.5",
                                     "--progress"))  # asked for, but stderr is a pipe: a line per round instead
  assert "round/s" not in err and "s/round" not in err and "round 2/2" in out
  assert code == 0, err[-2000:]
  rows = training_loop.read_metrics_csv(os.path.join(train_cmd.output_dir, "dp_distributed", "metrics.csv"))
  assert [r["round"] for r in rows] == [1, 2]
  assert all(r["dp/clients"] == 5 and r["dp/bits"] == 20 and r["secure/clients"] == 5 for r in rows)
  assert 0 < rows[0]["privacy/epsilon"] < rows[1]["privacy/epsilon"] < math.inf
  assert "epsilon" in out and "Final test accuracy" in out and "Traceback" not in err


@pytest.mark.parametrize("flags,message", [
    (["--dataset=nope"], "unknown dataset 'nope'"),
    (["--server_optimizer=foo"], "server_optimizer"),
    (["--rounds=0"], "--rounds must be positive"),
    (["--client_batch_size=-3"], "--client_batch_size must be positive"),
    (["--clients_per_round=100000"], "larger than the"),
    (["--aggregator=secure", "--clients_per_round=8", "--secure_neighbors=2"],
     "--aggregator=secure: SecAgg+ degree k=2 is below the Bell et al. bound for n=8 clients"),
    (["--aggregator=secure", "--dropout_rate=0.3"], "dropout_rate 0.3 exceeds max_dropout 0.1"),
    (["--dataset=jsonl:posts.jsonl", "--split=random"], "--split must be one of: auto, by_text"),
    (["--dp=central", "--aggregator=secure", "--clients_per_round=4"], "it does not run with --aggregator=secure"),
    (["--dp=central", "--dp_adaptive_clip"], "--dp_adaptive_clip: adaptive clipping needs more than 10 x"),
    (["--dp=central", "--target_epsilon=0.001", "--clients_per_round=1000"],
     "--target_epsilon: target epsilon 0.001 cannot be met in 2 rounds of 1000"),
    (["--dp=laplace"], "--dp='laplace' is not one of: none, central, ftrl"),
    (["--dp=ftrl", "--server_optimizer=adam"], "--dp=ftrl is FTRL: the server optimizer is one of sgd, sgdm"),
    (["--dp=distributed"], "--dp=distributed adds each client's noise under the secure sum's masks: it needs "
     "--aggregator=secure"),
    (["--dp=distributed", "--aggregator=secure", "--clients_per_round=4", "--secure_bits=6"],
     "--dp=distributed: bits=6 are too few for 4 clients"),
    (["--dp=distributed", "--aggregator=secure", "--clients_per_round=4", "--dp_adaptive_clip"],
     "dp_adaptive_clip applies to --dp=central"),
    (["--dp_mechanism=skellam"], "--dp_mechanism='skellam' is not one of: ddgauss"),
    (["--rounds=abc"], "error: flag --rounds=abc: invalid literal for int() with base 10: 'abc'"),
    (["--nope=1"], "error: Unknown command line flag 'nope'"),
    (["stray"], "error: unexpected arguments: stray"),
    (["--task=next_char"], "--vocab_size applies to --task=next_word: --task=next_char has its own fixed"),
    (["--output_dir=/dev/null"], "--output_dir: /dev/null is a file, not a directory"),
    (["--clients_per_subround=-1"], "--clients_per_subround must be 0 (the whole round) or positive, got -1"),
    (["--worker_timeout=0"], "--worker_timeout must be positive (seconds), got 0.0"),
    (["--export_worker_data_only"], "--export_worker_data_only needs --worker_data_dir, the directory to write"),
    (["--worker_data_dir=/dev/null/client_files"], "--worker_data_dir: cannot write /dev/null/client_files: "
     "Not a directory"),
    (["--dp=distributed", "--aggregator=secure", "--clients_per_round=4", "--dp_beta=1.5"],
     "dp_beta must be in [0, 1), got 1.5"),
])
def test_bad_input_is_one_clear_line(train_cmd, flags, message):
  code, _, err = _finish(train_cmd("--experiment_name=bad", *flags))
  assert code == 2
  assert message in err
  assert "Traceback" not in err
  lines = [line for line in err.strip().splitlines() if line.strip()]
  assert len(lines) <= 2, err
  assert any(line.startswith("error: ") for line in lines), err


def _wait_for_round(output_dir, name, proc, timeout=180):
  """Waits until a round's checkpoint is in place."""
  path = os.path.join(output_dir, name, "checkpoints")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(path) and any(f.startswith("round_") for f in os.listdir(path)):
      return
    time.sleep(0.3)
  tail = proc.stderr.read()[-2000:] if proc.poll() is not None else ""
  raise AssertionError(f"no round finished: {proc.poll()} {tail}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signal_mid_run_leaves_no_worker_and_keeps_saved_rounds(train_cmd, sig):
  name = f"signal_{int(sig)}"
  proc = train_cmd(f"--experiment_name={name}", "--rounds=200", "--eval_every=100")
  _wait_for_round(train_cmd.output_dir, name, proc)
  proc.send_signal(sig)  # to the Python pid only, not its process group
  code, _, err = _finish(proc, timeout=60)
  assert code == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[sig], err[-2000:]
  if sig != signal.SIGKILL:
    assert "Traceback" not in err, err[-2000:]
    assert "rerun the same command to resume" in err, err[-2000:]
  _assert_no_workers(train_cmd.marker)
  checkpoints = os.listdir(os.path.join(train_cmd.output_dir, name, "checkpoints"))
  assert any(c.startswith("round_") for c in checkpoints)


_SIGNAL_INSIDE_EVENT_LOOP = """
import asyncio, os, signal, sys
from tff_research.runtime import workers
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground shell
workers.install_exit_hooks()
sig, when = int(sys.argv[1]), sys.argv[2]

async def saver(n):
  try:
    if n == 0:
      os.kill(os.getpid(), sig)  # lands inside this task's step, as in a checkpoint save
      if when == "last_step":
        return
      await asyncio.sleep(0)
    await asyncio.sleep(5)
  finally:
    print(f"saver {n} unwound", file=sys.stderr)

async def main():
  if when == "after_main":  # lands in a plain loop callback once main is done
    asyncio.get_running_loop().call_soon(os.kill, os.getpid(), sig)
    return
  await asyncio.gather(saver(1), saver(0))  # 1 is waiting when 0 is hit
  if when == "last_step":
    return
  print("not reached", file=sys.stderr)

try:
  asyncio.run(main())
  print("the signal was lost", file=sys.stderr)
finally:
  print("main unwound", file=sys.stderr)
"""


@pytest.mark.parametrize("when", ["mid_task", "last_step", "after_main"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_inside_an_event_loop_exits_without_a_traceback(python_env, repo_root, sig, when):
  """A signal during a `tff.program` save (run with `asyncio.run`) must not end in
  asyncio's "Task exception was never retrieved" traceback (seen once in CI)."""
  done = subprocess.run([sys.executable, "-c", _SIGNAL_INSIDE_EVENT_LOOP, str(int(sig)), when],
                        cwd=repo_root, env=python_env, capture_output=True, text=True, timeout=120)
  expected = 128 + sig if sig == signal.SIGTERM else 1  # KeyboardInterrupt: 1 plus its traceback
  assert done.returncode == expected, done.stderr[-2000:]
  if sig == signal.SIGTERM:
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr[-2000:]
  else:  # Python's own Ctrl-C report, only the KeyboardInterrupt one
    assert "never retrieved" not in done.stderr and "SystemExit" not in done.stderr, done.stderr[-2000:]
  assert "main unwound" in done.stderr and "lost" not in done.stderr and "not reached" not in done.stderr
  if when != "after_main":
    assert "saver 1 unwound" in done.stderr, done.stderr[-2000:]


def test_plots_cli_overlays_runs(train_cmd, python_env, repo_root, tmp_path):
  code, _, err = _finish(train_cmd("--experiment_name=p1", "--rounds=1"))
  assert code == 0, err[-2000:]
  out = tmp_path / "fig.png"
  run = os.path.join(train_cmd.output_dir, "p1")
  done = subprocess.run([sys.executable, "-m", "tff_research.plots", run, run, "--labels=a,b",
                         f"--out={out}"], cwd=repo_root, env=python_env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert out.stat().st_size > 1000
  missing = subprocess.run([sys.executable, "-m", "tff_research.plots", str(tmp_path / "none"),
                            f"--out={out}"], cwd=repo_root, env=python_env, capture_output=True, text=True)
  assert missing.returncode == 2 and "no metrics.csv" in missing.stderr


def test_sigkill_mid_round_then_rerun_gives_bit_identical_weights(train_cmd):
  """Killed after round 2's metrics were written but before its checkpoint."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  # The uninterrupted run to compare with starts at the same time: its own
  # process, output and worker, and half of this test's time is Python tracing.
  straight_marker = uuid.uuid4().hex  # its worker is alive while the crash run's is checked
  straight_proc = train_cmd("--experiment_name=straight", "--rounds=4",
                            extra_env={"TFF_RESEARCH_TEST_MARKER": straight_marker})
  try:
    code, _, err = _finish(train_cmd("--experiment_name=crash", "--rounds=4",
                                     extra_env={"TFF_RESEARCH_FAULT": "before_checkpoint:2"}))
    assert code == -signal.SIGKILL, err[-2000:]
    _assert_no_workers(train_cmd.marker)
    run_dir = os.path.join(train_cmd.output_dir, "crash")
    saved = [f for f in os.listdir(os.path.join(run_dir, "checkpoints")) if f.startswith("round_")]
    assert saved == ["round_1"]
    code, out, err = _finish(train_cmd("--experiment_name=crash", "--rounds=4"))
    assert code == 0, err[-2000:]
    assert "Resuming from the round-1 checkpoint" in out
    rows = training_loop.read_metrics_csv(os.path.join(run_dir, "metrics.csv"))
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    code, _, err = _finish(straight_proc)
    assert code == 0, err[-2000:]
    _assert_no_workers(straight_marker)
  finally:
    if straight_proc.poll() is None:  # a failure above: end it, and its worker with it
      straight_proc.kill()
      straight_proc.communicate()
  with np.load(os.path.join(run_dir, "model_weights.npz")) as a, \
       np.load(os.path.join(train_cmd.output_dir, "straight", "model_weights.npz")) as b:
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key])
  # Determinism: same flags and seed, two processes, identical metrics.csv (wall times aside).
  straight = training_loop.read_metrics_csv(os.path.join(train_cmd.output_dir, "straight", "metrics.csv"))
  drop_times = lambda table: [{k: v for k, v in r.items() if k != "round_seconds"} for r in table]  # noqa: E731
  assert drop_times(straight) == drop_times(rows)
