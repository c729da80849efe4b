"""What a training command does around `run_experiment`: runtime, errors, summary.

Every exit path (success, bad input, exception, Ctrl-C, SIGTERM) stops the TFF
workers this process started, and bad input becomes one line on stderr with
exit status 2, never a stack trace. Everything already checkpointed stays.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
from typing import Any, Callable, Optional

from tff_research import tasks
from tff_research.learning.config import ExperimentConfig

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + int(signal.SIGTERM)  # what runtime.workers exits with
EXIT_WORKER_LOST = 3  # the run stopped at a checkpoint; a rerun resumes (runtime.liveness)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(..., flags_parser=parse_flags)`), a bad flag as one `error:` line, exit 2.

  absl's own parser prints two lines and exits 1; and a stray positional
  argument is refused here the same way.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {error_line(e)} (--helpshort lists the flags)", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  if len(rest) > 1:
    print(f"error: unexpected arguments: {' '.join(rest[1:])} (flags are --name=value)", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  return rest


def user_errors() -> tuple[type[BaseException], ...]:
  """Exceptions that mean bad input or settings, reported in one line."""
  from tff_research.aggregation.secagg.protocol import SecureAggregationError  # pylint: disable=g-import-not-at-top
  from tff_research.data.federated_text import DataError  # pylint: disable=g-import-not-at-top
  from tff_research.learning.training_loop import RunConfigError  # pylint: disable=g-import-not-at-top
  from tff_research.runtime.workers import WorkerError  # pylint: disable=g-import-not-at-top
  return (DataError, RunConfigError, WorkerError, SecureAggregationError, ValueError,
          FileNotFoundError, PermissionError)


def error_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return text[0] if text else type(error).__name__


def run_guarded(body: Callable[[], Any], kept: str) -> int:
  """Runs a command's `body`; returns its exit status, whatever way it ends.

  Args:
    body: the command's work; it installs the TFF runtime it needs.
    kept: what a stopped command leaves behind, said after Ctrl-C or SIGTERM.

  Returns:
    0; or EXIT_USAGE after one line naming bad input; or EXIT_WORKER_LOST after
    one line naming a lost worker; or EXIT_INTERRUPTED after Ctrl-C. SIGTERM
    exits with EXIT_TERMINATED (see runtime.workers). The TFF workers this
    process started are stopped on every path.
  """
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  try:
    body()
  except runtime.WorkerLostError as e:
    print(f"error: {error_line(e)}", file=sys.stderr)
    return EXIT_WORKER_LOST
  except KeyboardInterrupt:
    print(f"\ninterrupted; {kept}", file=sys.stderr)
    return EXIT_INTERRUPTED
  except SystemExit as e:  # SIGTERM (a scheduler preempting the job), see runtime.workers
    if e.code == EXIT_TERMINATED:
      print(f"\nterminated (SIGTERM); {kept}", file=sys.stderr)
    raise
  except user_errors() as e:
    print(f"error: {error_line(e)}", file=sys.stderr)
    return EXIT_USAGE
  finally:
    runtime.shutdown()
  return 0


@dataclasses.dataclass(frozen=True)
class Deployment:
  """Where and how a run's computations run; none of it changes the results.

  Attributes:
    workers: comma-separated host:port of TFF workers; None: a local worker.
    worker_timeout: seconds without a connection after which a worker counts
      as lost (None: `runtime.context.DEFAULT_LOST_AFTER`).
    clients_per_subround: stream each round's clients through the workers in
      groups of at most this many (0: the whole round at once).
    max_concurrent_computation_calls: the local worker's setting (None: its default).
    worker_data_dir: build client datasets on the workers from this directory
      (`data.worker_data`); None: send them from here every round.
    export_worker_data_only: write `worker_data_dir`'s files and stop (to
      prepare a worker host that shares no file system with the driver).
  """
  workers: Optional[str] = None
  worker_timeout: Optional[float] = None
  clients_per_subround: int = 0
  max_concurrent_computation_calls: Optional[int] = None
  worker_data_dir: Optional[str] = None
  export_worker_data_only: bool = False

  def validate(self) -> None:
    if self.worker_timeout is not None and not self.worker_timeout > 0:
      raise ValueError(f"--worker_timeout must be positive (seconds), got {self.worker_timeout}")
    if self.clients_per_subround < 0:
      raise ValueError(f"--clients_per_subround must be 0 (the whole round) or positive, "
                       f"got {self.clients_per_subround}")
    if self.export_worker_data_only and not self.worker_data_dir:
      raise ValueError("--export_worker_data_only needs --worker_data_dir, the directory to write")

  def use_runtime(self, clients_per_round: int) -> None:
    """Installs the TFF context: the remote workers, or a local one."""
    from tff_research import runtime  # pylint: disable=g-import-not-at-top
    lost_after = runtime.context.DEFAULT_LOST_AFTER if self.worker_timeout is None else self.worker_timeout
    subrounds = runtime.context.subrounds_for(clients_per_round, self.clients_per_subround)
    if self.workers:
      runtime.use_remote_workers(self.workers.split(","), lost_after=lost_after, num_subrounds=subrounds)
    else:
      runtime.use_local_runtime(max_concurrent_computation_calls=self.max_concurrent_computation_calls,
                                lost_after=lost_after, num_subrounds=subrounds)


def run_training_entry_point(config: ExperimentConfig, deployment: Optional[Deployment] = None,
                             verbose: bool = False, progress: bool = True, plot: bool = True) -> int:
  """Runs one experiment from the command line (`deployment`: default, a local worker); returns its exit status."""
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  runtime.configure_logging(verbose)
  deployment = deployment or Deployment()
  try:
    deployment.validate()
    config.validate()
  except ValueError as e:
    print(f"error: {error_line(e)}", file=sys.stderr)
    return EXIT_USAGE
  outcome = {}

  def train():
    from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
    data = experiment.load_nwp_data(config)
    if deployment.export_worker_data_only:
      experiment.export_worker_data(data, deployment.worker_data_dir)
      return
    deployment.use_runtime(config.clients_per_round)
    # A bar only where someone watches: redirected to a log file it would write a line per refresh.
    shown = progress and sys.stderr.isatty()
    outcome["result"] = experiment.run_experiment(config, progress=shown, plot=plot, data=data,
                                                  worker_data_dir=deployment.worker_data_dir)

  status = run_guarded(train, _saved_so_far(config))
  if status or "result" not in outcome:
    return status
  result = outcome["result"]
  rounds_done = result.run.rounds_completed
  final = result.run.final_eval
  if result.run.resumed_from >= rounds_done:
    print(f"Already finished: {rounds_done} rounds, nothing left to train; run directory: {config.run_dir}")
  else:
    trained = rounds_done - result.run.resumed_from
    print(f"Finished {rounds_done} rounds ({trained} trained now) in {result.run.wall_seconds:.0f} s; run "
          f"directory: {config.run_dir}")
  excluded = tasks.get_task(config.task).excluded_label
  evaluated, available = len(result.run.eval_client_ids), len(result.data.test_client_ids)
  accuracy = final.get("accuracy", float("nan"))
  print(f"Final test accuracy (without {excluded}) on {evaluated} of {available} test clients: "
        f"{accuracy:.4f}   unigram baseline (always "
        f"{_most_frequent_token(result.data)!r}): {result.unigram_accuracy:.4f}"
        f"   {_against_baseline(accuracy, result.unigram_accuracy)}")
  print(f"  recall@3 {final.get('recall_at_3', float('nan')):.4f}   accuracy with special tokens "
        f"{final.get('accuracy_with_special', float('nan')):.4f}   perplexity "
        f"{final.get('perplexity', float('nan')):.1f}")
  # These groups are named as their splits (`training_loop.EVAL_GROUPS`).
  for split, label in (("validation", "Validation"), ("heldout", "Held-out clients (never trained on)")):
    if split in result.run.final_evaluations:
      print(f"{label}: accuracy {result.run.final_evaluations[split].get('accuracy', float('nan')):.4f} on "
            f"{len(result.run.evaluated_client_ids[split])} of {len(result.data.client_ids(split))} clients")
  if result.dp is not None:
    print(_privacy_line(result, rounds_done, config.clients_per_round))
  if result.plot_path:
    print(f"Learning curve: {result.plot_path}")
  return 0


def _against_baseline(accuracy: float, unigram: float) -> str:
  """Whether the model beats always predicting the most frequent token: a short run often does not yet."""
  if not accuracy > unigram:
    return "-> at or below the unigram baseline: the model has not learned yet (train more rounds)"
  return f"-> {accuracy / unigram:.2f}x the unigram baseline" if unigram > 0 else "-> above the unigram baseline"


def _privacy_line(result, rounds_done: int, clients_per_round: int) -> str:
  """The summary's DP line: epsilon at delta after the rounds run (and rho-zCDP for DP-FTRL)."""
  dp, privacy, num_clients = result.dp, result.privacy, len(result.data.train_client_ids)
  how = {"central": f"RDP, {clients_per_round} of {num_clients} clients sampled a round",
         "ftrl": f"RDP over trees restarted every epoch, rho-zCDP {privacy.get('zcdp_rho', 0.0):.3g}",
         "distributed": f"discrete Gaussian shares under the secure sum, RDP of each round's survivors, "
                        f"{clients_per_round} of {num_clients} clients sampled a round"}[dp.mode]
  return (f"User-level DP ({dp.mode}): epsilon {privacy['epsilon']:.3g} at delta {dp.delta:.3g} after {rounds_done} "
          f"rounds (noise multiplier {dp.noise_multiplier:.4g}, clip {dp.clip:g}"
          f"{' adaptive' if dp.adaptive_clip else ''}; {how})")


def _saved_so_far(config: ExperimentConfig) -> str:
  return (f"checkpoints and metrics saved so far are in {config.run_dir} "
          "(rerun the same command to resume)")


def _most_frequent_token(data) -> str:
  from tff_research.data import nwp  # pylint: disable=g-import-not-at-top
  return data.vocab.decode_id(nwp.most_frequent_token(data))
